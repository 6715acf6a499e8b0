"""`tokenmeter usage …`: record and list metered usage (logic in app/meter.py)."""

from __future__ import annotations

import uuid

import typer
from rich.table import Table

from app.cli.common import JSON_HELP, USER_HELP, meter_session, resolve_user
from app.cli.output import console, money, print_json
from app.models import UsageRecord, UsageResult

usage_app = typer.Typer(no_args_is_help=True, help="Record and list metered usage.")


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
