"""HTTP handlers of /rest/v1: tables and views (`/{name}`) and functions (`/rpc/{name}`).

Order of work per request, as Kong then PostgREST: the project key in `apikey` (kong.py, 401
before anything else), verify the JWT (401 before any database work), pick
the schema from Accept-Profile / Content-Profile, resolve names in the schema cache (404/400
without SQL), parse the query string (400 PGRST100), then one transaction (transaction.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response

from app.stack.gateway import kong, limits, tokens
from app.stack.gateway.errors import ApiError, GatewayError
from app.stack.gateway.rest import build, parse
from app.stack.gateway.rest.schema_cache import (
    EXPOSED_SCHEMAS,
    CacheMiss,
    Function,
    SchemaCache,
    SchemaCacheHolder,
    Table,
)
from app.stack.gateway.rest.transaction import RequestContext, explain, run

OBJECT_MEDIA = "application/vnd.pgrst.object+json"
JSON_TYPE = "application/json; charset=utf-8"
CSV_TYPE = "text/csv; charset=utf-8"
_PLAN_CACHE_SIZE = 2048
# Up to this many bytes of query string and body, parsing and building take well under a
# millisecond and run inline; beyond, they run off the event loop (_prepare).
_INLINE_BYTES = 2048
T = TypeVar("T")


@dataclass
class RestState:
    holder: SchemaCacheHolder
    pool: AsyncConnectionPool
    jwt_secret: str
    max_body_bytes: int
    # The project keys Kong accepts in `apikey` (anon, service_role).
    api_keys: tuple[str, ...]
    # GET plans by query string: parsing and SQL building are skipped for repeated requests.
    plans: dict[tuple[Any, ...], tuple[str, tuple[Any, ...]]] = field(default_factory=dict)
    # Verified claims by token: HS256 verification is a large share of a request's CPU time.
    claims: tokens.ClaimsCache = field(default_factory=tokens.ClaimsCache)

    def clear_plans(self) -> None:
        self.plans.clear()


@dataclass
class Prefer:
    ret: str = "minimal"
    count: bool = False
    resolution: str | None = None
    missing_default: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Prefer:
        prefer = cls()
        for token in (header or "").split(","):
            key, _, value = token.strip().partition("=")
            value = value.strip()
            if key == "return" and value in ("representation", "minimal", "headers-only"):
                prefer.ret = value
            elif key == "count" and value in ("exact", "planned", "estimated"):
                prefer.count = True  # planned/estimated are answered exactly
            elif key == "resolution" and value in ("merge-duplicates", "ignore-duplicates"):
                prefer.resolution = value
            elif key == "missing" and value == "default":
                prefer.missing_default = True
        return prefer


@dataclass
class Query:
    """The query string, parsed."""

    select: tuple[parse.SelectItem | parse.Embed, ...] = (parse.SelectItem(None),)
    filters: list[parse.Filter | parse.Logic] = field(default_factory=list)
    order: tuple[parse.OrderTerm, ...] = ()
    limit: int | None = None
    offset: int | None = None
    on_conflict: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    args: dict[str, str] = field(default_factory=dict)
    # `rel.col=eq.x`, `rel.or=…`, `rel.order=…`, `rel.limit=…` by embed path ("rel", "sub").
    embedded: dict[tuple[str, ...], build.ReadShape] = field(default_factory=dict)

    def shape(self, cache: SchemaCache | None = None) -> build.ReadShape:
        return build.ReadShape(
            self.select,
            self.filters,
            self.order,
            self.limit,
            self.offset,
            embedded=dict(self.embedded),
            cache=cache,
        )

    def sub(self, path: tuple[str, ...]) -> build.ReadShape:
        return self.embedded.setdefault(path, build.ReadShape((), []))


_LOGIC_KEYS = ("or", "and", "not.or", "not.and")


def _embedded_param(query: Query, key: str, value: str) -> bool:
    """A parameter for an embedded resource (`rel.col=`, `rel.sub.order=`…): stored under its
    path, True; anything else, False. Raises ApiError PGRST100."""
    head = key.split("->", 1)[0]
    if "." not in head:
        return False
    parts = head.split(".")
    for logic in ("not.or", "not.and", "or", "and"):
        if head.endswith("." + logic):
            path = tuple(head[: -len(logic) - 1].split("."))
            if any(not p for p in path):
                return False
            query.sub(path).filters.append(parse.parse_logic(logic, value))
            return True
    path, last = tuple(parts[:-1]), parts[-1]
    if any(not p for p in path) or not last:
        return False
    sub = query.sub(path)
    if last == "order" and len(head) == len(key):
        sub.order = parse.parse_order(value)
    elif last in ("limit", "offset") and len(head) == len(key):
        setattr(sub, last, parse.parse_count(last, value))
    else:
        fld = parse.parse_field(key[len(head) - len(last) :], "filter", f"{key}={value}")
        sub.filters.append(parse.parse_filter(fld, value, value))
    return True


def parse_query(items: list[tuple[str, str]], arg_names: frozenset[str] = frozenset()) -> Query:
    """Split the query string into its parts. Raises ApiError PGRST100."""
    query = Query()
    for key, value in items:
        if key in arg_names:
            query.args[key] = value
        elif key == "select":
            query.select = parse.parse_select(value) if value.strip() else query.select
        elif key == "order":
            query.order = parse.parse_order(value)
        elif key == "limit":
            query.limit = parse.parse_count("limit", value)
        elif key == "offset":
            query.offset = parse.parse_count("offset", value)
        elif key == "on_conflict":
            query.on_conflict = parse.parse_columns(value)
        elif key == "columns":
            query.columns = parse.parse_columns(value)
        elif key in _LOGIC_KEYS:
            query.filters.append(parse.parse_logic(key, value))
        elif _embedded_param(query, key, value):
            pass
        else:
            fld = parse.parse_field(key, "filter", f"{key}={value}")
            query.filters.append(parse.parse_filter(fld, value, value))
    return query


# ── helpers ───────────────────────────────────────────────────────────────────────────────
def _claims(request: Request, state: RestState) -> dict[str, Any]:
    """The caller's verified claims, remembered per token until `exp` (tokens.cached_claims).
    Raises ApiError 401 as tokens.request_claims."""
    return tokens.cached_claims(request, state.jwt_secret, state.claims)


def _state(request: Request) -> RestState:
    state: RestState = request.app.state.rest
    return state


def _schema(request: Request) -> str:
    """The schema the request names. Raises ApiError 406 PGRST106 for unexposed schemas."""
    header = "accept-profile" if request.method in ("GET", "HEAD") else "content-profile"
    schema = request.headers.get(header) or EXPOSED_SCHEMAS[0]
    if schema not in EXPOSED_SCHEMAS:
        raise ApiError(
            406,
            "PGRST106",
            f"The schema must be one of the following: {', '.join(EXPOSED_SCHEMAS)}",
        )
    return schema


_JSON_MEDIA = frozenset(
    {"*/*", "application/json", "application/vnd.pgrst.array+json", "application/vnd.pgrst.array"}
)
_OBJECT_MEDIA = frozenset({OBJECT_MEDIA, "application/vnd.pgrst.object"})


@dataclass(frozen=True)
class Plan:
    """`Accept: application/vnd.pgrst.plan[+json|+text]; for="…"; options=analyze|…`."""

    json: bool
    options: tuple[str, ...]
    for_media: str  # the media type whose query is explained

    def explain(self, statement: str) -> str:
        # Options come from _PLAN_OPTIONS only, never from the request text itself.
        opts = ", ".join(("format json" if self.json else "format text", *self.options))
        return f"explain ({opts}) {statement}"

    def media_type(self) -> str:
        suffix = "json" if self.json else "text"
        return f'application/vnd.pgrst.plan+{suffix}; for="{self.for_media}"; charset=utf-8'


_PLAN_MEDIA = {
    "application/vnd.pgrst.plan": False,
    "application/vnd.pgrst.plan+text": False,
    "application/vnd.pgrst.plan+json": True,
}
_PLAN_OPTIONS = ("analyze", "verbose", "settings", "buffers", "wal")


def _negotiate(request: Request, cache: SchemaCache) -> tuple[str, Plan | None]:
    """(kind, plan): kind "json", "object" (`.single()`) or "csv", the first media type of
    `Accept` the API can produce, by q-value then order, as PostgREST picks it (no header means
    JSON); plan when that type is an EXPLAIN plan (only with db-plan-enabled), kind then being
    the `for=` type whose query it explains.

    Raises ApiError 406 PGRST107 when none is available (`text/html`, `application/xml`, and
    `application/vnd.pgrst.plan` without db-plan-enabled, as PostgREST)."""
    header = request.headers.get("accept", "")
    if not header.strip():
        return "json", None
    offered: list[tuple[float, int, str, dict[str, str]]] = []
    for index, part in enumerate(header.split(",")):
        media, *options = (p.strip() for p in part.split(";"))
        params: dict[str, str] = {}
        for option in options:
            key, _, value = option.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.get("q", "1")[:8])
        except ValueError:
            quality = 0.0
        if media:
            offered.append((-quality, index, media.lower(), params))
    for negative_quality, _, media, params in sorted(offered, key=lambda o: o[:2]):
        if negative_quality >= 0:
            break  # q=0: not acceptable
        kind = _kind(media)
        if kind is not None:
            return kind, None
        if media in _PLAN_MEDIA and cache.plan_enabled:
            for_media = params.get("for", "application/json").lower()
            kind = _kind(for_media)
            chosen = tuple(o for o in _PLAN_OPTIONS if o in params.get("options", "").split("|"))
            if kind is not None:
                return kind, Plan(_PLAN_MEDIA[media], chosen, for_media)
    listed = ", ".join(media for _, _, media, _ in offered)
    raise ApiError(406, "PGRST107", f"None of these media types are available: {listed[:500]}")


def _kind(media: str) -> str | None:
    if media in _JSON_MEDIA:
        return "json"
    if media in _OBJECT_MEDIA:
        return "object"
    return "csv" if media == "text/csv" else None


def _media_type(kind: str) -> str:
    if kind == "object":
        return OBJECT_MEDIA + "; charset=utf-8"
    return CSV_TYPE if kind == "csv" else JSON_TYPE


def _context(
    request: Request, cache: SchemaCache, claims: dict[str, Any], path: str
) -> RequestContext:
    role = str(claims["role"])
    return RequestContext(
        role=role,
        claims=claims,
        method=request.method,
        path=path,
        headers=dict(request.headers.items()),
        cookies=dict(request.cookies),
        role_settings=cache.role_settings.get(role, ()),
    )


def _table(cache: SchemaCache, schema: str, name: str) -> Table:
    """The cached table or view. Raises CacheMiss 404 PGRST205."""
    table = cache.tables.get((schema, name))
    if table is None:
        raise CacheMiss(
            404, "PGRST205", f"Could not find the table '{schema}.{name}' in the schema cache"
        )
    return table


def _not_one(rows: int) -> ApiError:
    return ApiError(
        406,
        "PGRST116",
        "JSON object requested, multiple (or no) rows returned",
        f"The result contains {rows} rows",
    )


def _check_single(row: tuple[Any, ...]) -> None:
    if row[1] != 1:
        raise _not_one(row[1])


def _content_range(offset: int, rows: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    if rows == 0:
        return f"*/{total_text}"
    return f"{offset}-{offset + rows - 1}/{total_text}"


def _read_response(
    request: Request,
    row: tuple[Any, ...],
    offset: int,
    single: bool,
    counted: bool,
    kind: str = "json",
) -> Response:
    body, rows, total = row
    status = 200
    if counted and total is not None and rows < total and not single:
        status = 206  # a page of a larger result, as PostgREST answers a range
    headers = {"Content-Range": _content_range(offset, rows, total)}
    content = "" if request.method == "HEAD" else body
    media = _media_type("object" if single else kind)
    return Response(content, status, headers, media_type=media)


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body (limits.read_body). Raises ApiError 413 PGRST413, GatewayError 408."""
    try:
        return await limits.read_body(request, limit)
    except limits.BodyTooLarge as exc:
        raise ApiError(413, "PGRST413", "Payload too large", exc.message) from None
    except limits.BodyTimeout as exc:
        raise GatewayError(408, "request_timeout", exc.message) from None


