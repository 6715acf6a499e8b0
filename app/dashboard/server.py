"""The dashboard's web app: Starlette on uvicorn (the gateway's pair), pages rendered by Jinja2.

Who may see it: the server binds 127.0.0.1 only, answers only requests whose Host is
127.0.0.1:<port> or localhost:<port> (a DNS-rebinding page cannot reach it), and every page but
/health and /login needs a session, opened by signing in with the stack's service_role key
(`tokenmeter stack status` prints it), or the key itself in an `apikey` or
`Authorization: Bearer` header for scripts. The session cookie is HttpOnly and SameSite=Strict,
and a POST from another origin is refused, so no other site can make a signed-in browser run
SQL. Sessions live in the process: restarting the dashboard signs everyone out.

Pages read as `postgres` (the role migrations run as: it owns the tables, so RLS does not hide
rows) in read-only transactions with a statement timeout; the SQL editor has a pool of its own,
whose connections are reset (DISCARD ALL) after each use, so a SET in the editor never leaks
into a page or the next script.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app.dashboard import charts, data, editor
from app.report import exact
from app.stack import keys as stack_keys
from app.stack.paths import StackPaths

HERE = Path(__file__).resolve().parent
COOKIE = "tokenmeter_dashboard"
PAGE_TIMEOUT_MS = 5_000
OPEN_PATHS = ("/health", "/login", "/static/")

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _money(value: Any, currency: str | None = None) -> str:
    if value is None:
        return "—"
    text = exact(Decimal(value))
    return f"{text} {currency}" if currency else text


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value.tzinfo else str(value)
    return str(value)


def _count(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


templates.filters.update(money=_money, when=_when, count=_count, cell=editor.cell)


class Settings:
    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.port = paths.studio_port
        self.service_key = stack_keys.load_or_create(paths).service_role_key
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    def dsn(self, application: str) -> str:
        return (
            f"host=127.0.0.1 port={self.paths.db_port} dbname=postgres user=postgres "
            f"password=postgres application_name={application} connect_timeout=5"
        )


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    body = templates.get_template(template).render(
        request=request,
        path=request.url.path,
        port=settings.port,
        api_url=settings.paths.api_url,
        **context,
    )
    return HTMLResponse(body, status_code=status_code)


def problem(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    return render(request, "problem.html", status_code, title=title, message=message)


@contextlib.asynccontextmanager
async def page_transaction(request: Request) -> AsyncIterator[AsyncConnection[Any]]:
    """A read-only transaction with the page's statement timeout."""
    async with request.app.state.pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("set transaction read only")
            await conn.execute(f"set local statement_timeout = {PAGE_TIMEOUT_MS}")
            yield conn


# ── Access ────────────────────────────────────────────────────────────────────────────────────


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("apikey")
    auth = request.headers.get("authorization", "")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key


