"""Price lookup cost inside record_usage, and the consolidation report at scale.

Part 1 — record_usage throughput (8 clients over psycopg, 200 users, `--seconds` per scenario),
in ONE run, alternating per round so machine noise hits both sides alike:
  core     the billing core alone (migrations 20251018*, seed): the lookup before this issue
  base     all migrations, the catalog as seeded (~25 models)
(core and base each get a NEW database in the stack's cluster, pricing_bench_core and
pricing_bench_full, so both start empty and grow alike.)
  loaded   + 10,000 extra models (two price versions each) and 10,000 aliases
  alias    loaded, charging an alias name            (step 2 of price_for)
  pattern  loaded, charging 'openai/gpt-4o-mini-2024-07-18'  (steps 3-5: prefix + date suffix)
Target: loaded within 5% of core (price_for stays an index probe).

Part 2 — pricing_consolidation_report() on 100,000 models in the legacy state (legacy columns
filled, 1% of them with a differing price, 1% without a model_pricing row), inside a transaction
that is rolled back afterwards. Target: < 2 s.

    .venv/bin/tokenmeter stack start
    .venv/bin/python bench/pricing_bench.py --seconds 8 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import psycopg
from billing_bench import make_users, record_usage_worker, timed
from rich.console import Console
from rich.table import Table

from app.stack.paths import StackPaths

console = Console(stderr=True)
CLIENTS = 8
EXTRA_MODELS = 10_000

LOAD_SQL = """
insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, effective_from)
select 'benchco', 'bench-model-' || g, 0.000001, 0.000002, v.eff
from generate_series(1, %(n)s) g,
     (values ('1970-01-01'::timestamptz), (now() - interval '30 days')) as v(eff);
insert into public.model_aliases (alias, provider_id, target_provider_id, target_model_id)
select 'bench-alias-' || g, null, 'benchco', 'bench-model-' || g
from generate_series(1, %(n)s) g;
insert into public.model_aliases (alias, target_provider_id, target_model_id)
values ('bench-hot-alias', 'openai', 'gpt-4o-mini');
analyze public.model_pricing;
analyze public.model_aliases;
analyze public.models;
"""
UNLOAD_SQL = """
delete from public.model_aliases where alias like 'bench-%';
delete from public.models where provider_id = 'benchco';
analyze public.model_pricing;
analyze public.model_aliases;
analyze public.models;
"""


ROOT = Path(__file__).resolve().parents[1]


def fresh_database(paths: StackPaths, name: str, migrations: str) -> str:
    """A new database `name` in the stack's cluster: the Supabase bootstrap, the migrations
    matching `migrations` (a glob) and the seed, as `tokenmeter stack start` does; its DSN."""
    admin = paths.db_url("supabase_admin")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name}")
        conn.execute(f"create database {name} owner postgres")
    with psycopg.connect(admin.rsplit("/", 1)[0] + "/" + name, autocommit=True) as conn:
        conn.execute((ROOT / "app" / "stack" / "bootstrap.sql").read_text())
    dsn = paths.db_url().rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn) as conn:
        for migration in sorted((ROOT / "supabase" / "migrations").glob(migrations)):
            conn.execute(migration.read_text())
        conn.execute((ROOT / "supabase" / "seed.sql").read_text())
    return dsn


def lookup_micros(dsn: str, model: str, calls: int = 20_000) -> float:
    """Microseconds per price_for() call, looped inside one backend (no client, no network)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"""
          do $$
          declare began timestamptz := clock_timestamp();
          begin
            for i in 1 .. {calls} loop
              perform public.price_for(null, '{model}', now());
            end loop;
            perform set_config('bench.micros',
              (extract(epoch from clock_timestamp() - began) * 1e6 / {calls})::text, false);
          end $$""")
        row = conn.execute("select current_setting('bench.micros')").fetchone()
        assert row is not None
        return float(row[0])