def _json_body(raw: bytes) -> Any:
    """The parsed request body, {} when empty (limits.parse_json: strict, nesting bounded).

    Raises ApiError 400 PGRST102."""
    if not raw.strip():
        return {}
    try:
        return limits.parse_json(raw)
    except limits.BodyRejected as exc:
        raise ApiError(400, "PGRST102", "Empty or invalid json", exc.message) from None


def _items(request: Request) -> list[tuple[str, str]]:
    return request.query_params.multi_items()


async def _prepare(request: Request, raw: bytes, plan: Callable[..., T], *args: Any) -> T:
    """`plan(*args)`: parsing the request and building its SQL. Inline for a small request;
    for a large one (a long query string, a large body) in limits.off_loop's thread, so that
    the event loop, and with it every other request, does not wait for it."""
    if len(request.scope["query_string"]) + len(raw) <= _INLINE_BYTES:
        return plan(*args)
    return await limits.off_loop(plan, *args)


# ── tables and views ──────────────────────────────────────────────────────────────────────
Serve = Callable[[Request, RestState, SchemaCache, dict[str, Any], str, bytes], Awaitable[Response]]


async def _serve(request: Request, serve: Serve) -> Response:
    """Authenticate, read the body, then `serve` against the schema cache. A CacheMiss means the
    schema changed since the cache was read: refresh it once and serve again."""
    state = _state(request)
    kong.require_api_key(request, state.api_keys)
    claims = _claims(request, state)
    schema = _schema(request)
    raw = b""
    if request.method not in ("GET", "HEAD"):
        raw = await _read_body(request, state.max_body_bytes)
    try:
        return await serve(request, state, state.holder.cache, claims, schema, raw)
    except CacheMiss:
        cache = await state.holder.refresh_after_miss()
        return await serve(request, state, cache, claims, schema, raw)


