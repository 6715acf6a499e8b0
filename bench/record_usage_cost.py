"""What one record_usage call costs the server, against `pgbench -N` and against its bare writes.

Throughput ratios on a shared 2-core machine move by ±20 % from run to run; the server CPU a
transaction costs does not. This script measures it directly: the CPU time (user + system) that
the stack's postmaster and its backends used during a pgbench run of a fixed number of
transactions, divided by that number (Linux /proc; other clusters on the machine are not
counted). All three scripts run through pgbench, the reference's own C client, 8 clients:

  record_usage  public.record_usage(...) for one of 1,000 funded users (as billing_bench A')
  bare writes   the writes record_usage exists for and nothing else: insert the usage row (and,
                before 20261129200001, its ledger row), update the balance (no validation, no
                price lookup, no idempotency probe, no result JSON), in one PL/pgSQL function
  floor         the least any metering design writes, as record_usage would (one function call):
                one row keyed by a unique request id, and the balance update, in two bare tables
                with no other index, no CHECK, no trigger
  pgbench -N    the reference: update one account, read it, insert one history row
  batch         record_usage_batch with 1,000 records built in the server (one per user), as
                CPU per record (its inverse bounds the records/s two cores can charge)

usage_records first gets `--history` past months of (empty) partitions (default 12: 17 in
all, a year's worth). Then throughput at 1, 2, 4 and 8 clients, record_usage over pgbench -N: at 1 client both wait
on round trips and commits (pgbench -N makes five round trips, record_usage one); at 8 clients
on 2 cores they wait on CPU.

    .venv/bin/tokenmeter stack start
    .venv/bin/python bench/record_usage_cost.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
from billing_bench import HISTORY_HELP, RECORD_USAGE_SCRIPT, add_history, pgbench, prepare
from rich.console import Console
from rich.table import Table

from app.stack.paths import StackPaths
from app.stack.postgres import find_binaries

# Before 20261129200001 a charge also wrote a 'usage' ledger row; from then on the usage record
# is the charge's line. The bare writes follow the schema they run on.
BARE_WRITES = """
do $do$
declare
  ledger_row text := case when to_regclass('public.balance_movements') is null then
    $l$insert into public.ledger_entries (user_id, kind, amount, reference)
       values (bare_writes.user_id, 'usage', -0.00027, bare_writes.request_id);$l$
    else '' end;
begin
  execute format($f$
create or replace function bench.bare_writes(user_id uuid, request_id text) returns numeric
language plpgsql security definer set search_path = '' as $b$
declare
  new_balance numeric;
begin
  insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
    output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
    price_per_cached_input_token, price_per_request, cost)
  values (bare_writes.user_id, bare_writes.request_id, 'openai', 'gpt-4o-mini', 1000, 200, 0,
    0.00000015, 0.0000006, 0.000000075, 0, 0.00027);
  %s
  update public.user_balances b set balance = b.balance - 0.00027, updated_at = now()
  where b.user_id = bare_writes.user_id returning b.balance into new_balance;
  return new_balance;
end
$b$$f$, ledger_row);
end
$do$;
"""
FLOOR_WRITES = """
drop table if exists bench.floor_usage;
drop table if exists bench.floor_balances;
create table bench.floor_usage (request_id text primary key, user_id uuid not null,
  cost numeric not null);
create table bench.floor_balances (user_id uuid primary key, balance numeric not null)
  with (fillfactor = 50);
insert into bench.floor_balances select id, 1000000 from bench.users;
create or replace function bench.floor_writes(user_id uuid, request_id text) returns numeric
language plpgsql set search_path = '' as $$
declare
  new_balance numeric;
begin
  insert into bench.floor_usage values (floor_writes.request_id, floor_writes.user_id, 0.00027);
  update bench.floor_balances b set balance = b.balance - 0.00027
  where b.user_id = floor_writes.user_id returning b.balance into new_balance;
  return new_balance;
end
$$;
"""
FLOOR_WRITES_SCRIPT = """\\set u random(1, 1000)
select bench.floor_writes((select id from bench.users where n = :u), gen_random_uuid()::text);
"""
# One record_usage_batch of 1,000 records (one per bench user), built in the server: the CPU
# per record of the set-based path, without JSON travelling from a client.
BATCH_SCRIPT = """select public.record_usage_batch((select jsonb_agg(jsonb_build_object(
  'user_id', u.id, 'model', 'gpt-4o-mini', 'input_tokens', 1000, 'output_tokens', 200,
  'request_id', gen_random_uuid()::text)) from bench.users u));
