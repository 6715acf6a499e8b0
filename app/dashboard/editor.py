"""The dashboard's SQL editor: run a script on the local database as `postgres`, as the Supabase
dashboard's SQL editor does, and show the last statement's rows or the error and where it is.

Bounds, so that one query cannot take the dashboard (or the machine) down:
- the whole script runs in ONE transaction with `statement_timeout` (an error or a timeout rolls
  all of it back: nothing is half-written);
- at most MAX_ROWS rows are read from the last statement: a plain SELECT is read through a
  server-side cursor, so `select * from usage_records` on ten million rows sends 1,001 rows,
  not the table; other statements' results are read up to the cap;
- each cell is cut at MAX_CELL_CHARS, the script at MAX_SCRIPT_CHARS.

Statements are split with libpg_query (pglast: PostgreSQL's own parser) so that an error's
position, which the server gives relative to the statement it ran, is reported in the script as
typed (line and column). A script the parser rejects is sent whole, and the server's syntax
error carries the position in the script itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pglast
import psycopg
from pglast import ast
from psycopg import AsyncConnection

MAX_ROWS = 1000
MAX_CELL_CHARS = 10_000
MAX_SCRIPT_CHARS = 200_000
STATEMENT_TIMEOUT_MS = 15_000


@dataclass
class EditorError:
    sqlstate: str | None
    message: str
    detail: str | None = None
    hint: str | None = None
    position: int | None = None  # 1-based character offset in the script, as PostgreSQL counts
    line: int | None = None
    column: int | None = None
    excerpt: str | None = None  # the line of the script the position is on
    caret: str | None = None  # spaces and a ^ under the position


@dataclass
class EditorResult:
    columns: list[str] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    truncated: bool = False  # more rows than MAX_ROWS
    status: str | None = None  # the last statement's command tag, e.g. "INSERT 0 1"
    statements: int = 0
    elapsed_ms: float = 0.0
    error: EditorError | None = None


def cell(value: Any) -> str | None:
    """A value as the SQL editor shows it: NULL stays None; numerics as PostgreSQL prints them
    (scale kept, never a float); JSON as compact JSON; long values cut."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Decimal):
        text = str(value)
    elif isinstance(value, datetime | date):
        text = value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=str)
    elif isinstance(value, bytes | memoryview):
        text = "\\x" + bytes(value).hex()
    else:
        text = str(value)
    if len(text) > MAX_CELL_CHARS:
        text = text[:MAX_CELL_CHARS] + f"… ({len(text):,} characters)"
    return text


def _statements(script: str) -> list[tuple[int, str, bool]] | None:
    """(offset in the script, text, read through a cursor?) per statement; None when the
    parser rejects the script (the server then reports the syntax error itself)."""
    try:
        parsed = pglast.parse_sql(script)
        slices = pglast.split(script, with_parser=True, only_slices=True)
    except pglast.parser.ParseError:
        return None
    out = []
    for raw, piece in zip(parsed, slices, strict=True):
        stmt = raw.stmt
        # DECLARE CURSOR takes a plain query only: no SELECT INTO (it creates a table).
        cursor = isinstance(stmt, ast.SelectStmt) and stmt.intoClause is None
        out.append((piece.start, script[piece], cursor))
    return out


def locate(script: str, position: int | None) -> dict[str, Any]:
    """Line, column and the line's text for a 1-based character position in the script."""
    if not position or position < 1:
        return {}
    before = script[: position - 1]
    line = before.count("\n") + 1
    start = before.rfind("\n") + 1
    end = script.find("\n", start)
    text = script[start : end if end != -1 else len(script)]
    column = position - start
    return {
        "position": position,
        "line": line,
        "column": column,
        "excerpt": text,
        "caret": " " * (column - 1) + "^",
    }


def _error(exc: psycopg.Error, script: str, offset: int) -> EditorError:
    diag = exc.diag
    position = None
    if diag.statement_position:
        position = offset + int(diag.statement_position)
    error = EditorError(
        sqlstate=diag.sqlstate,
        message=diag.message_primary or str(exc).strip(),
        detail=diag.message_detail,
        hint=diag.message_hint,
    )
    if isinstance(exc, psycopg.errors.QueryCanceled):
        error.hint = (
            f"the editor's statement timeout is {STATEMENT_TIMEOUT_MS // 1000} s; "
            "nothing the script wrote was kept"
        )
    for name, value in locate(script, position).items():
        setattr(error, name, value)
    return error


