"""Cost of default providers in the price lookup (issue 10 §4), inside one backend, no client.

`price_for` as it is now against its body before default providers (20251101000003's, read
from git revision b0ff719, loaded under another name inside a transaction that is rolled back),
`--calls` calls per scenario,
`--runs` rounds alternating the two so machine noise hits both alike; median µs per call:

  bare, 1 provider          price_for(null, 'gpt-5')            the common case
  explicit provider         price_for('openai', 'gpt-4o')       gpt-4o also at azure, vertex_ai
  bare, 3 providers         price_for(null, 'gpt-4o')           before: ambiguous_model
  bare dated, 1 provider    price_for(null, 'gpt-5-2025-08-07') the slow path (date suffix)
  bare dated, 3 providers   price_for(null, 'gpt-4o-2024-08-06') before: ambiguous_model

The catalog gets `--extra-models` more models (two versions each, like bench/pricing_bench.py)
so the planner sees a real catalog. Also prints the plan of the bare-name query (index probes).

    .venv/bin/tokenmeter stack start
    .venv/bin/python bench/default_provider_bench.py --calls 20000 --runs 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
from pathlib import Path

import psycopg

from app.stack.paths import StackPaths

ROOT = Path(__file__).resolve().parents[1]
# The pre-0.1.0 file, from the history (the baseline folded it away).
BEFORE = "b0ff719:supabase/migrations/20251101000003_price_versions_and_aliases.sql"
SCENARIOS = [
    ("bare, 1 provider", None, "gpt-5"),
    ("explicit provider, 3 providers", "openai", "gpt-4o"),
    ("bare, 3 providers (default)", None, "gpt-4o"),
    ("bare dated, 1 provider", None, "gpt-5-2025-08-07"),
    ("bare dated, 3 providers (default)", None, "gpt-4o-2024-08-06"),
]
LOOP = """
do $$
declare t0 timestamptz; r public.model_pricing;
begin
  t0 := clock_timestamp();
  for i in 1..{calls} loop r := public.{fn}({provider}, '{model}'); end loop;
  perform set_config('bench.us', (extract(epoch from clock_timestamp() - t0) * 1e6
                                  / {calls})::text, true);
end $$"""
LOAD = """
insert into public.model_pricing (provider_id, model_id, price_per_input_token,
  price_per_output_token, effective_from)
select 'benchco', 'bench-model-' || g, 0.000001, 0.000002, v.eff
from generate_series(1, %(n)s) g,
     (values ('1970-01-01'::timestamptz), (now() - interval '30 days')) as v(eff)"""
PLAN = """explain (costs off) select v.* from public.models m cross join lateral (
  select p.* from public.model_pricing p where p.provider_id = m.provider_id
    and p.model_id = m.model_id and p.effective_from <= now()
  order by p.effective_from desc limit 1) v
where m.model_id = 'gpt-4o' and m.is_default"""


def before_body() -> str:
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", BEFORE], check=True, capture_output=True, text=True
    ).stdout
    body = text[text.index("create or replace function public.price_for(") :]
    return re.sub(r"\bprice_for\b", "price_for_before", body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--extra-models", type=int, default=10000, help="catalog size added (two versions each)"
    )
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    with psycopg.connect(StackPaths.from_env().db_url()) as conn:
        conn.execute(before_body().encode())
        conn.execute(LOAD.encode(), {"n": args.extra_models})
        conn.execute("analyze public.models")
        conn.execute("analyze public.model_pricing")
        for provider in ("azure", "vertex_ai"):
            conn.execute(
                "select public.set_model_price(%s, 'gpt-4o', 0.000003, 0.00001)", (provider,)
            )
        for _ in range(args.runs):
            for name, provider, model in SCENARIOS:
                for fn in ("price_for_before", "price_for"):
                    sql = LOOP.format(
                        calls=args.calls,
                        fn=fn,
                        provider="null" if provider is None else f"'{provider}'",
                        model=model,
                    )
                    try:
                        with conn.transaction():
                            conn.execute(sql.encode())
                            row = conn.execute("select current_setting('bench.us')").fetchone()
                    except psycopg.Error as exc:
                        results.setdefault((name, fn), []).append(float("nan"))
                        results[(name, f"{fn} error")] = [0.0]
                        print(f"{fn} {name}: {exc.diag.message_primary}")
                        continue
                    assert row is not None
                    results.setdefault((name, fn), []).append(float(row[0]))
        plan = [r[0] for r in conn.execute(PLAN)]
        conn.rollback()
    print(f"{'scenario':36} {'before µs':>10} {'now µs':>10}  (median of {args.runs})")
    for name, _, _ in SCENARIOS:
        cells = []
        for fn in ("price_for_before", "price_for"):
            runs = [v for v in results.get((name, fn), []) if v == v]
            cells.append(f"{statistics.median(runs):10.1f}" if runs else f"{'error':>10}")
        print(f"{name:36} {cells[0]} {cells[1]}")
    print("\nbare-name query plan:\n  " + "\n  ".join(plan))


if __name__ == "__main__":
    main()
