"""A 30-day per-user report from the rollups against the raw scan it replaces, on 10 million
usage records, in one run (issue 12 §3: < 50 ms p50 from the rollups).

1. Generates `--rows` usage records (default 10,000,000) directly in SQL as the cluster
   superuser (test data: set-based `generate_series` inserts in chunks, not the money
   functions): `--users` users, 5 models, spread evenly over the last `--days` days, 10 % of them
   through an API key (a metered_requests row), 3 % errors.
2. Rolls them up with public.rollup_usage() in chunks (rows/s reported: the rollup's own speed).
3. For `--samples` random users, alternately (as service_role):
     rollups  usage_report(since = 30 days ago at 00:00 UTC, until = tomorrow 00:00 UTC,
              for_user, 'day')  — whole days: read from usage_daily_totals
     raw      the same report a microsecond shorter — not whole days: the 20251201000060 scan of
              the user's usage_records in the range (index usage_records_user_id_occurred_at_idx)
   and checks both give the same numbers. p50 / p95 of the client-side time of each.
4. The same for the 30-day report of everyone by day (`--everyone-samples` times each).

Run it on a stack of its own (the data stays in it: stop the stack and delete its state folder
afterwards, ~6 GB for 10 M rows):

    export TOKENMETER_STATE_DIR=$PWD/.tokenmeter/rollup-bench TOKENMETER_API_PORT=54351 \\
           TOKENMETER_DB_PORT=54352
    .venv/bin/tokenmeter stack start
    .venv/bin/python bench/rollup_bench.py --rows 10000000
    .venv/bin/tokenmeter stack stop && rm -rf .tokenmeter/rollup-bench
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from rich.console import Console
from rich.table import Table

from app.stack.manager import Stack
from app.stack.paths import StackPaths

console = Console(stderr=True)

SETUP = """
create schema if not exists bench;
drop table if exists bench.rollup_users;
create table bench.rollup_users (n int primary key, id uuid not null);
insert into bench.rollup_users select n, gen_random_uuid() from generate_series(0, {users} - 1) n;
insert into auth.users (id, aud, role, email, created_at, updated_at)
select id, 'authenticated', 'authenticated', 'rollup-bench-' || n || '@example.test', now(), now()
from bench.rollup_users;
insert into public.plans (id, name) values ('b0000000-0000-4000-8000-0000000000f1', 'rollup-bench')
on conflict do nothing;
insert into public.subscriptions (id, user_id, plan_id, status)
select gen_random_uuid(), id, 'b0000000-0000-4000-8000-0000000000f1', 'active'
from bench.rollup_users;
insert into public.api_keys (id, user_id, plan_id, name, prefix)
select gen_random_uuid(), u.id, 'b0000000-0000-4000-8000-0000000000f1', 'bench key',
       'tm_rb' || lpad(u.n::text, 6, '0')
from bench.rollup_users u;
"""
# Row g: user g % users, model (g / users) % 5 (each user uses all five), time evenly spread
# over `days` (newest first).
CHUNK = """
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
  price_per_cached_input_token, price_per_request, cost, latency_ms, status, occurred_at)
select u.id, 'rb-' || g, 'openai', m.model, 100 + g %% 3000, 10 + g %% 700, 0,
       m.input, m.output, m.input, 0, (100 + g %% 3000) * m.input + (10 + g %% 700) * m.output,
       50 + g %% 2000, case when g %% 33 = 0 then 'error' else 'success' end,
       %(now)s - (g::double precision / %(rows)s) * %(days)s * interval '1 day'
from generate_series(%(first)s::bigint, %(last)s::bigint) g
join bench.rollup_users u on u.n = g %% %(users)s
join (values (0, 'gpt-4o', 0.0000025, 0.00001), (1, 'gpt-4o-mini', 0.00000015, 0.0000006),
             (2, 'claude-3-5-sonnet', 0.000003, 0.000015), (3, 'gemini-1.5-pro', 0.00000125, 0.000005),
             (4, 'o1-mini', 0.0000011, 0.0000044)) as m (k, model, input, output)
  on m.k = (g / %(users)s) %% 5
"""
# Every user's 10th record through their key (not every 10th user's records).
METERED = """
insert into public.metered_requests (request_id, user_id, api_key_id, subscription_id, upstream,
  requested_model, model, max_tokens, max_input_tokens, reserved, currency, status, http_status,
  expires_at, completed_at)
select r.request_id, r.user_id, k.id, s.id, 'openai', r.model_id, r.model_id, 1000, 1000, 0, 'USD',
       'completed', 200, r.occurred_at, r.occurred_at
from public.usage_records r
join public.api_keys k on k.user_id = r.user_id and k.name = 'bench key'
join public.subscriptions s on s.user_id = r.user_id
  and s.plan_id = 'b0000000-0000-4000-8000-0000000000f1'
where r.id between %(lo)s and %(hi)s
  and (substr(r.request_id, 4)::bigint / %(users)s / 5) %% 10 = 0  -- request_id = 'rb-' || g
