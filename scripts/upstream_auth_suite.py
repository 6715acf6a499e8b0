"""Point supabase-py's own Auth integration tests (`src/auth/tests`) at a running local stack.

Those tests talk to four GoTrue containers directly (ports 9996-9999, one JWT secret, no API
gateway). This rewrites the two `clients.py` of a scratch copy so that every client uses the
stack's /auth/v1 with its project key in `apikey` (Kong's check) and signs test tokens with the
stack's JWT secret. The stack runs one configuration (sign-up on, confirmations off, anonymous
sign-ins on), so the tests written for the other containers measure the differences.

    python scripts/upstream_auth_suite.py /tmp/supabase-py/src/auth/tests
    cd /tmp/supabase-py/src/auth && <venv>/bin/pytest tests/_sync tests/_async -q

It reads the stack's URL and keys from `.tokenmeter/stack.env` (or TOKENMETER_STATE_DIR's).
Never run it on a checkout you want to keep: it edits the files in place.
docs/compatibility.md ("Auth") has the command, the counts and the remaining failures.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stack_env() -> dict[str, str]:
    state = Path(os.environ.get("TOKENMETER_STATE_DIR", ROOT / ".tokenmeter"))
    lines = (state / "stack.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def adapt(clients: Path, env: dict[str, str]) -> None:
    text = clients.read_text()
    auth_url = env["SUPABASE_URL"] + "/auth/v1"
    text = re.sub(r'f"http://localhost:\{\w+\}"', repr(auth_url), text)
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


def main() -> None:
    tests = Path(sys.argv[1])
    env = stack_env()
    for clients in (tests / "_sync" / "clients.py", tests / "_async" / "clients.py"):
        adapt(clients, env)
        print(f"adapted {clients}")


if __name__ == "__main__":
    main()
