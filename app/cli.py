"""The `tokenmeter` command: thin — parse, call the service, render, map errors to exit codes.

Exit codes: 0 success, 1 the operation failed (bad input, refused, not found), 2 could not
reach or use the backend (stack down, not configured).
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from app.stack.manager import Stack, StackError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Pricing, balances and usage metering for LLM APIs.")
stack_app = typer.Typer(no_args_is_help=True, help="The local Supabase-compatible stack (no Docker).")
app.add_typer(stack_app, name="stack")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


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
def stack_status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
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
    table = Table(show_header=False, box=None)
    for key, value in status.as_dict().items():
        shown = value
        if isinstance(value, bool):
            shown = "[green]running[/]" if value else "[red]stopped[/]"
        table.add_row(key, str(shown))
    console.print(table)


def main() -> None:
    app()
