"""CPU one backend spends per record_usage call, alternating between stacks (or functions).

A steadier measure than throughput on a shared machine: each target gets one connection that
charges in a PL/pgSQL loop, one call per transaction with a COMMIT after each
(`synchronous_commit = off` in that session, so no flush wait is timed), and the backend's own
user + system CPU (/proc/PID/stat) is read around each round of `--calls` calls. The targets
take turns round by round, so a change in the machine's load hits them alike. Needs the
`bench.users` table that bench/record_usage_cost.py or bench/billing_bench.py creates.

    # two stacks, e.g. before and after a migration (ports of their databases):
    .venv/bin/python bench/record_usage_backend_cpu.py old=54426 new=54422
    # two function bodies on one stack:
    .venv/bin/python bench/record_usage_backend_cpu.py cur=54422 v2=54422:bench.record_usage
    # record_usage_batch instead: 1,000 records (one per bench user) built in the server per
    # call, CPU per record (`--calls` batches per round):
    .venv/bin/python bench/record_usage_backend_cpu.py old=54426 new=54422 --batch --calls 20
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import psycopg

TICK = os.sysconf("SC_CLK_TCK")
BATCH_RECORDS = 1000
# As bench/record_usage_cost.py's batch: one record per bench user, new request ids.
BATCH_RECORDS_SQL = (
    "(select jsonb_agg(jsonb_build_object('user_id', u.id, 'model', 'gpt-4o-mini',"
    " 'input_tokens', 1000, 'output_tokens', 200, 'request_id', gen_random_uuid()::text))"
    " from bench.users u)"
)


def backend_cpu(pid: int) -> float:
    """user + system CPU seconds of one process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="name=db_port[:function], default function "
                        "public.record_usage")  # fmt: skip
    parser.add_argument("--calls", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", action="store_true", help="record_usage_batch, per record")
    args = parser.parse_args()
    per_call = BATCH_RECORDS if args.batch else 1

    connections: dict[str, tuple[psycopg.Connection, int]] = {}
    for target in args.targets:
        name, _, rest = target.partition("=")
        port, _, function = rest.partition(":")
        conn = psycopg.connect(
            f"postgresql://supabase_admin:postgres@127.0.0.1:{port}/postgres", autocommit=True
        )
        conn.execute("set synchronous_commit = off")
        call = (
            f"perform {function or 'public.record_usage'}(user_id => (select id from bench.users"
            " where n = 1 + (i % 1000)), model => 'gpt-4o-mini', input_tokens => 1000,"
            " output_tokens => 200, request_id => gen_random_uuid()::text)"
        )
        if args.batch:
            call = f"perform {function or 'public.record_usage_batch'}({BATCH_RECORDS_SQL})"
        conn.execute(
            "create or replace procedure pg_temp.charge(calls int) language plpgsql as "
            f"$p$ begin for i in 1 .. calls loop {call}; commit; end loop; end $p$"
        )
        conn.execute(f"call pg_temp.charge({2 if args.batch else 200})")  # warm plans, caches
        connections[name] = (conn, conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]

    micros: dict[str, list[float]] = {name: [] for name in connections}
    load_start = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, (conn, pid) in connections.items():
            before = backend_cpu(pid)
            conn.execute(f"call pg_temp.charge({args.calls})")
            micros[name].append((backend_cpu(pid) - before) * 1e6 / (args.calls * per_call))
    what = f"record of {BATCH_RECORDS}-record batches" if args.batch else "call"
    print(f"backend CPU µs per {what}, {args.rounds} rounds × {args.calls} calls, "
          f"load average {load_start:.1f} → {os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, values in micros.items():
        print(f"{name:10s} median {statistics.median(values):7.1f}   runs "
              + " ".join(f"{v:.0f}" for v in values))  # fmt: skip


if __name__ == "__main__":
    main()