async def run(conn: AsyncConnection[Any], script: str) -> EditorResult:
    """Run `script` in one transaction on `conn` (a connection as `postgres`). Never raises a
    database error: it is returned in `EditorResult.error`, and the transaction rolled back."""
    result = EditorResult()
    if not script.strip():
        result.error = EditorError(None, "the query is empty")
        return result
    if len(script) > MAX_SCRIPT_CHARS:
        result.error = EditorError(
            None,
            f"the script is {len(script):,} characters; the editor runs up to {MAX_SCRIPT_CHARS:,}",
        )
        return result
    statements = _statements(script)
    began = time.perf_counter()
    offset = 0
    try:
        async with conn.transaction():
            await conn.execute(f"set local statement_timeout = {STATEMENT_TIMEOUT_MS}")
            if statements is None:
                # Unparseable: let the server say why, positioned in the script as sent.
                await conn.execute(script, prepare=False)
                statements = []
            for index, (offset, text, as_cursor) in enumerate(statements):
                last = index == len(statements) - 1
                if last and as_cursor:
                    offset -= len(_DECLARE)  # the server counts the DECLARE prefix too
                    await _read_cursor(conn, text, result)
                else:
                    async with conn.cursor() as cur:
                        await cur.execute(text, prepare=False)
                        if last:
                            await _read(cur, result)
                result.statements += 1
    except psycopg.Error as exc:
        result.columns, result.rows, result.truncated, result.status = [], [], False, None
        result.error = _error(exc, script, offset)
    result.elapsed_ms = (time.perf_counter() - began) * 1000
    return result


async def _read(cur: psycopg.AsyncCursor[Any], result: EditorResult) -> None:
    result.status = cur.statusmessage
    if cur.description is None:
        return
    result.columns = [column.name for column in cur.description]
    fetched = await cur.fetchmany(MAX_ROWS + 1)
    result.truncated = len(fetched) > MAX_ROWS
    result.rows = [[cell(v) for v in row] for row in fetched[:MAX_ROWS]]


_CURSOR = "dashboard_editor"
# Declared by hand rather than through a psycopg named cursor, so that the prefix an error's
# position counts is known: the position is mapped back into the script by subtracting it.
_DECLARE = f"declare {_CURSOR} no scroll cursor for "


async def _read_cursor(conn: AsyncConnection[Any], text: str, result: EditorResult) -> None:
    """A SELECT through a server-side cursor: the server produces MAX_ROWS + 1 rows, not all."""
    async with conn.cursor() as cur:
        await cur.execute(_DECLARE + text, prepare=False)
        await cur.execute(f"fetch forward {MAX_ROWS + 1} from {_CURSOR}", prepare=False)
        fetched = await cur.fetchall()
        result.columns = [column.name for column in cur.description or []]
        await cur.execute(f"close {_CURSOR}", prepare=False)
    result.truncated = len(fetched) > MAX_ROWS
    result.rows = [[cell(v) for v in row] for row in fetched[:MAX_ROWS]]
    result.status = f"SELECT {len(result.rows)}" + ("+" if result.truncated else "")


@dataclass(frozen=True)
class Snippet:
    slug: str
    title: str
    sql: str
    note: str


SNIPPETS = (
    Snippet(
        "consolidation-report",
        "Pricing consolidation report",
        "select jsonb_pretty(public.pricing_consolidation_report());",
        "docs/pricing.md, Consolidation step 1: every check, passed or not.",
    ),
    Snippet(
        "consolidation-failing",
        "Consolidation: failing checks",
        """select c->>'name' as check_name, c->>'severity' as severity,
       (c->>'count')::int as count, c->'items' as items
from jsonb_array_elements(public.pricing_consolidation_report()->'checks') c
where not (c->>'passed')::boolean
order by severity, check_name;""",
        "Only what the report flags; `passed` is true when no error check is listed here.",
    ),
    Snippet(
        "consolidation-populate",
        "Consolidation: copy legacy prices",
        "select public.populate_model_pricing();",
        "docs/pricing.md, Consolidation step 2 (idempotent, audited; writes).",
    ),
    Snippet(
        "balance-audit",
        "Balance audit",
        "select * from public.balance_audit();",
        "Users whose balance differs from their ledger: always empty.",
    ),
    Snippet(
        "models-without-price",
        "Models without a chargeable price",
        """select provider_id, model_id, pricing_classification, problem
from public.models_pricing_status
where problem is not null
order by model_id, provider_id
limit 200;""",
        "Charging these is refused (never $0).",
    ),
    Snippet(
        "spend-by-model",
        "Spend per model, last 30 days",
        "select model, currency, requests, cost\n"
        "from public.usage_report(now() - interval '30 days', null, null, null, 'model');",
        "usage_report(), the function behind `tokenmeter usage report`.",
    ),
    Snippet(
        "lowest-balances",
        "Lowest balances",
        """select b.user_id, u.email, b.balance, b.currency
from public.user_balances b left join auth.users u on u.id = b.user_id
order by b.balance
limit 20;""",
        "Balances may go negative when usage is recorded without a hold.",
    ),
)


def snippet(slug: str | None) -> Snippet | None:
    return next((s for s in SNIPPETS if s.slug == slug), None)
