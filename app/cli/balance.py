"""`tokenmeter balance …`: show and top up prepaid balances (logic in app/meter.py)."""

from __future__ import annotations

import typer
from rich.table import Table

from app.cli.common import JSON_HELP, USER_HELP, decimal_arg, meter_session, resolve_user
from app.cli.output import console, money, print_json
from app.models import BalanceCheck, BalanceMovement

balance_app = typer.Typer(no_args_is_help=True, help="Show and top up prepaid balances.")


def balance_table(check: BalanceCheck) -> Table:
    table = Table("user", "balance", "held", "available")
    table.add_row(
        check.user_id[:8] + "…",
        money(check.balance, check.currency),
        money(check.held, check.currency),
        money(check.available, check.currency),
    )
    return table


@balance_app.command("show")
def balance_show(
    user: str = typer.Argument(..., help=USER_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Balance, credit held by open reservations, and what is available."""
    with meter_session() as meter:
        check = meter.balance(user_id=resolve_user(meter, user))
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
    value = decimal_arg(amount, "amount")
    with meter_session() as meter:
        movement = meter.top_up(
            user_id=resolve_user(meter, user), amount=value, reference=reference
        )
    if as_json:
        print_json(movement)
        return
    note = " (already applied earlier: not credited again)" if movement.replayed else ""
    console.print(
        f"topped up {money(movement.amount, movement.currency)}; "
        f"balance {money(movement.balance, movement.currency)}{note}"
    )


def movements_table(rows: list[BalanceMovement]) -> Table:
    table = Table("when", "kind", "amount", "reference", "description")
    for row in rows:
        table.add_row(
            (row.occurred_at or row.created_at).strftime("%Y-%m-%d %H:%M:%S"),
            row.kind,
            money(row.amount, row.currency),
            row.reference,
            row.description or "",
        )
    return table


@balance_app.command("history")
def balance_history(
    user: str = typer.Argument(..., help=USER_HELP),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Every movement of a balance, newest first: top-ups, adjustments, refunds and the charges
    (each usage record is its own charge's line)."""
    with meter_session() as meter:
        rows = meter.movements(user_id=resolve_user(meter, user), limit=limit)
    if as_json:
        print_json(rows)
    else:
        console.print(movements_table(rows))
