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

The request body is streamed to the worker as it arrives, never held whole here: the function
decides how large a body it takes and answers a larger one itself (hosted Supabase documents no
request size limit for functions; the openai function answers 413 in OpenAI's shape). The
gateway still caps a function body at TOKENMETER_FUNCTIONS_MAX_BODY_BYTES (256 MiB, a
function's memory limit) with its own 413. When the function answers before reading the whole
body, the rest is read and dropped by the HTTP server, so the client still gets the answer.
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

import httptools
from dotenv import dotenv_values
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

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


# Request headers never passed to a worker (Expect: uvicorn answers 100-continue itself), and
# answer headers never passed back (uvicorn writes its own Date and Server).
_HOP_BY_HOP_BYTES = frozenset(k.encode() for k in _HOP_BY_HOP) | {b"expect"}
_DROPPED_ANSWER_HEADERS = frozenset(k.encode() for k in _HOP_BY_HOP - {"content-length"}) | {
    b"date",
    b"server",
}
_PREFIX = b"/functions/v1/"
_READ_SIZE = 64 * 1024
_IDLE_CONNECTIONS = 64  # per worker


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
    # Kept-alive connections to the worker's socket, free for the next request.
    idle: list[_Connection] = field(default_factory=list)

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
    # A function's request body is streamed to it, never held whole by the gateway; past this
    # the gateway answers 413 itself (the function's own limit, below it, answers first).
    max_body_bytes: int = 256 * 1024 * 1024
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
        worker = Worker(name, sock, process)
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
            (
                paths.api_url,
                config.keys.anon_key,
                config.keys.service_role_key,
                # What functions connect to, e.g. a transaction-mode pooler in front of the
                # database, as Supabase advises for edge functions; the database by default.
                os.environ.get("TOKENMETER_FUNCTIONS_DB_URL") or paths.db_url(),
            ),
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
        int(os.environ.get("TOKENMETER_FUNCTIONS_MAX_BODY_BYTES", 256 * 1024 * 1024)),
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


class _Answer:
    """httptools callbacks for one response of a worker: its head, then body pieces as they come."""

    __slots__ = ("status", "headers", "head_done", "body", "done")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.body: list[bytes] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class _Connection:
    """One keep-alive HTTP/1.1 connection to a worker's socket."""

    __slots__ = ("reader", "writer", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.transport.abort()


async def _connect(worker: Worker) -> _Connection:
    reader, writer = await asyncio.open_unix_connection(str(worker.socket), limit=_READ_SIZE)
    return _Connection(reader, writer)


async def _acquire(worker: Worker) -> _Connection:
    while worker.idle:
        conn = worker.idle.pop()
        if conn.usable:
            conn.reused = True
            return conn
        conn.close()
    return await _connect(worker)


def _release(worker: Worker, conn: _Connection) -> None:
    if conn.usable and worker.alive and len(worker.idle) < _IDLE_CONNECTIONS:
        worker.idle.append(conn)
    else:
        conn.close()


async def _ready(worker: Worker) -> bool:
    """deno_worker.ts answers `GET /` with 204 once the function has called Deno.serve."""
    if not worker.socket.exists():
        return False
    try:
        async with asyncio.timeout(1.0):
            conn = await _connect(worker)
            try:
                conn.writer.write(b"GET / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n")
                answer = _Answer()
                parser = httptools.HttpResponseParser(answer)
                while not answer.head_done:
                    data = await conn.reader.read(_READ_SIZE)
                    if not data:
                        return False
                    parser.feed_data(data)
                return parser.get_status_code() == 204
            finally:
                conn.close()
    except (OSError, TimeoutError, httptools.HttpParserError):
        return False


async def _stop(worker: Worker) -> None:
    for conn in worker.idle:
        conn.close()
    worker.idle.clear()
    if worker.alive:
        with contextlib.suppress(ProcessLookupError):
            worker.process.terminate()
        try:
            await asyncio.wait_for(worker.process.wait(), timeout=3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
    worker.socket.unlink(missing_ok=True)


class _Exchange:
    """What the request side (body pump, disconnect watch) tells the answer side."""

    __slots__ = ("body_sent", "client_gone", "too_large", "finished")

    def __init__(self) -> None:
        self.body_sent = False
        self.client_gone = False
        self.too_large = False
        self.finished = False


def _frame(chunk: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked and chunk else chunk


async def _feed_then_watch(
    receive: Receive, conn: _Connection, state: _Exchange, chunked: bool, size: int, limit: int
) -> None:
    """The rest of the client's body to the worker as it arrives (with the socket's backpressure,
    never buffered whole), then waiting for the client to go away: closing the worker connection
    is how the function learns of it (its request's signal aborts)."""
    while not state.body_sent:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            state.too_large = True
            conn.close()
            return
        more = message.get("more_body", False)
        if chunk or not more:
            conn.writer.write(
                _frame(chunk, chunked) + (b"0\r\n\r\n" if chunked and not more else b"")
            )
        if not more:
            state.body_sent = True
        await conn.writer.drain()
    else:
        await receive()  # returns once the client is gone or the answer is complete
    if not state.finished:
        state.client_gone = True
        conn.close()


class _Relay:
    """/functions/v1/NAME[/...] to NAME's worker: the request's head and body relayed as they
    arrive, the answer relayed back as the worker writes it (an SSE stream event by event).

    Raw ASGI over asyncio streams and httptools' response parser, with keep-alive connections
    per worker: no request or response objects and no HTTP client library on the path (with
    Starlette's StreamingResponse and httpx the relay took ~1.5 ms of the gateway's CPU per
    call; docs/benchmarks.md, "The openai edge function")."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path_params"]["name"]
        workers: Workers = scope["app"].state.functions
        if not _NAME.match(name) or not (workers.functions_dir / name / "index.ts").is_file():
            raise FunctionError(404, "NOT_FOUND", "Requested function was not found")
        if _verify_jwt(workers.functions_dir, name):
            _authorize(Request(scope))
        head, chunked = _request_head(scope, name, workers.max_body_bytes)
        worker = await workers.get(name)
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        first = message.get("body", b"")
        more = message.get("more_body", False)
        if len(first) > workers.max_body_bytes:
            raise _too_large(workers.max_body_bytes)
        opening = head + _frame(first, chunked) + (b"0\r\n\r\n" if chunked and not more else b"")
        for attempt in (1, 2):
            conn = await self._open(workers, worker, name)
            state = _Exchange()
            state.body_sent = not more
            conn.writer.write(opening)
            watch = asyncio.get_running_loop().create_task(
                _feed_then_watch(receive, conn, state, chunked, len(first), workers.max_body_bytes)
            )
            try:
                answer, parser = await self._head(workers, worker, name, conn, state, scope)
            except _StaleConnection:
                watch.cancel()
                conn.close()
                if attempt == 1:
                    continue  # a kept-alive connection the worker had closed: once more, fresh
                raise _relay_error(502, "WORKER_ERROR", f"Function {name} did not answer") from None
            except BaseException:
                watch.cancel()
                conn.close()
                raise
            if answer is None:
                watch.cancel()
                conn.close()
                return  # the client went away before the function answered
            try:
                await self._answer(scope, send, conn, state, answer, parser, watch)
            except BaseException:
                conn.close()
                raise
            if answer.done and state.body_sent and parser.should_keep_alive():
                _release(worker, conn)
            else:
                conn.close()
            return

    async def _open(self, workers: Workers, worker: Worker, name: str) -> _Connection:
        try:
            return await _acquire(worker)
        except OSError:
            await workers.forget(name, worker)
            raise _relay_error(
                502, "WORKER_ERROR", f"Function {name} exited unexpectedly (please check logs)"
            ) from None

    async def _head(
        self,
        workers: Workers,
        worker: Worker,
        name: str,
        conn: _Connection,
        state: _Exchange,
        scope: Scope,
    ) -> tuple[_Answer | None, httptools.HttpResponseParser]:
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        received = False
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                while not answer.head_done:
                    data = await conn.reader.read(_READ_SIZE)
                    if not data:
                        raise ConnectionResetError
                    received = True
                    parser.feed_data(data)
        except TimeoutError:
            raise _relay_error(504, "TIMEOUT", f"Function {name} did not answer in time") from None
        except (OSError, httptools.HttpParserError):
            if state.client_gone:
                return None, parser
            if state.too_large:
                raise _too_large(workers.max_body_bytes) from None
            await asyncio.sleep(0.05)  # let a dying worker's exit status arrive
            if not worker.alive:
                await workers.forget(name, worker)
                raise _relay_error(
                    502, "WORKER_ERROR", f"Function {name} exited unexpectedly (please check logs)"
                ) from None
            if conn.reused and not received and state.body_sent:
                # The worker closed a kept-alive connection before reading this request.
                raise _StaleConnection from None
            raise _relay_error(502, "WORKER_ERROR", f"Function {name} did not answer") from None
        if scope["method"] == "HEAD":
            answer.done = True  # no body follows, whatever Content-Length says
        return answer, parser

    async def _answer(
        self,
        scope: Scope,
        send: Send,
        conn: _Connection,
        state: _Exchange,
        answer: _Answer,
        parser: httptools.HttpResponseParser,
        watch: asyncio.Task[None],
    ) -> None:
        # Raw bytes pass through unchanged, so Content-Length and Content-Encoding stay valid;
        # repeated headers (Set-Cookie) are kept as they came.
        headers = [(k, v) for k, v in answer.headers if k not in _DROPPED_ANSWER_HEADERS]
        await send(
            {"type": "http.response.start", "status": parser.get_status_code(), "headers": headers}
        )
        while not answer.done:
            if answer.body:
                body, answer.body = b"".join(answer.body), []
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if state.client_gone:
                return
            data = await conn.reader.read(_READ_SIZE)
            if not data:
                if state.client_gone:
                    return
                raise RuntimeError(f"function worker closed its answer to {scope['path']} early")
            parser.feed_data(data)
        state.finished = True
        watch.cancel()
        body, answer.body = b"".join(answer.body), []
        await send({"type": "http.response.body", "body": body, "more_body": False})


class _StaleConnection(Exception):
    pass


def _too_large(limit: int) -> FunctionError:
    return FunctionError(413, "PAYLOAD_TOO_LARGE", f"Request body exceeds {limit} bytes")


def _request_head(scope: Scope, name: str, limit: int) -> tuple[bytes, bool]:
    """The request line and headers for the worker, and whether the body goes chunked. The
    path stays percent-encoded as the client sent it; `/functions/v1` is dropped (the function
    sees `/NAME/...`, as on Supabase)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    target = raw[len(_PREFIX) - 1 :] if raw.startswith(_PREFIX) else b"/" + name.encode()
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    lines = [scope["method"].encode() + b" " + target + b" HTTP/1.1\r\nhost: localhost\r\n"]
    chunked = False
    for key, value in scope["headers"]:
        if key == b"content-length":
            if int(value) > limit:
                raise _too_large(limit)
            lines.append(b"content-length: " + value + b"\r\n")
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key not in _HOP_BY_HOP_BYTES:
            lines.append(key + b": " + value + b"\r\n")
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), chunked


def routes() -> list[BaseRoute]:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    relay = _Relay()
    return [
        Route("/{name}", relay, methods=methods),
        Route("/{name}/{rest:path}", relay, methods=methods),
    ]