async def table_endpoint(request: Request) -> Response:
    """GET/HEAD/POST/PATCH/DELETE on `/{name}`. Raises ApiError (see module docstring)."""
    return await _serve(request, _serve_table)


async def _serve_table(
    request: Request,
    state: RestState,
    cache: SchemaCache,
    claims: dict[str, Any],
    schema: str,
    raw: bytes,
) -> Response:
    name = request.path_params["name"]
    table = _table(cache, schema, name)
    ctx = _context(request, cache, claims, f"/{name}")
    prefer = Prefer.parse(request.headers.get("prefer"))
    kind, plan = _negotiate(request, cache)
    single = kind == "object"
    if plan is not None:
        if request.method in ("GET", "HEAD"):
            text, params, _ = await _prepare(
                request, b"", _plan_read, table, _items(request), prefer.count, kind, cache
            )
            return await _explain(request, state, ctx, plan, text, params, read_only=True)
        written = await _prepare(
            request,
            raw,
            _plan_write,
            request.method,
            table,
            raw,
            _items(request),
            prefer,
            kind,
            cache,
        )
        if written.text is not None:
            return await _explain(
                request, state, ctx, plan, written.text, written.params, read_only=False
            )
    if request.method in ("GET", "HEAD"):
        return await _read_table(request, state, cache, table, ctx, prefer, kind)
    planned = await _prepare(
        request,
        raw,
        _plan_write,
        request.method,
        table,
        raw,
        _items(request),
        prefer,
        kind,
        cache,
    )
    if planned.text is None:  # a PATCH naming no column: nothing to write
        return Response(
            "[]" if not planned.minimal else b"",
            200 if not planned.minimal else 204,
            {"Content-Range": "*/*"},
            media_type=JSON_TYPE,
        )
    status, minimal = planned.status, planned.minimal
    row = await run(
        state.pool,
        ctx,
        planned.text,
        planned.params,
        read_only=False,
        check=_check_single if single else None,
    )
    body, rows, total, inserted = row
    if planned.upsert and not inserted:
        # PostgREST: a merge-duplicates upsert that inserted no row (every row updated an
        # existing one, or an empty payload) is 200 OK, whatever the representation.
        status = 200
    headers = {"Content-Range": f"*/{total if total is not None else '*'}"}
    if prefer.ret == "headers-only":
        if table.primary_key and rows:
            first = json.loads(body)
            first = first if isinstance(first, dict) else first[0]
            # Percent-encoded as PostgREST does: the key is any stored text, and a header
            # holds Latin-1 without line breaks.
            location = "&".join(
                f"{quote(k, safe='')}=eq.{quote(str(first[k]), safe='')}" for k in table.primary_key
            )
            headers["Location"] = f"/{table.name}?{location}"
        return Response(b"", status, headers)
    if minimal:
        return Response(b"", status, headers)
    return Response(body, status, headers, media_type=_media_type(kind))