"""
BATCH_RECORDS = 1000
BARE_WRITES_SCRIPT = """\\set u random(1, 1000)
select bench.bare_writes((select id from bench.users where n = :u), gen_random_uuid()::text);
"""
console = Console(stderr=True)


def postgres_cpu_seconds(postmaster: int) -> float:
    """user + system CPU seconds of this stack's postmaster and its backends (exited ones
    included, through the postmaster's cutime/cstime). Other clusters on the machine (other
    stacks, other sessions' tests) are not counted."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(pid) == postmaster or int(fields[1]) == postmaster:  # fields[1]: ppid
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def server_micros_per_tx(run: Callable[[int], float], transactions: int, postmaster: int) -> float:
    """Server CPU µs per transaction of `run(transactions per client)` (8 clients)."""
    before = postgres_cpu_seconds(postmaster)
    run(transactions)
    return (postgres_cpu_seconds(postmaster) - before) * 1e6 / (transactions * 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=1000, help="per client, CPU part")
    parser.add_argument("--seconds", type=float, default=6.0, help="per sweep point")
    parser.add_argument("--history", type=int, default=12, help=HISTORY_HELP)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    paths = StackPaths.from_env()
    bindir = find_binaries().bindir
    prepare(paths, bindir)
    partitions = add_history(paths.db_url(), args.history)  # as postgres, who owns the others
    with psycopg.connect(paths.db_url("supabase_admin"), autocommit=True) as conn:
        conn.execute(BARE_WRITES)
        conn.execute(FLOOR_WRITES)
    scripts = {}
    scripts_text = (
        ("usage", RECORD_USAGE_SCRIPT), ("bare", BARE_WRITES_SCRIPT), ("floor", FLOOR_WRITES_SCRIPT),
        ("batch", BATCH_SCRIPT),
    )  # fmt: skip
    for name, text in scripts_text:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(text)
        scripts[name] = f.name

    def usage(clients: int = 8, seconds: float = 0, transactions: int | None = None) -> float:
        return pgbench(
            bindir, paths.db_port, seconds, ["-f", scripts["usage"]], "postgres",
            "supabase_admin", clients, transactions,
        )  # fmt: skip

    def script(name: str) -> Callable[[int], float]:
        return lambda transactions: pgbench(
            bindir, paths.db_port, 0, ["-f", scripts[name]], "postgres", "supabase_admin",
            8, transactions,
        )  # fmt: skip

    def reference(clients: int = 8, seconds: float = 0, transactions: int | None = None) -> float:
        return pgbench(bindir, paths.db_port, seconds, ["-N"], clients=clients,
                       transactions=transactions)  # fmt: skip

    cpu: dict[str, list[float]] = {
        "record_usage": [], "bare writes": [], "floor": [], "pgbench -N": [],
        "record_usage_batch, per record": [],
    }  # fmt: skip
    sweep: dict[int, list[float]] = {1: [], 2: [], 4: [], 8: []}
    postmaster = int((paths.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    for run in range(args.runs):
        console.log(f"run {run + 1}/{args.runs}: server CPU per transaction")
        n, pm = args.transactions, postmaster
        cpu["record_usage"].append(server_micros_per_tx(lambda t: usage(transactions=t), n, pm))
        cpu["bare writes"].append(server_micros_per_tx(script("bare"), n, pm))
        cpu["floor"].append(server_micros_per_tx(script("floor"), n, pm))
        cpu["pgbench -N"].append(server_micros_per_tx(lambda t: reference(transactions=t), n, pm))
        batches = max(1, n // 200)  # per client: 8 × 5 × 1,000 records for the default 1,000
        cpu["record_usage_batch, per record"].append(
            server_micros_per_tx(script("batch"), batches, pm) / BATCH_RECORDS
        )
        for clients in sweep:
            console.log(f"run {run + 1}/{args.runs}: {clients} client(s)")
            ratio = usage(clients, args.seconds) / reference(clients, args.seconds)
            sweep[clients].append(ratio)

    load = os.getloadavg()[0]
    cpu_medians = {name: statistics.median(v) for name, v in cpu.items()}
    sweep_medians = {clients: statistics.median(v) for clients, v in sweep.items()}
    if args.json:
        print(json.dumps({"server_micros_per_tx": cpu, "ratio_by_clients": sweep,
                          "medians": {"cpu": cpu_medians, "ratio": sweep_medians},
                          "load_average": {"start": load_start, "end": load},
                          "partitions": partitions}, indent=2))  # fmt: skip
        return
    table = Table("transaction", "server CPU µs (median)", "runs", "vs pgbench -N", "× floor",
                  title=f"server CPU per transaction, 8 clients × {args.transactions}, "
                        f"load average {load_start:.1f} → {load:.1f}, "
                        f"{partitions} usage partitions")  # fmt: skip
    for name, value in cpu_medians.items():
        ratio = cpu_medians["pgbench -N"] / value
        table.add_row(name, f"{value:,.0f}", ", ".join(f"{v:,.0f}" for v in cpu[name]),
                      f"{ratio:.2f}× the rate", f"{value / cpu_medians['floor']:.2f}×")  # fmt: skip
    Console().print(table)
    sweep_table = Table("clients", "record_usage / pgbench -N (median)", "runs",
                        title=f"throughput ratio, {args.seconds:g} s per point")  # fmt: skip
    for clients, value in sweep_medians.items():
        sweep_table.add_row(str(clients), f"{value:.2f}×",
                            ", ".join(f"{v:.2f}" for v in sweep[clients]))  # fmt: skip
    Console().print(sweep_table)


if __name__ == "__main__":
    main()
