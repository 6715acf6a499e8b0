"""What keeping usage rollups costs the charge: maintained IN the charging transaction (a) against
the incremental rollup_usage() run beside it (b), and against no rollup at all, in one run.

  none  record_usage as it is, nothing folds usage into usage_summaries
  (a)   an AFTER INSERT … FOR EACH STATEMENT trigger on usage_records (transition table) upserts
        the hour, day and month rows of usage_summaries in the charging transaction: per-(user,
        period, model, key) keys, so charges of different users never touch the same row
  (b)   public.rollup_usage() called every `--interval` seconds by a separate connection while
        the charges run, and once more at the end so every charge is counted

For each: server CPU µs per charge (pgbench, 8 clients × `--transactions`, the CPU of the
stack's postmaster and all its backends, the rollup's included; bench/record_usage_cost.py's
method), record_usage calls/s (pgbench, 1,000 users, 8 clients, `--seconds`), the same for ONE
user (hot row), and record_usage_batch records/s (1,000-record batches over psycopg). The
configurations are interleaved within each run; medians over `--runs`.

    .venv/bin/tokenmeter stack start
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

# (a): the summaries maintained by the charge itself. Same table and keys as rollup_usage().
IN_CHARGE_TRIGGER = """
create or replace function bench.rollup_in_charge() returns trigger
language plpgsql set search_path = '' as $$
begin
  insert into public.usage_summaries as s (period, period_start, user_id, provider_id,
    model_id, api_key_id, subscription_id, currency, requests, error_requests, input_tokens,
    cached_input_tokens, output_tokens, images, cost, latency_ms_sum, latency_count)
  select p.period, date_trunc(p.period, n.occurred_at, 'UTC'), n.user_id, n.provider_id,
         n.model_id, m.api_key_id, m.subscription_id, n.currency, count(*),
         count(*) filter (where n.status <> 'success'), sum(n.input_tokens),
         sum(n.cached_input_tokens), sum(n.output_tokens), sum(n.images), sum(n.cost),
         coalesce(sum(n.latency_ms), 0), count(n.latency_ms)
  from new_rows n
  left join public.metered_requests m on m.request_id = n.request_id
  cross join (values ('hour'), ('day'), ('month')) as p (period)
  group by 1, 2, 3, 4, 5, 6, 7, 8
  order by 3, 1, 2, 5, 4, 6, 7, 8
  on conflict on constraint usage_summaries_key do update set
    requests = s.requests + excluded.requests,
    error_requests = s.error_requests + excluded.error_requests,
    input_tokens = s.input_tokens + excluded.input_tokens,
    cached_input_tokens = s.cached_input_tokens + excluded.cached_input_tokens,
    output_tokens = s.output_tokens + excluded.output_tokens,
    images = s.images + excluded.images, cost = s.cost + excluded.cost,
    latency_ms_sum = s.latency_ms_sum + excluded.latency_ms_sum,
    latency_count = s.latency_count + excluded.latency_count, updated_at = now();
  return null;
end
$$;
"""
INSTALL_TRIGGER = (
    "create trigger usage_records_rollup_in_charge after insert on public.usage_records "
    "referencing new table as new_rows for each statement "
    "execute function bench.rollup_in_charge()"
)
DROP_TRIGGER = "drop trigger if exists usage_records_rollup_in_charge on public.usage_records"
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


def backend_micros(dsn: str, users: list[str], charges: int, trigger: bool) -> tuple[float, float]:
    """One client, `charges` record_usage calls (each its own transaction), then one
    rollup_usage() over them on another connection: (µs of the charging backend's CPU per charge,
    µs of the rollup backend's CPU per charge). Only those two server processes are counted, so
    the load of other sessions on the machine hardly moves it (unlike whole-server CPU)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(SKIP_TO_NOW)
        admin.execute(INSTALL_TRIGGER if trigger else DROP_TRIGGER)
    try:
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
            if not trigger:
                roller.execute("select public.rollup_usage()")
            rolling = backend_cpu_seconds(roller) - before
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(DROP_TRIGGER)
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
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(IN_CHARGE_TRIGGER)
        conn.execute(DROP_TRIGGER)
    scripts = {}
    hot_script = HOT_USER_SCRIPT.format(user=hot_user[0])
    for name, text in (("usage", RECORD_USAGE_SCRIPT), ("hot", hot_script)):
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(text)
        scripts[name] = f.name
    postmaster = int((paths.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    backend: dict[str, list[tuple[float, float]]] = {"(a)": [], "(b)": []}
    for run in range(args.runs):
        console.log(f"run {run + 1}/{args.runs}: per-backend CPU")
        backend["(a)"].append(backend_micros(dsn, users, args.backend_charges, trigger=True))
        backend["(b)"].append(backend_micros(dsn, users, args.backend_charges, trigger=False))
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

    configs: dict[str, tuple[bool, Callable[[], object]]] = {
        "none": (False, nothing),
        "(a) in the charge": (True, nothing),
        "(b) rollup_usage()": (False, lambda: rollup_loop(dsn, args.interval)),
    }
    metrics = ("server CPU µs / charge", "calls/s, 1,000 users", "calls/s, ONE user",
               "batch records/s")  # fmt: skip
    results = {c: {m: [] for m in metrics} for c in configs}
    for run in range(args.runs):
        for config, (trigger, around) in configs.items():
            console.log(f"run {run + 1}/{args.runs}: {config}")
            with psycopg.connect(dsn, autocommit=True) as conn:
                # Each configuration starts caught up: (b) must not count the rows of the one
                # before it, and (a)'s rows are in the summaries already.
                conn.execute(SKIP_TO_NOW)
                conn.execute(INSTALL_TRIGGER if trigger else DROP_TRIGGER)
            try:
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
            finally:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(DROP_TRIGGER)

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
