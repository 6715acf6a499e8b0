"""Every dashboard page on 10 million usage records with the rollups caught up (issue 13 §2).

1. Generates `--rows` usage records (default 10,000,000) set-based in SQL as the cluster
   superuser, in `--chunks` large INSERTs (test data, not the money functions; row triggers off
   through `session_replication_role = replica`, so the request-id claim and the per-statement
   user check do not run — the rows are valid by construction). `--users` users (auth.users,
   user_balances with a spread of balances, some below the dashboard's "low" of 1), one API key
   for every 10th user, 6 models, created_at = occurred_at spread evenly over the last `--days`
   days so the rows land in their month partitions (created first), 3 % errors.
2. Catches the rollups up with public.rollup_usage() in steps, then ANALYZE.
3. Signs in to the dashboard with the service_role key (session cookie) and times each page
   warm: one request to warm it, then the median of `--repeat` requests; the consolidation
   report (`/models?report=1`) among them.
4. Times pricing_consolidation_report() with usage in price gaps (a 'missing' version of one
   model over 11 days, in a transaction rolled back afterwards; one model has no price at all)
   and checks its usage_without_price counts against direct counts over usage_records.

Run it on a stack of its own and drop it afterwards (~6 GB for 10 M rows):

    export TOKENMETER_STATE_DIR=$PWD/.tokenmeter/dash-bench TOKENMETER_API_PORT=54491 \\
           TOKENMETER_DB_PORT=54492 TOKENMETER_ROLLUP_INTERVAL=0
    .venv/bin/tokenmeter stack start && .venv/bin/tokenmeter demo
    .venv/bin/python bench/dashboard_bench.py --rows 10000000
    .venv/bin/tokenmeter stack stop && rm -rf .tokenmeter/dash-bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from rich.console import Console

from app.dashboard import process as dashboard
from app.stack import keys as stack_keys
from app.stack.manager import Stack
from app.stack.paths import StackPaths

console = Console(stderr=True)

SETUP = """
create schema if not exists bench;
drop table if exists bench.dash_users;
create table bench.dash_users (n int primary key, id uuid not null);
insert into bench.dash_users select n, gen_random_uuid() from generate_series(0, {users} - 1) n;
insert into auth.users (id, aud, role, email, created_at, updated_at)
select id, 'authenticated', 'authenticated', 'dash-bench-' || n || '@example.test', now(), now()
from bench.dash_users;
insert into public.user_balances (user_id, balance, low_balance_threshold)
select id, round((n % 500) * 0.37, 2), 1 from bench.dash_users
on conflict (user_id) do update set balance = excluded.balance,
  low_balance_threshold = excluded.low_balance_threshold;
insert into public.plans (id, name) values ('b0000000-0000-4000-8000-0000000000f9', 'dash-bench')
on conflict do nothing;
insert into public.api_keys (id, user_id, plan_id, name, prefix)
select gen_random_uuid(), u.id, 'b0000000-0000-4000-8000-0000000000f9', 'bench key',
       'tm_db' || lpad(u.n::text, 6, '0')
from bench.dash_users u where u.n % 10 = 0;
"""
# Row g: user g % users, model (g / users) % 6, created_at = occurred_at evenly over `days`.
CHUNK = """
insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,
  output_tokens, cached_input_tokens, price_per_input_token, price_per_output_token,
  price_per_cached_input_token, price_per_request, cost, latency_ms, status, occurred_at,
  created_at)
select u.id, 'db-' || g, m.provider, m.model, 100 + g %% 3000, 10 + g %% 700, 0,
       m.input, m.output, m.input, 0, (100 + g %% 3000) * m.input + (10 + g %% 700) * m.output,
       50 + g %% 2000, case when g %% 33 = 0 then 'error' else 'success' end, t.at, t.at
from generate_series(%(first)s::bigint, %(last)s::bigint) g
cross join lateral (select %(now)s - (g::double precision / %(rows)s) * %(days)s
                           * interval '1 day' as at) t
join bench.dash_users u on u.n = g %% %(users)s
join (values (0, 'openai', 'gpt-4o', 0.0000025, 0.00001),
             (1, 'openai', 'gpt-4o-mini', 0.00000015, 0.0000006),
             (2, 'anthropic', 'claude-sonnet-4', 0.000003, 0.000015),
             (3, 'google', 'gemini-2.5-flash', 0.0000003, 0.0000025),
             (4, 'openai', 'o1-mini', 0.0000011, 0.0000044),
             (5, 'google', 'gemini-1.5-pro', 0.00000125, 0.000005))
  as m (k, provider, model, input, output)
  on m.k = (g / %(users)s) %% 6
