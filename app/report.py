"""Usage reports (`tokenmeter usage report`): fetch the SQL aggregate `usage_report` and render
it as a table's rows, CSV, JSON, or a chart (PNG, or a self-contained HTML page with inline SVG).

Money stays `Decimal` end to end: the rpc's `cost` is read as text (`cost::text`), sums are
Decimal sums, and every number a chart shows is printed from those Decimals — matplotlib gets
floats only to size the bars.

Who runs it decides what is summed: the service key sees everyone; `user_client()` signs in as
a user (TOKENMETER_ACCESS_TOKEN, or TOKENMETER_EMAIL + TOKENMETER_PASSWORD) and RLS limits the
same function to their own rows.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from dotenv import dotenv_values

from app.client import call, close_client, rpc_params
from app.config import ConfigError
from app.errors import InvalidInput, NotFound
from app.stack.paths import StackPaths
from supabase import Client, ClientOptions, create_client

GROUPS = ("day", "model", "user", "key")
FORMATS = ("table", "csv", "json", "png", "html")
DEFAULT_DAYS = 30
TOP_N = 10
# Bars get their exact total printed above them up to this many days; beyond, the labels would
# overlap (the legend and the HTML table still carry the exact numbers).
MAX_LABELLED_DAYS = 31
_COLUMNS = (
    "day,model,user_id,api_key_id,api_key_name,currency,requests,input_tokens,"
    "cached_input_tokens,output_tokens,cost::text"
)


def exact(value: Decimal) -> str:
    """A Decimal as plain text without trailing zeros: the same string in every format."""
    return format(value.normalize(), "f") if value else "0"


@dataclass(frozen=True)
class ReportRow:
    day: date | None
    model: str | None
    user_id: str | None
    api_key_id: str | None
    api_key_name: str | None
    currency: str
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: Decimal

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ReportRow:
        return cls(
            day=date.fromisoformat(data["day"]) if data.get("day") else None,
            model=data.get("model"),
            user_id=data.get("user_id"),
            api_key_id=data.get("api_key_id"),
            api_key_name=data.get("api_key_name"),
            currency=data["currency"],
            requests=int(data["requests"]),
            input_tokens=int(data["input_tokens"]),
            cached_input_tokens=int(data["cached_input_tokens"]),
            output_tokens=int(data["output_tokens"]),
            cost=Decimal(data["cost"]),
        )

    def key_label(self) -> str:
        if self.api_key_id is None:
            return "(direct)"
        return f"{self.api_key_name or '?'} ({self.api_key_id[:8]})"

    def label(self, by: str) -> str:
        """The breakdown dimension of this row, as people read it."""
        if by == "day":
            return self.day.isoformat() if self.day else ""
        if by == "model":
            return self.model or ""
        if by == "user":
            return self.user_id or ""
        return self.key_label()


@dataclass(frozen=True)
class Totals:
    currency: str
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: Decimal


@dataclass(frozen=True)
class Query:
    """What to report on: [since, until) in UTC, optionally one user and/or one key."""

    since: datetime | None
    until: datetime | None
    user_id: str | None = None
    key: str | None = None

    def describe(self) -> str:
        since = _moment(self.since) if self.since else "the first record"
        until = f"before {_moment(self.until)}" if self.until else "now"
        text = f"from {since} until {until}"
        if self.user_id:
            text += f" for user {self.user_id}"
        if self.key:
            text += f" for key {self.key}"
        return text


def _moment(value: datetime) -> str:
    """A range end for people: the date alone for a UTC midnight, else ISO 8601."""
    utc = value.astimezone(UTC)
    return utc.date().isoformat() if utc.time() == time() else utc.isoformat()


def parse_when(value: str | None, name: str, *, end: bool) -> datetime | None:
    """A --since/--until value: a date (YYYY-MM-DD, UTC; as --until the whole day is included)
    or an ISO 8601 time (UTC unless it names an offset)."""
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(), UTC)
        return start + timedelta(days=1) if end else start
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            "invalid_argument",
            detail=f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 time, got {value!r}",
            field=name,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def default_since(today: date | None = None) -> datetime:
    """The last DEFAULT_DAYS days, today (UTC) included."""
    today = today or datetime.now(UTC).date()
    return datetime.combine(today - timedelta(days=DEFAULT_DAYS - 1), time(), UTC)


def fetch(client: Client, query: Query, group_by: str) -> list[ReportRow]:
    """One call of the SQL function; its RLS is the client's (service key or a user's JWT)."""
    params = rpc_params(
        since=query.since,
        until=query.until,
        for_user=query.user_id,
        for_key=query.key,
        group_by=group_by,
    )
    response = call(lambda: client.rpc("usage_report", params).select(_COLUMNS).execute())
    return [ReportRow.parse(row) for row in response.data or []]


def fetch_or_explain(client: Client, query: Query, group_by: str) -> list[ReportRow]:
    """`fetch`, with an empty result turned into an error that says what was empty."""
    rows = fetch(client, query, group_by)
    if not rows:
        raise NotFound("no_usage", code="no_usage", detail=f"no usage {query.describe()}")
    return rows


def totals(rows: list[ReportRow]) -> list[Totals]:
    """Exact sums per currency (one entry unless several currencies were recorded)."""
    sums: dict[str, list[Any]] = {}
    for row in rows:
        acc = sums.setdefault(row.currency, [0, 0, 0, 0, Decimal(0)])
        acc[0] += row.requests
        acc[1] += row.input_tokens
        acc[2] += row.cached_input_tokens
        acc[3] += row.output_tokens
        acc[4] += row.cost
    return [Totals(currency, *acc) for currency, acc in sorted(sums.items())]


def _row_json(row: ReportRow, by: str) -> dict[str, Any]:
    data = asdict(row)
    keep = {"day": ("day",), "model": ("model",), "user": ("user_id",)}.get(
        by, ("api_key_id", "api_key_name")
    )
    out = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in data.items() if k in keep}
    out.update(
        currency=row.currency,
        requests=row.requests,
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        output_tokens=row.output_tokens,
        cost=exact(row.cost),
    )
    return out


def to_json(rows: list[ReportRow], query: Query, by: str) -> str:
    """Costs as exact decimal strings (a JSON number would become a float in most readers)."""
    document = {
        "since": query.since.isoformat() if query.since else None,
        "until": query.until.isoformat() if query.until else None,
        "user_id": query.user_id,
        "key": query.key,
        "by": by,
        "totals": [{**asdict(t), "cost": exact(t.cost)} for t in totals(rows)],
        "rows": [_row_json(row, by) for row in rows],
    }
    return json.dumps(document, indent=2) + "\n"


def to_csv(rows: list[ReportRow], by: str) -> str:
    buffer = io.StringIO()
    records = [_row_json(row, by) for row in rows]
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


# ── Charts ────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ChartData:
    """What a chart shows: spend per day stacked by model, the top users and keys by spend."""

    query: Query
    currency: str
    daily: list[ReportRow]  # group_by day_model
    users: list[ReportRow]
    keys: list[ReportRow]

    @classmethod
    def load(cls, client: Client, query: Query) -> ChartData:
        daily = fetch_or_explain(client, query, "day_model")
        currencies = {row.currency for row in daily}
        if len(currencies) > 1:
            # One axis cannot add USD to EUR; the table and CSV list each currency apart.
            raise InvalidInput(
                "invalid_argument",
                detail=f"the usage is in several currencies ({', '.join(sorted(currencies))}): "
                "a chart shows one; use --format table, csv or json",
            )
        return cls(
            query=query,
            currency=currencies.pop(),
            daily=daily,
            users=fetch(client, query, "user"),
            keys=fetch(client, query, "key"),
        )

    def total(self) -> Decimal:
        return sum((row.cost for row in self.daily), Decimal(0))

    def days(self) -> list[date]:
        """Every day from the first to the last with usage (days without usage show as 0)."""
        seen = [row.day for row in self.daily if row.day is not None]
        first, last = min(seen), max(seen)
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def by_model(self) -> dict[str, dict[date, Decimal]]:
        """model → day → cost, models by total spend, largest first."""
        table: dict[str, dict[date, Decimal]] = defaultdict(dict)
        for row in self.daily:
            assert row.model is not None and row.day is not None
            table[row.model][row.day] = row.cost
        order = sorted(table, key=lambda m: (-sum(table[m].values()), m))
        return {model: table[model] for model in order}

    def day_totals(self) -> dict[date, Decimal]:
        sums: dict[date, Decimal] = defaultdict(Decimal)
        for row in self.daily:
            assert row.day is not None
            sums[row.day] += row.cost
        return dict(sums)


def _top(rows: list[ReportRow], label: Any) -> list[tuple[str, Decimal]]:
    ranked = sorted(rows, key=lambda r: (-r.cost, label(r)))[:TOP_N]
    return [(label(r), r.cost) for r in ranked]


def stacked_bars(
    ax: Any, days: list[date], series: dict[str, dict[date, Decimal]], currency: str
) -> list[float]:
    """One bar per day of `days` for each series (label → day → cost), stacked in order, each
    labelled with its exact total; returns the stacks' heights. Shared by this report's chart
    and the dashboard's (app/dashboard/charts.py). Heights are floats (the drawing); every
    number printed is the exact Decimal string."""
    positions = list(range(len(days)))
    bottoms = [0.0] * len(days)
    for name, per_day in series.items():
        heights = [float(per_day.get(day, 0)) for day in days]
        total = sum(per_day.values(), Decimal(0))
        ax.bar(positions, heights, bottom=bottoms, label=f"{name}: {exact(total)} {currency}")
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    return bottoms


def _figure(data: ChartData) -> Any:
    # Figure without pyplot: no global state and no GUI backend; savefig picks Agg for PNG and
    # the SVG backend for SVG by the format asked for.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 9), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1])
    spend = fig.add_subplot(grid[0, :])
    users = fig.add_subplot(grid[1, 0])
    keys = fig.add_subplot(grid[1, 1])
    cur = data.currency
    fig.suptitle(f"Usage {data.query.describe()} — total {exact(data.total())} {cur}", fontsize=11)

    days = data.days()
    positions = list(range(len(days)))
    bottoms = stacked_bars(spend, days, data.by_model(), cur)
    day_totals = data.day_totals()
    if len(days) <= MAX_LABELLED_DAYS:
        for x, day in zip(positions, days, strict=True):
            if day in day_totals:
                spend.annotate(
                    exact(day_totals[day]),
                    (x, bottoms[x]),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                    rotation=90 if len(days) > 10 else 0,
                )
    step = max(1, len(days) // 15)
    spend.set_xticks(positions[::step], [d.isoformat() for d in days[::step]], rotation=30)
    spend.set_title("Spend per day (UTC), stacked by model")
    spend.set_ylabel(cur)
    spend.legend(fontsize=8, loc="upper left")
    # Room above the tallest bar for its label (bars pin the autoscaled top to their height).
    spend.set_ylim(0, max(bottoms) * 1.18 or 1)

    for ax, rows, label, title in (
        (users, data.users, lambda r: r.user_id or "", "users"),
        (keys, data.keys, ReportRow.key_label, "API keys"),
    ):
        top = _top(rows, label)
        names = [name[:36] for name, _ in top][::-1]
        costs = [cost for _, cost in top][::-1]
        bars = ax.barh(names, [float(c) for c in costs], color="#4c72b0")
        ax.bar_label(bars, labels=[f"{exact(c)} {cur}" for c in costs], fontsize=7, padding=3)
        ax.set_title(f"Top {len(top)} of {len(rows)} {title} by spend")
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(x=0.35)
    return fig


def render_png(data: ChartData) -> bytes:
    buffer = io.BytesIO()
    _figure(data).savefig(buffer, format="png")
    return buffer.getvalue()


def _inline_svg(data: ChartData) -> str:
    import matplotlib

    buffer = io.StringIO()
    # Text stays text (searchable, the exact strings readable in the page), no font files.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        _figure(data).savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    # Inline in HTML: no XML prolog or DOCTYPE (it names a URL), no RDF metadata (it holds URLs).
    svg = re.sub(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.strip()


def render_html(data: ChartData) -> str:
    """One file, nothing fetched: the chart as inline SVG and the numbers as an HTML table."""
    cur = data.currency
    lines = []
    for model, per_day in data.by_model().items():
        for day, cost in sorted(per_day.items()):
            lines.append(
                f"<tr><td>{day.isoformat()}</td><td>{html.escape(model)}</td>"
                f'<td class="n">{exact(cost)}</td></tr>'
            )
    title = html.escape(f"tokenmeter usage {data.query.describe()}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
svg {{ max-width: 100%; height: auto; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Total: <strong>{exact(data.total())} {html.escape(cur)}</strong></p>
{_inline_svg(data)}
<h2>Spend per day and model ({html.escape(cur)})</h2>
<table><tr><th>day (UTC)</th><th>model</th><th>cost</th></tr>
{chr(10).join(lines)}
</table>
</body></html>
"""