"""
REPORT = "select * from public.usage_report(%s, %s, %s, null, 'day')"
EVERYONE = "select * from public.usage_report(%s, %s, null, null, 'day')"


def timed(conn: psycopg.Connection, sql: str, params: tuple) -> tuple[float, list[tuple]]:
    began = time.perf_counter()
    rows = conn.execute(sql, params).fetchall()
    return (time.perf_counter() - began) * 1000, rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=60, help="users, each report once")
    parser.add_argument("--everyone-samples", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = StackPaths.from_env()
    dsn = Stack(paths).cluster.superuser_dsn()
    now = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, object] = {"rows": args.rows, "users": args.users, "days": args.days,
                                  "load_before": os.getloadavg()}  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set statement_timeout = 0")
        if conn.execute("select count(*) from public.usage_records").fetchone()[0] < args.rows:
            began = time.perf_counter()
            # Test data: no triggers (the request-id claim, the per-statement user check, the
            # foreign keys' checks) — the rows are valid by construction, and the per-row claim
            # trigger would triple the time. Partition routing and indexes are as in production.
            conn.execute(SETUP.format(users=args.users).encode())
            conn.execute("set session_replication_role = replica")
            start_id = conn.execute(
                "select coalesce(max(id), 0) from public.usage_records"
            ).fetchone()[0]
            for first in range(0, args.rows, args.chunk):
                last = min(first + args.chunk, args.rows) - 1
                conn.execute(CHUNK, {"first": first, "last": last, "rows": args.rows,
                                     "days": args.days, "users": args.users, "now": now})  # fmt: skip
                console.log(f"generated {last + 1:,} rows")
            end_id = conn.execute("select max(id) from public.usage_records").fetchone()[0]
            for lo in range(start_id + 1, end_id + 1, args.chunk):
                conn.execute(METERED, {"lo": lo, "hi": lo + args.chunk - 1, "users": args.users})
            conn.execute("set session_replication_role = origin")
            results["generate_s"] = round(time.perf_counter() - began, 1)
            began = time.perf_counter()
            rolled = 0
            while True:
                step = conn.execute("select public.rollup_usage(max_rows => %s)",
                                    (args.chunk,)).fetchone()[0]  # fmt: skip
                rolled += step["rows"]
                console.log(f"rolled up {rolled:,} rows")
                if step["behind"] == 0:
                    break
            seconds = time.perf_counter() - began
            results["rollup_s"] = round(seconds, 1)
            results["rollup_rows_per_s"] = round(rolled / seconds)
            conn.execute("analyze")
        results["usage_records"] = conn.execute(
            "select count(*) from public.usage_records"
        ).fetchone()[0]
        results["summary_rows"] = conn.execute(
            "select count(*) from public.usage_summaries"
        ).fetchone()[0]
        results["database_size"] = conn.execute(
            "select pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]  # fmt: skip

    with psycopg.connect(dsn, autocommit=True) as conn:
        users = [
            r[0] for r in conn.execute("select id from bench.rollup_users order by n").fetchall()
        ]
        conn.execute("set role service_role")
        today = now.replace(hour=0, minute=0, second=0)
        since, until = today - timedelta(days=30), today + timedelta(days=1)
        shorter = since + timedelta(microseconds=1)
        picked = random.Random(12).sample(users, min(args.samples, len(users)))
        times: dict[str, list[float]] = {"rollups": [], "raw": []}
        for user in picked:
            fast, fast_rows = timed(conn, REPORT, (since, until, user))
            slow, slow_rows = timed(conn, REPORT, (shorter, until, user))
            assert fast_rows == slow_rows, f"the two reports differ for {user}"
            assert fast_rows, "the report is empty: the bench would measure nothing"
            times["rollups"].append(fast)
            times["raw"].append(slow)
        everyone: dict[str, list[float]] = {"rollups": [], "raw": []}
        for _ in range(args.everyone_samples):
            fast, fast_rows = timed(conn, EVERYONE, (since, until))
            slow, slow_rows = timed(conn, EVERYONE, (shorter, until))
            assert fast_rows == slow_rows, "the two everyone reports differ"
            everyone["rollups"].append(fast)
            everyone["raw"].append(slow)
        plan = conn.execute(
            "explain (analyze, buffers) " + REPORT, (since, until, picked[0])
        ).fetchall()
    results["load_after"] = os.getloadavg()
    results["per_user_ms"] = {k: {"p50": statistics.median(v), "p95": percentile(v, 0.95)}
                              for k, v in times.items()}  # fmt: skip
    results["everyone_ms"] = {
        k: {"p50": statistics.median(v), "runs": v} for k, v in everyone.items()
    }
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return
    table = Table("30-day report, by day", "rollups p50", "raw scan p50", "rollups p95", "raw p95",
                  title=f"{results['usage_records']:,} usage records, {args.users:,} users, "
                        f"{args.days} days")  # fmt: skip
    per_user = results["per_user_ms"]
    table.add_row(f"one user ({len(picked)} users)", f"{per_user['rollups']['p50']:.1f} ms",
                  f"{per_user['raw']['p50']:.1f} ms", f"{per_user['rollups']['p95']:.1f} ms",
                  f"{per_user['raw']['p95']:.1f} ms")  # fmt: skip
    table.add_row(f"everyone ({args.everyone_samples}×)",
                  f"{statistics.median(everyone['rollups']):.1f} ms",
                  f"{statistics.median(everyone['raw']):.1f} ms", "", "")  # fmt: skip
    Console().print(table)
    Console().print({k: v for k, v in results.items() if k not in ("per_user_ms", "everyone_ms")})
    Console().print("\n".join(r[0] for r in plan[:12]))


if __name__ == "__main__":
    main()
