"""The `tokenmeter` command: thin — parse, call the service, render, map errors to exit codes.

One module per command group (stack, db, balance, usage, demo, price, keys, upstreams, plans,
subscriptions, alerts); errors become exit codes in one place, `app/cli/output.py`'s `handle_errors`:
0 success, 1 the operation failed (bad input, refused, not found), 2 could not reach or use the
backend (stack down, not configured, API unavailable).
"""

from __future__ import annotations

import typer

from app.cli.alerts import alerts_app
from app.cli.balance import balance_app
from app.cli.db import db_app
from app.cli.demo import demo
from app.cli.keys import keys_app
from app.cli.plans import plans_app
from app.cli.price import price_app
from app.cli.stack import stack_app
from app.cli.subscriptions import subscriptions_app
from app.cli.upstreams import upstreams_app
from app.cli.usage import usage_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Pricing, balances and usage metering for LLM APIs.",
)
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
app.add_typer(balance_app, name="balance")
app.add_typer(usage_app, name="usage")
app.command("demo")(demo)
app.add_typer(price_app, name="price")
app.add_typer(keys_app, name="keys")
app.add_typer(upstreams_app, name="upstreams")
app.add_typer(plans_app, name="plans")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(alerts_app, name="alerts")


def main() -> None:
    app()
