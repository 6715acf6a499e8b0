"""One request = one transaction, set up the way PostgREST sets it up.

BEGIN [READ ONLY], one SELECT of set_config() calls (role, claims, request.*, search_path), the
request's query and COMMIT travel as ONE simple-protocol message: a single round trip. Values
are bound client-side by psycopg's ClientCursor (escaped literals of type `unknown`, so
PostgreSQL still infers each value's type from its column). Writes that must be checked before
committing (`.single()`) leave out the COMMIT and decide after reading the row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncClientCursor, sql
from psycopg_pool import AsyncConnectionPool

from app.stack.gateway.errors import ApiError, from_database_error

_SETTINGS = (
    "select set_config('search_path', 'public, extensions', true), "
    "set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
    "set_config('request.method', %s, true), set_config('request.path', %s, true), "
    "set_config('request.headers', %s, true), set_config('request.cookies', %s, true)"
)


@dataclass(frozen=True)
class RequestContext:
    role: str
    claims: dict[str, Any]
    method: str
    path: str
    headers: dict[str, str]
    cookies: dict[str, str]
    role_settings: tuple[tuple[str, str], ...] = ()

    def settings_sql(self) -> str:
        return _SETTINGS + ", set_config(%s, %s, true)" * len(self.role_settings)

    def settings_params(self) -> tuple[str, ...]:
        return (
            self.role,
            json.dumps(self.claims, separators=(",", ":")),
            self.method,
            self.path,
            json.dumps(self.headers, separators=(",", ":")),
            json.dumps(self.cookies, separators=(",", ":")),
            *(item for pair in self.role_settings for item in pair),
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
    rollback: bool = False,
) -> tuple[Any, ...]:
    """Run `query` in the request's transaction and return its single row.

    `check(row)` runs before COMMIT; if it raises (an ApiError), the transaction rolls back.
    `rollback`: answer as if committed, then roll back (`Prefer: tx=rollback`, db-tx-end);
    deferred constraints are checked first, as PostgREST does, so their errors still show.
    Raises ApiError for database errors (SQLSTATE mapped as PostgREST does)."""
    text = query if isinstance(query, str) else query.as_string(None)
    commit_now = (check is None or read_only) and not rollback
    script = "".join(
        (
            "begin read only;" if read_only else "begin;",
            ctx.settings_sql(),
            ";",
            text,
            ";commit" if commit_now else "",
        )
    )
    async with pool.connection() as conn:
        if not conn.autocommit:
            # The script carries its own BEGIN/COMMIT; without this psycopg adds another BEGIN.
            await conn.set_autocommit(True)
        try:
            cur = AsyncClientCursor(conn)
            await cur.execute(script, (*ctx.settings_params(), *params))
            cur.nextset()  # past BEGIN
            cur.nextset()  # past the settings
            row = await cur.fetchone()
            if row is None:
                raise ApiError(500, "PGRST000", "query returned no rows")
            if check is not None:
                check(row)  # an ApiError here rolls back below
            if rollback:
                if not read_only:
                    await conn.execute("set constraints all immediate")
                await conn.execute("rollback")
            elif not commit_now:
                await conn.execute("commit")
            return row
        except psycopg.Error as exc:
            await _rollback(conn)
            if exc.diag.sqlstate is None and isinstance(exc, psycopg.DataError):
                # Refused by psycopg before sending (e.g. a NUL byte in a value): the
                # client's input is at fault, as PostgreSQL's 22021 says, not the server.
                raise ApiError(400, "22021", str(exc)) from None
            raise from_database_error(exc, ctx.role) from None
        except BaseException:
            await _rollback(conn)
            raise


async def explain(
    pool: AsyncConnectionPool,
    ctx: RequestContext,
    query: str,
    params: list[Any] | tuple[Any, ...],
    *,
    read_only: bool,
) -> list[tuple[Any, ...]]:
    """Every row of `query` (an EXPLAIN) in the request's transaction, then ROLLBACK: an
    EXPLAIN ANALYZE of a write runs it, and PostgREST discards its effects.

    Raises ApiError for database errors."""
    script = "".join(
        ("begin read only;" if read_only else "begin;", ctx.settings_sql(), ";", query)
    )
    async with pool.connection() as conn:
        if not conn.autocommit:
            await conn.set_autocommit(True)
        try:
            cur = AsyncClientCursor(conn)
            await cur.execute(script, (*ctx.settings_params(), *params))
            cur.nextset()
            cur.nextset()
            return await cur.fetchall()
        except psycopg.Error as exc:
            raise from_database_error(exc, ctx.role) from None
        finally:
            await _rollback(conn)


async def _rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        await conn.execute("rollback")
    except psycopg.Error:
        pass  # the pool discards a broken connection on return
