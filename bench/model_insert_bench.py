"""Cost of the first-provider default on one INSERT of many new model names (20261130040003).

One INSERT of `--names` new names into `models`, inside a transaction that is rolled back, with:

  statement   the statement-level trigger (20261130040003, what the stack runs)
  row/index   the former BEFORE INSERT row trigger (20251018000001), its probe planned as an
              index scan (the table's file is large from earlier rolled-back inserts)
  row/small   the same row trigger on a small, freshly analysed catalog (VACUUM FULL ANALYZE
              first): its cached plan is a seq scan, quadratic in the statement's rows
  none        no trigger: the insert alone

The old trigger and the no-trigger case are set up inside the measured transaction (dropped,
recreated, all rolled back). Wall time and the backend's own CPU time (from /proc, so other
load on the machine counts less), median of `--runs` rounds, the variants alternating.

    .venv/bin/tokenmeter stack start
    .venv/bin/python bench/model_insert_bench.py --names 100000 --runs 3
    .venv/bin/python bench/model_insert_bench.py --names 20000 --runs 1 --variants row/small
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psycopg

from app.stack.paths import StackPaths

OLD_TRIGGER = """
drop trigger models_default_first_provider on public.models;
create function private.default_first_provider() returns trigger
language plpgsql set search_path = '' as $$
begin
  if not new.is_default
     and not exists (select 1 from public.models m where m.model_id = new.model_id) then
    perform pg_advisory_xact_lock(hashtext('tokenmeter.default_provider'),
                                  abs(hashtext(new.model_id) % 1024));
    new.is_default := not exists (select 1 from public.models m
                                  where m.model_id = new.model_id);
  end if;
  return new;
end
$$;
create trigger models_default_first_provider before insert on public.models
  for each row execute function private.default_first_provider();
"""
INSERT = (
    "insert into public.models (provider_id, model_id) "
    "select 'benchco', 'bench-name-' || g from generate_series(1, %s) g"
)
VARIANTS = ["statement", "row/index", "row/small", "none"]


def backend_cpu(pid: int) -> float:
    """User + system CPU seconds of a local backend process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grow_file(conn: psycopg.Connection, names: int) -> None:
    """Leaves `models`' file large (rolled-back rows): the planner then expects many rows."""
    with conn.transaction(force_rollback=True):
        conn.execute("alter table public.models disable trigger models_default_first_provider")
        conn.execute(INSERT, (names,))


def run(dsn: str, variant: str, names: int) -> tuple[float, float, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if variant == "row/small":
            conn.execute("vacuum full analyze public.models")
        elif variant == "row/index":
            grow_file(conn, names)
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        with conn.transaction(force_rollback=True):
            if variant.startswith("row/"):
                conn.execute(OLD_TRIGGER)
            elif variant == "none":
                conn.execute(
                    "alter table public.models disable trigger models_default_first_provider"
                )
            cpu, wall = backend_cpu(pid), time.monotonic()
            conn.execute(INSERT, (names,))
            wall, cpu = time.monotonic() - wall, backend_cpu(pid) - cpu
            defaults = conn.execute(
                "select count(*) from public.models where provider_id = 'benchco' and is_default"
            ).fetchone()[0]
    return wall, cpu, defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default="statement,row/index,none")
    args = parser.parse_args()
    dsn = StackPaths.from_env().db_url()
    chosen = [v for v in args.variants.split(",") if v]
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    results: dict[str, list[tuple[float, float, int]]] = {v: [] for v in chosen}
    for _ in range(args.runs):
        for variant in chosen:
            results[variant].append(run(dsn, variant, args.names))
    print(f"one INSERT of {args.names:,} new names, median of {args.runs}")
    print(f"{'variant':<10} {'wall s':>8} {'backend CPU s':>14} {'defaults':>9}")
    for variant, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        print(f"{variant:<10} {wall:8.2f} {cpu:14.2f} {rows[0][2]:9,}")


if __name__ == "__main__":
    main()
