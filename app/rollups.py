"""Usage rollups (issue 12 §3): run `public.rollup_usage()` until it has caught up, once or
every few seconds.

The SQL does the work and is safe to run from anywhere at any time (runs serialise on its state
row; a run never counts a record twice nor skips one whose transaction is still open). Who runs
it: pg_cron every 10 s where the database has pg_cron (hosted Supabase; the migration schedules
it), else this module — `tokenmeter usage rollup [--every N]`, and the local stack's rollup
worker (`python -m app.rollups`, started by `tokenmeter stack start`). Readers never wait for
it: usage_daily_totals and the views add what it has not folded in yet.

It connects to the database directly as the tables' owner (`postgres`), like `tokenmeter db
push`: the local stack by default, any PostgreSQL with a URL.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from app.config import ConfigError

ENV_INTERVAL = "TOKENMETER_ROLLUP_INTERVAL"
DEFAULT_INTERVAL = 10.0
# Ids per run: bounds one transaction (and its memory) when the rollup is far behind.
CHUNK = 200_000
# A catch-up gives up after this many runs and waits for the next interval (usage arriving faster
# than it is rolled up, or a transaction kept open, shows as `behind`).
MAX_RUNS = 50


@dataclass(frozen=True)
class RollupResult:
    """What one catch-up did: records counted, adjustments folded, summary rows written, the
    position reached and how many taken ids are still behind it (in flight, or beyond the last
    chunk)."""

    runs: int
    rows: int
    adjustments: int
    summaries: int
    rolled_up_to: int
    behind: int


def catch_up(conn: psycopg.Connection, *, chunk: int = CHUNK) -> RollupResult:
    """Call rollup_usage(chunk) until nothing is left behind that can be rolled up now (or
    MAX_RUNS). `conn` must be in autocommit mode: each run is its own transaction. Raises
    psycopg.Error when the database refuses (e.g. the role may not run it)."""
    totals = {"rows": 0, "adjustments": 0, "summaries": 0}
    runs = 0
    while True:
        row = conn.execute("select public.rollup_usage(max_rows => %s)", (chunk,)).fetchone()
        assert row is not None
        step = row[0]
        runs += 1
        for key in totals:
            totals[key] += int(step[key])
        # Stop when caught up, or when the ids behind wait for open transactions (this run
        # could not move): the next interval picks them up.
        if step["behind"] == 0 or step["rows"] == 0 or runs >= MAX_RUNS:
            return RollupResult(runs=runs, rolled_up_to=int(step["rolled_up_to"]),
                                behind=int(step["behind"]), **totals)  # fmt: skip


def interval_from_env() -> float:
    """Seconds between catch-ups for the worker (TOKENMETER_ROLLUP_INTERVAL, default 10; 0 turns
    the worker off). Raises ConfigError for anything that is not a number from 0 to 3600."""
    raw = os.environ.get(ENV_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ConfigError(f"{ENV_INTERVAL} must be a number of seconds from 0 to 3600, got {raw!r}")
    return value


def run_forever(
    dsn: str, interval: float, stop: threading.Event, log: Callable[[str], None] = print
) -> None:
    """Catch up every `interval` seconds until `stop` is set. A failed run (the database
    restarting) is logged and retried at the next interval, on a new connection."""
    conn: psycopg.Connection | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
            result = catch_up(conn)
            if result.rows or result.adjustments:
                log(f"rolled up {result.rows} records, {result.adjustments} adjustments "
                    f"(up to id {result.rolled_up_to}, {result.behind} behind)")  # fmt: skip
        except psycopg.Error as exc:
            log(f"rollup_usage failed: {exc}".strip())
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(interval)
    if conn is not None:
        conn.close()


def main() -> int:
    """`python -m app.rollups`: the local stack's worker, until SIGTERM/SIGINT."""
    from app.stack.paths import StackPaths

    interval = interval_from_env()
    if interval == 0:
        print(f"rollup worker: {ENV_INTERVAL}=0, not running", flush=True)
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)

    log(f"rollup worker: rollup_usage() every {interval:g} s")
    run_forever(StackPaths.from_env().db_url(), interval, stop, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
