"""The API gateway: one async process that speaks Supabase's HTTP APIs on the CLI's port.

    /rest/v1       PostgREST-compatible (rest.py), pooled connections as `authenticator`
    /auth/v1       GoTrue-compatible (auth.py), connections as `supabase_auth_admin`
    /functions/v1  edge functions under Deno (functions.py)

Run with `python -m app.stack.gateway`; `tokenmeter stack start` does that for you.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from app.stack import keys as stack_keys
from app.stack.gateway import auth, functions, rest
from app.stack.gateway.errors import ApiError
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


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PGRST413", "Payload too large", f"The request body exceeds {limit} bytes")


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
    )


def run() -> None:
    import uvicorn

    config = GatewayConfig.from_env()
    uvicorn.run(
        create_app(config),
        host="127.0.0.1",
        port=config.paths.api_port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )
