"""Edge functions, /functions/v1/NAME: supabase/functions/NAME/index.ts run under Deno.

The first request for NAME starts one long-lived Deno worker (deno_worker.ts) that listens on a
Unix socket in the gateway's private folder and imports the function; later requests are proxied
to it with the path `/NAME/...`, as Supabase's edge runtime shows it to the function.

A function gets what it gets on Supabase and nothing of the host (docs/limits.md, "Edge
functions"): network; reading its own folder and the `_`-prefixed shared folders beside it; an
environment built from nothing, holding SUPABASE_URL, SUPABASE_ANON_KEY,
SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL and the secrets of `supabase/functions/.env` (what
`supabase functions serve` loads, and `supabase secrets set --env-file` would deploy). No writing,
no subprocesses, no FFI, no system information; not the gateway's environment, the state folder
or its keys. Workers share the gateway's Deno cache, so npm packages are downloaded once.

As on Supabase with `verify_jwt = true` (the default), a request needs a JWT signed with the
project's secret (the anon key will do); `[functions.NAME] verify_jwt = false` in the config.toml
beside the functions folder lets any request through (a function with its own bearer keys). A worker that fails to boot answers 503 and one that dies mid-request 502,
both with `x-relay-error: true` (supabase-py raises FunctionsRelayError), as is the 401 for a
missing or bad JWT (the relay's refusal, not the function's); the next request starts
a fresh worker. `TOKENMETER_FUNCTIONS_DIR` points the gateway at another functions folder (its
`.env` then holds the secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import tempfile
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from dotenv import dotenv_values
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from app.stack.gateway import tokens
from app.stack.gateway.errors import ApiError

WORKER_SCRIPT = Path(__file__).with_name("deno_worker.ts")
BOOT_TIMEOUT_SECONDS = 60.0  # the first boot may download npm packages
REQUEST_TIMEOUT_SECONDS = 150.0  # Supabase's wall-clock limit on the free plan
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SUPABASE_ENV = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL")
# Variables Deno itself reads (where its cache is, how to reach the network, which CAs to trust),
# passed on from the gateway when set and hidden from the function with --deny-env.
_DENO_RUNTIME_ENV = (
    "DENO_DIR",
    "HOME",
    "XDG_CACHE_HOME",
    "DENO_CERT",
    "DENO_TLS_CA_STORE",
    "DENO_AUTH_TOKENS",
    "NPM_CONFIG_REGISTRY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class FunctionError(ApiError):
    """An error of the functions relay itself: `{"code": "...", "message": "..."}`."""

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def _relay_error(status: int, code: str, message: str) -> FunctionError:
    return FunctionError(status, code, message, headers={"x-relay-error": "true"})


@dataclass
class Worker:
    name: str
    socket: Path
    process: asyncio.subprocess.Process
    client: httpx.AsyncClient

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass
class Workers:
    """The running workers of one gateway, by function name."""

    functions_dir: Path
    supabase_env: dict[str, str]
    runtime_env: dict[str, str]
    deno: str
    log_dir: Path
    socket_dir: Path
    # The API's origin (http://127.0.0.1:<api port>): the worker shows it to the function in
    # req.url in place of its internal socket address.
    public_origin: str = ""
    running: dict[str, Worker] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def get(self, name: str) -> Worker:
        """The live worker for `name`, booting one if needed. Raises FunctionError 503."""
        worker = self.running.get(name)
        if worker is not None and worker.alive:
            return worker
        lock = self.locks.setdefault(name, asyncio.Lock())
        async with lock:
            worker = self.running.get(name)
            if worker is not None and worker.alive:
                return worker
            worker = await self._boot(name)
            self.running[name] = worker
            return worker

    def function_secrets(self, log: BinaryIO) -> dict[str, str]:
        """The function secrets of `<functions dir>/.env`, read at each boot. Like the Supabase
        CLI, names starting with SUPABASE_ are skipped with a warning (those are the platform's);
        values are taken literally (no ${VAR} expansion from the gateway's environment)."""
        path = self.functions_dir / ".env"
        if not path.is_file():
            return {}
        found: dict[str, str] = {}
        for key, value in dotenv_values(path, interpolate=False).items():
            if key.startswith("SUPABASE_"):
                log.write(f"Env name cannot start with SUPABASE_, skipping: {key}\n".encode())
            else:
                found[key] = value or ""
        return found

    async def _boot(self, name: str) -> Worker:
        # Resolved, because Deno checks permissions on the path it loads, the symlinks' target.
        folder = (self.functions_dir / name).resolve()
        entry = folder / "index.ts"
        # A fresh name per boot: a restarted worker never meets its predecessor's socket file.
        sock = self.socket_dir / f"{secrets.token_hex(6)}.sock"
        # Supabase's convention for code shared between functions: `_`-prefixed folders, which
        # are not functions themselves.
        shared = sorted(p.resolve() for p in self.functions_dir.glob("_*") if p.is_dir())
        readable = [folder, *shared, sock]
        if any("," in str(path) for path in readable):
            raise _relay_error(
                503, "BOOT_ERROR", "The functions folder path must not contain a comma"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            function_env = {**self.function_secrets(log), **self.supabase_env}
            env = {**self.runtime_env, **function_env}
            hidden = sorted(set(env) - set(function_env))
            process = await asyncio.create_subprocess_exec(
                self.deno,
                "run",
                "--no-prompt",
                # Any host, as on Supabase. Remote imports too: code a function could fetch anyway.
                "--allow-net",
                "--allow-import",
                "--allow-read=" + ",".join(str(p) for p in readable),
                # Only to bind the socket; deno_worker.ts revokes both before importing the function.
                f"--allow-write={sock}",
                # All of an environment built from nothing, less what Deno itself reads: reading an
                # unset name answers undefined, as on Supabase, instead of throwing.
                "--allow-env",
                *(["--deny-env=" + ",".join(hidden)] if hidden else []),
                str(WORKER_SCRIPT),
                str(sock),
                entry.as_uri(),
                self.public_origin,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=str(folder),
            )
        client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(sock)),
            trust_env=False,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=5.0),
        )
        worker = Worker(name, sock, process, client)
        deadline = asyncio.get_running_loop().time() + BOOT_TIMEOUT_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if not worker.alive:
                await _stop(worker)
                raise _relay_error(
                    503, "BOOT_ERROR", f"Function {name} failed to boot (please check logs)"
                )
            if await _ready(worker):
                return worker
            await asyncio.sleep(0.05)
        await _stop(worker)
        raise _relay_error(
            503,
            "BOOT_ERROR",
            f"Function {name} did not start serving within {BOOT_TIMEOUT_SECONDS:.0f} s",
        )

    async def forget(self, name: str, worker: Worker) -> None:
        if self.running.get(name) is worker:
            del self.running[name]
        await _stop(worker)

    async def stop_all(self) -> None:
        workers, self.running = list(self.running.values()), {}
        await asyncio.gather(*(_stop(w) for w in workers))


