"""Edge functions, /functions/v1/NAME: supabase/functions/NAME/index.ts run under Deno.

The first request for NAME starts one long-lived `deno run --allow-all` worker (deno_worker.ts)
that binds a free loopback port and imports the function; later requests are proxied to it over
HTTP with the path `/NAME/...`, as Supabase's edge runtime shows it to the function. Workers get
Supabase's environment (SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY,
SUPABASE_DB_URL) and share the default DENO_DIR, so npm packages are downloaded once.

As on Supabase with `verify_jwt = true`, a request needs a JWT signed with the project's secret
(the anon key will do). A worker that fails to boot answers 503 and one that dies mid-request 502,
both with `x-relay-error: true` (supabase-py raises FunctionsRelayError); the next request starts
a fresh worker. `TOKENMETER_FUNCTIONS_DIR` points the gateway at another functions folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
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
    port: int
    process: asyncio.subprocess.Process

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass
class Workers:
    """The running workers of one gateway, by function name."""

    functions_dir: Path
    env: dict[str, str]
    deno: str
    log_dir: Path
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

    async def _boot(self, name: str) -> Worker:
        entry = self.functions_dir / name / "index.ts"
        port = _free_port()
        env = dict(
            self.env,
            TOKENMETER_WORKER_PORT=str(port),
            TOKENMETER_FUNCTION_ENTRY=entry.resolve().as_uri(),
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = await asyncio.create_subprocess_exec(
                self.deno,
                "run",
                "--allow-all",
                "--no-prompt",
                str(WORKER_SCRIPT),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=str(entry.parent),
            )
        worker = Worker(name, port, process)
        deadline = asyncio.get_running_loop().time() + BOOT_TIMEOUT_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if not worker.alive:
                raise _relay_error(
                    503, "BOOT_ERROR", f"Function {name} failed to boot (please check logs)"
                )
            if await _answers(port):
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _answers(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _stop(worker: Worker) -> None:
    if not worker.alive:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.process.terminate()
    try:
        await asyncio.wait_for(worker.process.wait(), timeout=3)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        await worker.process.wait()


def _deno_binary() -> str:
    import deno

    return str(deno.find_deno_bin())


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    config = app.state.config
    paths = config.paths
    functions_dir = Path(os.environ.get("TOKENMETER_FUNCTIONS_DIR") or paths.functions_dir)
    env = dict(os.environ)
    env.update(
        SUPABASE_URL=paths.api_url,
        SUPABASE_ANON_KEY=config.keys.anon_key,
        SUPABASE_SERVICE_ROLE_KEY=config.keys.service_role_key,
        SUPABASE_DB_URL=paths.db_url(),
        NO_COLOR="1",
    )
    app.state.functions = Workers(
        functions_dir.resolve(), env, _deno_binary(), paths.logs / "functions"
    )
    app.state.functions_http = httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=5.0),
    )
    try:
        yield
    finally:
        await app.state.functions_http.aclose()
        await app.state.functions.stop_all()


def _authorize(request: Request) -> None:
    """verify_jwt: a JWT signed with the project's secret must come with the request."""
    if tokens.bearer_token(request) is None:
        raise FunctionError(401, "UNAUTHORIZED_NO_AUTH_HEADER", "Missing authorization header")
    try:
        tokens.request_claims(request, request.app.state.config.keys.jwt_secret)
    except ApiError as exc:
        raise FunctionError(
            401, "UNAUTHORIZED_INVALID_JWT", f"Invalid JWT: {exc.message}"
        ) from None


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
    _authorize(request)
    body = await _body(request)
    worker = await workers.get(name)
    rest = request.path_params.get("rest", "")
    url = f"http://127.0.0.1:{worker.port}/{name}{'/' + rest if rest else ''}"
    if request.url.query:
        url += f"?{request.url.query}"
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
    client: httpx.AsyncClient = request.app.state.functions_http
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