"""
ONE_USER = """select model_id, sum(requests) as requests, sum(cost) as cost
from public.usage_daily_totals
where user_id = (select id from bench.dash_users where n = {n})
  and usage_date >= now() - interval '30 days'
group by 1 order by 1"""
PAGES = [
    ("overview", "GET", "/", None),
    ("users", "GET", "/users", None),
    ("one user", "GET", "/users/{user}", None),
    ("models & prices", "GET", "/models", None),
    ("keys & plans", "GET", "/keys", None),
    ("audit", "GET", "/audit", None),
    ("SQL editor page", "GET", "/sql", None),
    ("SQL: one user's 30 days by model", "POST", "/sql", {"query": ONE_USER.format(n=1)}),
    ("SQL: count(*) from usage_daily_totals", "POST", "/sql",
     {"query": "select count(*) from public.usage_daily_totals"}),
    ("models: consolidation report", "GET", "/models?report=1", None),
]  # fmt: skip
# The consolidation report with usage in price gaps (in a transaction rolled back afterwards):
# gpt-4o 'missing' from 20 days ago (7:13:17 into a UTC day) until 9 days ago (3:01 into a day),
# so the gap has cut days at both ends and whole days between; o1-mini has no price at all.
GAP = ("openai", "gpt-4o", timedelta(days=20, hours=-7, minutes=-13, seconds=-17),
       timedelta(days=9, hours=-3, minutes=-1))  # fmt: skip
TIMEOUT_NOTE = "took longer than the page&#39;s statement timeout"


def generate(conn: psycopg.Connection, args: argparse.Namespace, now: datetime) -> dict:
    began = time.perf_counter()
    conn.execute(SETUP.format(users=args.users).encode())
    # The months the rows fall in (ensure_usage_partitions only creates the current and later).
    conn.execute(
        """select private.create_usage_partition(m::date)
           from generate_series(date_trunc('month', %(first)s), date_trunc('month', %(now)s),
                                interval '1 month') m""",
        {"first": now - args.days * timedelta(days=1), "now": now},
    )
    setup_s = time.perf_counter() - began
    conn.execute("set session_replication_role = replica")
    size = -(-args.rows // args.chunks)
    for first in range(0, args.rows, size):
        last = min(first + size, args.rows) - 1
        conn.execute(CHUNK, {"first": first, "last": last, "rows": args.rows,
                             "days": args.days, "users": args.users, "now": now})  # fmt: skip
        console.log(f"generated {last + 1:,} rows ({time.perf_counter() - began:.0f} s)")
    conn.execute("set session_replication_role = origin")
    generate_s = time.perf_counter() - began
    in_default = conn.execute("select count(*) from private.usage_records_default").fetchone()[0]
    began = time.perf_counter()
    rolled = 0
    while True:
        step = conn.execute(
            "select public.rollup_usage(max_rows => %s)", (args.rollup_step,)
        ).fetchone()[0]
        rolled += step["rows"]
        console.log(f"rolled up {rolled:,} rows ({time.perf_counter() - began:.0f} s)")
        if step["behind"] == 0:
            break
    rollup_s = time.perf_counter() - began
    began = time.perf_counter()
    conn.execute("analyze")
    return {
        "setup_s": round(setup_s, 1),
        "generate_s": round(generate_s, 1),
        "rows_in_default_partition": in_default,
        "rollup_s": round(rollup_s, 1),
        "rollup_rows": rolled,
        "analyze_s": round(time.perf_counter() - began, 1),
    }


def time_pages(url: str, key: str, user: str, repeat: int) -> list[dict]:
    results = []
    with httpx.Client(base_url=url, timeout=120) as web:
        signed_in = web.post("/login", data={"key": key, "next": "/"})
        assert signed_in.status_code in (200, 303), signed_in.text[:200]
        assert web.cookies, "no session cookie"
        for name, method, path, form in PAGES:
            path = path.format(user=user)
            timings = []
            for _ in range(repeat + 1):  # the first one warms the page
                began = time.perf_counter()
                response = web.request(method, path, data=form)
                timings.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            results.append({
                "page": name, "path": path,
                "median_ms": round(statistics.median(timings[1:]), 1),
                "max_ms": round(max(timings[1:]), 1), "cold_ms": round(timings[0], 1),
                "timed_out_sections": response.text.count(TIMEOUT_NOTE),
                "bytes": len(response.content),
            })  # fmt: skip
            console.log(results[-1])
    return results


def report_with_gaps(conn: psycopg.Connection, now: datetime, repeat: int) -> dict:
    """The report's usage_without_price with usage in price gaps, against direct counts."""
    provider, model, gap_from, gap_to = GAP
    start = datetime.combine(now.date(), datetime.min.time(), UTC)
    lo, hi = start - gap_from, start - gap_to
    with conn.transaction(force_rollback=True):
        conn.execute(
            """insert into public.model_pricing (provider_id, model_id, pricing_type,
                 price_per_input_token, price_per_output_token, effective_from)
               select provider_id, model_id, 'missing', null, null, %(lo)s
               from public.model_pricing where provider_id = %(p)s and model_id = %(m)s
                 and effective_from < %(lo)s order by effective_from desc limit 1""",
            {"p": provider, "m": model, "lo": lo},
        )
        conn.execute(
            """insert into public.model_pricing (provider_id, model_id, pricing_type,
                 price_per_input_token, price_per_output_token, price_per_cached_input_token,
                 effective_from)
               select provider_id, model_id, pricing_type, price_per_input_token,
                      price_per_output_token, price_per_cached_input_token, %(hi)s
               from public.model_pricing where provider_id = %(p)s and model_id = %(m)s
                 and effective_from < %(lo)s order by effective_from desc limit 1""",
            {"p": provider, "m": model, "lo": lo, "hi": hi},
        )
        timings = []
        for _ in range(repeat + 1):
            began = time.perf_counter()
            report = conn.execute("select public.pricing_consolidation_report()").fetchone()[0]
            timings.append((time.perf_counter() - began) * 1000)
        check = next(c for c in report["checks"] if c["name"] == "usage_without_price")
        reported = {(i["provider"], i["model"]): i["records"] for i in check["items"]}
        began = time.perf_counter()
        direct = {
            (provider, model): conn.execute(
                """select count(*) from public.usage_records where provider_id = %s
                   and model_id = %s and occurred_at >= %s and occurred_at < %s""",
                (provider, model, lo, hi),
            ).fetchone()[0],
            **{
                (p, m): n
                for p, m, n in conn.execute(
                    """select u.provider_id, u.model_id, count(*) from public.usage_records u
                       where not exists (select 1 from public.model_pricing p
                                         where p.provider_id = u.provider_id
                                           and p.model_id = u.model_id)
                       group by 1, 2"""
                )
            },
        }
        direct_ms = (time.perf_counter() - began) * 1000
    return {
        "gap": [lo.isoformat(), hi.isoformat()],
        "median_ms": round(statistics.median(timings[1:]), 1),
        "max_ms": round(max(timings[1:]), 1),
        "cold_ms": round(timings[0], 1),
        "reported": {f"{p}/{m}": n for (p, m), n in sorted(reported.items())},
        "direct_counts": {f"{p}/{m}": n for (p, m), n in sorted(direct.items())},
        "direct_counts_ms": round(direct_ms),
        "equal": reported == direct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--chunks", type=int, default=4, help="INSERT statements")
    parser.add_argument("--rollup-step", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    paths = StackPaths.from_env()
    stack = Stack(paths)
    now = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, object] = {"rows": args.rows, "users": args.users, "days": args.days}
    with psycopg.connect(stack.cluster.superuser_dsn(), autocommit=True) as conn:
        conn.execute("set statement_timeout = 0")
        have = conn.execute("select count(*) from public.usage_records").fetchone()[0]
        if have < args.rows:
            results.update(generate(conn, args, now))
        results["usage_records"] = conn.execute(
            "select count(*) from public.usage_records"
        ).fetchone()[0]
        # The user with the most usage (every bench user has rows/users).
        user = conn.execute("select id from bench.dash_users where n = 1").fetchone()[0]
    results["load_before"] = os.getloadavg()
    results["pages"] = time_pages(
        dashboard.url(paths),
        stack_keys.load_or_create(paths).service_role_key,
        str(user),
        args.repeat,
    )
    with psycopg.connect(stack.cluster.superuser_dsn(), autocommit=True) as conn:
        conn.execute("set statement_timeout = 0")
        results["report_with_gaps"] = report_with_gaps(conn, now, args.repeat)
        console.log(results["report_with_gaps"])
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
