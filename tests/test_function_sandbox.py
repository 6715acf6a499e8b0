"""Edge functions run with the least they need (issue 9, §4; docs/limits.md, "Edge functions").

A `probe` function tries, on request, what a hostile or compromised function would: read the
state folder's keys, /etc/passwd, another function's code or the secrets file; write a file; run a
program; read the gateway's environment; reach another worker. Each answer is
`{"ok": true, "value": …}` or `{"ok": false, "error": "<Deno error class>"}`. The functions live in
a temporary folder served by an in-process gateway (TOKENMETER_FUNCTIONS_DIR), whose environment
carries a canary variable that must never reach a function.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.stack.gateway.server import GatewayConfig, create_app
from app.stack.manager import Stack

CANARY = "TOKENMETER_SANDBOX_CANARY"

PROBE = """
import { GREETING } from "../_shared/greeting.ts";

async function attempt(action: () => unknown): Promise<Record<string, unknown>> {
  try {
    return { ok: true, value: (await action()) ?? null };
  } catch (error) {
    return { ok: false, error: (error as Error).name };
  }
}

const actions: Record<string, (arg: string) => unknown> = {
  read: (path) => Deno.readTextFile(path),
  write: (path) => Deno.writeTextFile(path, "written by a function"),
  run: async (program) => (await new Deno.Command(program, { args: ["-c", "id"] }).output()).code,
  env: () => Deno.env.toObject(),
  get: (name) => Deno.env.get(name),
  connect: async (path) => (await Deno.connect({ transport: "unix", path })).close(),
  shared: () => GREETING,
};