async def _ready(worker: Worker) -> bool:
    """deno_worker.ts answers `GET /` with 204 once the function has called Deno.serve."""
    if not worker.socket.exists():
        return False
    try:
        answer = await worker.client.get("http://localhost/", timeout=1.0)
    except httpx.HTTPError:
        return False
    return answer.status_code == 204


async def _stop(worker: Worker) -> None:
    if worker.alive:
        with contextlib.suppress(ProcessLookupError):
            worker.process.terminate()
        try:
            await asyncio.wait_for(worker.process.wait(), timeout=3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
    await worker.client.aclose()
    worker.socket.unlink(missing_ok=True)


def _socket_dir() -> Path:
    """A private (0700) folder for this gateway's sockets, under the system temp folder because a
    socket path must fit in 107 bytes, which a deep state folder might not leave room for. Named
    after the gateway's pid, so that the folders of gateways that died without cleaning up (a
    SIGKILL) are removed by the next one to start."""
    for stale in Path(tempfile.gettempdir()).glob("tokenmeter-fn-*-*"):
        pid = stale.name.split("-")[2]
        with contextlib.suppress(OSError):
            if pid.isdigit() and stale.stat().st_uid == os.getuid() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"tokenmeter-fn-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _deno_binary() -> str:
    import deno

    return str(deno.find_deno_bin())


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    config = app.state.config
    paths = config.paths
    functions_dir = Path(os.environ.get("TOKENMETER_FUNCTIONS_DIR") or paths.functions_dir)
    supabase_env = dict(
        zip(
            SUPABASE_ENV,
            (paths.api_url, config.keys.anon_key, config.keys.service_role_key, paths.db_url()),
            strict=True,
        )
    )
    runtime_env = {k: os.environ[k] for k in _DENO_RUNTIME_ENV if k in os.environ}
    runtime_env.update(NO_COLOR="1", DENO_NO_UPDATE_CHECK="1")
    socket_dir = _socket_dir()
    app.state.functions = Workers(
        functions_dir.resolve(),
        supabase_env,
        runtime_env,
        _deno_binary(),
        paths.logs / "functions",
        socket_dir,
        paths.api_url.rstrip("/"),
    )
    try:
        yield
    finally:
        await app.state.functions.stop_all()
        shutil.rmtree(socket_dir, ignore_errors=True)


_config_cache: dict[Path, tuple[int, dict[str, Any]]] = {}


def _verify_jwt(functions_dir: Path, name: str) -> bool:
    """`[functions.NAME] verify_jwt` of the config.toml beside the functions folder (Supabase's
    layout: supabase/config.toml, supabase/functions/); true when unset, as on Supabase. The file
    is parsed again only when it changes."""
    path = functions_dir.parent / "config.toml"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return True
    cached = _config_cache.get(path)
    if cached is None or cached[0] != mtime:
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            return True  # an unreadable file never opens a function up
        cached = (mtime, config)
        _config_cache[path] = cached
    function = cached[1].get("functions", {})
    function = function.get(name, {}) if isinstance(function, dict) else {}
    return not isinstance(function, dict) or function.get("verify_jwt", True) is not False


def _authorize(request: Request) -> None:
    """verify_jwt: a JWT signed with the project's secret must come with the request."""
    # Refused by the relay, not by the function: marked as a relay error so the clients raise
    # FunctionsRelayError (functions-js reads `x-relay-error: true`), as for a worker failure.
    if tokens.bearer_token(request) is None:
        raise _relay_error(401, "UNAUTHORIZED_NO_AUTH_HEADER", "Missing authorization header")
    try:
        tokens.request_claims(request, request.app.state.config.keys.jwt_secret)
    except ApiError as exc:
        raise _relay_error(401, "UNAUTHORIZED_INVALID_JWT", f"Invalid JWT: {exc.message}") from None


async def _body(request: Request) -> bytes:
    limit = request.app.state.config.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FunctionError(413, "PAYLOAD_TOO_LARGE", f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def invoke(request: Request) -> Response:
    name = request.path_params["name"]
    workers: Workers = request.app.state.functions
    if not _NAME.match(name) or not (workers.functions_dir / name / "index.ts").is_file():
        raise FunctionError(404, "NOT_FOUND", "Requested function was not found")
    if _verify_jwt(workers.functions_dir, name):
        _authorize(request)
    body = await _body(request)
    worker = await workers.get(name)
    rest = request.path_params.get("rest", "")
    url = f"http://localhost/{name}{'/' + rest if rest else ''}"
    if request.url.query:
        url += f"?{request.url.query}"
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
    client = worker.client
    outgoing = client.build_request(request.method, url, headers=headers, content=body)
    try:
        upstream = await client.send(outgoing, stream=True)
    except httpx.TimeoutException:
        raise _relay_error(504, "TIMEOUT", f"Function {name} did not answer in time") from None
    except httpx.HTTPError:
        await asyncio.sleep(0.05)  # let a dying worker's exit status arrive
        if not worker.alive:
            await workers.forget(name, worker)
            raise _relay_error(
                502, "WORKER_ERROR", f"Function {name} exited unexpectedly (please check logs)"
            ) from None
        raise _relay_error(502, "WORKER_ERROR", f"Function {name} did not answer") from None
    response = StreamingResponse(_relay(upstream), status_code=upstream.status_code)
    # Raw bytes pass through unchanged, so Content-Length and Content-Encoding stay valid;
    # repeated headers (Set-Cookie) are kept as they came.
    response.raw_headers = [
        (key.lower().encode("latin-1"), value.encode("latin-1"))
        for key, value in upstream.headers.multi_items()
        if key.lower() not in _HOP_BY_HOP - {"content-length"} | {"date", "server"}
    ]
    return response


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    """The worker's body as it arrives; the upstream connection is released even when the
    client goes away mid-stream (a background task would not run then)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


def routes() -> list[BaseRoute]:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    return [
        Route("/{name}", invoke, methods=methods),
        Route("/{name}/{rest:path}", invoke, methods=methods),
    ]
