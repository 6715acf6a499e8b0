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
from app.stack.gateway.rest.config import RestSettings
from app.stack.gateway.rest.prefer import Prefer
from app.stack.gateway.rest.schema_cache import (
    CacheMiss,
    Function,
    SchemaCache,
    SchemaCacheHolder,
    Table,
)
from app.stack.gateway.rest.transaction import Check, RequestContext, explain, run

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
    settings: RestSettings = field(default_factory=RestSettings)
    # GET plans by query string: parsing and SQL building are skipped for repeated requests.
    plans: dict[tuple[Any, ...], tuple[str, tuple[Any, ...]]] = field(default_factory=dict)
    # Verified claims by token: HS256 verification is a large share of a request's CPU time.
    claims: tokens.ClaimsCache = field(default_factory=tokens.ClaimsCache)

    def clear_plans(self) -> None:
        self.plans.clear()


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


def _schema(request: Request, exposed: tuple[str, ...]) -> str:
    """The schema the request names (config.toml `[api] schemas`, the first by default).
    Raises ApiError 406 PGRST106 for unexposed schemas."""
    header = "accept-profile" if request.method in ("GET", "HEAD") else "content-profile"
    schema = request.headers.get(header) or exposed[0]
    if schema not in exposed:
        raise ApiError(
            406,
            "PGRST106",
            f"The schema must be one of the following: {', '.join(exposed)}",
        )
    return schema


_JSON_MEDIA = frozenset(
    {"*/*", "application/json", "application/vnd.pgrst.array+json", "application/vnd.pgrst.array"}
)
_OBJECT_MEDIA = frozenset({OBJECT_MEDIA, "application/vnd.pgrst.object"})
# PostgREST strips nulls only for its own vendor types, never for application/json.
_STRIPPABLE = frozenset({"application/vnd.pgrst.array+json", OBJECT_MEDIA})


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


def _negotiate(request: Request, cache: SchemaCache) -> tuple[str, Plan | None, bool]:
    """(kind, plan): kind "json", "object" (`.single()`) or "csv", the first media type of
    `Accept` the API can produce, by q-value then order, as PostgREST picks it (no header means
    JSON); plan when that type is an EXPLAIN plan (only with db-plan-enabled), kind then being
    the `for=` type whose query it explains; and whether null members are left out
    (`application/vnd.pgrst.array+json;nulls=stripped`, `…object+json;nulls=stripped`).

    Raises ApiError 406 PGRST107 when none is available (`text/html`, `application/xml`, and
    `application/vnd.pgrst.plan` without db-plan-enabled, as PostgREST)."""
    header = request.headers.get("accept", "")
    if not header.strip():
        return "json", None, False
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
            strip = media in _STRIPPABLE and params.get("nulls", "").lower() == "stripped"
            return kind, None, strip
        if media in _PLAN_MEDIA and cache.plan_enabled:
            for_media = params.get("for", "application/json").lower()
            kind = _kind(for_media)
            chosen = tuple(o for o in _PLAN_OPTIONS if o in params.get("options", "").split("|"))
            if kind is not None:
                return kind, Plan(_PLAN_MEDIA[media], chosen, for_media), False
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


def _prefer(request: Request, cache: SchemaCache) -> Prefer:
    """The request's preferences; `tx=` counts only when db-tx-end allows the override.
    Raises ApiError 400 PGRST122 (handling=strict with unknown preferences)."""
    override = cache.tx_end.endswith("allow-override")
    return Prefer.parse(request.headers.getlist("prefer"), tx_override=override)


def _rolls_back(cache: SchemaCache, prefer: Prefer) -> bool:
    """db-tx-end `rollback…` rolls every request back unless `tx=commit` may override it;
    `tx=rollback` does when `…-allow-override` lets it (PostgREST's optionalRollback)."""
    return prefer.tx == "rollback" or (
        cache.tx_end.startswith("rollback") and prefer.tx != "commit"
    )


def _checks(*checks: Check | None) -> Check | None:
    """One check running each given one (None when there is none)."""
    found = [c for c in checks if c is not None]
    if not found:
        return None

    def run_all(row: tuple[Any, ...]) -> None:
        for check in found:
            check(row)

    return run_all


def _max_affected(prefer: Prefer) -> Check | None:
    """`Prefer: max-affected=N` with `handling=strict`: more rows than N is a 400 PGRST124,
    and nothing is written (PostgREST ignores the preference under handling=lenient)."""
    limit = prefer.max_affected
    if limit is None or prefer.handling != "strict":
        return None

    def check(row: tuple[Any, ...]) -> None:
        if row[1] > limit:
            raise ApiError(
                400,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
                f"The query affects {row[1]} rows",
            )

    return check


