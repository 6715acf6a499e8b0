"""What keeping usage rollups costs the charge: the incremental rollup_usage() run beside the
charges (the mechanism kept, issue 12 §3), against no rollup at all, in one run.

  none  record_usage as it is, nothing folds usage into usage_summaries
  (b)   public.rollup_usage() called every `--interval` seconds by a separate connection while
        the charges run, and once more at the end so every charge is counted

The other candidate, (a) summaries maintained IN the charging transaction by an AFTER INSERT
trigger, was measured with this script as of commit f993f02 (`git show
f993f02:bench/rollup_charging_bench.py`) and deleted: it cost each charge ~57 % more backend CPU
and the batch ~70 % of its throughput (docs/benchmarks.md, "Usage rollups").

Measured: the CPU of the charging backend and of the rollup backend per charge (one client,
`--backend-charges` calls: only those two server processes are counted, so other sessions' load
hardly moves it); server CPU µs per charge (pgbench, 8 clients × `--transactions`, the CPU of
the stack's postmaster and all its backends, the rollup's included; bench/record_usage_cost.py's
method); record_usage calls/s (pgbench, 1,000 users, 8 clients, `--seconds`), the same for ONE
user (hot row), and record_usage_batch records/s (1,000-record batches over psycopg). The
configurations are interleaved within each run; medians over `--runs`. Start the stack without
its rollup worker, or "none" would have one:

    TOKENMETER_ROLLUP_INTERVAL=0 .venv/bin/tokenmeter stack start
    .venv/bin/python bench/rollup_charging_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from billing_bench import RECORD_USAGE_SCRIPT, batch_worker, pgbench, prepare, timed
from record_usage_cost import postgres_cpu_seconds
from rich.console import Console
from rich.table import Table

from app.stack.paths import StackPaths
from app.stack.postgres import find_binaries

# Bench data only: nothing is in flight between configurations.
SKIP_TO_NOW = (
    "update private.usage_rollup_state set rolled_up_to = m.id, settled_to = m.id, "
    "pending_to = null, pending_writers = null "
    "from (select coalesce(max(id), 0) as id from public.usage_records) m"
)
HOT_USER_SCRIPT = """select public.record_usage(user_id => '{user}'::uuid,
  model => 'gpt-4o-mini', input_tokens => 1000, output_tokens => 200,
  request_id => gen_random_uuid()::text);
"""
console = Console(stderr=True)


@contextmanager
def rollup_loop(dsn: str, interval: float) -> Iterator[None]:
    """(b): rollup_usage() every `interval` s on its own connection while the body runs, then
    until it has caught up (behind = 0), so the CPU measured includes counting every charge."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.wait(interval):
                    conn.execute("select public.rollup_usage()")
        except BaseException as exc:  # surfaced below: a silent failure would flatter (b)
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute("select (public.rollup_usage() ->> 'behind')::bigint").fetchone()[0]:
                pass
    if errors:
        raise errors[0]


@contextmanager
def nothing() -> Iterator[None]:
    yield


