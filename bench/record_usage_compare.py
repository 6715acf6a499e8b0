"""Charging before and after partition pruning (20261130020000-020001), end to end, in one run.

Two stacks side by side from the same commit: "old" without the given migrations (by default
the two that prune usage_records partitions), "new" with every migration. Both get a year of
monthly partitions (17), then the benchmarks alternate between them run by run (old, new,
old, new, ...) so a change in the machine's load hits both alike:

  backend CPU   bench/record_usage_backend_cpu.py: one backend's CPU per record_usage, and
                per record of 1,000-record record_usage_batch calls (the steadiest measure)
  cost          bench/record_usage_cost.py: server CPU per transaction (record_usage, bare
                writes, floor, pgbench -N, batch per record) and the 8-client ratio to pgbench -N
  billing       bench/billing_bench.py: A, A', B ratios, C batch records/s
  partitions    bench/usage_partitions_bench.py on the new stack, first (unpartitioned vs
                partitioned, the new functions)

Stacks are started (state in .tokenmeter/compare-old and compare-new, or --state) and stopped
at the end.
Results: the medians on stdout, every run's JSON in --out.

    .venv/bin/python bench/record_usage_compare.py --runs 3 --out /tmp/compare
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PRUNING = ("20261130020000", "20261130020001")


def stack_env(name: str, api: int, db: int, project: Path, state: str) -> dict[str, str]:
    return dict(
        os.environ,
        TOKENMETER_PROJECT_DIR=str(project),
        TOKENMETER_STATE_DIR=f"{state}{name}",
        TOKENMETER_API_PORT=str(api),
        TOKENMETER_DB_PORT=str(db),
    )


def run(args: list[str], env: dict[str, str], check: bool = True) -> str:
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode and check:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def old_project(folder: Path, without: tuple[str, ...]) -> Path:
    """The committed supabase/ folder without the migrations whose version starts with one of
    `without`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD", "supabase"], cwd=ROOT, check=True,
                             capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    for migration in (folder / "supabase" / "migrations").glob("*.sql"):
        if migration.name.startswith(without):
            migration.unlink()
    return folder


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--without", nargs="+", default=list(PRUNING),
                        help="migration versions the old stack leaves out")  # fmt: skip
    parser.add_argument("--ports", type=int, nargs=4, default=[54425, 54426, 54421, 54422],
                        metavar=("OLD_API", "OLD_DB", "NEW_API", "NEW_DB"))  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("/tmp/record_usage_compare"))
    parser.add_argument("--state", default=str(ROOT / ".tokenmeter" / "compare-"),
                        help="state folder prefix of the two stacks (+ old, new)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="leave the stacks running")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    stacks = {
        "old": stack_env(
            "old",
            args.ports[0],
            args.ports[1],
            old_project(args.out / "old-project", tuple(args.without)),
            args.state,
        ),
        "new": stack_env("new", args.ports[2], args.ports[3], ROOT, args.state),
    }
    tokenmeter = str(ROOT / ".venv" / "bin" / "tokenmeter")
    results: dict[str, dict[str, list[dict]]] = {n: {} for n in stacks}
    try:
        for name, env in stacks.items():
            run([tokenmeter, "stack", "stop"], env, check=False)
            shutil.rmtree(env["TOKENMETER_STATE_DIR"], ignore_errors=True)
            print(f"starting {name}", file=sys.stderr)
            run([tokenmeter, "stack", "start"], env)
        # First: it creates the bench schema as postgres, which the others (as supabase_admin)
        # can use, and not the other way round.
        partitions = run([PYTHON, "bench/usage_partitions_bench.py", "--runs", str(args.runs),
                          "--seconds", str(args.seconds), "--json"], stacks["new"])  # fmt: skip
        common = ["--seconds", str(args.seconds), "--runs", "1", "--json"]
        for r in range(args.runs):
            for name, env in stacks.items():
                print(f"run {r + 1}/{args.runs}: {name}", file=sys.stderr)
                for bench, extra in (("record_usage_cost", []), ("billing_bench", [])):
                    out = run([PYTHON, f"bench/{bench}.py", *common, *extra], env)
                    results[name].setdefault(bench, []).append(json.loads(out))
                    (args.out / "runs.json").write_text(json.dumps(results, indent=2))
        ports = f"old={args.ports[1]} new={args.ports[3]}".split()
        cpu = run([PYTHON, "bench/record_usage_backend_cpu.py", *ports, "--rounds", "8"],
                  stacks["new"])  # fmt: skip
        (args.out / "backend_cpu.txt").write_text(cpu)
        batch_cpu = run([PYTHON, "bench/record_usage_backend_cpu.py", *ports, "--batch",
                         "--calls", "10", "--rounds", "8"], stacks["new"])  # fmt: skip
        (args.out / "backend_cpu_batch.txt").write_text(batch_cpu)
    finally:
        if not args.keep:
            for env in stacks.values():
                run([tokenmeter, "stack", "stop"], env, check=False)
    (args.out / "runs.json").write_text(json.dumps(results, indent=2))
    (args.out / "usage_partitions.json").write_text(partitions)

    print(f"load average now {os.getloadavg()[0]:.1f}; runs in {args.out}")
    print(cpu.strip())
    print(batch_cpu.strip())
    header = ("stack", "record_usage µs", "floor µs", "× floor", "batch µs/record",
              "ratio 8 clients", "A", "A'", "B", "C records/s")  # fmt: skip
    print(" | ".join(header))
    for name in stacks:
        cost = results[name]["record_usage_cost"]
        billing = results[name]["billing_bench"]
        per_run = [c["medians"]["cpu"] for c in cost]
        row = [
            name,
            f"{median_of([c['record_usage'] for c in per_run]):,.0f}",
            f"{median_of([c['floor'] for c in per_run]):,.0f}",
            f"{median_of([c['record_usage'] / c['floor'] for c in per_run]):.2f}",
            f"{median_of([c['record_usage_batch, per record'] for c in per_run]):,.0f}",
            f"{median_of([c['medians']['ratio']['8'] for c in cost]):.2f}",
        ]
        for key in ("A ratio (≥ 1.0 target)", "A' ratio, same client as the reference",
                    "B ratio (≥ 0.9 target)"):  # fmt: skip
            row.append(f"{median_of([b['ratios'][key] for b in billing]):.2f}")
        row.append(
            f"{median_of([b['medians']['C record_usage_batch (records/s)'] for b in billing]):,.0f}"
        )
        print(" | ".join(row))


if __name__ == "__main__":
    main()
