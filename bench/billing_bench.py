"""Billing core throughput against pgbench references on the same cluster, in one run.

Scenarios (8 clients each, `--seconds` each, repeated `--runs` times, medians reported):
  A  record_usage over psycopg, 1,000 users          vs  pgbench -N (simple-update, no branches)
  A' record_usage driven BY pgbench (same C client as the reference: isolates the SQL's cost
     from the Python client's)
  B  record_usage over psycopg, ONE user (hot row)   vs  pgbench script: update one row + insert
  C  record_usage_batch, 1,000 records per call, 1,000 users: records/s
  D  record_usage through supabase-py → gateway, 1,000 users: req/s
usage_records gets `--history` past months of partitions first (12: 17 partitions, a year's).

    python bench/billing_bench.py --seconds 10 --runs 3      # against the running local stack
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from app.stack import keys as stack_keys
from app.stack.paths import StackPaths
from app.stack.postgres import find_binaries
from supabase import create_client

MODEL = "gpt-4o-mini"
HOT_ROW_SCRIPT = """\\set aid random(1, 100000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance - 1 WHERE aid = 1;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, -1, CURRENT_TIMESTAMP);
END;
"""
RECORD_USAGE_SCRIPT = """\\set u random(1, 1000)
select public.record_usage(user_id => (select id from bench.users where n = :u),
  model => 'gpt-4o-mini', input_tokens => 1000, output_tokens => 200,
  request_id => gen_random_uuid()::text);
"""
# A year of monthly partitions by default: every lookup of usage_records that is not pruned
# costs in proportion to their number (docs/benchmarks.md, "Usage partitioned by month").
HISTORY_HELP = "past months of (empty) usage_records partitions to add (default 12: 17 in all)"
console = Console(stderr=True)


def make_users(conn: psycopg.Connection, count: int) -> list[str]:
    """Create `count` users (through auth.users, so the signup trigger makes balances) and fund them."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with conn.cursor() as cur:
        cur.executemany(
            "insert into auth.users (id, aud, role, email, created_at, updated_at) "
            "values (%s, 'authenticated', 'authenticated', %s, now(), now())",
            [(uid, f"bench-{uid}@example.com") for uid in ids],
        )
        cur.executemany(
            "select public.top_up(user_id => %s, amount => 1000000, reference => %s)",
            [(uid, f"bench-topup-{uid}") for uid in ids],
        )
    return ids


def timed(clients: int, seconds: float, make_worker: Callable[[int], Callable[[], int]]) -> float:
    """Operations per second over `clients` threads; each worker call returns ops it did."""
    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)
    deadline = [float("inf")]

    def loop(slot: int) -> None:
        work = make_worker(slot)
        barrier.wait()
        done = 0
        while time.perf_counter() < deadline[0]:
            done += work()
        counts[slot] = done

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    deadline[0] = began + seconds
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def record_usage_worker(
    dsn: str, users: list[str], model: str = MODEL, provider: str | None = None
) -> Callable[[int], Callable[[], int]]:
    """A worker per client slot: record_usage over its own connection, cycling over its share
    of `users`, 1,000 input / 200 output tokens of `model`."""

    def make(slot: int) -> Callable[[], int]:
        conn = psycopg.connect(dsn, autocommit=True)
        seq = itertools.count()
        cycle = itertools.cycle(users[slot::8] or users)

        def work() -> int:
            conn.execute(
                "select public.record_usage(user_id => %s, model => %s, input_tokens => 1000, "
                "output_tokens => 200, request_id => %s, provider => %s)",
                (next(cycle), model, f"bench-{slot}-{next(seq)}-{uuid.uuid4().hex[:8]}", provider),
            )
            return 1

        return work

    return make


def batch_worker(dsn: str, users: list[str], size: int) -> Callable[[int], Callable[[], int]]:
    def make(slot: int) -> Callable[[], int]:
        conn = psycopg.connect(dsn, autocommit=True)

        def work() -> int:
            tag = uuid.uuid4().hex
            records = [
                {
                    "user_id": users[i % len(users)],
                    "model": MODEL,
                    "input_tokens": 1000,
                    "output_tokens": 200,
                    "request_id": f"batch-{tag}-{i}",
                }
                for i in range(size)
            ]
            conn.execute(
                "select public.record_usage_batch(records => %s::jsonb)", (json.dumps(records),)
            )
            return size

        return work

    return make


def gateway_worker(url: str, key: str, users: list[str]) -> Callable[[int], Callable[[], int]]:
    def make(slot: int) -> Callable[[], int]:
        client = create_client(url, key)
        cycle = itertools.cycle(users[slot::8] or users)

        def work() -> int:
            client.rpc(
                "record_usage",
                {
                    "user_id": next(cycle),
                    "model": MODEL,
                    "input_tokens": 1000,
                    "output_tokens": 200,
                    "request_id": f"gw-{uuid.uuid4().hex}",
                },
            ).execute()
            return 1

        return work

    return make