def signed_in(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    key = _presented_key(request)
    if key is not None:
        return hmac.compare_digest(key.encode(), settings.service_key.encode())
    token = request.cookies.get(COOKIE)
    return token is not None and token in request.app.state.sessions


class Guard(BaseHTTPMiddleware):
    """Host check, same-origin POSTs, and a session (or the service key) for every page."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        settings: Settings = request.app.state.settings
        if request.headers.get("host") not in settings.hosts:
            return JSONResponse(
                {"error": "unexpected_host", "message": "open the dashboard on 127.0.0.1"},
                status_code=400,
            )
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and origin not in settings.origins:
            return JSONResponse(
                {"error": "cross_origin", "message": "cross-origin requests are refused"},
                status_code=403,
            )
        if not request.url.path.startswith(OPEN_PATHS) and not signed_in(request):
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)
            return JSONResponse(
                {"error": "unauthorized", "message": "sign in with the service_role key"},
                status_code=401,
            )
        return await call_next(request)


# A form body larger than this is refused: the editor's script limit, in UTF-8 and URL-encoded.
MAX_FORM_BYTES = editor.MAX_SCRIPT_CHARS * 12 + 4096


class FormTooLarge(Exception):
    pass


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (what the pages' forms post), read without a
    multipart parser: the dashboard posts no files."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/")


def _safe_next(target: str | None) -> str:
    """Only a path on this dashboard: never an absolute URL or a scheme-relative one."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def login(request: Request) -> Response:
    if request.method == "GET":
        return render(request, "login.html", next=_safe_next(request.query_params.get("next")))
    form = await read_form(request)
    key = form.get("key", "").strip()
    target = _safe_next(form.get("next", "/"))
    settings: Settings = request.app.state.settings
    if not hmac.compare_digest(key.encode(), settings.service_key.encode()):
        return render(
            request,
            "login.html",
            status_code=401,
            next=target,
            error="That is not this stack's service_role key.",
        )
    token = secrets.token_urlsafe(32)
    request.app.state.sessions.add(token)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


async def logout(request: Request) -> Response:
    request.app.state.sessions.discard(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ── Pages ─────────────────────────────────────────────────────────────────────────────────────


async def overview(request: Request) -> Response:
    raw = request.query_params.get("low")
    try:
        threshold = Decimal(raw) if raw else data.LOW_BALANCE
        if not threshold.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        return problem(request, 400, "Bad threshold", f"low must be a number, got {raw!r}")
    window = data.Window.now()
    async with page_transaction(request) as conn:
        spend = await data.section(conn, lambda: data.spend(conn, window))
        low = await data.section(conn, lambda: data.low_balances(conn, threshold))
        errors = await data.section(conn, lambda: data.recent_errors(conn))
    chart = None
    totals: dict[str, dict[str, Any]] = {}
    source = None
    if spend.value is not None:
        totals = spend.value.totals()
        source = spend.value.source
        if totals:
            # The chart is of the currency with the most spend (one axis cannot add USD to
            # EUR); the tiles list every currency.
            currency = max(totals, key=lambda c: (totals[c]["d30"], c))
            chart = await run_in_threadpool(
                charts.spend_svg, window.days(), spend.value.by_model(currency), currency
            )
    return render(
        request,
        "overview.html",
        window=window,
        days=data.RANGE_DAYS,
        spend=spend,
        totals=totals,
        source=source,
        chart=chart,
        low=low,
        threshold=threshold,
        errors=errors,
        recent_window=data.RECENT_WINDOW,
    )


async def users(request: Request) -> Response:
    search = request.query_params.get("q", "").strip() or None
    order = request.query_params.get("order", "balance")
    if order not in ("balance", "newest", "email"):
        return problem(request, 400, "Bad order", "order must be balance, newest or email")
    try:
        offset = int(request.query_params.get("offset", "0"))
        if offset < 0:
            raise ValueError
    except ValueError:
        return problem(request, 400, "Bad offset", "offset must be a whole number ≥ 0")
    async with page_transaction(request) as conn:
        found = await data.section(conn, lambda: data.users(conn, search, order, offset))
        total = await data.section(conn, lambda: data.user_count(conn))
    more = len(found.rows) > data.LIST_LIMIT
    found.rows = found.rows[: data.LIST_LIMIT]
    return render(
        request,
        "users.html",
        users=found,
        total=total.value,
        search=search or "",
        order=order,
        offset=min(offset, data.MAX_OFFSET),
        limit=data.LIST_LIMIT,
        more=more and offset + data.LIST_LIMIT <= data.MAX_OFFSET,
    )


async def user_detail(request: Request) -> Response:
    raw = request.path_params["user_id"]
    try:
        user_id = str(uuid.UUID(raw))
    except ValueError:
        return problem(request, 404, "No such user", f"{raw!r} is not a user id")
    window = data.Window.now()
    async with page_transaction(request) as conn:
        who = await data.section(conn, lambda: data.user(conn, user_id))
        if who.error is None and who.value is None:
            return problem(request, 404, "No such user", f"no user {user_id}")
        sections = {
            "holds": await data.section(conn, lambda: data.user_holds(conn, user_id)),
            "by_model": await data.section(
                conn, lambda: data.user_usage_by_model(conn, user_id, window)
            ),
            "usage": await data.section(conn, lambda: data.user_recent_usage(conn, user_id)),
            "keys": await data.section(conn, lambda: data.user_keys(conn, user_id)),
            "subscriptions": await data.section(
                conn, lambda: data.user_subscriptions(conn, user_id)
            ),
            "ledger": await data.section(conn, lambda: data.user_ledger(conn, user_id)),
        }
    return render(
        request,
        "user.html",
        user_id=user_id,
        who=who,
        days=data.RANGE_DAYS,
        limit=data.LIST_LIMIT,
        **sections,
    )


async def models(request: Request) -> Response:
    search = request.query_params.get("q", "").strip() or None
    model = request.query_params.get("model", "").strip() or None
    # The consolidation report runs when asked, with a longer timeout of its own: its checks
    # read the whole price catalog (a second on a 100k-model catalog).
    run_report = request.query_params.get("report") == "1"
    async with page_transaction(request) as conn:
        prices = await data.section(conn, lambda: data.current_prices(conn, search))
        history = await data.section(conn, lambda: data.price_history(conn, model))
        alias_rows = await data.section(conn, lambda: data.aliases(conn))
        report = (
            await data.section(conn, lambda: data.consolidation_report(conn))
            if run_report
            else data.Section()
        )
    more = len(prices.rows) > 200
    prices.rows = prices.rows[:200]
    return render(
        request,
        "models.html",
        prices=prices,
        more=more,
        history=history,
        aliases=alias_rows,
        report=report,
        run_report=run_report,
        report_timeout_s=data.REPORT_TIMEOUT_MS // 1000,
        search=search or "",
        model=model or "",
    )


async def keys_and_plans(request: Request) -> Response:
    async with page_transaction(request) as conn:
        sections = {
            "plans": await data.section(conn, lambda: data.plans(conn)),
            "routes": await data.section(conn, lambda: data.routes(conn)),
            "upstreams": await data.section(conn, lambda: data.upstreams(conn)),
            "keys": await data.section(conn, lambda: data.recent_keys(conn)),
        }
    return render(request, "keys.html", limit=data.LIST_LIMIT, **sections)


async def audit(request: Request) -> Response:
    tables = []
    async with page_transaction(request) as conn:
        for relation, title in (
            ("public.audit_logs", "Audit log"),
            ("public.price_audit", "Price and alias changes (price_audit)"),
        ):
            if await data.exists(conn, relation):
                found = await data.section(conn, lambda r=relation: data.audit_rows(conn, r))
                columns, found_rows = found.value if found.value else ([], [])
                tables.append(
                    {
                        "relation": relation,
                        "title": title,
                        "columns": columns,
                        "rows": found_rows,
                        "error": found.error,
                    }
                )
            else:
                tables.append({"relation": relation, "title": title, "missing": True})
    return render(request, "audit.html", tables=tables)


async def sql_editor(request: Request) -> Response:
    result = None
    if request.method == "POST":
        # Browsers submit a textarea's line breaks as CRLF; its value (and so the positions the
        # editor's script selects) has LF.
        script = (await read_form(request)).get("query", "").replace("\r\n", "\n")
        async with request.app.state.editor_pool.connection() as conn:
            result = await editor.run(conn, script)
        # A query error is the page working as meant (shown in place), not a failed request.
        status_code = 200
    else:
        chosen = editor.snippet(request.query_params.get("snippet"))
        if request.query_params.get("snippet") and chosen is None:
            return problem(request, 404, "No such snippet", "pick one from the list")
        script = chosen.sql if chosen else editor.SNIPPETS[0].sql
        status_code = 200
    return render(
        request,
        "sql.html",
        status_code=status_code,
        script=script,
        result=result,
        snippets=editor.SNIPPETS,
        max_rows=editor.MAX_ROWS,
        timeout_s=editor.STATEMENT_TIMEOUT_MS // 1000,
    )


async def database_unavailable(request: Request, exc: Exception) -> Response:
    return problem(
        request,
        503,
        "Database unavailable",
        f"the local database on port {request.app.state.settings.paths.db_port} did not answer "
        "(is the stack running? `tokenmeter stack start`)",
    )


async def form_too_large(request: Request, exc: Exception) -> Response:
    return problem(request, 413, "Too large", f"the form is over {MAX_FORM_BYTES:,} bytes")


async def not_found(request: Request, exc: Exception) -> Response:
    return problem(request, 404, "Not found", f"no page {request.url.path}")


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.sessions = set()

        async def discard(conn: AsyncConnection[Any]) -> None:
            await conn.execute("discard all")

        # Opened without waiting: the dashboard answers /health (and says the database is down)
        # even while PostgreSQL restarts; connections come as soon as it is back.
        app.state.pool = AsyncConnectionPool(
            settings.dsn("tokenmeter-dashboard"),
            min_size=1,
            max_size=4,
            timeout=10,
            open=False,
            check=AsyncConnectionPool.check_connection,
        )
        app.state.editor_pool = AsyncConnectionPool(
            settings.dsn("tokenmeter-dashboard-sql"),
            min_size=1,
            max_size=2,
            timeout=10,
            open=False,
            reset=discard,
            check=AsyncConnectionPool.check_connection,
        )
        await app.state.pool.open(wait=False)
        await app.state.editor_pool.open(wait=False)
        # matplotlib's first import takes seconds: done in the background at start, so the
        # first overview is not the one that pays for it.
        warm = asyncio.get_running_loop().run_in_executor(None, charts.warm_up)
        try:
            yield
        finally:
            await warm
            await app.state.editor_pool.close()
            await app.state.pool.close()

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", overview),
            Route("/users", users),
            Route("/users/{user_id}", user_detail),
            Route("/models", models),
            Route("/keys", keys_and_plans),
            Route("/audit", audit),
            Route("/sql", sql_editor, methods=["GET", "POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(Guard)],
        lifespan=lifespan,
        exception_handlers={
            psycopg.OperationalError: database_unavailable,
            PoolTimeout: database_unavailable,
            FormTooLarge: form_too_large,
            404: not_found,
        },
    )


def run() -> None:
    import uvicorn

    settings = Settings(StackPaths.from_env())
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",  # never another interface: the editor runs SQL as postgres
        port=settings.port,
        log_level=os.environ.get("TOKENMETER_DASHBOARD_LOG_LEVEL", "warning"),
        access_log=False,
    )
