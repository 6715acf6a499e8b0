"""The dashboard pages' queries. Each one is bounded so that a page stays quick on a database
with millions of usage rows: by an index range (a user's rows by `(user_id, occurred_at)`, the
newest ids of the primary key), by a LIMIT, or by a time range of at most RANGE_DAYS days.

A page runs its sections in one read-only transaction with a statement timeout, each section in
a savepoint of its own: a section that fails (a table this database does not have yet, a query
that hits the timeout) is shown as a note in its place and the rest of the page still renders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

# The overview's chart and spend tiles cover this many days, today (UTC) included.
RANGE_DAYS = 30
# A balance below this (in its currency) is "low" unless the page asks for another threshold.
LOW_BALANCE = Decimal("1")
# "Recent errors" look at this many of the newest requests / usage rows (by primary key), so the
# lookup stays an index range however large the tables are and however rare failures are.
RECENT_WINDOW = 100_000
LIST_LIMIT = 50
# Offsets are capped: a deeper page is a search away, and a large OFFSET is a long scan.
MAX_OFFSET = 10_000

Row = dict[str, Any]


@dataclass
class Section:
    """The outcome of one section's query: its rows, or why it has none."""

    rows: list[Row] = field(default_factory=list)
    error: str | None = None
    value: Any = None


async def section(conn: AsyncConnection[Any], load: Callable[[], Awaitable[Any]]) -> Section:
    """Run `load` in a savepoint; a database error becomes the section's note, not a 500."""
    try:
        async with conn.transaction():
            result = await load()
    except psycopg.errors.QueryCanceled:
        return Section(error="this query took longer than the page's statement timeout")
    except psycopg.Error as exc:
        diag = exc.diag
        return Section(error=f"{diag.sqlstate}: {diag.message_primary or exc}")
    if isinstance(result, list):
        return Section(rows=result)
    return Section(value=result)


async def rows(conn: AsyncConnection[Any], query: str | sql.Composed, **params: Any) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params or None)
        return await cur.fetchall()


async def exists(conn: AsyncConnection[Any], relation: str) -> bool:
    async with conn.cursor() as cur:
        await cur.execute("select to_regclass(%s) is not null", (relation,))
        row = await cur.fetchone()
    return bool(row and row[0])


# ── Overview ──────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Window:
    today: date

    @classmethod
    def now(cls) -> Window:
        return cls(datetime.now(UTC).date())

    def start(self, days: int) -> datetime:
        """Midnight UTC `days - 1` days before today: the last `days` days, today included."""
        return datetime.combine(self.today - timedelta(days=days - 1), time(), UTC)

    def days(self) -> list[date]:
        return [self.today - timedelta(days=i) for i in range(RANGE_DAYS - 1, -1, -1)]


@dataclass(frozen=True)
class Spend:
    """Spend per day and model over the window, and the tiles' totals, per currency."""

    window: Window
    daily: list[Row]  # day, model, currency, requests, cost
    source: str

    def totals(self) -> dict[str, dict[str, Any]]:
        """currency → {today, d7, d30 (Decimal), requests_today, requests_d30}."""
        d7 = self.window.start(7).date()
        out: dict[str, dict[str, Any]] = {}
        for row in self.daily:
            acc = out.setdefault(
                row["currency"],
                {"today": Decimal(0), "d7": Decimal(0), "d30": Decimal(0), "requests": 0},
            )
            acc["d30"] += row["cost"]
            acc["requests"] += row["requests"]
            if row["day"] >= d7:
                acc["d7"] += row["cost"]
            if row["day"] == self.window.today:
                acc["today"] += row["cost"]
        return out

    def by_model(self, currency: str) -> dict[str, dict[date, Decimal]]:
        """model → day → cost in one currency, models by total spend, largest first."""
        table: dict[str, dict[date, Decimal]] = defaultdict(dict)
        for row in self.daily:
            if row["currency"] == currency:
                per_day = table[row["model"]]
                per_day[row["day"]] = per_day.get(row["day"], Decimal(0)) + row["cost"]
        order = sorted(table, key=lambda m: (-sum(table[m].values()), m))
        return {model: table[model] for model in order}