def backend_cpu_seconds(conn: psycopg.Connection) -> float:
    """user + system CPU seconds of this connection's server process so far (Linux /proc)."""
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_micros(dsn: str, users: list[str], charges: int) -> tuple[float, float]:
    """One client, `charges` record_usage calls (each its own transaction), then one
    rollup_usage() over them on another connection: (µs of the charging backend's CPU per charge,
    µs of the rollup backend's CPU per charge). Only those two server processes are counted, so
    the load of other sessions on the machine hardly moves it (unlike whole-server CPU)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SKIP_TO_NOW)
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        psycopg.connect(dsn, autocommit=True) as roller,
    ):
        conn.execute("select 1")
        before = backend_cpu_seconds(conn)
        for n in range(charges):
            conn.execute(
                "select public.record_usage(%s, 'gpt-4o-mini', 1000, 200, %s)",
                (users[n % len(users)], f"cpu-{uuid.uuid4().hex}"),
            )
        charging = backend_cpu_seconds(conn) - before
        roller.execute("select 1")
        before = backend_cpu_seconds(roller)
        roller.execute("select public.rollup_usage()")
        rolling = backend_cpu_seconds(roller) - before
    return charging * 1e6 / charges, rolling * 1e6 / charges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=1000, help="per client, CPU part")
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput point")
    parser.add_argument("--interval", type=float, default=1.0, help="(b): seconds between runs")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--backend-charges", type=int, default=2000, help="per-backend CPU part")
    parser.add_argument("--backend-only", action="store_true", help="only the per-backend CPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = StackPaths.from_env()
    bindir = find_binaries().bindir
    dsn = paths.db_url("supabase_admin")
    users, hot_user = prepare(paths, bindir)
    scripts = {}
    hot_script = HOT_USER_SCRIPT.format(user=hot_user[0])
    for name, text in (("usage", RECORD_USAGE_SCRIPT), ("hot", hot_script)):
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(text)
        scripts[name] = f.name
    postmaster = int((paths.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    backend: dict[str, list[tuple[float, float]]] = {"(b)": []}
    for run in range(args.runs):
        console.log(f"run {run + 1}/{args.runs}: per-backend CPU")
        backend["(b)"].append(backend_micros(dsn, users, args.backend_charges))
    backend_medians = {
        c: (statistics.median(v[0] for v in got), statistics.median(v[1] for v in got))
        for c, got in backend.items() if got
    }  # fmt: skip
    if args.backend_only:
        print(json.dumps({"backend_micros_per_charge": backend, "medians": backend_medians}))
        return

    def charges(script: str) -> Callable[[int], float]:
        return lambda transactions: pgbench(
            bindir, paths.db_port, 0, ["-f", scripts[script]], "postgres", "supabase_admin",
            8, transactions,
        )  # fmt: skip

    def rate(script: str) -> float:
        return pgbench(bindir, paths.db_port, args.seconds, ["-f", scripts[script]], "postgres",
                       "supabase_admin")  # fmt: skip

    configs: dict[str, Callable[[], object]] = {
        "none": nothing,
        "(b) rollup_usage()": lambda: rollup_loop(dsn, args.interval),
    }
    metrics = ("server CPU µs / charge", "calls/s, 1,000 users", "calls/s, ONE user",
               "batch records/s")  # fmt: skip
    results = {c: {m: [] for m in metrics} for c in configs}
    for run in range(args.runs):
        for config, around in configs.items():
            console.log(f"run {run + 1}/{args.runs}: {config}")
            with psycopg.connect(dsn, autocommit=True) as conn:
                # Each configuration starts caught up: (b) must not count the rows of the one
                # before it.
                conn.execute(SKIP_TO_NOW)
            got = results[config]
            before = postgres_cpu_seconds(postmaster)
            with around():  # type: ignore[attr-defined]
                charges("usage")(args.transactions)
            spent = postgres_cpu_seconds(postmaster) - before
            got["server CPU µs / charge"].append(spent * 1e6 / (args.transactions * 8))
            with around():  # type: ignore[attr-defined]
                got["calls/s, 1,000 users"].append(rate("usage"))
                got["calls/s, ONE user"].append(rate("hot"))
                got["batch records/s"].append(
                    timed(8, args.seconds, batch_worker(dsn, users, args.batch_size))
                )

    medians = {c: {m: statistics.median(v) for m, v in got.items()} for c, got in results.items()}
    if args.json:
        print(json.dumps({"medians": medians, "runs": results, "backend": backend}, indent=2))
        return
    table = Table("configuration", *metrics,
                  title=f"{args.runs} runs, 8 clients; (b) every {args.interval:g} s")  # fmt: skip
    for config, got in medians.items():
        cells = [f"{got[m]:,.0f} ({', '.join(f'{v:,.0f}' for v in results[config][m])})"
                 for m in metrics]  # fmt: skip
        table.add_row(config, *cells)
    Console().print(table)
    per_backend = Table("configuration", "charging backend CPU µs / charge",
                        "rollup backend CPU µs / charge", "total",
                        title=f"one client, {args.backend_charges:,} charges, medians")  # fmt: skip
    for config, (charging, rolling) in backend_medians.items():
        per_backend.add_row(
            config, f"{charging:,.0f}", f"{rolling:,.1f}", f"{charging + rolling:,.0f}"
        )
    Console().print(per_backend)


if __name__ == "__main__":
    main()
