"""Edge functions (/functions/v1) run under Deno and answer supabase-py as on Supabase (§5).

The shipped `health` function is invoked through the session's stack with the unmodified sync and
async clients. Behaviour that needs functions of its own (echo, crash, boot failure) runs a
second, in-process gateway pointed at a temporary functions folder via TOKENMETER_FUNCTIONS_DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from conftest import random_email
from starlette.testclient import TestClient
from supabase_functions.errors import FunctionsHttpError, FunctionsRelayError

from app.stack.gateway.server import GatewayConfig, create_app
from app.stack.keys import StackKeys
from app.stack.manager import Stack
from supabase import AsyncClientOptions, ClientOptions, acreate_client, create_client

ECHO = """
Deno.serve(async (req: Request) => {
  const url = new URL(req.url);
  if (url.pathname.endsWith("/crash")) Deno.exit(3);
  if (url.pathname.endsWith("/throw")) throw new Error("handler failed");
  return Response.json({
    method: req.method,
    path: url.pathname,
    url: req.url,
    cloned: req.clone().url,
    query: url.search,
    body: await req.text(),
    custom: req.headers.get("x-custom"),
    env: {
      SUPABASE_URL: Deno.env.get("SUPABASE_URL"),
      SUPABASE_ANON_KEY: Deno.env.get("SUPABASE_ANON_KEY"),
      SUPABASE_SERVICE_ROLE_KEY: Deno.env.get("SUPABASE_SERVICE_ROLE_KEY"),
      SUPABASE_DB_URL: Deno.env.get("SUPABASE_DB_URL"),
    },
  }, { headers: { "x-echo": "yes" } });
});
"""


@pytest.fixture()
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def test_invoke_health_sync_client_returns_ok(api_url: str, anon_key: str, http: httpx.Client):
    client = create_client(
        api_url, anon_key, ClientOptions(httpx_client=http, auto_refresh_token=False)
    )
    answer = client.functions.invoke("health", {"responseType": "json"})
    assert answer["status"] == "ok" and answer["checks"] == {"auth": "ok", "database": "ok"}
    assert answer["price_rows"] > 0  # counted through REST by supabase-js
    assert answer["env"] == {
        "SUPABASE_URL": True,
        "SUPABASE_ANON_KEY": True,
        "SUPABASE_SERVICE_ROLE_KEY": True,
        "SUPABASE_DB_URL": True,
    }


async def test_invoke_health_async_client_returns_ok(api_url: str, anon_key: str):
    async with httpx.AsyncClient(timeout=60) as http:
        client = await acreate_client(
            api_url, anon_key, AsyncClientOptions(httpx_client=http, auto_refresh_token=False)
        )
        answer = await client.functions.invoke("health", {"responseType": "json"})
    assert answer["status"] == "ok"


def test_invoke_health_signed_in_user_jwt_returns_ok(
    api_url: str, anon_key: str, http: httpx.Client
):
    client = create_client(
        api_url, anon_key, ClientOptions(httpx_client=http, auto_refresh_token=False)
    )
    client.auth.sign_up({"email": random_email(), "password": "correct-horse-9"})
    answer = client.functions.invoke("health", {"method": "GET", "responseType": "json"})
    assert answer["status"] == "ok"


def test_invoke_unknown_function_raises_404(api_url: str, anon_key: str, http: httpx.Client):
    client = create_client(api_url, anon_key, ClientOptions(httpx_client=http))
    with pytest.raises(FunctionsHttpError) as caught:
        client.functions.invoke("no-such-function")
    assert caught.value.status == 404
    answer = http.post(
        f"{api_url}/functions/v1/no-such-function", headers={"Authorization": f"Bearer {anon_key}"}
    )
    assert answer.json() == {"code": "NOT_FOUND", "message": "Requested function was not found"}


@pytest.mark.parametrize("name", ["..%2F..%2Fpyproject.toml", "health.ts", "%2e%2e", "a b"])
def test_invoke_function_name_outside_pattern_returns_404(
    api_url: str, anon_key: str, http: httpx.Client, name: str
):
    answer = http.post(
        f"{api_url}/functions/v1/{name}", headers={"Authorization": f"Bearer {anon_key}"}
    )
    assert answer.status_code == 404


def test_invoke_without_jwt_returns_401_relay_error(api_url: str, http: httpx.Client):
    answer = http.post(f"{api_url}/functions/v1/health")
    assert answer.status_code == 401 and answer.headers["x-relay-error"] == "true"
    assert answer.json()["code"] == "UNAUTHORIZED_NO_AUTH_HEADER"


def test_invoke_forged_jwt_raises_401_relay_error(api_url: str, http: httpx.Client):
    forged = jwt.encode(
        {"role": "service_role", "exp": int(time.time()) + 60},
        "not-the-secret-" * 4,
        algorithm="HS256",
    )
    client = create_client(api_url, forged, ClientOptions(httpx_client=http))
    # The relay refused it, not the function: supabase-py tells the two apart by x-relay-error.
    with pytest.raises(FunctionsRelayError) as caught:
        client.functions.invoke("health")
    assert caught.value.status == 401


def test_invoke_expired_jwt_returns_401_relay_error(
    api_url: str, http: httpx.Client, keys: StackKeys
):
    expired = jwt.encode(
        {"role": "anon", "exp": int(time.time()) - 60}, keys.jwt_secret, algorithm="HS256"
    )
    answer = http.post(
        f"{api_url}/functions/v1/health", headers={"Authorization": f"Bearer {expired}"}
    )
    assert answer.status_code == 401 and answer.headers["x-relay-error"] == "true"


# ── a private gateway over test-only functions ──────────────────────────────────────────────────
@pytest.fixture()
def gateway(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, Path]]:
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "index.ts").write_text(ECHO)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "index.ts").write_text('throw new Error("boom at import");\n')
    (tmp_path / "idle").mkdir()
    (tmp_path / "idle" / "index.ts").write_text('console.log("imported, but serves nothing");\n')
    monkeypatch.setenv("TOKENMETER_FUNCTIONS_DIR", str(tmp_path))
    with TestClient(create_app(GatewayConfig.from_env())) as client:
        yield client, tmp_path


def test_invoke_echo_forwards_method_path_query_headers_body(
    gateway: tuple[TestClient, Path], anon_key: str, service_key: str, stack: Stack
):
    client, _ = gateway
    answer = client.put(
        "/functions/v1/echo/items/7?limit=2",
        content=b'{"a":1}',
        headers={"Authorization": f"Bearer {anon_key}", "x-custom": "kept"},
    )
    assert answer.status_code == 200 and answer.headers["x-echo"] == "yes"
    echoed = answer.json()
    assert (echoed["method"], echoed["path"], echoed["query"]) == (
        "PUT",
        "/echo/items/7",
        "?limit=2",
    )
    # On the API's origin, not the worker socket's http://localhost; the path as on Supabase.
    assert echoed["url"] == f"{stack.paths.api_url}/echo/items/7?limit=2"
    assert echoed["cloned"] == echoed["url"]
    assert json.loads(echoed["body"]) == {"a": 1} and echoed["custom"] == "kept"
    assert echoed["env"] == {
        "SUPABASE_URL": stack.paths.api_url,
        "SUPABASE_ANON_KEY": anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": service_key,
        "SUPABASE_DB_URL": stack.paths.db_url(),
    }


def test_invoke_function_failing_at_boot_returns_503_relay_error(
    gateway: tuple[TestClient, Path], anon_key: str
):
    client, _ = gateway
    answer = client.post("/functions/v1/broken", headers={"Authorization": f"Bearer {anon_key}"})
    assert answer.status_code == 503 and answer.headers["x-relay-error"] == "true"
    assert answer.json()["code"] == "BOOT_ERROR"


def test_invoke_function_never_calling_serve_returns_503_relay_error(
    gateway: tuple[TestClient, Path], anon_key: str
):
    client, _ = gateway
    started = time.monotonic()
    answer = client.post("/functions/v1/idle", headers={"Authorization": f"Bearer {anon_key}"})
    assert answer.status_code == 503 and answer.json()["code"] == "BOOT_ERROR"
    assert time.monotonic() - started < 10  # told at once, not after the boot timeout


def test_invoke_handler_throwing_returns_500_worker_keeps_serving(
    gateway: tuple[TestClient, Path], anon_key: str
):
    client, _ = gateway
    auth = {"Authorization": f"Bearer {anon_key}"}
    answer = client.post("/functions/v1/echo/throw", headers=auth)
    assert answer.status_code == 500 and "x-relay-error" not in answer.headers
    assert client.post("/functions/v1/echo", headers=auth).status_code == 200


def test_invoke_worker_crash_returns_502_then_restarts(
    gateway: tuple[TestClient, Path], anon_key: str
):
    client, _ = gateway
    auth = {"Authorization": f"Bearer {anon_key}"}
    crashed = client.post("/functions/v1/echo/crash", headers=auth)
    assert crashed.status_code == 502 and crashed.headers["x-relay-error"] == "true"
    assert client.post("/functions/v1/echo", headers=auth).status_code == 200


def test_relay_error_surfaces_as_functions_relay_error(
    gateway: tuple[TestClient, Path], anon_key: str
):
    client, _ = gateway
    sb = create_client("http://testserver", anon_key, ClientOptions(httpx_client=client))
    with pytest.raises(FunctionsRelayError):
        sb.functions.invoke("broken")


def test_gateway_shutdown_stops_function_workers(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anon_key: str
):
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "index.ts").write_text(ECHO)
    monkeypatch.setenv("TOKENMETER_FUNCTIONS_DIR", str(tmp_path))
    app = create_app(GatewayConfig.from_env())
    with TestClient(app) as client:
        assert (
            client.post(
                "/functions/v1/echo", headers={"Authorization": f"Bearer {anon_key}"}
            ).status_code
            == 200
        )
        processes = [w.process for w in app.state.functions.running.values()]
    assert processes and all(p.returncode is not None for p in processes)


def test_gateway_start_removes_socket_folders_of_dead_gateways(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    exited = subprocess.Popen(["true"])
    exited.wait()  # reaped: its pid names no process (until the system reuses it)
    temp = Path(tempfile.gettempdir())
    dead = Path(tempfile.mkdtemp(prefix=f"tokenmeter-fn-{exited.pid}-"))
    live = Path(tempfile.mkdtemp(prefix=f"tokenmeter-fn-{os.getppid()}-"))
    monkeypatch.setenv("TOKENMETER_FUNCTIONS_DIR", str(tmp_path))
    try:
        app = create_app(GatewayConfig.from_env())
        with TestClient(app):
            own = app.state.functions.socket_dir
            assert own.parent == temp and own.is_dir()
            assert not dead.exists() and live.is_dir()
        assert not own.exists()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)