def report_at_scale(dsn: str, models: int) -> tuple[float, float, dict[str, int]]:
    """Seconds for populate-free report on `models` legacy models (median of 3 calls), plus the
    seconds the fixture took, and the check counts. Everything is rolled back."""
    with psycopg.connect(dsn) as conn:
        began = time.perf_counter()
        conn.execute("""
          alter table public.models add column if not exists pricing_prompt numeric(20,10),
            add column if not exists pricing_completion numeric(20,10),
            add column if not exists pricing_image numeric(20,10),
            add column if not exists pricing_request numeric(10,6)""")
        conn.execute(
            """
          insert into public.models (provider_id, model_id, pricing_prompt, pricing_completion)
          select 'scaleco', 'scale-model-' || g, 0.000001, 0.000002
          from generate_series(1, %(n)s) g""",
            {"n": models},
        )
        conn.execute(
            """
          insert into public.model_pricing (provider_id, model_id, price_per_input_token,
            price_per_output_token)
          select 'scaleco', 'scale-model-' || g,
                 case when g %% 100 = 0 then 0.0000011 else 0.000001 end, 0.000002
          from generate_series(1, %(n)s) g where g %% 100 <> 1""",
            {"n": models},
        )
        conn.execute("analyze public.models")
        conn.execute("analyze public.model_pricing")
        setup = time.perf_counter() - began
        timings = []
        report: dict[str, object] = {}
        for _ in range(3):
            began = time.perf_counter()
            report = conn.execute("select public.pricing_consolidation_report()").fetchone()[0]
            timings.append(time.perf_counter() - began)
        conn.rollback()
    counts = {c["name"]: c["count"] for c in report["checks"]}  # type: ignore[index]
    return statistics.median(timings), setup, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--report-models", type=int, default=100_000)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = StackPaths.from_env()
    dsn = fresh_database(paths, "pricing_bench_full", "*.sql")
    if args.report_only:
        report_s, setup_s, counts = report_at_scale(dsn, args.report_models)
        print(f"report: {report_s:.2f} s (fixture {setup_s:.1f} s) {counts}")
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        users = make_users(conn, 200)
    core_dsn = fresh_database(paths, "pricing_bench_core", "20251018*.sql")
    with psycopg.connect(core_dsn, autocommit=True) as conn:
        core_users = make_users(conn, 200)

    def load() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(LOAD_SQL % {"n": EXTRA_MODELS})

    def unload() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(UNLOAD_SQL)

    exact = record_usage_worker(dsn, users, "gpt-4o-mini", None)
    results: dict[str, list[float]] = {
        "core": [],
        "base": [],
        "loaded": [],
        "alias": [],
        "pattern": [],
    }
    lookups: dict[str, list[float]] = {
        "core exact": [],
        "loaded exact": [],
        "loaded alias": [],
        "loaded pattern": [],
    }
    for run in range(args.runs):
        console.log(f"run {run + 1}/{args.runs}: core (billing core only)")
        results["core"].append(
            timed(
                CLIENTS,
                args.seconds,
                record_usage_worker(core_dsn, core_users, "gpt-4o-mini", None),
            )
        )
        console.log(f"run {run + 1}/{args.runs}: base")
        results["base"].append(timed(CLIENTS, args.seconds, exact))
        load()
        console.log(f"run {run + 1}/{args.runs}: loaded (+{EXTRA_MODELS:,} models and aliases)")
        results["loaded"].append(timed(CLIENTS, args.seconds, exact))
        results["alias"].append(
            timed(CLIENTS, args.seconds, record_usage_worker(dsn, users, "bench-hot-alias", None))
        )
        results["pattern"].append(
            timed(
                CLIENTS,
                args.seconds,
                record_usage_worker(dsn, users, "openai/gpt-4o-mini-2024-07-18", None),
            )
        )
        lookups["core exact"].append(lookup_micros(core_dsn, "gpt-4o-mini"))
        lookups["loaded exact"].append(lookup_micros(dsn, "gpt-4o-mini"))
        lookups["loaded alias"].append(lookup_micros(dsn, "bench-hot-alias"))
        lookups["loaded pattern"].append(lookup_micros(dsn, "openai/gpt-4o-mini-2024-07-18"))
        unload()

    console.log(f"report on {args.report_models:,} legacy models")
    report_s, setup_s, counts = report_at_scale(dsn, args.report_models)

    medians = {name: statistics.median(values) for name, values in results.items()}
    ratio = medians["loaded"] / medians["core"]
    ratio_base = medians["loaded"] / medians["base"]
    if args.json:
        print(
            json.dumps(
                {
                    "medians": medians,
                    "runs": results,
                    "lookup_micros": lookups,
                    "loaded_vs_core": ratio,
                    "loaded_vs_base": ratio_base,
                    "report_seconds": report_s,
                    "report_setup_seconds": setup_s,
                    "report_counts": counts,
                },
                indent=2,
            )
        )
        return
    table = Table(
        "scenario",
        "median calls/s",
        "runs",
        title=f"record_usage, {args.runs} runs × {args.seconds:g} s, {CLIENTS} clients",
    )
    for name, values in results.items():
        table.add_row(name, f"{medians[name]:,.0f}", ", ".join(f"{v:,.0f}" for v in values))
    table.add_row("loaded / core (target ≥ 0.95)", f"{ratio:.3f}×", "")
    table.add_row("loaded / base", f"{ratio_base:.3f}×", "")
    Console().print(table)
    micro = Table("price_for(null, model) alone", "median µs/call", "runs")
    for name, values in lookups.items():
        micro.add_row(
            name, f"{statistics.median(values):.1f}", ", ".join(f"{v:.1f}" for v in values)
        )
    Console().print(micro)
    Console().print(
        f"pricing_consolidation_report() on {args.report_models:,} models: "
        f"{report_s:.2f} s (median of 3; fixture {setup_s:.1f} s); counts {counts}"
    )


if __name__ == "__main__":
    main()