# Rollups the overview reads instead of usage_records when the database has them: (relation,
# query), the first one present wins. Both views are exact (summaries plus what the rollup has
# not folded in yet) and their usage_date filter is an index range.
# usage_model_daily_totals (20261130010001) is summed over users already: 30 days × models rows
# whatever the number of users. usage_daily_totals (20261129220002) is per user (360,000 rows
# for 2,000 users × 6 models × 30 days: 1.8 s). Without either, the fallback sums usage_records
# of the range (a scan: usage_records has no index on occurred_at alone).
ROLLUPS: list[tuple[str, str]] = [
    (
        "public.usage_model_daily_totals",
        """
        select (t.usage_date at time zone 'UTC')::date as day, t.model_id as model, t.currency,
               sum(t.requests)::bigint as requests, sum(t.cost) as cost
        from public.usage_model_daily_totals t
        where t.usage_date >= %(since)s
        group by 1, 2, 3
        having sum(t.requests) > 0 or sum(t.cost) <> 0
        """,
    ),
    (
        "public.usage_daily_totals",
        """
        select (t.usage_date at time zone 'UTC')::date as day, t.model_id as model, t.currency,
               sum(t.requests)::bigint as requests, sum(t.cost) as cost
        from public.usage_daily_totals t
        where t.usage_date >= %(since)s
        group by 1, 2, 3
        having sum(t.requests) > 0 or sum(t.cost) <> 0
        """,
    ),
]

_RAW_DAILY = """
select (u.occurred_at at time zone 'UTC')::date as day, u.model_id as model, u.currency,
       count(*)::bigint as requests, sum(u.cost) as cost
from public.usage_records u
where u.occurred_at >= %(since)s
group by 1, 2, 3
"""


async def spend(conn: AsyncConnection[Any], window: Window) -> Spend:
    since = window.start(RANGE_DAYS)
    for relation, query in ROLLUPS:
        if await exists(conn, relation):
            return Spend(window, await rows(conn, query, since=since), relation)
    return Spend(window, await rows(conn, _RAW_DAILY, since=since), "public.usage_records")


async def low_balances(conn: AsyncConnection[Any], threshold: Decimal) -> list[Row]:
    return await rows(
        conn,
        """
        select b.user_id, u.email, b.balance, b.currency, coalesce(h.held, 0) as held,
               b.balance - coalesce(h.held, 0) as available
        from public.user_balances b
        left join auth.users u on u.id = b.user_id
        left join lateral (
          select sum(r.amount) as held from public.credit_reservations r
          where r.user_id = b.user_id and r.status = 'held' and r.expires_at > now()
        ) h on true
        where b.balance < %(threshold)s
        order by b.balance, b.user_id
        limit 10
        """,
        threshold=threshold,
    )


async def recent_errors(conn: AsyncConnection[Any]) -> list[Row]:
    """Failed metered requests, usage recorded as failed, unresolved signup errors: newest 15."""
    return await rows(
        conn,
        """
        (select m.created_at as at, 'metered request' as source, m.request_id as reference,
                m.user_id, m.model, m.http_status::text as status, m.error as message
         from public.metered_requests m
         where m.status = 'failed'
           and m.id > (select coalesce(max(id), 0) from public.metered_requests) - %(window)s
         order by m.id desc limit 15)
        union all
        (select u.occurred_at, 'usage record', u.request_id, u.user_id, u.model_id, u.status,
                u.metadata->>'error'
         from public.usage_records u
         where u.status <> 'success'
           and u.id > (select coalesce(max(id), 0) from public.usage_records) - %(window)s
         order by u.id desc limit 15)
        union all
        (select s.created_at, 'signup', s.sqlstate, s.user_id, null, s.sqlstate, s.message
         from public.signup_errors s where s.resolved_at is null
         order by s.created_at desc limit 15)
        order by at desc limit 15
        """,
        window=RECENT_WINDOW,
    )


