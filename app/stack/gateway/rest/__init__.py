"""PostgREST-compatible /rest/v1: tables, views and functions of the exposed schemas.

config.py        the [api] settings of config.toml (exposed schemas, max rows)
schema_cache.py  what exists (pg_catalog), reloaded on NOTIFY pgrst
parse.py         the URL grammar (select, filters, logic trees, order)
build.py         SQL from parsed, cache-checked parts
transaction.py   one transaction per request, PostgREST's settings, pipelined
handlers.py      the HTTP endpoints
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from app.stack.gateway.rest.config import read_rest_settings
from app.stack.gateway.rest.handlers import (
    RestState,
    invalid_path,
    rpc_endpoint,
    table_endpoint,
)
from app.stack.gateway.rest.schema_cache import SchemaCacheHolder

__all__ = ["lifespan", "routes"]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Load the schema cache, keep it fresh while the app runs."""
    config = app.state.config
    settings = read_rest_settings(config.paths.root / "supabase" / "config.toml")
    holder = SchemaCacheHolder(app.state.rest_pool, config.dsn("authenticator"), settings.schemas)
    state = RestState(
        holder,
        app.state.rest_pool,
        config.keys.jwt_secret,
        config.max_body_bytes,
        (config.keys.anon_key, config.keys.service_role_key),
        settings,
    )
    holder.on_reload(state.clear_plans)
    app.state.rest = state
    async with holder.running():
        yield


def routes() -> list[BaseRoute]:
    return [
        Route("/rpc/{name}", rpc_endpoint, methods=["GET", "HEAD", "POST"]),
        Route("/{name}", table_endpoint, methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT"]),
        Route(
            "/{path:path}", invalid_path, methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT"]
        ),
    ]
