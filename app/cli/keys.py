"""`tokenmeter keys …`: API keys of the metered endpoint (logic in app/keys.py)."""

from __future__ import annotations

import typer
from rich import box
from rich.table import Table

from app.cli.common import JSON_HELP, USER_HELP, facade_session, resolve_user_of, when
from app.cli.output import console, fail, print_json
from app.keys import Keys, parse_expiry
from app.models import ApiKey

keys_app = typer.Typer(
    no_args_is_help=True, help="API keys (tm_…) for the metered endpoint: create, list, revoke."
)

STATE_STYLE = {"active": "green", "expired": "yellow", "revoked": "red"}


def keys_table(keys: list[ApiKey], title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("prefix", no_wrap=True)
    for name in ("name", "plan", "state", "models", "expires", "last used"):
        table.add_column(name, overflow="fold")
    for key in keys:
        style = STATE_STYLE.get(key.state, "")
        table.add_row(
            key.prefix,
            key.name,
            key.plan or "",
            f"[{style}]{key.state}[/]" if style else key.state,
            ", ".join(key.allowed_models) if key.allowed_models else "all of the plan",
            when(key.expires_at),
            when(key.last_used_at, never="—"),
        )
    return table


@keys_app.command("create")
def keys_create(
    user: str = typer.Argument(..., help=USER_HELP),
    plan: str = typer.Option(..., "--plan", help="The plan the key draws on (by name)."),
    name: str = typer.Option("default", "--name", help="A label for the key."),
    expires: str = typer.Option(
        "never", "--expires", help="never, a duration (30d, 12h) or an ISO time (UTC if no zone)."
    ),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated models the key may use (default: all the plan's)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create a key; its secret is printed this once (only a hash is stored)."""
    allowed = None
    if models is not None:
        allowed = [m.strip() for m in models.split(",") if m.strip()]
        if not allowed:
            fail("--models must name at least one model, e.g. --models gpt-4o,gpt-4o-mini")
    with facade_session(Keys) as keys:
        expires_at = parse_expiry(expires)
        created = keys.create(
            user_id=resolve_user_of(keys, user),
            plan=plan,
            name=name,
            expires_at=expires_at,
            allowed_models=allowed,
        )
    if as_json:
        print_json(created)
        return
    console.print(keys_table([created], title="key created"))
    console.print("[bold]secret (shown once, store it now):[/]")
    # Printed alone and whole so it can be copied; never wrapped, never highlighted.
    console.print(created.key, highlight=False, markup=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(
    user: str = typer.Argument(..., help=USER_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A user's keys, newest first, revoked and expired ones included (never a secret)."""
    with facade_session(Keys) as keys:
        found = keys.list(user_id=resolve_user_of(keys, user))
    if as_json:
        print_json(found)
    elif not found:
        console.print("no API keys", highlight=False)
    else:
        console.print(keys_table(found))


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="The key's id or prefix (tm_ + 8 characters)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Revoke a key: refused from its next request on. Revoking twice changes nothing."""
    with facade_session(Keys) as keys:
        revoked = keys.revoke(key=key)
    if as_json:
        print_json(revoked)
    elif revoked.revoked:
        console.print(f"revoked {revoked.prefix} ({revoked.name})", highlight=False)
    else:
        console.print(
            f"{revoked.prefix} ({revoked.name}) was already revoked at {when(revoked.revoked_at)}",
            highlight=False,
        )
