"""Start and stop the usage rollup worker with the local stack: `python -m app.rollups` in its
own session, with a pid file and a log in the stack's state folder, as the alerts worker has.

`stack start` runs it unless TOKENMETER_ROLLUP_INTERVAL=0; `stack stop` stops it. Hosted
Supabase runs rollup_usage() from pg_cron instead (the migration schedules it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from app.rollups import interval_from_env
from app.stack import processes
from app.stack.paths import StackPaths

MODULE = "app.rollups"


class RollupWorkerError(RuntimeError):
    """The worker exited at once; the message says where its log is."""


def pid_file(paths: StackPaths) -> Path:
    return paths.state / "rollups.pid"


def log_file(paths: StackPaths) -> Path:
    return paths.logs / "rollups.log"


def enabled() -> bool:
    """Not turned off. Raises ConfigError when TOKENMETER_ROLLUP_INTERVAL is not valid."""
    return interval_from_env() > 0


def _pid(paths: StackPaths) -> int | None:
    """The pid in the pid file when that process is alive and is this stack's worker."""
    return processes.owned_pid(pid_file(paths), MODULE, paths.state)


def running(paths: StackPaths) -> bool:
    return _pid(paths) is not None


def start(paths: StackPaths, progress: Callable[[str], None] = lambda _msg: None) -> None:
    """Start the worker unless it runs already (idempotent). Raises RollupWorkerError when it
    exits within its first half second."""
    if running(paths):
        return
    progress("starting usage rollup worker")
    env = dict(os.environ)
    env.update(
        TOKENMETER_PROJECT_DIR=str(paths.root),
        TOKENMETER_STATE_DIR=str(paths.state),
        TOKENMETER_API_PORT=str(paths.api_port),
        TOKENMETER_DB_PORT=str(paths.db_port),
    )
    pid = processes.spawn_module(MODULE, env, log_file(paths), pid_file(paths))
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        code = processes.exit_code(pid)
        if code is not None:
            pid_file(paths).unlink(missing_ok=True)
            raise RollupWorkerError(
                f"usage rollup worker exited with code {code}; log: {log_file(paths)}"
            )
        time.sleep(0.05)


def stop(paths: StackPaths) -> None:
    """Stop this stack's worker (its process group); forget a stale pid file."""
    processes.stop_group(_pid(paths), pid_file(paths))