def _with_applied(response: Response, applied: str | None) -> Response:
    if applied:
        response.headers["Preference-Applied"] = applied
    return response


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
    schema = _schema(request, state.settings.schemas)
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
    prefer = _prefer(request, cache)
    kind, plan, strip = _negotiate(request, cache)
    single = kind == "object"
    if plan is not None:
        if request.method in ("GET", "HEAD"):
            text, params, _, _ = await _prepare(
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
        response = await _read_table(request, state, cache, table, ctx, prefer, kind, strip)
        return _with_applied(response, prefer.applied("read"))
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
        strip,
    )
    applied = prefer.applied(planned.kind, resolution_applies=planned.resolution_applies)
    if planned.text is None:  # a PATCH naming no column: nothing to write
        return _with_applied(
            Response(
                "[]" if not planned.minimal else b"",
                200 if not planned.minimal else 204,
                {"Content-Range": "*/*"},
                media_type=JSON_TYPE,
            ),
            applied,
        )
    status, minimal = planned.status, planned.minimal
    row = await run(
        state.pool,
        ctx,
        planned.text,
        planned.params,
        read_only=False,
        check=_checks(_check_single if single else None, planned.check),
        rollback=_rolls_back(cache, prefer),
    )
    body, rows, total, inserted = row
    if planned.upsert and not inserted and not (planned.kind == "upsert" and minimal):
        # PostgREST: an upsert that inserted no row (every row updated an existing one, or an
        # empty payload) is 200 OK, whatever the representation; a PUT's minimal answer is 204.
        status = 200
    headers = {"Content-Range": f"*/{total if total is not None else '*'}"}
    if applied:
        headers["Preference-Applied"] = applied
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
    upsert: bool = False  # merge-duplicates and PUT: 201 only when a row was inserted
    kind: str = "insert"  # insert, update, delete or upsert (PUT), for Preference-Applied
    check: Check | None = None  # run on the result row before COMMIT
    resolution_applies: bool = False  # an insert with a conflict target honoured `resolution`


def _plan_write(
    method: str,
    table: Table,
    raw: bytes,
    items: list[tuple[str, str]],
    prefer: Prefer,
    kind: str,
    cache: SchemaCache,
    strip: bool = False,
) -> _Write:
    """The SQL of a POST/PUT/PATCH/DELETE on a table. Raises ApiError (400s, 405), CacheMiss."""
    query = parse_query(items)
    if query.limit is not None or query.offset:
        if method == "PUT":
            raise ApiError(
                400, "PGRST114", "limit/offset querystring parameters are not allowed for PUT"
            )
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
    shape.strip_nulls = strip
    _check_aggregates(shape, cache.aggregates_enabled)
    if prefer.ret == "headers-only" and table.primary_key:
        shape.select = tuple(parse.SelectItem(parse.Field(c)) for c in table.primary_key)
        minimal = False
    check: Check | None = None
    resolution_applies = False
    if method == "POST":
        payload = _json_body(raw)
        stmt, params, upsert = _insert(table, raw, payload, query, prefer, minimal)
        status, action = 201, "insert"
        resolution_applies = bool(prefer.resolution and (query.on_conflict or table.primary_key))
    elif method == "PUT":
        _check_put_filters(table, query.filters)
        payload = _json_body(raw)
        stmt, params, upsert = _insert(table, raw, payload, query, prefer, minimal, put=True)
        status, action, check = (204 if minimal else 201), "upsert", _check_put
    elif method == "PATCH":
        payload = _json_body(raw)
        if not isinstance(payload, dict):
            raise ApiError(400, "PGRST102", "Empty or invalid json", "PATCH expects a JSON object")
        columns = list(query.columns or payload.keys())
        if not columns:
            return _Write(None, [], 200, minimal, kind="update")
        stmt, params = build.update(table, raw.decode(), columns, query.filters, minimal=minimal)
        status, action, check = (204 if minimal else 200), "update", _max_affected(prefer)
    elif method == "DELETE":
        stmt, params = build.delete(table, query.filters, minimal=minimal)
        status, action, check = (204 if minimal else 200), "delete", _max_affected(prefer)
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
    return _Write(
        query_sql.as_string(None),
        all_params,
        status,
        minimal,
        upsert,
        action,
        check,
        resolution_applies,
    )