def pgbench(
    bindir: Path,
    port: int,
    seconds: float,
    extra: list[str],
    database: str = "bench_pgbench",
    user: str = "postgres",
    clients: int = 8,
    transactions: int | None = None,
) -> float:
    """tps of one pgbench run: `seconds` long, or `transactions` per client when given."""
    length = ["-t", str(transactions)] if transactions else ["-T", str(int(seconds))]
    out = subprocess.run(
        [
            str(bindir / "pgbench"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            *length,
            "-n",
            *extra,
            database,
        ],
        capture_output=True,
        text=True,
        env={"PGPASSWORD": "postgres"},
        check=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def add_history(url: str, months: int) -> int:
    """Past months' partitions (empty), as a year of use leaves usage_records (partitioned by
    month, 20261129210100); returns how many partitions it has."""
    today = datetime.now(UTC).date()
    with psycopg.connect(url, autocommit=True) as conn:
        for back in range(1, months + 1):
            index = today.year * 12 + today.month - 1 - back
            conn.execute(
                "select private.create_usage_partition(%s)", (date(index // 12, index % 12 + 1, 1),)
            )
        conn.execute("analyze public.usage_records")
        row = conn.execute(
            "select count(*) from pg_inherits where inhparent = 'public.usage_records'::regclass"
        ).fetchone()
    return int(row[0]) if row else 0


def prepare(paths: StackPaths, bindir: Path) -> tuple[list[str], list[str]]:
    """1,000 funded users (also in bench.users, numbered for pgbench scripts), one hot user, and
    a fresh `pgbench -i -s 1` database for the references: (users, [hot user])."""
    dsn = paths.db_url("supabase_admin")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'bench_pgbench'").fetchone():
            conn.execute("create database bench_pgbench owner postgres")
        users = make_users(conn, 1000)
        hot_user = make_users(conn, 1)
        conn.execute("create schema if not exists bench")
        conn.execute("drop table if exists bench.users")
        conn.execute("create table bench.users (n int primary key, id uuid not null)")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into bench.users values (%s, %s)",
                [(n + 1, uid) for n, uid in enumerate(users)],
            )
    subprocess.run(
        [
            str(bindir / "pgbench"),
            "-h",
            "127.0.0.1",
            "-p",
            str(paths.db_port),
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            "1",
            "bench_pgbench",
        ],
        env={"PGPASSWORD": "postgres"},
        check=True,
        capture_output=True,
    )
    return users, hot_user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--history", type=int, default=12, help=HISTORY_HELP)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = StackPaths.from_env()
    keys = stack_keys.load_or_create(paths)
    bindir = find_binaries().bindir
    dsn = paths.db_url("supabase_admin")
    users, hot_user = prepare(paths, bindir)
    partitions = add_history(paths.db_url(), args.history)  # as postgres, who owns the others
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(HOT_ROW_SCRIPT)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as usage_script:
        usage_script.write(RECORD_USAGE_SCRIPT)

    scenarios: dict[str, Callable[[], float]] = {
        "A record_usage, 1,000 users (calls/s)": lambda: timed(
            8, args.seconds, record_usage_worker(dsn, users)
        ),
        "A reference: pgbench -N (tps)": lambda: pgbench(
            bindir, paths.db_port, args.seconds, ["-N"]
        ),
        "A' record_usage driven by pgbench (calls/s)": lambda: pgbench(
            bindir,
            paths.db_port,
            args.seconds,
            ["-f", usage_script.name],
            database="postgres",
            user="supabase_admin",
        ),
        "B record_usage, ONE user (calls/s)": lambda: timed(
            8, args.seconds, record_usage_worker(dsn, hot_user)
        ),
        "B reference: pgbench update 1 row + insert (tps)": lambda: pgbench(
            bindir, paths.db_port, args.seconds, ["-f", script.name]
        ),
        "C record_usage_batch (records/s)": lambda: timed(
            8, args.seconds, batch_worker(dsn, users, args.batch_size)
        ),
        "D record_usage via supabase-py → gateway (calls/s)": lambda: timed(
            8, args.seconds, gateway_worker(paths.api_url, keys.service_role_key, users)
        ),
    }
    load_start = os.getloadavg()[0]
    results: dict[str, list[float]] = {name: [] for name in scenarios}
    for run in range(args.runs):
        for name, scenario in scenarios.items():
            console.log(f"run {run + 1}/{args.runs}: {name}")
            results[name].append(scenario())
    medians = {name: statistics.median(values) for name, values in results.items()}
    names = list(medians)
    ratios = {
        "A ratio (≥ 1.0 target)": medians[names[0]] / medians[names[1]],
        "A' ratio, same client as the reference": medians[names[2]] / medians[names[1]],
        "B ratio (≥ 0.9 target)": medians[names[3]] / medians[names[4]],
    }
    load = {"start": load_start, "end": os.getloadavg()[0]}
    if args.json:
        print(
            json.dumps(
                {
                    "medians": medians,
                    "ratios": ratios,
                    "runs": results,
                    "load_average": load,
                    "partitions": partitions,
                },
                indent=2,
            )
        )
        return
    table = Table(
        "scenario",
        "median",
        "runs",
        title=f"{args.runs} runs × {args.seconds:g} s, 8 clients, "
        f"load average {load['start']:.1f} → {load['end']:.1f}, {partitions} usage partitions",
    )
    for name, value in medians.items():
        table.add_row(name, f"{value:,.0f}", ", ".join(f"{v:,.0f}" for v in results[name]))
    for name, value in ratios.items():
        table.add_row(name, f"{value:.2f}×", "")
    Console().print(table)


if __name__ == "__main__":
    main()
