"""One request = one transaction, set up the way PostgREST sets it up.

The settings (role, claims, request.*, search_path, read-only) are one SELECT of set_config()
calls, and pipeline mode sends BEGIN, that SELECT, the request's query and COMMIT in a single
round trip. Writes that must be checked before committing (`.single()`) sync first, then commit
or roll back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from app.stack.gateway.errors import ApiError, from_database_error

_SETTINGS = (
    "select set_config('search_path', 'public, extensions', true), "
    "set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
    "set_config('request.method', %s, true), set_config('request.path', %s, true), "
    "set_config('request.headers', %s, true), set_config('request.cookies', %s, true)"
)
# Switching a transaction to read-only is allowed at any point (only the reverse is not).
_SETTINGS_READ_ONLY = _SETTINGS + ", set_config('transaction_read_only', 'on', true)"


@dataclass(frozen=True)
class RequestContext:
    role: str
    claims: dict[str, Any]
    method: str
    path: str
    headers: dict[str, str]
    cookies: dict[str, str]

    def settings_params(self) -> tuple[str, ...]:
        return (
            self.role, json.dumps(self.claims, separators=(",", ":")), self.method, self.path,
            json.dumps(self.headers, separators=(",", ":")),
            json.dumps(self.cookies, separators=(",", ":")),
        )


Check = Callable[[tuple[Any, ...]], None]


async def run(
    pool: AsyncConnectionPool,
    ctx: RequestContext,
    query: str | sql.Composable,
    params: list[Any] | tuple[Any, ...],
    *,
    read_only: bool,
    check: Check | None = None,
) -> tuple[Any, ...]:
    """Run `query` in the request's transaction and return its single row.

    `check(row)` runs before COMMIT; if it raises (an ApiError), the transaction rolls back.
    Raises ApiError for database errors (SQLSTATE mapped as PostgREST does)."""
    settings = _SETTINGS_READ_ONLY if read_only else _SETTINGS
    async with pool.connection() as conn:
        try:
            async with conn.pipeline() as pipeline:
                await conn.execute(settings, ctx.settings_params())
                cur = await conn.execute(query, params)
                if check is None or read_only:
                    await conn.commit()
                else:
                    await pipeline.sync()
                row = await cur.fetchone()
            if row is None:
                raise ApiError(500, "PGRST000", "query returned no rows")
            if check is not None:
                try:
                    check(row)
                except ApiError:
                    await conn.rollback()
                    raise
            if not read_only and check is not None:
                await conn.commit()
            return row
        except psycopg.Error as exc:
            await _rollback(conn)
            raise from_database_error(exc, ctx.role) from None
        except BaseException:
            await _rollback(conn)
            raise


async def _rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.rollback()
    except psycopg.Error:
        pass  # the pool discards a broken connection on return