# ── Users ─────────────────────────────────────────────────────────────────────────────────────

_HELD = """
left join lateral (
  select coalesce(sum(r.amount), 0) as held, count(*) as holds from public.credit_reservations r
  where r.user_id = b.user_id and r.status = 'held' and r.expires_at > now()
) h on true
"""


async def users(
    conn: AsyncConnection[Any], search: str | None, order: str, offset: int
) -> list[Row]:
    """One page of users (LIST_LIMIT + 1 rows: the extra one says there is a next page)."""
    by = {
        "balance": sql.SQL("b.balance, b.user_id"),
        "newest": sql.SQL("b.created_at desc, b.user_id"),
        "email": sql.SQL("u.email nulls last, b.user_id"),
    }[order]
    query = sql.SQL(
        """
        select b.user_id, u.email, u.is_anonymous, b.created_at, b.balance, b.currency,
               h.held, h.holds, b.balance - h.held as available, last.occurred_at as last_usage
        from public.user_balances b
        left join auth.users u on u.id = b.user_id
        """
        + _HELD
        + """
        left join lateral (
          select x.occurred_at from public.usage_records x where x.user_id = b.user_id
          order by x.occurred_at desc limit 1
        ) last on true
        where %(search)s::text is null
           or u.email ilike '%%' || %(search)s || '%%'
           or b.user_id::text = %(search)s
        order by {by}
        limit %(limit)s offset %(offset)s
        """
    ).format(by=by)
    return await rows(
        conn, query, search=search or None, limit=LIST_LIMIT + 1, offset=min(offset, MAX_OFFSET)
    )


async def user_count(conn: AsyncConnection[Any]) -> int:
    found = await rows(conn, "select count(*) as n from public.user_balances")
    return int(found[0]["n"])


async def user(conn: AsyncConnection[Any], user_id: str) -> Row | None:
    found = await rows(
        conn,
        """
        select b.user_id, u.email, u.is_anonymous, u.created_at as signed_up_at, b.balance,
               b.currency, b.updated_at, h.held, h.holds, b.balance - h.held as available
        from public.user_balances b
        left join auth.users u on u.id = b.user_id
        """
        + _HELD
        + "where b.user_id = %(user_id)s",
        user_id=user_id,
    )
    return found[0] if found else None


async def user_holds(conn: AsyncConnection[Any], user_id: str) -> list[Row]:
    return await rows(
        conn,
        """
        select r.request_id, r.amount, r.model_id, r.created_at, r.expires_at
        from public.credit_reservations r
        where r.user_id = %(user_id)s and r.status = 'held' and r.expires_at > now()
        order by r.expires_at limit 50
        """,
        user_id=user_id,
    )


async def user_usage_by_model(
    conn: AsyncConnection[Any], user_id: str, window: Window
) -> list[Row]:
    return await rows(
        conn,
        """
        select u.model_id as model, u.currency, count(*)::bigint as requests,
               sum(u.input_tokens)::bigint as input_tokens,
               sum(u.output_tokens)::bigint as output_tokens, sum(u.cost) as cost
        from public.usage_records u
        where u.user_id = %(user_id)s and u.occurred_at >= %(since)s
        group by 1, 2 order by cost desc, model
        """,
        user_id=user_id,
        since=window.start(RANGE_DAYS),
    )


async def user_recent_usage(conn: AsyncConnection[Any], user_id: str) -> list[Row]:
    return await rows(
        conn,
        """
        select u.occurred_at, u.request_id, u.model_id as model, u.input_tokens,
               u.cached_input_tokens, u.output_tokens, u.cost, u.currency, u.status,
               k.prefix as key_prefix
        from public.usage_records u
        left join public.metered_requests m on m.request_id = u.request_id
        left join public.api_keys k on k.id = m.api_key_id
        where u.user_id = %(user_id)s
        order by u.occurred_at desc limit %(limit)s
        """,
        user_id=user_id,
        limit=LIST_LIMIT,
    )


