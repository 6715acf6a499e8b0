"""`tokenmeter stack …`: the local Supabase-compatible stack (no Docker)."""

from __future__ import annotations

import typer

from app.cli.output import console, fail, print_json
from app.stack.manager import Stack, StackError

stack_app = typer.Typer(
    no_args_is_help=True, help="The local Supabase-compatible stack (no Docker)."
)


@stack_app.command("start")
def stack_start() -> None:
    """Start PostgreSQL and the API gateway (idempotent); apply migrations to a new database."""
    from app.migrations import MigrationError, Migrator

    stack = Stack()
    try:
        with console.status("starting stack") as status:
            created = stack.start(progress=lambda msg: status.update(msg))
            if created:
                status.update("applying migrations and seed")
                Migrator.local(stack.paths).push(include_seed=True)
    except (StackError, MigrationError) as exc:
        fail(str(exc), 2)
    _render_status(stack, as_json=False)


@stack_app.command("stop")
def stack_stop() -> None:
    """Stop the API gateway and PostgreSQL (data is kept)."""
    try:
        Stack().stop()
    except StackError as exc:
        fail(str(exc), 2)
    console.print("stack stopped")


@stack_app.command("status")
def stack_status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show URLs, keys and which parts are running."""
    try:
        _render_status(Stack(), as_json=as_json)
    except StackError as exc:
        fail(str(exc), 2)


@stack_app.command("logs")
def stack_logs(lines: int = typer.Option(50, "--lines", "-n", help="Lines per log.")) -> None:
    """Print the end of each part's log."""
    stack = Stack()
    for name, tail in stack.logs(lines).items():
        console.rule(name)
        for line in tail:
            console.print(line, highlight=False, markup=False)


def _render_status(stack: Stack, as_json: bool) -> None:
    status = stack.status()
    if as_json:
        print_json(status.as_dict())
        return
    for key, value in status.as_dict().items():
        if value is None:  # the dashboard, switched off
            console.print(f"{key:<18} off ([studio] enabled = false in supabase/config.toml)")
        elif isinstance(value, bool):
            shown = "[green]running[/]" if value else "[red]stopped[/]"
            console.print(f"{key:<18} {shown}")
        else:
            # Keys are printed whole (no wrapping or ellipsis) so they can be copied.
            console.print(f"{key:<18} {value}", highlight=False, soft_wrap=True, markup=False)
