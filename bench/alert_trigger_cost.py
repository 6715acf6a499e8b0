"""What the low-balance alert check adds to a charge (issue 12 §6), measured in one run.

record_usage updates the user's balance row; the trigger user_balances_low_balance_alert
(20261129230010) is a BEFORE UPDATE OF balance trigger whose WHEN clause compares the row's old
and new balance with the threshold copied onto it, so a charge that crosses nothing calls no
function. Three configurations, interleaved run by run on the same database and the same 1,000
funded users as bench/record_usage_cost.py (pgbench, 8 clients, record_usage per transaction):

  trigger off      ALTER TABLE … DISABLE TRIGGER: what charging cost before the alerts
  no thresholds    the trigger on, no threshold anywhere (the WHEN clause sees NULL)
  thresholds set   the trigger on, every user with a threshold below their balance (the WHEN
                   clause compares, finds no crossing)
  as BEFORE        the same trigger as BEFORE UPDATE (the first design, rejected): thresholds set

Reported: server CPU µs per record_usage (the stack's postmaster and backends, /proc) and tps,
medians of --runs; and, because a difference below a microsecond drowns in that noise on a
shared machine, the time of the balance UPDATE alone: one backend, a PL/pgSQL loop of --updates
updates over the 1,000 rows (rolled back), on-CPU µs per update (/proc/PID/schedstat). The
configurations are restored to 'no thresholds' at the end.

    .venv/bin/tokenmeter stack start
    .venv/bin/python bench/alert_trigger_cost.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import psycopg
from billing_bench import RECORD_USAGE_SCRIPT, pgbench, prepare
from record_usage_cost import server_micros_per_tx
from rich.console import Console
from rich.table import Table

from app.stack.paths import StackPaths
from app.stack.postgres import find_binaries

TRIGGER = "user_balances_low_balance_alert"


# The same check as a BEFORE trigger (the first design): thresholds set, never crossed.
# (The first design's WHEN clause also read OLD; that cost ~4 µs more per UPDATE.)
BEFORE_TRIGGER = """
create trigger bench_low_balance_before before update of balance on public.user_balances
  for each row
  when (new.low_balance_alerted <> (new.balance < new.low_balance_threshold))
  execute function private.low_balance_alert()
"""


def configure(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop trigger if exists bench_low_balance_before on public.user_balances")
        if name in ("trigger off", "as BEFORE"):
            conn.execute(f"alter table public.user_balances disable trigger {TRIGGER}")
            if name == "trigger off":
                return
            conn.execute(BEFORE_TRIGGER)
        else:
            conn.execute(f"alter table public.user_balances enable trigger {TRIGGER}")
        threshold = "null" if name == "no thresholds" else "1"
        conn.execute(
            f"update public.user_balances b set low_balance_threshold = {threshold}, "
            "low_balance_alerted = false from bench.users u where u.id = b.user_id"
        )
        conn.execute("vacuum public.user_balances")


UPDATE_LOOP = """
do $$
declare
  ids uuid[] := array(select u.id from bench.users u order by u.n);
begin
  for i in 1 .. %(updates)s loop
    update public.user_balances set balance = balance - 0.000001
    where user_id = ids[1 + i %% 1000];
  end loop;
end
$$
"""


def on_cpu_seconds(pid: int) -> float:
    """Time the process has run on a CPU (/proc/PID/schedstat, ns): unlike wall time, it does
    not grow while other processes hold the cores."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def update_micros(dsn: str, updates: int) -> float:
    """On-CPU µs per balance UPDATE of one backend (the loop is rolled back)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        before = on_cpu_seconds(row[0])
        conn.execute(UPDATE_LOOP % {"updates": updates})
        spent = on_cpu_seconds(row[0]) - before
        conn.rollback()
    return spent * 1e6 / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=1000, help="per client, CPU part")
    parser.add_argument("--seconds", type=float, default=6.0, help="tps part, per point")
    parser.add_argument("--updates", type=int, default=10000, help="per UPDATE-loop point")
    parser.add_argument("--micro-rounds", type=int, default=15, help="UPDATE-loop points each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = StackPaths.from_env()
    bindir = find_binaries().bindir
    prepare(paths, bindir)
    dsn = paths.db_url("supabase_admin")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(RECORD_USAGE_SCRIPT)
    script = Path(f.name)

    def usage(seconds: float = 0, transactions: int | None = None) -> float:
        return pgbench(
            bindir, paths.db_port, seconds, ["-f", str(script)], "postgres", "supabase_admin",
            8, transactions,
        )  # fmt: skip

    names = ("trigger off", "no thresholds", "thresholds set", "as BEFORE")
    cpu: dict[str, list[float]] = {n: [] for n in names}
    tps: dict[str, list[float]] = {n: [] for n in names}
    loop: dict[str, list[float]] = {n: [] for n in names}
    postmaster = int((paths.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    console = Console(stderr=True)
    try:
        for run in range(args.runs):
            # Rotated, so no configuration always runs first (warm caches, autovacuum).
            for name in names[run % 4 :] + names[: run % 4]:
                console.log(f"run {run + 1}/{args.runs}: {name}")
                configure(dsn, name)
                cpu[name].append(
                    server_micros_per_tx(
                        lambda t: usage(transactions=t), args.transactions, postmaster
                    )  # fmt: skip
                )
                tps[name].append(usage(seconds=args.seconds))
        for run in range(args.micro_rounds):
            for name in names[run % 4 :] + names[: run % 4]:
                configure(dsn, name)
                loop[name].append(update_micros(dsn, args.updates))
    finally:
        configure(dsn, "no thresholds")
        script.unlink(missing_ok=True)

    cpu_med = {n: statistics.median(v) for n, v in cpu.items()}
    tps_med = {n: statistics.median(v) for n, v in tps.items()}
    loop_med = {n: statistics.median(v) for n, v in loop.items()}
    if args.json:
        print(json.dumps({"server_micros_per_tx": cpu, "tps": tps, "update_micros": loop}))
        return
    table = Table("configuration", "server CPU µs (median)", "runs", "tps (median)", "runs",
                  title="record_usage, 8 clients, 1,000 users")  # fmt: skip
    base = cpu_med["trigger off"]
    for name in names:
        table.add_row(
            name,
            f"{cpu_med[name]:,.1f} ({cpu_med[name] - base:+.1f})",
            ", ".join(f"{v:,.0f}" for v in cpu[name]),
            f"{tps_med[name]:,.0f}",
            ", ".join(f"{v:,.0f}" for v in tps[name]),
        )
    Console().print(table)
    loop_min = {n: min(v) for n, v in loop.items()}
    table = Table("configuration", "on-CPU µs per UPDATE: min", "median", "runs",
                  title=f"the UPDATE alone, one backend, {args.updates:,} per point")  # fmt: skip
    for name in names:
        table.add_row(
            name,
            f"{loop_min[name]:.2f} ({loop_min[name] - loop_min['trigger off']:+.2f})",
            f"{loop_med[name]:.2f} ({loop_med[name] - loop_med['trigger off']:+.2f})",
            ", ".join(f"{v:.1f}" for v in sorted(loop[name])),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
