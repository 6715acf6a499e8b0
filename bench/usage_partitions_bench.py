"""What partitioning usage_records by month costs charging (issue 12 §2), in one run.

Three databases' worth of the same charging, on the running stack's cluster, alternated run by
run so machine noise hits them alike:

  unpartitioned   a database migrated with every migration but the three that partition
                  (20261129210000…210200) and those that use their request-id claim:
                  one usage_records table, UNIQUE (request_id)
  partitioned, no claim
                  the stack's database with the claim trigger disabled: the partitioned table,
                  UNIQUE (request_id, created_at) per partition, request ids NOT unique across
                  partitions (the cost of partitioning alone; never a configuration to run).
                  Since 20261130020001 record_usage_batch claims its ids itself, in one
                  statement, so this variant removes the claim from record_usage only; and
                  record_usage still reads the claim table to find a stored request id
  partitioned     the stack's database as migrated: + private.usage_request_ids claimed by the
                  BEFORE INSERT trigger (the cost of the uniqueness mechanism is the difference)

The partitioned database gets `--history` past months of (empty) partitions besides this month
and the three ahead, as a year of use would leave it (before 20261130020000 each lookup by
request_id probed every partition's index; since, the claim names the one to read). Measured, as bench/record_usage_cost.py does: server CPU µs per
record_usage (pgbench, 8 clients × `--transactions`), record_usage throughput (pgbench,
8 clients, `--seconds`), and record_usage_batch records/s (1,000 per call, 8 clients, psycopg).

    .venv/bin/tokenmeter stack start
    .venv/bin/python bench/usage_partitions_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
from billing_bench import (
    RECORD_USAGE_SCRIPT,
    add_history,
    batch_worker,
    make_users,
    pgbench,
    timed,
)
from record_usage_cost import server_micros_per_tx
from rich.console import Console
from rich.table import Table

from app.migrations import Migrator, migration_files
from app.stack.paths import StackPaths
from app.stack.postgres import BOOTSTRAP_SQL, find_binaries

PARTITIONING = (20261129210000, 20261129210200)
BEFORE_DB = "bench_unpartitioned"
console = Console(stderr=True)


def dsn(paths: StackPaths, database: str, user: str = "postgres") -> str:
    return f"postgresql://{user}:postgres@127.0.0.1:{paths.db_port}/{database}"


def prepare_unpartitioned(paths: StackPaths) -> None:
    """A database bootstrapped as the stack's, with every migration but the partitioning's (so
    the two differ by exactly that)."""
    with psycopg.connect(dsn(paths, "postgres", "supabase_admin"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {BEFORE_DB} with (force)")
        conn.execute(f"create database {BEFORE_DB} owner postgres")
    with psycopg.connect(dsn(paths, BEFORE_DB, "supabase_admin"), autocommit=True) as conn:
        conn.execute(BOOTSTRAP_SQL.read_text())
    with tempfile.TemporaryDirectory() as folder:
        for f in migration_files(paths.migrations_dir):
            # Later migrations built on the request-id claim (20261130020000 on) need the
            # partitioning's table; without them the charging functions are the previous ones,
            # which read an unpartitioned table directly.
            if not PARTITIONING[0] <= int(f.version) <= PARTITIONING[1] and (
                "usage_request_ids" not in Path(f.path).read_text()
            ):
                shutil.copy(f.path, folder)
        Migrator(dsn(paths, BEFORE_DB), Path(folder), []).push()


def prepare_users(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        users = make_users(conn, 1000)
        conn.execute("create schema if not exists bench")
        conn.execute("drop table if exists bench.users")
        conn.execute("create table bench.users (n int primary key, id uuid not null)")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into bench.users values (%s, %s)",
                [(n + 1, uid) for n, uid in enumerate(users)],
            )
    return users


def set_claim(url: str, enabled: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        verb = "enable" if enabled else "disable"
        conn.execute(
            f"alter table public.usage_records {verb} trigger usage_records_claim_request_id"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=1000, help="per client, CPU part")
    parser.add_argument("--seconds", type=float, default=6.0, help="per throughput point")
    parser.add_argument("--history", type=int, default=12, help="past months of partitions")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = StackPaths.from_env()
    bindir = find_binaries().bindir
    after = dsn(paths, "postgres")
    before = dsn(paths, BEFORE_DB)
    console.log("migrating a database up to the last migration before partitioning")
    prepare_unpartitioned(paths)
    console.log("1,000 funded users in each database")
    users = {BEFORE_DB: prepare_users(before), "postgres": prepare_users(after)}
    partition_count = add_history(after, args.history)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(RECORD_USAGE_SCRIPT)
    script = f.name
    postmaster = int((paths.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])

    variants = {
        "unpartitioned": (BEFORE_DB, before, None),
        "partitioned, no claim": ("postgres", after, False),
        "partitioned": ("postgres", after, True),
    }
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    tps: dict[str, list[float]] = {name: [] for name in variants}
    batch: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for run in range(args.runs):
            for name, (database, url, claim) in variants.items():
                console.log(f"run {run + 1}/{args.runs}: {name}")
                if claim is not None:
                    set_claim(url, claim)

                def usage(transactions: int, database: str = database) -> float:
                    return pgbench(bindir, paths.db_port, 0, ["-f", script], database,
                                   "supabase_admin", 8, transactions)  # fmt: skip

                cpu[name].append(server_micros_per_tx(usage, args.transactions, postmaster))
                tps[name].append(
                    pgbench(
                        bindir,
                        paths.db_port,
                        args.seconds,
                        ["-f", script],
                        database,
                        "supabase_admin",
                        8,
                    )  # fmt: skip
                )
                worker: Callable[[int], Callable[[], int]] = batch_worker(
                    url, users[database], 1000
                )
                batch[name].append(timed(8, args.seconds, worker))
    finally:
        set_claim(after, True)

    medians = {
        name: {
            "cpu_us": statistics.median(cpu[name]),
            "tps": statistics.median(tps[name]),
            "batch_records_s": statistics.median(batch[name]),
        }
        for name in variants
    }
    if args.json:
        print(json.dumps({"partitions": partition_count, "runs": {"cpu_us": cpu, "tps": tps,
                          "batch_records_s": batch}, "medians": medians}, indent=2))  # fmt: skip
        return
    base = medians["unpartitioned"]
    table = Table("usage_records", "server CPU µs / record_usage", "record_usage tps (8 clients)",
                  "batch records/s", title=f"{args.runs} runs, medians; partitioned: "
                  f"{partition_count} partitions")  # fmt: skip
    for name, m in medians.items():
        table.add_row(
            name,
            f"{m['cpu_us']:,.0f} ({m['cpu_us'] / base['cpu_us'] - 1:+.0%})",
            f"{m['tps']:,.0f} ({m['tps'] / base['tps'] - 1:+.0%})",
            f"{m['batch_records_s']:,.0f} ({m['batch_records_s'] / base['batch_records_s'] - 1:+.0%})",
        )
    Console().print(table)
    for name in variants:
        console.log(f"{name}: cpu {cpu[name]}, tps {tps[name]}, batch {batch[name]}")


if __name__ == "__main__":
    main()
