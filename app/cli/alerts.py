"""`tokenmeter alerts …`: low-balance thresholds, the alert outbox and its webhook worker
(logic in app/alerts.py)."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import typer
from rich import box
from rich.table import Table

from app.alerts import Alert, Alerts, AlertWorker, WebhookSettings
from app.cli.common import (
    JSON_HELP,
    USER_HELP,
    decimal_arg,
    facade_session,
    resolve_user_of,
    when,
)
from app.cli.output import console, err_console, fail, handle_errors, print_json

alerts_app = typer.Typer(
    no_args_is_help=True,
    help="Low-balance and quota alerts: thresholds, the outbox, webhook delivery.",
)
thresholds_app = typer.Typer(
    no_args_is_help=True, help="Low-balance thresholds: per user, and a default for everyone."
)
alerts_app.add_typer(thresholds_app, name="thresholds")

STATUS_STYLE = {"pending": "yellow", "delivered": "green", "failed": "red"}
NONE_WORDS = ("none", "off")


def _amount(value: str) -> Decimal | None:
    if value.strip().lower() in NONE_WORDS:
        return None
    return decimal_arg(value, "AMOUNT")


def _shown(value: Decimal | None) -> str:
    return "none" if value is None else format(value.normalize(), "f")


def alerts_table(alerts: list[Alert]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("user", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("details", overflow="fold")
    for a in alerts:
        style = STATUS_STYLE.get(a.status, "")
        status = f"[{style}]{a.status}[/]" if style else a.status
        if a.status == "pending" and a.attempts:
            status += f" (next {when(a.next_attempt_at)})"
        details = ", ".join(f"{k}={v}" for k, v in sorted(a.payload.items()) if k != "user_id")
        if a.last_error:
            details += f" · last error: {a.last_error}"
        table.add_row(
            a.id, when(a.created_at), a.kind, a.user_id or "-", status, str(a.attempts), details
        )
    return table


@alerts_app.command("list")
def alerts_list(
    status: str | None = typer.Option(None, "--status", help="pending, delivered or failed."),
    user: str | None = typer.Option(None, "--user", help=USER_HELP),
    kind: str | None = typer.Option(None, "--kind", help="low_balance, quota, …"),
    limit: int = typer.Option(50, "--limit", help="At most this many (1-1000)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Alerts in the outbox, newest first, with their delivery state."""
    with facade_session(Alerts) as alerts:
        user_id = resolve_user_of(alerts, user) if user else None
        found = alerts.list(status=status, user_id=user_id, kind=kind, limit=limit)
    if as_json:
        print_json(found)
    elif not found:
        console.print("no alerts", highlight=False)
    else:
        console.print(alerts_table(found))


@alerts_app.command("run")
def alerts_run(
    once: bool = typer.Option(
        False, "--once", help="Deliver what is due now, then exit (for cron)."
    ),
) -> None:
    """Deliver the outbox to the webhook (TOKENMETER_ALERTS_WEBHOOK_URL, signed with
    TOKENMETER_ALERTS_WEBHOOK_SECRET), retrying failures with exponential backoff. Runs until
    Ctrl-C unless --once."""
    with handle_errors():
        settings = WebhookSettings.from_env()
    if settings is None:
        fail(
            "no webhook configured: set TOKENMETER_ALERTS_WEBHOOK_URL and "
            "TOKENMETER_ALERTS_WEBHOOK_SECRET (environment or .env)",
            2,
        )
    with facade_session(Alerts) as alerts:
        worker = AlertWorker(
            alerts, settings, log=lambda m: err_console.print(m, highlight=False, markup=False)
        )
        try:
            if once:
                report = worker.deliver_due()
                console.print(str(report), highlight=False)
                return
            stop = threading.Event()
            try:
                worker.run(stop)
            except KeyboardInterrupt:
                stop.set()
        finally:
            worker.close()


@alerts_app.command("retry")
def alerts_retry(
    alert_id: str = typer.Argument(..., metavar="ID", help="Alert id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Queue a failed alert again, due now (a delivered one is left as it is)."""
    with facade_session(Alerts) as alerts:
        alert = alerts.requeue(alert_id=alert_id)
    if as_json:
        print_json(alert)
    else:
        console.print(alerts_table([alert]))


@thresholds_app.command("set")
def thresholds_set(
    user: str = typer.Argument(..., help=USER_HELP),
    amount: str = typer.Argument(
        ..., help="Alert when the balance goes below this amount; 'none' removes it."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A user's own low-balance threshold (it wins over the default)."""
    threshold = _amount(amount)
    with facade_session(Alerts) as alerts:
        result = alerts.set_threshold(user_id=resolve_user_of(alerts, user), threshold=threshold)
    if as_json:
        print_json(result)
        return
    console.print(
        f"user {result.user_id}: threshold {_shown(result.threshold)}, "
        f"default {_shown(result.default_threshold)}, effective {_shown(result.effective)}",
        highlight=False,
    )


@thresholds_app.command("default")
def thresholds_default(
    amount: str | None = typer.Argument(
        None,
        help="The threshold of every user without their own; 'none' removes it. "
        "Without it: show the default.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show or set the default low-balance threshold."""
    threshold = _amount(amount) if amount is not None else None
    with facade_session(Alerts) as alerts:
        if amount is None:
            current = alerts.default_threshold()
            if as_json:
                print(json.dumps({"default_threshold": None if current is None else str(current)}))
            else:
                console.print(f"default threshold: {_shown(current)}", highlight=False)
            return
        result = alerts.set_default_threshold(threshold=threshold)
    if as_json:
        print_json(result)
        return
    console.print(
        f"default threshold {_shown(result.default_threshold)} "
        f"({result.users} balance rows took it)",
        highlight=False,
    )