Deno.serve(async (req: Request) => {
  const action = actions[new URL(req.url).pathname.split("/")[2]];
  if (!action) return new Response("unknown action", { status: 404 });
  const arg = await req.text();
  return Response.json(await attempt(() => action(arg)));
});
"""

ECHO = 'Deno.serve(() => new Response("echo"));\n'

SECRETS = """\
GREETING_SECRET="hello from .env"
OTHER_SECRET=plain
SUPABASE_URL=http://overridden.invalid
"""

# Variables Deno itself puts in every process's environment (its Node shim), not the gateway's.
DENO_OWN = {"PATH", "DENO_NODE_SHIM_ACTIVE"}
SUPABASE_ENV = {"SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"}


@pytest.fixture(scope="module")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("functions")
    for name, source in {"probe": PROBE, "echo": ECHO}.items():
        (root / name).mkdir()
        (root / name / "index.ts").write_text(source)
    (root / "probe" / "data.txt").write_text("the function's own file")
    (root / "_shared").mkdir()
    (root / "_shared" / "greeting.ts").write_text('export const GREETING = "shared code";\n')
    (root / ".env").write_text(SECRETS)
    return root


@pytest.fixture(scope="module")
def gateway(stack: Stack, functions_dir: Path) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOKENMETER_FUNCTIONS_DIR", str(functions_dir))
        patch.setenv(CANARY, "the gateway's environment leaked")
        with TestClient(create_app(GatewayConfig.from_env())) as client:
            yield client


@pytest.fixture(scope="module")
def probe(gateway: TestClient, anon_key: str) -> Any:
    def attempt(action: str, arg: str = "") -> dict[str, Any]:
        answer = gateway.post(
            f"/functions/v1/probe/{action}",
            content=arg.encode(),
            headers={"Authorization": f"Bearer {anon_key}"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    return attempt


def _worker(gateway: TestClient, name: str) -> Any:
    return gateway.app.state.functions.running[name]  # type: ignore[attr-defined]


REFUSED = {"ok": False, "error": "NotCapable"}


@pytest.mark.parametrize(
    "target",
    ["state_keys", "etc_passwd", "secrets_file", "gateway_source"],
)
def test_function_read_outside_its_folder_refused(
    probe: Any, stack: Stack, functions_dir: Path, target: str
):
    path = {
        "state_keys": stack.paths.keys_file,
        "etc_passwd": Path("/etc/passwd"),
        "secrets_file": functions_dir / ".env",
        "gateway_source": Path(__file__).parents[1] / "app" / "stack" / "gateway" / "functions.py",
    }[target]
    assert path.is_file()  # the refusal is Deno's, not a missing file
    assert probe("read", str(path)) == REFUSED


def test_function_read_own_folder_and_shared_code_allowed_other_function_refused(
    probe: Any, functions_dir: Path
):
    assert probe("read", str(functions_dir / "probe" / "data.txt")) == {
        "ok": True,
        "value": "the function's own file",
    }
    assert probe("shared") == {"ok": True, "value": "shared code"}
    assert probe("read", str(functions_dir / "echo" / "index.ts")) == REFUSED


def test_function_environment_holds_supabase_vars_and_secrets_only(
    probe: Any, stack: Stack, anon_key: str, service_key: str
):
    answer = probe("env")
    assert answer["ok"]
    env = {k: v for k, v in answer["value"].items() if k not in DENO_OWN}
    assert env == {
        "SUPABASE_URL": stack.paths.api_url,  # the .env's SUPABASE_URL is skipped, as by the CLI
        "SUPABASE_ANON_KEY": anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": service_key,
        "SUPABASE_DB_URL": stack.paths.db_url(),
        "GREETING_SECRET": "hello from .env",
        "OTHER_SECRET": "plain",
    }


@pytest.mark.parametrize("name", [CANARY, "TOKENMETER_STATE_DIR", "TOKENMETER_API_PORT"])
def test_function_gateway_variable_reads_as_unset(probe: Any, gateway: TestClient, name: str):
    assert name in os.environ
    assert probe("get", name) == {"ok": True, "value": None}
    # Not merely hidden by Deno: the worker process's environment never held it.
    environ = Path(f"/proc/{_worker(gateway, 'probe').process.pid}/environ").read_bytes()
    assert f"{name}=".encode() not in environ


@pytest.mark.parametrize("name", ["HOME", "DENO_NO_UPDATE_CHECK"])
def test_function_deno_runtime_variable_refused(probe: Any, name: str):
    # What the gateway passes for Deno itself (where its cache is, proxies…) is not the function's.
    assert probe("get", name) == REFUSED


def test_function_subprocess_refused(probe: Any):
    assert probe("run", "/bin/sh") == REFUSED


@pytest.mark.parametrize("where", ["own_folder", "tmp"])
def test_function_write_file_refused(probe: Any, functions_dir: Path, tmp_path: Path, where: str):
    target = (functions_dir / "probe" if where == "own_folder" else tmp_path) / "written.txt"
    assert probe("write", str(target)) == REFUSED
    assert not target.exists()


def test_worker_listens_on_no_tcp_port(probe: Any, gateway: TestClient):
    probe("shared")
    pid = _worker(gateway, "probe").process.pid
    assert _listening_tcp_ports(pid) == set()


def test_worker_socket_unreachable_from_another_function(
    probe: Any, gateway: TestClient, anon_key: str
):
    echo = gateway.post("/functions/v1/echo", headers={"Authorization": f"Bearer {anon_key}"})
    assert echo.text == "echo"
    socket = _worker(gateway, "echo").socket
    assert stat.S_ISSOCK(socket.stat().st_mode)
    # Only the gateway's user may enter the folder; within it, Deno's permissions stop functions.
    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
    assert probe("connect", str(socket)) == REFUSED
    # Nor can a function reach its own socket once it runs: the worker revoked that permission.
    assert probe("connect", str(_worker(gateway, "probe").socket)) == REFUSED


def _listening_tcp_ports(pid: int) -> set[int]:
    """Ports of the TCP sockets process `pid` listens on (read from /proc, as `ss -ltnp` does)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_target = os.readlink(fd)
        if with_target.startswith("socket:["):
            inodes.add(with_target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
