"""`tokenmeter usage partitions …` and `tokenmeter usage archive`: usage_records' monthly
partitions (logic in app/partitions.py). They connect to the database directly, as the tables'
owner, like `tokenmeter db push`: the local stack by default, any PostgreSQL with --db-url."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app import partitions
from app.cli.output import console, err_console, fail, print_json
from app.partitions import ArchiveResult, PartitionError

partitions_app = typer.Typer(
    no_args_is_help=True, help="usage_records' monthly partitions: list, create ahead."
)

DB_URL_HELP = "Target any PostgreSQL (e.g. a hosted project); default: the local stack."


def _dsn(db_url: str | None) -> str:
    if db_url:
        return db_url
    from app.stack.paths import StackPaths

    return StackPaths.from_env().db_url()


def _size(value: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


@partitions_app.command("list")
def partitions_list(
    exact: bool = typer.Option(
        False,
        "--exact",
        help="Count every partition's rows (default: estimates, but exact for "
        "the default partition).",
    ),  # fmt: skip
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The partitions by month, their rows and size; rows in the default partition are an alert."""
    try:
        with partitions.connect(_dsn(db_url)) as conn:
            rows = partitions.list_partitions(conn, exact=exact)
    except PartitionError as exc:
        fail(str(exc), exc.exit_code)
    stray = sum(p.records or 0 for p in rows if p.is_default)
    if as_json:
        print_json([p.as_dict() for p in rows])
    else:
        table = Table("partition", "month", "from (UTC)", "to (UTC)", "rows", "size",
                      title="usage_records partitions (schema private)")  # fmt: skip
        for p in rows:
            if p.is_default:
                count = f"{p.records:,}"
                shown = f"[bold red]{count}[/]" if p.records else count
                table.add_row(p.name, "default", "", "", shown, _size(p.bytes))
                continue
            if p.records is None:
                count = "?"
            else:
                count = f"{p.records:,}" if p.records_exact else f"≈{p.records:,}"
            table.add_row(
                p.name, f"{p.month:%Y-%m}", f"{p.range_start:%Y-%m-%d}",
                f"{p.range_end:%Y-%m-%d}", count, _size(p.bytes),
            )  # fmt: skip
        console.print(table)
    if stray:
        err_console.print(
            f"[bold yellow]warning:[/] {stray:,} usage rows are in the default partition (no "
            "partition covers their month): run `tokenmeter usage partitions ensure`",
            highlight=False,
        )


@partitions_app.command("ensure")
def partitions_ensure(
    months_ahead: int = typer.Option(
        3, "--months-ahead", help="Partitions for this month and this many more (0-60)."
    ),
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create the partitions of this month and the next ones (idempotent); rows in the default
    partition move into their month's new partition."""
    try:
        with partitions.connect(_dsn(db_url)) as conn:
            ensured = partitions.ensure(conn, months_ahead=months_ahead)
    except PartitionError as exc:
        fail(str(exc), exc.exit_code)
    if as_json:
        print_json([e.as_dict() for e in ensured])
        return
    for e in ensured:
        if e.created:
            moved = f", moved {e.moved:,} rows from the default partition" if e.moved else ""
            console.print(f"created private.{e.partition} ({e.month:%Y-%m}){moved}")
    existing = sum(1 for e in ensured if not e.created)
    console.print(f"{existing} partition(s) already there", highlight=False)


def usage_archive(
    before: str = typer.Option(
        ..., "--before", help="YYYY-MM: archive every whole month before it (UTC)."
    ),
    to: Path = typer.Option(..., "--to", help="The archive: a new .csv or .csv.gz file."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be archived; write and drop nothing."
    ),
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write each month before --before to FILE (+ FILE.manifest.json: sha256, rows, cost sums),
    read it back, and only then detach and drop the months' partitions."""
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err_console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("archiving", total=None)

            def progress(stage: str, done: int, total: int) -> None:
                label = "verifying the file" if stage == "verify" else f"exporting {stage}"
                bar.update(task, description=label, completed=done, total=total)

            result = partitions.archive(
                _dsn(db_url), before=before, to=to, dry_run=dry_run, progress=progress
            )
    except PartitionError as exc:
        fail(str(exc), exc.exit_code)
    if as_json:
        print_json(result.as_dict())
        return
    _render_archive(result)


def _render_archive(result: ArchiveResult) -> None:
    if not result.months:
        console.print(f"nothing to archive: no partition ends before {result.before}")
        return
    verb = "would archive" if result.dry_run else "archived"
    table = Table("month", "partition", "rows", "cost sum", title=f"{verb} to {result.file}")
    for m in result.months:
        table.add_row(m.month, f"private.{m.partition}", f"{m.rows:,}", str(m.cost_sum))
    table.add_row("total", "", f"{result.rows:,}", str(result.cost_sum), style="bold")
    console.print(table)
    if result.dry_run:
        console.print("dry run: nothing written, nothing dropped")
        return
    console.print(
        f"{result.file}: {result.bytes:,} bytes, sha256 {result.sha256} (verified)\n"
        f"manifest {result.manifest}\n"
        f"dropped {len(result.months)} partition(s)",
        highlight=False,
        soft_wrap=True,
    )


def warn_default_partition(db_url: str | None) -> None:
    """For `db status`: say so when usage rows sit in the default partition (an alert)."""
    try:
        stray = partitions.default_partition_rows(_dsn(db_url))
    except PartitionError:
        return  # the status itself reports an unreachable database
    if stray:
        err_console.print(
            f"[bold yellow]warning:[/] {stray:,} usage rows are in the default partition "
            "private.usage_records_default (no partition covers their month): run "
            "`tokenmeter usage partitions ensure`",
            highlight=False,
        )