def _check_put_filters(table: Table, filters: list[parse.Filter | parse.Logic]) -> None:
    """PUT names one row: `eq` filters on every primary key column and nothing else.
    Raises ApiError 405 PGRST105 otherwise (PostgREST's InvalidFilters)."""
    names = [f.field.name for f in filters if isinstance(f, parse.Filter)]
    ok = (
        bool(table.primary_key)
        and len(names) == len(filters) == len(table.primary_key)
        and set(names) == set(table.primary_key)
        and all(
            isinstance(f, parse.Filter)
            and f.op == "eq"
            and not f.negate
            and not f.field.path
            and f.modifier is None
            for f in filters
        )
    )
    if not ok:
        raise ApiError(
            405,
            "PGRST105",
            "Filters must include all and only primary key columns with 'eq' operators",
        )


def _check_put(row: tuple[Any, ...]) -> None:
    """The payload's key must be the URL's: the INSERT keeps only rows whose key matches the
    filters, so anything but exactly one row written means it did not (nothing is kept)."""
    if row[1] != 1:
        raise ApiError(400, "PGRST115", "Payload values do not match URL in primary key column(s)")


def _insert(
    table: Table,
    raw: bytes,
    payload: Any,
    query: Query,
    prefer: Prefer,
    minimal: bool,
    *,
    put: bool = False,
) -> tuple[sql.Composable, list[Any], bool]:
    """The INSERT for a POST or PUT body, and whether it is a merging upsert (which counts the
    rows it inserts). A PUT merges on the primary key and keeps only payload rows whose key
    equals the URL's filters. Raises ApiError PGRST102/PGRST204/PGRST100."""
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
    if put:
        conflict = table.primary_key
    elif prefer.resolution:
        conflict = query.on_conflict or table.primary_key or None
    merge = put or prefer.resolution == "merge-duplicates"
    stmt, params = build.insert(
        table,
        body,
        columns,
        missing_default=missing,
        conflict=conflict,
        merge=merge,
        minimal=minimal,
        keep_only=query.filters if put else None,
    )
    return stmt, params, bool(merge and conflict)


def _check_aggregates(shape: build.ReadShape, enabled: bool) -> None:
    """Aggregates only with PostgREST's db-aggregates-enabled (`alter role authenticator set
    pgrst.db_aggregates_enabled to 'true'`), off by default as on Supabase. Raises ApiError
    400 PGRST123."""
    if not enabled and build.has_aggregates(shape):
        raise ApiError(400, "PGRST123", "Use of aggregate functions is not allowed")


def _cap_rows(query: Query, max_rows: int | None) -> None:
    """config.toml `[api] max_rows` (PostgREST's db-max-rows): no read answers more rows,
    whatever `limit` asks; counts still count them all. Writes are not capped."""
    if max_rows is not None:
        query.limit = max_rows if query.limit is None else min(query.limit, max_rows)


Estimate = tuple[str, tuple[Any, ...]] | None  # the EXPLAIN behind a planned count


def _plan_read(
    table: Table,
    items: list[tuple[str, str]],
    count: bool,
    kind: str,
    cache: SchemaCache,
    max_rows: int | None = None,
    strip: bool = False,
    count_method: str | None = None,
) -> tuple[str, tuple[Any, ...], int, Estimate]:
    """(SQL, parameters, offset, estimate) of a GET on a table; estimate is the EXPLAIN that
    answers `count=planned`, and `count=estimated` beyond max_rows. Raises ApiError 400,
    CacheMiss."""
    query = parse_query(items)
    _cap_rows(query, max_rows)
    shape = query.shape(cache)
    shape.csv = kind == "csv"
    shape.strip_nulls = strip
    _check_aggregates(shape, cache.aggregates_enabled)
    planned = count_method == "planned"
    estimated = count_method == "estimated" and max_rows is not None
    stmt, params = build.read(
        build.table_source(table),
        shape,
        count=count and not planned,
        single=kind == "object",
        count_limit=max_rows + 1 if estimated and max_rows is not None else None,
    )
    guess: Estimate = None
    if planned or estimated:
        explain_sql, explain_params = build.estimate(build.table_source(table), query.shape(cache))
        guess = explain_sql.as_string(None), tuple(explain_params)
    return stmt.as_string(None), tuple(params), query.offset or 0, guess


