"""`tokenmeter usage rollup`: fold new usage into usage_summaries now (logic in app/rollups.py).
Connects to the database directly, as the tables' owner, like `tokenmeter db push`: the local
stack by default, any PostgreSQL with --db-url."""

from __future__ import annotations

import threading
from dataclasses import asdict

import psycopg
import typer

from app import rollups
from app.cli.output import console, fail, print_json

DB_URL_HELP = "Target any PostgreSQL (e.g. a hosted project); default: the local stack."


def _dsn(db_url: str | None) -> str:
    if db_url:
        return db_url
    from app.stack.paths import StackPaths

    return StackPaths.from_env().db_url()


def usage_rollup(
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    every: float | None = typer.Option(
        None, "--every", min=1, max=3600, help="Keep running: catch up every N seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Run rollup_usage() until it has caught up (or, with --every, until interrupted)."""
    dsn = _dsn(db_url)
    if every is not None:
        stop = threading.Event()
        try:
            rollups.run_forever(dsn, every, stop, log=console.print)
        except KeyboardInterrupt:
            stop.set()
        return
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            result = rollups.catch_up(conn)
    except psycopg.OperationalError as exc:
        fail(f"cannot reach the database: {str(exc).strip()}", 2)
    except psycopg.Error as exc:
        fail(f"rollup_usage failed: {str(exc).strip()}")
    if as_json:
        print_json(asdict(result))
        return
    console.print(
        f"rolled up {result.rows:,} usage records and {result.adjustments:,} adjustments in "
        f"{result.runs} run(s); every record up to id {result.rolled_up_to:,} is in "
        f"usage_summaries" + (f", {result.behind:,} in flight" if result.behind else "")
    )