_KEY_STATE = """
case when k.revoked_at is not null then 'revoked'
     when k.expires_at is not null and k.expires_at <= now() then 'expired'
     else 'active' end
"""


async def user_keys(conn: AsyncConnection[Any], user_id: str) -> list[Row]:
    return await rows(
        conn,
        f"""
        select k.prefix, k.name, p.name as plan, {_KEY_STATE} as state, k.allowed_models,
               k.expires_at, k.last_used_at, k.created_at
        from public.api_keys k join public.plans p on p.id = k.plan_id
        where k.user_id = %(user_id)s
        order by k.created_at desc limit 100
        """,
        user_id=user_id,
    )


async def user_subscriptions(conn: AsyncConnection[Any], user_id: str) -> list[Row]:
    return await rows(
        conn,
        """
        select s.id, p.name as plan, s.status, s.suspension_reason, s.used_requests,
               s.quota_requests, s.used_tokens, s.quota_tokens, s.period, s.reset_at,
               s.started_at
        from public.subscriptions s join public.plans p on p.id = s.plan_id
        where s.user_id = %(user_id)s
        order by s.created_at desc limit 100
        """,
        user_id=user_id,
    )


async def user_ledger(conn: AsyncConnection[Any], user_id: str) -> list[Row]:
    return await rows(
        conn,
        """
        select l.created_at, l.kind, l.amount, l.currency, l.reference, l.description
        from public.ledger_entries l
        where l.user_id = %(user_id)s
        order by l.created_at desc limit %(limit)s
        """,
        user_id=user_id,
        limit=LIST_LIMIT,
    )


# ── Models and prices ─────────────────────────────────────────────────────────────────────────


async def current_prices(conn: AsyncConnection[Any], search: str | None) -> list[Row]:
    """The version in effect now of each (provider, model), 200 at most per page."""
    return await rows(
        conn,
        """
        select w.provider_id, w.model_id, m.is_default, w.is_active, w.pricing_type,
               w.price_per_input_token * 1000000 as input_per_1m,
               w.price_per_output_token * 1000000 as output_per_1m,
               w.price_per_cached_input_token * 1000000 as cached_per_1m,
               w.price_per_request, w.price_per_image, w.currency, w.pricing_source,
               w.effective_from
        from public.models_with_pricing w
        join public.models m on m.id = w.id
        where %(search)s::text is null or w.model_id ilike '%%' || %(search)s || '%%'
           or w.provider_id ilike '%%' || %(search)s || '%%'
        order by w.model_id, w.provider_id
        limit 201
        """,
        search=search or None,
    )


async def price_history(conn: AsyncConnection[Any], model: str | None) -> list[Row]:
    """Every version of one model (newest first), or the 50 most recently created versions."""
    if model:
        return await rows(
            conn,
            """
            select p.provider_id, p.model_id, p.effective_from, p.pricing_type,
                   p.price_per_input_token * 1000000 as input_per_1m,
                   p.price_per_output_token * 1000000 as output_per_1m,
                   p.price_per_cached_input_token * 1000000 as cached_per_1m,
                   p.price_per_request, p.currency, p.pricing_source, p.created_at
            from public.model_pricing p where p.model_id = %(model)s
            order by p.effective_from desc, p.provider_id limit 200
            """,
            model=model,
        )
    return await rows(
        conn,
        """
        select p.provider_id, p.model_id, p.effective_from, p.pricing_type,
               p.price_per_input_token * 1000000 as input_per_1m,
               p.price_per_output_token * 1000000 as output_per_1m,
               p.price_per_cached_input_token * 1000000 as cached_per_1m,
               p.price_per_request, p.currency, p.pricing_source, p.created_at
        from public.model_pricing p
        order by p.created_at desc, p.id limit 50
        """,
    )