async def _read_table(
    request: Request,
    state: RestState,
    cache: SchemaCache,
    table: Table,
    ctx: RequestContext,
    prefer: Prefer,
    kind: str,
    strip: bool = False,
) -> Response:
    single = kind == "object"
    key = (
        state.holder.generation,
        table.schema,
        table.name,
        request.url.query,
        prefer.count_method,
        kind,
        strip,
    )
    plan = state.plans.get(key)
    if plan is None:
        plan = await _prepare(  # type: ignore[assignment]
            request,
            b"",
            _plan_read,
            table,
            _items(request),
            prefer.count,
            kind,
            cache,
            state.settings.max_rows,
            strip,
            prefer.count_method,
        )
        if len(state.plans) >= _PLAN_CACHE_SIZE:
            state.plans.clear()
        state.plans[key] = plan  # type: ignore[assignment]
    text, params, offset, guess = plan  # type: ignore[misc]
    row = await run(
        state.pool, ctx, text, params, read_only=True, check=_check_single if single else None
    )
    if guess is not None:
        row = await _estimated(state, ctx, prefer, row, guess)
    return _read_response(request, row, offset, single, prefer.count, kind)


async def _estimated(
    state: RestState,
    ctx: RequestContext,
    prefer: Prefer,
    row: tuple[Any, ...],
    guess: tuple[str, tuple[Any, ...]],
) -> tuple[Any, ...]:
    """The row with its total from the planner: always for count=planned; for count=estimated
    only when the exact count, stopped at max_rows + 1, went past max_rows (PostgREST's
    MainTx: the larger of the two)."""
    max_rows = state.settings.max_rows
    exact = row[2]
    if prefer.count_method == "estimated" and (max_rows is None or exact <= max_rows):
        return row
    plans = await explain(state.pool, ctx, guess[0], guess[1], read_only=True)
    estimate = int(plans[0][0][0]["Plan"]["Plan Rows"])
    total = estimate if prefer.count_method == "planned" else max(exact, estimate)
    return (row[0], row[1], total)


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
# The content types that call a function of one unnamed parameter with the body as it is
# (PostgREST's findProc), by the parameter's type.
_BODY_PARAMETER = {
    "application/json": ("json", "jsonb"),
    "text/plain": ("text",),
    "text/xml": ("xml",),
    "application/octet-stream": ("bytea",),
}


def _matches(fn: Function, given: frozenset[str], raw_body: bool) -> bool:
    """PostgREST's matchesParams: every required parameter given, the rest optional ones."""
    if not fn.args:
        return not given and not raw_body
    if any(a.name == "" for a in fn.args):
        return False
    optional = fn.arg_names - fn.required
    return given - optional == fn.required


