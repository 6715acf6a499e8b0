"""CLI for balances and usage (`tokenmeter balance …`, `tokenmeter usage …`) and the demo.

Thin by design: parse, call `Meter`, render. Users are given by id or email.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

import typer
from rich.table import Table

from app.meter import Meter
from app.models import BalanceCheck, UsageRecord, UsageResult
from app.output import console, fail, handle_errors, money, print_json

balance_app = typer.Typer(no_args_is_help=True, help="Show and top up prepaid balances.")
usage_app = typer.Typer(no_args_is_help=True, help="Record and list metered usage.")

USER_HELP = "User id (uuid) or email."
JSON_HELP = "Machine-readable output."


@contextlib.contextmanager
def _meter() -> Iterator[Meter]:
    """The Meter for one command: our errors become a message and an exit code, and its
    connections are closed afterwards."""
    with handle_errors():
        meter = Meter.from_env()
    try:
        with handle_errors():
            yield meter
    finally:
        meter.close()


def _user_id(meter: Meter, user: str) -> str:
    """The id of a user given by id or email (raises NotFound for an unknown email)."""
    try:
        return str(uuid.UUID(user))
    except ValueError:
        pass
    if "@" not in user:
        fail(f"user must be a uuid or an email address, got {user!r}")
    return meter.user_id_for_email(email=user)


def _decimal(value: str, name: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        fail(f"{name} must be a decimal number, got {value!r}")
    if not amount.is_finite():
        fail(f"{name} must be a finite number, got {value!r}")
    return amount


def balance_table(check: BalanceCheck) -> Table:
    table = Table("user", "balance", "held", "available")
    table.add_row(
        check.user_id[:8] + "…",
        money(check.balance, check.currency),
        money(check.held, check.currency),
        money(check.available, check.currency),
    )
    return table


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


@balance_app.command("show")
def balance_show(
    user: str = typer.Argument(..., help=USER_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Balance, credit held by open reservations, and what is available."""
    with _meter() as meter:
        check = meter.balance(user_id=_user_id(meter, user))
    if as_json:
        print_json(check)
    else:
        console.print(balance_table(check))


@balance_app.command("top-up")
def balance_top_up(
    user: str = typer.Argument(..., help=USER_HELP),
    amount: str = typer.Argument(..., help="Amount to add, e.g. 10 or 2.50."),
    reference: str = typer.Option(
        ...,
        "--reference",
        "-r",
        help="Idempotency key, e.g. the payment id: the same reference twice credits once.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Credit a user's balance (recorded in the ledger)."""
    value = _decimal(amount, "amount")
    with _meter() as meter:
        movement = meter.top_up(user_id=_user_id(meter, user), amount=value, reference=reference)
    if as_json:
        print_json(movement)
        return
    note = " (already applied earlier: not credited again)" if movement.replayed else ""
    console.print(
        f"topped up {money(movement.amount, movement.currency)}; "
        f"balance {money(movement.balance, movement.currency)}{note}"
    )


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
    with _meter() as meter:
        result = meter.record_usage(
            user_id=_user_id(meter, user),
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
    with _meter() as meter:
        rows = meter.usage(user_id=_user_id(meter, user), limit=limit)
    if as_json:
        print_json(rows)
    else:
        console.print(usage_table(rows))


def demo() -> None:
    """A short end-to-end run against the configured project (the local stack by default)."""
    from app.demo import run_demo

    with handle_errors():
        run_demo(console)