# ── A user's session for --me ────────────────────────────────────────────────────────────────


def _public_settings() -> tuple[str, str]:
    """SUPABASE_URL and SUPABASE_ANON_KEY from the environment, .env or the local stack — not
    the service key, which a user running --me does not have."""
    paths = StackPaths.from_env()
    values: dict[str, str | None] = {}
    for source in (paths.env_file, paths.root / ".env"):
        if source.is_file():
            values.update({k: v for k, v in dotenv_values(source).items() if v})
    values.update({k: v for k, v in os.environ.items() if k.startswith("SUPABASE_") and v})
    url, anon = values.get("SUPABASE_URL"), values.get("SUPABASE_ANON_KEY")
    if not url or not anon:
        raise ConfigError("--me needs SUPABASE_URL and SUPABASE_ANON_KEY (environment or .env)")
    return url.rstrip("/"), anon


def user_client() -> Client:
    """A client signed in as a user: TOKENMETER_ACCESS_TOKEN (a user's JWT, e.g. from the app's
    session), else TOKENMETER_EMAIL and TOKENMETER_PASSWORD (signs in with the password).
    Raises ConfigError when neither is set, a TokenmeterError when the sign-in is refused."""
    url, anon = _public_settings()
    token = os.environ.get("TOKENMETER_ACCESS_TOKEN")
    email, password = os.environ.get("TOKENMETER_EMAIL"), os.environ.get("TOKENMETER_PASSWORD")
    if not token and not (email and password):
        raise ConfigError(
            "--me needs a user session: set TOKENMETER_ACCESS_TOKEN (a user's access token), "
            "or TOKENMETER_EMAIL and TOKENMETER_PASSWORD"
        )
    client = create_client(url, anon, ClientOptions(auto_refresh_token=False))
    try:
        if token:
            call(lambda: client.auth.get_user(token))  # a bad or expired token fails here, named
            client.postgrest.auth(token)
        else:
            assert email and password
            credentials = {"email": email, "password": password}
            call(lambda: client.auth.sign_in_with_password(credentials))
    except BaseException:
        close_client(client)
        raise
    return client
