"""`tokenmeter usage …`: record, list and report metered usage (logic in app/meter.py and
app/report.py)."""

from __future__ import annotations

import io
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from app.cli.common import JSON_HELP, USER_HELP, meter_session, resolve_user
from app.cli.output import console, err_console, fail, handle_errors, money, print_json
from app.cli.partitions import partitions_app, usage_archive
from app.cli.rollups import usage_rollup
from app.client import close_client, service_client
from app.config import Settings
from app.meter import Meter
from app.models import UsageRecord, UsageResult
from app.report import (
    DEFAULT_DAYS,
    FORMATS,
    GROUPS,
    ChartData,
    Query,
    ReportRow,
    default_since,
    exact,
    fetch_or_explain,
    parse_when,
    render_html,
    render_png,
    to_csv,
    to_json,
    totals,
    user_client,
)

usage_app = typer.Typer(no_args_is_help=True, help="Record, list and report metered usage.")
# Monthly partitions and the archive (issue 12 §2): app/cli/partitions.py.
usage_app.add_typer(partitions_app, name="partitions")
usage_app.command("archive")(usage_archive)
# Rollups (issue 12 §3): app/cli/rollups.py.
usage_app.command("rollup")(usage_rollup)


def usage_table(rows: list[UsageRecord] | list[UsageResult], title: str = "usage") -> Table:
    currency = rows[0].currency if rows else "USD"
    table = Table(
        "request", "model", "in", "cached", "out", f"cost {currency}", "at (UTC)", title=title
    )
    for row in rows:
        model = row.model_id if isinstance(row, UsageRecord) else row.model
        table.add_row(
            row.request_id,
            model,
            f"{row.input_tokens:,}",
            f"{row.cached_input_tokens:,}",
            f"{row.output_tokens:,}",
            format(row.cost.normalize(), "f"),
            row.occurred_at.strftime("%H:%M:%S"),
        )
    return table


@usage_app.command("record")
def usage_record(
    user: str = typer.Argument(..., help=USER_HELP),
    model: str = typer.Option(..., "--model", "-m"),
    input_tokens: int = typer.Option(..., "--input", help="Input tokens (cached included)."),
    output_tokens: int = typer.Option(..., "--output"),
    cached_input_tokens: int = typer.Option(0, "--cached"),
    provider: str | None = typer.Option(None, "--provider", "-p"),
    request_id: str | None = typer.Option(
        None, "--request-id", help="Idempotency key (default: a new uuid)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Record (and charge) one request's usage."""
    with meter_session() as meter:
        result = meter.record_usage(
            user_id=resolve_user(meter, user),
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            provider=provider,
            request_id=request_id or str(uuid.uuid4()),
        )
    if as_json:
        print_json(result)
        return
    console.print(
        usage_table([result], title="recorded" + (" (replayed)" if result.replayed else ""))
    )
    warning = "  [bold yellow]negative balance[/]" if result.negative_balance else ""
    console.print(f"balance {money(result.balance, result.currency)}{warning}")


@usage_app.command("list")
def usage_list(
    user: str = typer.Argument(..., help=USER_HELP),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A user's most recent usage records with their costs."""
    with meter_session() as meter:
        rows = meter.usage(user_id=resolve_user(meter, user), limit=limit)
    if as_json:
        print_json(rows)
    else:
        console.print(usage_table(rows))


def report_table(rows: list[ReportRow], query: Query, by: str) -> Table:
    header = {"day": "day (UTC)", "model": "model", "user": "user", "key": "API key"}[by]
    table = Table(title=f"usage {query.describe()}, by {by}", show_footer=True)
    # On a narrow terminal rich shortens cells with "…": the label may wrap, a number never.
    table.add_column(header, overflow="fold")
    for name in ("requests", "in", "cached", "out"):
        table.add_column(name, justify="right", no_wrap=True)
    widest = max(
        len(exact(cost)) for cost in [*(r.cost for r in rows), *(t.cost for t in totals(rows))]
    )
    table.add_column("cost", justify="right", no_wrap=True, min_width=widest)
    table.add_column("currency", no_wrap=True)
    for row in rows:
        table.add_row(
            row.label(by),
            f"{row.requests:,}",
            f"{row.input_tokens:,}",
            f"{row.cached_input_tokens:,}",
            f"{row.output_tokens:,}",
            exact(row.cost),
            row.currency,
        )
    # One footer line per currency: amounts in different currencies are never added up.
    sums = totals(rows)
    footers = [
        "total",
        *(
            "\n".join(f"{getattr(t, name):,}" for t in sums)
            for name in ("requests", "input_tokens", "cached_input_tokens", "output_tokens")
        ),
        "\n".join(exact(t.cost) for t in sums),
        "\n".join(t.currency for t in sums),
    ]
    for column, footer in zip(table.columns, footers, strict=True):
        column.footer = footer
    return table


@usage_app.command("report")
def usage_report(
    user: str | None = typer.Option(None, "--user", "-u", help=USER_HELP),
    key: str | None = typer.Option(None, "--key", "-k", help="API key id or its tm_ prefix."),
    since: str | None = typer.Option(
        None,
        "--since",
        help=f"YYYY-MM-DD or ISO 8601 time, UTC (default: the last {DEFAULT_DAYS} days).",
    ),
    until: str | None = typer.Option(
        None, "--until", help="YYYY-MM-DD (that day included) or ISO 8601 time (excluded)."
    ),
    by: str = typer.Option("day", "--by", help="Breakdown: day, model, user or key."),
    fmt: str = typer.Option(
        "table", "--format", "-f", help="table, csv, json, png or html (a chart)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to FILE (png/html default: usage-report.png/.html)."
    ),
    me: bool = typer.Option(
        False,
        "--me",
        help="As a signed-in user, under RLS (TOKENMETER_ACCESS_TOKEN, or TOKENMETER_EMAIL "
        "and TOKENMETER_PASSWORD): only your own usage.",
    ),
) -> None:
    """Spend and tokens over a time range: totals and a breakdown, or a chart."""
    if by not in GROUPS:
        fail(f"--by must be one of {', '.join(GROUPS)}, got {by!r}")
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if me and user:
        fail("--me reports on the signed-in user: leave out --user")
    with handle_errors():
        query = Query(
            since=parse_when(since, "since", end=False),
            until=parse_when(until, "until", end=True),
            key=key,
        )
        if query.since is None and query.until is None:
            query = replace(query, since=default_since())
        if me:
            client = user_client()
        else:
            client = service_client(Settings.load())
    try:
        with handle_errors():
            if user:
                query = replace(query, user_id=resolve_user(Meter(client), user))
            if fmt in ("png", "html"):
                data = ChartData.load(client, query)
                content: str | bytes = render_png(data) if fmt == "png" else render_html(data)
                out = out or Path(f"usage-report.{fmt}")
            else:
                rows = fetch_or_explain(client, query, by)
                if fmt == "json":
                    content = to_json(rows, query, by)
                elif fmt == "csv":
                    content = to_csv(rows, by)
                elif out is None:
                    console.print(report_table(rows, query, by))
                    return
                else:
                    # The table as plain text, as wide as it needs to be.
                    capture = Console(file=io.StringIO(), width=200, color_system=None)
                    capture.print(report_table(rows, query, by))
                    content = capture.file.getvalue()
    finally:
        close_client(client)
    if out is None:
        sys.stdout.write(content if isinstance(content, str) else content.decode())
        return
    try:
        if isinstance(content, bytes):
            out.write_bytes(content)
        else:
            out.write_text(content, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    err_console.print(f"wrote {out}", highlight=False)