@dataclass
class _Write:
    text: str | None  # None: nothing to run
    params: list[Any]
    status: int
    minimal: bool
    upsert: bool = False  # merge-duplicates: 201 only when a row was inserted


def _plan_write(
    method: str,
    table: Table,
    raw: bytes,
    items: list[tuple[str, str]],
    prefer: Prefer,
    kind: str,
    cache: SchemaCache,
) -> _Write:
    """The SQL of a POST/PATCH/DELETE on a table. Raises ApiError (400s, 405), CacheMiss."""
    query = parse_query(items)
    if query.limit is not None or query.offset:
        raise ApiError(
            400,
            "PGRST100",
            "failed to parse limit (mutation)",
            "limit/offset on writes is not supported by the local stack",
        )
    minimal = prefer.ret != "representation"
    upsert = False
    single = kind == "object"
    shape = query.shape(cache)
    shape.csv = kind == "csv"
    if prefer.ret == "headers-only" and table.primary_key:
        shape.select = tuple(parse.SelectItem(parse.Field(c)) for c in table.primary_key)
        minimal = False
    if method == "POST":
        payload = _json_body(raw)
        stmt, params, upsert = _insert(table, raw, payload, query, prefer, minimal)
        status = 201
    elif method == "PATCH":
        payload = _json_body(raw)
        if not isinstance(payload, dict):
            raise ApiError(400, "PGRST102", "Empty or invalid json", "PATCH expects a JSON object")
        columns = list(query.columns or payload.keys())
        if not columns:
            return _Write(None, [], 200, minimal)
        stmt, params = build.update(table, raw.decode(), columns, query.filters, minimal=minimal)
        status = 204 if minimal else 200
    elif method == "DELETE":
        stmt, params = build.delete(table, query.filters, minimal=minimal)
        status = 204 if minimal else 200
    else:
        raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")
    query_sql, all_params = build.wrap_mutation(
        table,
        stmt,
        params,
        shape,
        minimal=minimal,
        single=single,
        count=prefer.count,
        track_inserted=upsert,
    )
    return _Write(query_sql.as_string(None), all_params, status, minimal, upsert)


def _insert(
    table: Table, raw: bytes, payload: Any, query: Query, prefer: Prefer, minimal: bool
) -> tuple[sql.Composable, list[Any], bool]:
    """The INSERT for a POST body, and whether it is a merging upsert (which counts the rows
    it inserts). Raises ApiError PGRST102/PGRST204/PGRST100."""
    rows = [payload] if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ApiError(
            400,
            "PGRST102",
            "Empty or invalid json",
            "Expected a JSON object or an array of objects",
        )
    if query.columns is not None:
        columns = list(query.columns)
    else:
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(r))
        columns = list(seen)
    missing: list[str] | None = None
    if prefer.missing_default:
        # Columns absent from every row are left out (the database applies DEFAULT itself);
        # columns absent from only some rows take the DEFAULT expression from the catalog.
        present = [c for c in columns if any(c in r for r in rows)]
        missing = [c for c in present if not all(c in r for r in rows)]
        columns = present
    text = raw.decode()
    body = f"[{text}]" if isinstance(payload, dict) else text
    conflict: tuple[str, ...] | None = None
    if prefer.resolution:
        conflict = query.on_conflict or table.primary_key or None
    merge = prefer.resolution == "merge-duplicates"
    stmt, params = build.insert(
        table,
        body,
        columns,
        missing_default=missing,
        conflict=conflict,
        merge=merge,
        minimal=minimal,
    )
    return stmt, params, bool(merge and conflict)


def _plan_read(
    table: Table, items: list[tuple[str, str]], count: bool, kind: str, cache: SchemaCache
) -> tuple[str, tuple[Any, ...], int]:
    """(SQL, parameters, offset) of a GET on a table. Raises ApiError 400, CacheMiss."""
    query = parse_query(items)
    shape = query.shape(cache)
    shape.csv = kind == "csv"
    stmt, params = build.read(
        build.table_source(table), shape, count=count, single=kind == "object"
    )
    return stmt.as_string(None), tuple(params), query.offset or 0


async def _read_table(
    request: Request,
    state: RestState,
    cache: SchemaCache,
    table: Table,
    ctx: RequestContext,
    prefer: Prefer,
    kind: str,
) -> Response:
    single = kind == "object"
    key = (
        state.holder.generation,
        table.schema,
        table.name,
        request.url.query,
        prefer.count,
        kind,
    )
    plan = state.plans.get(key)
    if plan is None:
        plan = await _prepare(  # type: ignore[assignment]
            request, b"", _plan_read, table, _items(request), prefer.count, kind, cache
        )
        if len(state.plans) >= _PLAN_CACHE_SIZE:
            state.plans.clear()
        state.plans[key] = plan  # type: ignore[assignment]
    text, params, offset = plan  # type: ignore[misc]
    row = await run(
        state.pool, ctx, text, params, read_only=True, check=_check_single if single else None
    )
    return _read_response(request, row, offset, single, prefer.count, kind)


async def _explain(
    request: Request,
    state: RestState,
    ctx: RequestContext,
    plan: Plan,
    text: str,
    params: list[Any] | tuple[Any, ...],
    *,
    read_only: bool,
) -> Response:
    """The EXPLAIN of the request's statement, its effects rolled back (`Accept:
    application/vnd.pgrst.plan…`, db-plan-enabled only). Raises ApiError for database errors."""
    rows = await explain(state.pool, ctx, plan.explain(text), params, read_only=read_only)
    if plan.json:
        body = json.dumps(rows[0][0] if rows else [], separators=(",", ":"))
    else:
        body = "\n".join(str(r[0]) for r in rows)
    content = "" if request.method == "HEAD" else body
    return Response(content, 200, media_type=plan.media_type())


# ── functions ─────────────────────────────────────────────────────────────────────────────
def _choose(fns: list[Function], given: set[str]) -> Function | None:
    """The overload whose parameters fit the given argument names, as PostgREST picks it."""
    fits = [f for f in fns if given <= f.arg_names and f.required <= given]
    if not fits:
        return None
    return min(fits, key=lambda f: len(f.args) - len(given))


async def rpc_endpoint(request: Request) -> Response:
    """GET/HEAD/POST on `/rpc/{name}`. Raises ApiError (see module docstring)."""
    return await _serve(request, _serve_rpc)


async def _serve_rpc(
    request: Request,
    state: RestState,
    cache: SchemaCache,
    claims: dict[str, Any],
    schema: str,
    raw: bytes,
) -> Response:
    name = request.path_params["name"]
    ctx = _context(request, cache, claims, f"/rpc/{name}")
    prefer = Prefer.parse(request.headers.get("prefer"))
    kind, plan = _negotiate(request, cache)
    single = kind == "object"
    fns = cache.functions.get((schema, name), [])
    call = await _prepare(
        request,
        raw,
        _plan_call,
        request.method,
        fns,
        schema,
        name,
        raw,
        _items(request),
        prefer.count,
        kind,
    )
    if plan is not None:
        return await _explain(
            request, state, ctx, plan, call.text, call.params, read_only=call.read_only
        )
    if call.scalar:
        row = await run(state.pool, ctx, call.text, call.params, read_only=call.read_only)
        if call.returns_void:
            return Response(b"", 204)  # PostgREST >= 10: VOID answers 204 No Content
        content = "" if request.method == "HEAD" else row[0]
        return Response(content, 200, {"Content-Range": "0-0/*"}, media_type=JSON_TYPE)
    row = await run(
        state.pool,
        ctx,
        call.text,
        call.params,
        read_only=call.read_only,
        check=_check_single if single else None,
    )
    return _read_response(request, row, call.offset, call.as_object, prefer.count, kind)


@dataclass
class _Call:
    text: str
    params: list[Any]
    read_only: bool
    scalar: bool  # one value (or VOID), not rows
    returns_void: bool
    as_object: bool
    offset: int


def _plan_call(
    method: str,
    fns: list[Function],
    schema: str,
    name: str,
    raw: bytes,
    items: list[tuple[str, str]],
    count: bool,
    kind: str,
) -> _Call:
    """The SQL calling one of the overloads `fns` of schema.name. Raises ApiError, CacheMiss."""
    all_arg_names = frozenset(a.name for f in fns for a in f.args)
    if method in ("GET", "HEAD"):
        query = parse_query(items, all_arg_names)
        args: dict[str, Any] = dict(query.args)
        body = json.dumps(args)
    else:
        payload = _json_body(raw)
        if not isinstance(payload, dict):
            raise ApiError(
                400,
                "PGRST102",
                "Empty or invalid json",
                "Expected a JSON object of named arguments",
            )
        query = parse_query(items)
        args = payload
        body = raw.decode() if raw.strip() else "{}"
    fn = _choose(fns, set(args))
    if fn is None:
        listed = ", ".join(sorted(args))
        raise CacheMiss(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name}({listed}) in the schema cache",
            f"Searched for the function {schema}.{name} with parameters {listed} or with a "
            "single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
        )
    read_only = method in ("GET", "HEAD") or fn.volatility in ("i", "s")
    if not fn.returns_set and not fn.returns_composite:
        stmt, params = build.call_scalar(fn, args, body)
        return _Call(stmt.as_string(None), params, read_only, True, fn.returns_void, False, 0)
    src = build.function_source(fn, args, body)
    as_object = kind == "object" or not fn.returns_set
    shape = query.shape()
    shape.csv = kind == "csv"
    stmt, params = build.read(
        src, shape, count=count, single=as_object, scalar=not fn.returns_composite
    )
    return _Call(
        stmt.as_string(None), params, read_only, False, False, as_object, query.offset or 0
    )


async def invalid_path(request: Request) -> Response:
    """Any other path (`/`, `/a/b`): PostgREST's 404 PGRST125, in its JSON shape (after Kong's
    key check, which comes first)."""
    kong.require_api_key(request, _state(request).api_keys)
    raise ApiError(404, "PGRST125", "Invalid path specified in request URL")
