"""`tokenmeter subscriptions …`: users' subscriptions to plans (logic in app/subscriptions.py)."""

from __future__ import annotations

import typer
from rich import box
from rich.table import Table

from app.cli.common import JSON_HELP, USER_HELP, facade_session, resolve_user_of, when
from app.cli.output import console, fail, print_json
from app.models import Subscription
from app.subscriptions import DEFAULT_QUOTA_REQUESTS, DEFAULT_QUOTA_TOKENS, Subscriptions

subscriptions_app = typer.Typer(
    no_args_is_help=True,
    help="Subscriptions with request/token quotas: create, list, suspend, resume.",
)

STATUS_STYLE = {"active": "green", "suspended": "yellow", "cancelled": "red", "expired": "red"}


def _quota(value: str, option: str) -> int | None:
    if value.strip().lower() == "unlimited":
        return None
    try:
        number = int(value)
    except ValueError:
        fail(f"{option} must be a whole number >= 0 or 'unlimited', got {value!r}")
    if number < 0:
        fail(f"{option} must be a whole number >= 0 or 'unlimited', got {value!r}")
    return number


def _used(used: int, quota: int | None) -> str:
    return f"{used:,} / {'∞' if quota is None else f'{quota:,}'}"


def subscriptions_table(subs: list[Subscription], title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("plan", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("requests", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("period", no_wrap=True)
    table.add_column("resets (UTC)", no_wrap=True)
    for s in subs:
        style = STATUS_STYLE.get(s.status, "")
        status = f"[{style}]{s.status}[/]" if style else s.status
        if s.suspension_reason:
            status += f" ({s.suspension_reason})"
        table.add_row(
            s.id,
            s.plan or s.plan_id,
            status,
            _used(s.used_requests, s.quota_requests),
            _used(s.used_tokens, s.quota_tokens),
            s.period,
            when(s.reset_at),
        )
    return table


@subscriptions_app.command("create")
def subscriptions_create(
    user: str = typer.Argument(..., help=USER_HELP),
    plan: str = typer.Option(..., "--plan", help="Plan name."),
    quota_requests: str = typer.Option(
        str(DEFAULT_QUOTA_REQUESTS), "--quota-requests", help="Requests per period, or unlimited."
    ),
    quota_tokens: str = typer.Option(
        str(DEFAULT_QUOTA_TOKENS), "--quota-tokens", help="Tokens per period, or unlimited."
    ),
    period: str | None = typer.Option(
        None, "--period", help="day, week, month or year (default: the plan's)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Subscribe a user to a plan (active now; the quotas count per period from now)."""
    requests = _quota(quota_requests, "--quota-requests")
    tokens = _quota(quota_tokens, "--quota-tokens")
    with facade_session(Subscriptions) as subs:
        made = subs.create(
            user_id=resolve_user_of(subs, user),
            plan=plan,
            quota_requests=requests,
            quota_tokens=tokens,
            period=period,
        )
    if as_json:
        print_json(made)
    else:
        console.print(subscriptions_table([made], title="subscription created"))


@subscriptions_app.command("list")
def subscriptions_list(
    user: str = typer.Argument(..., help=USER_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A user's subscriptions, newest first, with this period's usage against the quotas."""
    with facade_session(Subscriptions) as subs:
        found = subs.list(user_id=resolve_user_of(subs, user))
    if as_json:
        print_json(found)
    elif not found:
        console.print("no subscriptions", highlight=False)
    else:
        console.print(subscriptions_table(found))


def _changed(sub: Subscription, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(sub)
        return
    note = "" if sub.changed else f" (already {sub.status}: nothing changed)"
    console.print(subscriptions_table([sub], title=f"subscription {verb}{note}"))


@subscriptions_app.command("suspend")
def subscriptions_suspend(
    subscription_id: str = typer.Argument(..., metavar="ID", help="Subscription id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Suspend a subscription: its keys are refused (403) until it is resumed."""
    with facade_session(Subscriptions) as subs:
        sub = subs.suspend(subscription_id=subscription_id)
    _changed(sub, as_json, "suspended")


@subscriptions_app.command("resume")
def subscriptions_resume(
    subscription_id: str = typer.Argument(..., metavar="ID", help="Subscription id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Resume a suspended (or activate a pending) subscription; refused while a quota is used
    up in the current period."""
    with facade_session(Subscriptions) as subs:
        sub = subs.resume(subscription_id=subscription_id)
    _changed(sub, as_json, "resumed")
