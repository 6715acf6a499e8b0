"""Point supabase-py's own Auth integration tests (`src/auth/tests`) at a running local stack.

Those tests talk to four GoTrue containers over one database, one per configuration (ports
9996-9999, one JWT secret, no API gateway):

    9998  sign-up on, confirmations off          → the stack's own gateway (config.toml)
    9999  sign-up on, confirmations on           → a gateway with TOKENMETER_AUTH_ENABLE_CONFIRMATIONS
    9997  sign-ups and email off                 → a gateway with TOKENMETER_AUTH_ENABLE_SIGNUP=false
    9996  asymmetric keys (the suite's RS256)    → a gateway with TOKENMETER_AUTH_SIGNING_KEYS_PATH

This rewrites the two `clients.py` of a scratch copy so that each client uses the gateway given
for its port (`--gateway 9999=http://127.0.0.1:PORT`; ports not given go to the stack's own
gateway), sends a project key in `apikey` (Kong's check) and signs test tokens with the stack's
JWT secret. `--signing-keys COMPOSE_FILE` prints the suite's own key set for 9996 (from its
infra/docker-compose.yml), to be saved as the third gateway's signing keys file.

    python scripts/upstream_auth_suite.py --signing-keys SCRATCH/src/auth/infra/docker-compose.yml
    python scripts/upstream_auth_suite.py SCRATCH/src/auth/tests --gateway 9999=… --gateway …
    cd SCRATCH/src/auth && <venv>/bin/pytest tests/_sync tests/_async -q

It reads the stack's URL and keys from `.tokenmeter/stack.env` (or TOKENMETER_STATE_DIR's).
Never run it on a checkout you want to keep: it edits the files in place.
docs/compatibility.md ("Auth") has the full commands, the counts and the remaining failures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORT_NAMES = {
    "9999": "SIGNUP_ENABLED_AUTO_CONFIRM_OFF_PORT",
    "9998": "SIGNUP_ENABLED_AUTO_CONFIRM_ON_PORT",
    "9997": "SIGNUP_DISABLED_AUTO_CONFIRM_OFF_PORT",
    "9996": "SIGNUP_ENABLED_ASYMMETRIC_AUTO_CONFIRM_ON_PORT",
}


def stack_env() -> dict[str, str]:
    state = Path(os.environ.get("TOKENMETER_STATE_DIR", ROOT / ".tokenmeter"))
    lines = (state / "stack.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def adapt(clients: Path, env: dict[str, str], gateways: dict[str, str]) -> None:
    text = clients.read_text()
    for port, name in PORT_NAMES.items():
        url = gateways.get(port, env["SUPABASE_URL"]) + "/auth/v1"
        text = re.sub(rf'f"http://localhost:\{{{name}\}}"', repr(url), text)
    text = re.sub(
        r'GOTRUE_JWT_SECRET = "[^"]*"', f"GOTRUE_JWT_SECRET = {env['SUPABASE_JWT_SECRET']!r}", text
    )
    # Clients: the anon key, as supabase-py's create_client sends it.
    text = re.sub(
        r"(GoTrueClient\(\n(\s+)url=[A-Z_]+,\n)",
        rf'\1\2headers={{"apikey": {env["SUPABASE_ANON_KEY"]!r}}},\n',
        text,
    )
    # Admin clients: the service_role key beside their own Authorization.
    text = re.sub(
        r'(headers=\{\n(\s+)"Authorization")',
        rf'headers={{\n\2"apikey": {env["SUPABASE_SERVICE_ROLE_KEY"]!r},\n\2"Authorization"',
        text,
    )
    clients.write_text(text)


def suite_signing_keys(compose: Path) -> list[dict[str, object]]:
    """GOTRUE_JWT_KEYS of the suite's asymmetric-keys container (a YAML file, read with a
    regular expression: the value is one quoted JSON line)."""
    text = compose.read_text()
    service = text.split("autoconfirm_with_asymmetric_keys:", 1)[1]
    found = re.search(r"GOTRUE_JWT_KEYS: '(\[.*?\])'", service)
    if not found:
        raise SystemExit(f"no GOTRUE_JWT_KEYS in {compose}")
    keys: list[dict[str, object]] = json.loads(found.group(1))
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="?", type=Path, help="the scratch copy's src/auth/tests")
    parser.add_argument(
        "--gateway", action="append", default=[], help="PORT=URL, e.g. 9999=http://127.0.0.1:5"
    )
    parser.add_argument("--signing-keys", type=Path, help="print the 9996 keys of this file")
    args = parser.parse_args()
    if args.signing_keys:
        json.dump(suite_signing_keys(args.signing_keys), sys.stdout, indent=2)
        return
    if args.tests is None:
        parser.error("the tests folder is required")
    gateways = dict(item.split("=", 1) for item in args.gateway)
    unknown = set(gateways) - set(PORT_NAMES)
    if unknown:
        parser.error(f"unknown ports {sorted(unknown)}: use {', '.join(PORT_NAMES)}")
    env = stack_env()
    for clients in (args.tests / "_sync" / "clients.py", args.tests / "_async" / "clients.py"):
        adapt(clients, env, gateways)
        print(f"adapted {clients}")


if __name__ == "__main__":
    main()
