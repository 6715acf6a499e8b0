"""Gateway overhead: supabase-py → gateway → PostgreSQL versus the same SQL over psycopg.

8 concurrent clients (threads, one client/connection each) for a fixed time per scenario:
  select  one row by primary key      (REST GET /rest/v1/bench_items?id=eq.N)
  rpc     a small SQL function         (REST POST /rest/v1/rpc/bench_add)
The direct path runs the same statement the gateway runs, as the same role with the same
request settings, in the same process and run. Repeated `--runs` times; medians reported.

    python bench/gateway_bench.py --seconds 5 --runs 3     # against the running local stack
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from collections.abc import Callable

import psycopg
from rich.console import Console
from rich.table import Table

from app.stack import keys as stack_keys
from app.stack.paths import StackPaths
from supabase import create_client

SETUP = """
create table if not exists public.bench_items (id int primary key, name text not null);
insert into public.bench_items select g, 'item ' || g from generate_series(1, 1000) g
  on conflict do nothing;
grant select on public.bench_items to anon, authenticated, service_role;
create or replace function public.bench_add(a int, b int) returns int
  language sql immutable as $$ select a + b $$;
grant execute on function public.bench_add(int, int) to anon, authenticated, service_role;
"""

CLAIMS = json.dumps({"role": "service_role"})


def run_clients(clients: int, seconds: float, make_worker: Callable[[], Callable[[], None]]):
    """Run `clients` threads calling their worker until time is up; latencies in ms."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def loop(slot: int) -> None:
        work = make_worker()
        work()  # warm up: connect, prepare
        start.wait()
        mine = latencies[slot]
        while (now := time.perf_counter()) < stop_at[0]:
            work()
            mine.append((time.perf_counter() - now) * 1000)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds + 10  # generous until everyone is ready
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for per in latencies for x in per)
    return {
        "rps": len(flat) / elapsed,
        "p50_ms": flat[len(flat) // 2],
        "p99_ms": flat[min(len(flat) - 1, int(len(flat) * 0.99))],
    }


def gateway_worker(url: str, key: str, scenario: str) -> Callable[[], Callable[[], None]]:
    def make() -> Callable[[], None]:
        client = create_client(url, key)
        if scenario == "select":
            return lambda: (
                client.table("bench_items").select("*").eq("id", random.randint(1, 1000)).execute()
            )
        return lambda: client.rpc("bench_add", {"a": random.randint(1, 9), "b": 2}).execute()

    return make


def direct_worker(dsn: str, scenario: str) -> Callable[[], Callable[[], None]]:
    """The statement the gateway sends, with the same role switch and claims, in one transaction."""
    if scenario == "select":
        sql = (
            "select coalesce(json_agg(_t), '[]')::text from (select * from public.bench_items "
            "where id = %s) _t"
        )
    else:
        sql = "select to_json(public.bench_add(a => %s, b => 2))::text"

    def make() -> Callable[[], None]:
        conn = psycopg.connect(dsn, autocommit=True)

        def work() -> None:
            with conn.transaction():
                conn.execute(
                    "select set_config('role', 'service_role', true), "
                    "set_config('request.jwt.claims', %s, true)",
                    (CLAIMS,),
                )
                conn.execute(sql, (random.randint(1, 1000),)).fetchone()

        return work

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args()

    paths = StackPaths.from_env()
    keys = stack_keys.load_or_create(paths)
    with psycopg.connect(paths.db_url(), autocommit=True) as conn:
        conn.execute(SETUP)
    dsn = paths.db_url("authenticator")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    console = Console(stderr=True)
    for run in range(args.runs):
        for scenario in ("select", "rpc"):
            for path, make in (
                (
                    "supabase-py → gateway",
                    gateway_worker(paths.api_url, keys.service_role_key, scenario),
                ),
                ("psycopg direct", direct_worker(dsn, scenario)),
            ):
                console.log(f"run {run + 1}/{args.runs}: {scenario} via {path}")
                results.setdefault((scenario, path), []).append(
                    run_clients(args.clients, args.seconds, make)
                )

    medians = {
        f"{scenario} / {path}": {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for (scenario, path), runs in results.items()
    }
    for scenario in ("select", "rpc"):
        gateway = medians[f"{scenario} / supabase-py → gateway"]["rps"]
        direct = medians[f"{scenario} / psycopg direct"]["rps"]
        medians[f"{scenario} / ratio"] = {"gateway_over_direct": gateway / direct}
    if args.json:
        print(json.dumps(medians, indent=2))
        return
    table = Table(
        "scenario / path",
        "req/s",
        "p50 ms",
        "p99 ms",
        title=f"median of {args.runs} runs, {args.clients} clients, {args.seconds:g} s each",
    )
    for name, row in medians.items():
        if "rps" in row:
            table.add_row(name, f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}")
        else:
            table.add_row(name, f"{row['gateway_over_direct']:.2f}× direct", "", "")
    Console().print(table)


if __name__ == "__main__":
    main()
