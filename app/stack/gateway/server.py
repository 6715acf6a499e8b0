"""The API gateway: one async process that speaks Supabase's HTTP APIs on the CLI's port.

    /rest/v1       PostgREST-compatible (rest.py), pooled connections as `authenticator`
    /auth/v1       GoTrue-compatible (auth/), connections as `supabase_auth_admin`
    /functions/v1  edge functions under Deno (functions.py)

Run with `python -m app.stack.gateway`; `tokenmeter stack start` does that for you.

The HTTP server is uvicorn with httptools, which on its own accepts any header size and count
and waits forever for headers. LimitedHttpToolsProtocol adds the limits a production server
(nginx, Kong) has, answered before the request reaches the app; docs/limits.md lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.stack import keys as stack_keys
from app.stack.gateway import auth, functions, rest
from app.stack.gateway.errors import ApiError
from app.stack.gateway.forwarded import ForwardedFor
from app.stack.paths import StackPaths


@dataclass(frozen=True)
class GatewayConfig:
    paths: StackPaths
    keys: stack_keys.StackKeys
    jwt_expiry_seconds: int = 3600
    max_body_bytes: int = 1024 * 1024
    pool_size: int = 10

    @classmethod
    def from_env(cls) -> GatewayConfig:
        paths = StackPaths.from_env()
        return cls(
            paths=paths,
            keys=stack_keys.load_or_create(paths),
            jwt_expiry_seconds=int(os.environ.get("TOKENMETER_JWT_EXPIRY", 3600)),
            max_body_bytes=int(os.environ.get("TOKENMETER_MAX_BODY_BYTES", 1024 * 1024)),
            pool_size=int(os.environ.get("TOKENMETER_POOL_SIZE", 10)),
        )

    def dsn(self, user: str) -> str:
        return (
            f"host=127.0.0.1 port={self.paths.db_port} dbname=postgres user={user} "
            "password=postgres application_name=tokenmeter-gateway"
        )


async def health(request: Request) -> JSONResponse:
    async with request.app.state.rest_pool.connection() as conn:
        await conn.execute("select 1")
    return JSONResponse({"status": "ok"})


def create_app(config: GatewayConfig) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.config = config
        app.state.rest_pool = AsyncConnectionPool(
            config.dsn("authenticator"),
            min_size=2,
            max_size=config.pool_size,
            open=False,
        )
        app.state.auth_pool = AsyncConnectionPool(
            config.dsn("supabase_auth_admin"),
            min_size=1,
            max_size=4,
            open=False,
        )
        await app.state.rest_pool.open(wait=True)
        await app.state.auth_pool.open(wait=True)
        async with rest.lifespan(app), functions.lifespan(app):
            yield
        await app.state.auth_pool.close()
        await app.state.rest_pool.close()

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    return Starlette(
        routes=[
            Route("/health", health),
            Mount("/rest/v1", routes=rest.routes()),
            Mount("/auth/v1", routes=auth.routes()),
            Mount("/functions/v1", routes=functions.routes()),
        ],
        lifespan=lifespan,
        exception_handlers={ApiError: api_error},
        # Outermost: every route sees the client's address as Supabase's gateway passes it.
        middleware=[Middleware(ForwardedFor)],
    )


# The request target: nginx, and so Kong in front of Supabase, answers 414 past its 8 KiB
# header buffer; a filter longer than that does not work on a hosted project either.
MAX_URL_BYTES = 8 * 1024
# The request line and all header lines together (nginx: 4 buffers of 8 KiB).
MAX_HEADER_BYTES = 32 * 1024
# Header lines per request (Apache's LimitRequestFields); clients send about ten.
MAX_HEADERS = 100
# From a request's first byte to its last header line (nginx's client_header_timeout is 60 s;
# a slowloris client holds a connection for this long at most).
HEADER_TIMEOUT_SECONDS = 10.0
# After refusing a request, read and drop what the client still sends for this long before
# closing, so it gets the answer instead of a connection reset (nginx's lingering close).
_LINGER_SECONDS = 2.0


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with caps on the request head: 414 for a long URL, 431 for
    too many or too large headers, 408 for headers that take too long to arrive.

    httptools calls back once per completed URL piece and header, so a single endless header is
    caught by counting the bytes received while the head is incomplete."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for (the rest of) a request line and headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: _Refusal | None = None
        self._refused = False
        self._heads_completed = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: drop the rest of the request
        if self._in_head and self._head_timer is None:
            self._arm_head_timer()
        was_in_head, heads_before = self._in_head, self._heads_completed
        super().data_received(data)
        # Counted only while a head is incomplete before and after the read: a read that ends
        # a head or a body (a large POST's last read sets _in_head again) may hold body bytes.
        if (
            was_in_head
            and self._in_head
            and not self._refused
            and self._heads_completed == heads_before
        ):
            # Only head bytes arrive before on_headers_complete (pipelined leftovers of the
            # previous request aside), so this is the head's size, to within one read.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse(_Refusal(431, "Request header fields too large"))

    # httptools callbacks; a _Refusal raised here reaches send_400_response (below) through
    # uvicorn's handling of parser errors.
    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refusal = _Refusal(414, "URI too long")
            raise self._refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self.headers) > MAX_HEADERS:
            self._refusal = _Refusal(431, "Too many request header fields")
            raise self._refusal

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads_completed += 1
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def send_400_response(self, msg: str) -> None:
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            self._refuse(refusal)
        else:
            super().send_400_response(msg)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(_Refusal(408, "Request header not received in time"))
        else:
            self.transport.close()  # an idle connection that never sent a request

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer `refusal` and close, after a short lingering read of what is still coming."""
        self._refused = True
        self._disarm_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined request is still being answered: just close
            return
        body = json.dumps({"message": refusal.message}).encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[refusal.status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)


def run() -> None:
    import uvicorn

    config = GatewayConfig.from_env()
    uvicorn.run(
        create_app(config),
        host="127.0.0.1",
        port=config.paths.api_port,
        log_level="warning",
        loop="uvloop",
        http=LimitedHttpToolsProtocol,
        access_log=False,
        # uvicorn would otherwise take the client's address from X-Forwarded-For whenever the
        # peer is 127.0.0.1 (its default trusted proxy), that is for every local caller: the
        # gateway is the edge, so the socket's peer is the address (forwarded.py, the auth
        # rate limits).
        proxy_headers=False,
    )
