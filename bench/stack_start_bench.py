"""Local stack start times: cold (new data directory, bootstrap, migrations + seed) and warm
(stopped stack started again), each repeated; medians reported. Uses its own ports and state
folder, so a running developer stack is not touched.

    python bench/stack_start_bench.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from rich.console import Console
from rich.table import Table

os.environ.setdefault("TOKENMETER_API_PORT", "54371")
os.environ.setdefault("TOKENMETER_DB_PORT", "54372")

from app.migrations import Migrator  # noqa: E402
from app.stack.manager import Stack  # noqa: E402
from app.stack.paths import StackPaths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="tokenmeter-bench-")
    os.environ["TOKENMETER_STATE_DIR"] = state
    os.chmod(state, 0o755)  # the server's unprivileged user must reach its data directory
    console = Console(stderr=True)
    cold: list[float] = []
    cold_with_migrations: list[float] = []
    warm: list[float] = []
    try:
        for run in range(args.runs):
            console.log(f"run {run + 1}/{args.runs}")
            stack = Stack(StackPaths.from_env())
            shutil.rmtree(os.path.join(state, "pgdata"), ignore_errors=True)
            began = time.perf_counter()
            stack.start()
            cold.append(time.perf_counter() - began)
            Migrator.local(stack.paths).push(include_seed=True)
            cold_with_migrations.append(time.perf_counter() - began)
            stack.stop()
            began = time.perf_counter()
            stack.start()
            warm.append(time.perf_counter() - began)
            stack.stop()
            shutil.rmtree(os.path.join(state, "pgdata"))
    finally:
        Stack(StackPaths.from_env()).stop()
        shutil.rmtree(state, ignore_errors=True)
    rows = {
        "cold start (initdb + bootstrap + gateway)": cold,
        "cold start + all migrations + seed": cold_with_migrations,
        "warm start (existing data directory)": warm,
    }
    if args.json:
        print(json.dumps({k: statistics.median(v) for k, v in rows.items()}, indent=2))
        return
    table = Table("what", "median s", "runs (s)", title=f"{args.runs} runs")
    for name, values in rows.items():
        table.add_row(
            name, f"{statistics.median(values):.2f}", ", ".join(f"{v:.2f}" for v in values)
        )
    Console().print(table)


if __name__ == "__main__":
    main()