async def aliases(conn: AsyncConnection[Any]) -> list[Row]:
    return await rows(
        conn,
        """
        select a.alias, a.provider_id, a.target_model_id, a.target_provider_id, a.updated_at
        from public.model_aliases a order by a.alias, a.provider_id nulls first limit 200
        """,
    )


# The consolidation report runs on demand with a timeout of its own: its checks read the
# catalog (one pass per check) and the rollups (usage_without_price counts from the model
# totals since 20261130010002, no longer every usage record: ~55 s on 10 M records before).
REPORT_TIMEOUT_MS = 60_000


async def consolidation_report(conn: AsyncConnection[Any]) -> dict[str, Any]:
    await conn.execute(f"set local statement_timeout = {REPORT_TIMEOUT_MS}")
    found = await rows(conn, "select public.pricing_consolidation_report() as report")
    report: dict[str, Any] = found[0]["report"]
    return report


# ── Keys and plans ────────────────────────────────────────────────────────────────────────────


async def plans(conn: AsyncConnection[Any]) -> list[Row]:
    return await rows(
        conn,
        """
        select p.name, p.price, p.period, p.is_active,
               (select count(*) from public.plan_routes r where r.plan_id = p.id) as routes,
               (select string_agg(distinct r.model, ', ' order by r.model)
                from public.plan_routes r where r.plan_id = p.id) as models,
               (select count(*) from public.subscriptions s
                where s.plan_id = p.id and s.status = 'active') as active_subscriptions
        from public.plans p order by p.name limit 200
        """,
    )


async def routes(conn: AsyncConnection[Any]) -> list[Row]:
    return await rows(
        conn,
        """
        select p.name as plan, r.model, u.name as upstream, u.base_url, r.weight
        from public.plan_routes r
        join public.plans p on p.id = r.plan_id
        join public.upstreams u on u.id = r.upstream_id
        order by p.name, r.model, u.name limit 500
        """,
    )


async def upstreams(conn: AsyncConnection[Any]) -> list[Row]:
    return await rows(
        conn,
        """
        select u.name, u.base_url, u.wire_format, u.api_key_env, u.is_active, u.updated_at
        from public.upstreams u order by u.name limit 200
        """,
    )


async def recent_keys(conn: AsyncConnection[Any]) -> list[Row]:
    return await rows(
        conn,
        f"""
        select k.prefix, k.name, usr.email, k.user_id, p.name as plan, {_KEY_STATE} as state,
               k.allowed_models, k.expires_at, k.last_used_at, k.created_at
        from public.api_keys k
        join public.plans p on p.id = k.plan_id
        left join auth.users usr on usr.id = k.user_id
        order by k.created_at desc limit %(limit)s
        """,
        limit=LIST_LIMIT,
    )


# ── Audit trail ───────────────────────────────────────────────────────────────────────────────

# An audit table is read newest first: by an integer `id` when it has one (an identity column:
# the primary key's index, so the newest 100 are read without sorting the table), else by the
# first of these time columns it has.
_TIME_COLUMNS = ("created_at", "occurred_at", "changed_at", "at")


async def audit_rows(conn: AsyncConnection[Any], relation: str) -> tuple[list[str], list[Row]]:
    """The newest 100 rows of an audit table whatever its columns (audit_logs is being added
    by another change: its shape is read from the catalog, not assumed)."""
    schema, name = relation.split(".")
    found = await rows(
        conn,
        """
        select column_name, data_type from information_schema.columns
        where table_schema = %(schema)s and table_name = %(name)s order by ordinal_position
        """,
        schema=schema,
        name=name,
    )
    columns = [r["column_name"] for r in found]
    types = {r["column_name"]: r["data_type"] for r in found}
    if types.get("id") in ("bigint", "integer"):
        order: str | None = "id"
    else:
        order = next((c for c in _TIME_COLUMNS if c in columns), None)
    query = sql.SQL("select * from {rel} {order} limit 100").format(
        rel=sql.Identifier(schema, name),
        order=sql.SQL("order by {} desc").format(sql.Identifier(order)) if order else sql.SQL(""),
    )
    return columns, await rows(conn, query)