def _choose(
    fns: list[Function], schema: str, name: str, given: frozenset[str], media: str | None
) -> Function:
    """The overload the request calls, as PostgREST picks it: the one whose parameters the
    argument names fit; failing that, the one with a single unnamed parameter of the body's
    type (`media`: the POST's content type, None for GET). Raises CacheMiss 404 PGRST202 for
    none, ApiError 300 PGRST203 when several fit."""
    raw_body = media in ("text/plain", "text/xml", "application/octet-stream")
    named = [f for f in fns if _matches(f, given, raw_body)]
    body_types = _BODY_PARAMETER.get(media or "", ())
    unnamed = [
        f for f in fns if len(f.args) == 1 and f.args[0].name == "" and f.args[0].type in body_types
    ]
    found = named or unnamed
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(
            f"{f.schema}.{f.name}({', '.join(f'{a.name} => {a.type}' for a in f.args)})"
            for f in found
        )
        raise ApiError(
            300,
            "PGRST203",
            f"Could not choose the best candidate function between: {listed}"[:2000],
            None,
            "Try renaming the parameters or the function itself in the database so function "
            "overloading can be resolved",
        )
    keys = sorted(given)
    shown = f"({', '.join(keys)})" if keys else " without parameters"
    if raw_body:
        kind = {"text/plain": "text", "text/xml": "xml"}.get(media or "", "bytea")
        searched = f" with a single unnamed {kind} parameter"
    else:
        searched = (
            f" with parameter{'s' if len(keys) > 1 else ''} {', '.join(keys)}"
            if keys
            else " without parameters"
        )
        if media == "application/json":
            searched += " or with a single unnamed json/jsonb parameter"
    raise CacheMiss(
        404,
        "PGRST202",
        f"Could not find the function {schema}.{name}{'' if raw_body else shown} in the schema "
        "cache",
        f"Searched for the function {schema}.{name}{searched}, but no matches were found in the "
        "schema cache.",
    )


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
    prefer = _prefer(request, cache)
    kind, plan, strip = _negotiate(request, cache)
    single = kind == "object"
    fns = cache.functions.get((schema, name), [])
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    call = await _prepare(
        request,
        raw,
        _plan_call,
        request.method,
        fns,
        schema,
        name,
        raw,
        media or "application/json",
        _items(request),
        prefer,
        kind,
        state.settings.max_rows,
        strip,
        cache.aggregates_enabled,
    )
    if plan is not None:
        return await _explain(
            request, state, ctx, plan, call.text, call.params, read_only=call.read_only
        )
    applied = prefer.applied("call")
    rollback = _rolls_back(cache, prefer)
    if call.scalar:
        row = await run(
            state.pool, ctx, call.text, call.params, read_only=call.read_only, rollback=rollback
        )
        if call.returns_void:
            # PostgREST >= 10: VOID answers 204 No Content
            return _with_applied(Response(b"", 204), applied)
        content = "" if request.method == "HEAD" else row[0]
        total = "1" if prefer.count else "*"
        return _with_applied(
            Response(content, 200, {"Content-Range": f"0-0/{total}"}, media_type=JSON_TYPE),
            applied,
        )
    row = await run(
        state.pool,
        ctx,
        call.text,
        call.params,
        read_only=call.read_only,
        check=_checks(_check_single if single else None, _max_affected(prefer)),
        rollback=rollback,
    )
    response = _read_response(request, row, call.offset, call.as_object, prefer.count, kind)
    return _with_applied(response, applied)


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
    media: str,
    items: list[tuple[str, str]],
    prefer: Prefer,
    kind: str,
    max_rows: int | None = None,
    strip: bool = False,
    aggregates: bool = False,
) -> _Call:
    """The SQL calling one of the overloads `fns` of schema.name. Raises ApiError, CacheMiss."""
    all_arg_names = frozenset(a.name for f in fns for a in f.args)
    payload: Any = None
    if method in ("GET", "HEAD"):
        query = parse_query(items, all_arg_names)
        args: dict[str, Any] = dict(query.args)
        given, body_media = frozenset(args), None
    else:
        query = parse_query(items)
        body_media = media
        if media in _BODY_PARAMETER and media != "application/json":
            args, given = {}, frozenset()
        else:
            payload = _json_body(raw)
            args = payload if isinstance(payload, dict) else {}
            given = frozenset(query.columns) if query.columns is not None else frozenset(args)
    fn = _choose(fns, schema, name, given, body_media)
    unnamed = len(fn.args) == 1 and fn.args[0].name == ""
    if unnamed:
        # The body is the argument, as sent (JSON of any shape, text, XML or bytes).
        value: Any = raw if fn.args[0].type == "bytea" else raw.decode()
        body_arg: tuple[str, Any] | None = (fn.args[0].type, value)
        body = "{}"
    else:
        if payload is not None and not isinstance(payload, dict):
            raise ApiError(
                400,
                "PGRST102",
                "Empty or invalid json",
                "Expected a JSON object of named arguments",
            )
        body_arg = None
        body = json.dumps(args) if method in ("GET", "HEAD") or not raw.strip() else raw.decode()
    if prefer.max_affected is not None and prefer.handling == "strict" and not fn.returns_set:
        raise ApiError(
            400,
            "PGRST128",
            "Function must return SETOF or TABLE when max-affected preference is used with "
            "handling=strict",
        )
    read_only = method in ("GET", "HEAD") or fn.volatility in ("i", "s")
    if not fn.returns_set and not fn.returns_composite:
        stmt, params = build.call_scalar(fn, args, body, body_arg)
        return _Call(stmt.as_string(None), params, read_only, True, fn.returns_void, False, 0)
    src = build.function_source(fn, args, body, body_arg)
    as_object = kind == "object" or not fn.returns_set
    if fn.returns_set:
        _cap_rows(query, max_rows)
    shape = query.shape()
    shape.csv = kind == "csv"
    shape.strip_nulls = strip
    _check_aggregates(shape, aggregates)
    stmt, params = build.read(
        src, shape, count=prefer.count, single=as_object, scalar=not fn.returns_composite
    )
    return _Call(
        stmt.as_string(None), params, read_only, False, False, as_object, query.offset or 0
    )


async def invalid_path(request: Request) -> Response:
    """Any other path (`/`, `/a/b`): PostgREST's 404 PGRST125, in its JSON shape (after Kong's
    key check, which comes first)."""
    kong.require_api_key(request, _state(request).api_keys)
    raise ApiError(404, "PGRST125", "Invalid path specified in request URL")
