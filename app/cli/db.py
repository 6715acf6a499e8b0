"""`tokenmeter db …`: migrations, seeds and database tests (Supabase CLI compatible)."""

from __future__ import annotations

import typer
from rich.table import Table

from app.cli.output import console, fail, print_json
from app.stack.manager import Stack, StackError

db_app = typer.Typer(
    no_args_is_help=True, help="Migrations, seeds and database tests (Supabase CLI compatible)."
)


DB_URL_HELP = "Target any PostgreSQL (e.g. a hosted project); default: the local stack."


@db_app.command("push")
def db_push(
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    include_seed: bool = typer.Option(
        False, "--include-seed", help="Also run seed.sql if new or changed."
    ),
    include_all: bool = typer.Option(
        False, "--include-all", help="Apply pending files older than the newest applied one."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be applied; change nothing."
    ),
    up_to: str | None = typer.Option(
        None, "--up-to", help="Apply pending migrations up to this version only (tokenmeter's own)."
    ),
) -> None:
    """Apply pending migrations, each file in one transaction with its history row."""
    from app.migrations import MigrationError, Migrator

    try:
        with console.status("pushing migrations") as status:
            plan = Migrator.local(db_url=db_url).push(
                include_all=include_all,
                include_seed=include_seed,
                dry_run=dry_run,
                progress=lambda msg: status.update(msg),
                up_to=up_to,
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
            Migrator.local(stack.paths).push(
                include_seed=True, progress=lambda msg: status.update(msg)
            )
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
            str(row["version"]),
            str(row["name"]),
            "yes" if row["local"] else "[red]missing[/]",
            "[green]applied[/]" if row["applied"] else "[yellow]pending[/]",
        )
    console.print(table)
    from app.cli.partitions import warn_default_partition

    warn_default_partition(db_url)  # issue 12 §2: rows outside every monthly partition


@db_app.command("test")
def db_test() -> None:
    """Run the pgTAP suite in supabase/tests with pg_prove, as `supabase test db` does."""
    from app.stack.pgtap import PgTapError, run_pgtap

    try:
        code = run_pgtap(Stack())
    except PgTapError as exc:
        fail(str(exc), 2)
    raise typer.Exit(code)
