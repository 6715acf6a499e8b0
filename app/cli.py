"""The `tokenmeter` command: thin — parse, call the service, render, map errors to exit codes.

Exit codes: 0 success, 1 the operation failed (bad input, refused, not found), 2 could not
reach or use the backend (stack down, not configured).
"""

from __future__ import annotations

import typer
from rich.table import Table

from app import billing_cli
from app.output import console, fail, print_json
from app.stack.manager import Stack, StackError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Pricing, balances and usage metering for LLM APIs.")
stack_app = typer.Typer(no_args_is_help=True, help="The local Supabase-compatible stack (no Docker).")
app.add_typer(stack_app, name="stack")
db_app = typer.Typer(no_args_is_help=True, help="Migrations, seeds and database tests (Supabase CLI compatible).")
app.add_typer(db_app, name="db")
app.add_typer(billing_cli.balance_app, name="balance")
app.add_typer(billing_cli.usage_app, name="usage")
app.command("demo")(billing_cli.demo)

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


DB_URL_HELP = "Target any PostgreSQL (e.g. a hosted project); default: the local stack."


@db_app.command("push")
def db_push(
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    include_seed: bool = typer.Option(False, "--include-seed", help="Also run seed.sql if new or changed."),
    include_all: bool = typer.Option(False, "--include-all", help="Apply pending files older than the newest applied one."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be applied; change nothing."),
) -> None:
    """Apply pending migrations, each file in one transaction with its history row."""
    from app.migrations import MigrationError, Migrator

    try:
        with console.status("pushing migrations") as status:
            plan = Migrator.local(db_url=db_url).push(
                include_all=include_all, include_seed=include_seed, dry_run=dry_run,
                progress=lambda msg: status.update(msg),
            )
    except MigrationError as exc:
        fail(str(exc))
    verb = "would apply" if dry_run else "applied"
    if not plan.pending and not plan.seeds:
        console.print("Remote database is up to date.")
    for file in plan.pending:
        console.print(f"{verb} migration {file.path.name}")
    for seed in plan.seeds:
        console.print(f"{verb} seed {seed.name}")


@db_app.command("reset")
def db_reset() -> None:
    """Local only: recreate the database, bootstrap it, apply all migrations, then seed.sql."""
    from app.migrations import MigrationError, Migrator

    stack = Stack()
    try:
        with console.status("resetting local database") as status:
            stack.reset_database(progress=lambda msg: status.update(msg))
            Migrator.local(stack.paths).push(include_seed=True, progress=lambda msg: status.update(msg))
    except (StackError, MigrationError) as exc:
        fail(str(exc), 2 if isinstance(exc, StackError) else 1)
    console.print("Finished db reset.")


@db_app.command("status")
def db_status(
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Applied and pending migrations."""
    from app.migrations import MigrationError, Migrator

    try:
        rows = Migrator.local(db_url=db_url).status()
    except MigrationError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(rows)
        return
    table = Table("version", "name", "local", "applied")
    for row in rows:
        table.add_row(
            str(row["version"]), str(row["name"]), "yes" if row["local"] else "[red]missing[/]",
            "[green]applied[/]" if row["applied"] else "[yellow]pending[/]",
        )
    console.print(table)


@db_app.command("test")
def db_test() -> None:
    """Run the pgTAP suite in supabase/tests with pg_prove, as `supabase test db` does."""
    from app.stack.pgtap import PgTapError, run_pgtap

    try:
        code = run_pgtap(Stack())
    except PgTapError as exc:
        fail(str(exc), 2)
    raise typer.Exit(code)


def _render_status(stack: Stack, as_json: bool) -> None:
    status = stack.status()
    if as_json:
        print_json(status.as_dict())
        return
    for key, value in status.as_dict().items():
        if isinstance(value, bool):
            shown = "[green]running[/]" if value else "[red]stopped[/]"
            console.print(f"{key:<18} {shown}")
        else:
            # Keys are printed whole (no wrapping or ellipsis) so they can be copied.
            console.print(f"{key:<18} {value}", highlight=False, soft_wrap=True, markup=False)


def main() -> None:
    app()
