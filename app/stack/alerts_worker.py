"""Start and stop the alerts worker with the local stack: `python -m app.alerts` in its own
session, with a pid file and a log in the stack's state folder, as the gateway has.

`stack start` runs it when a webhook is configured (TOKENMETER_ALERTS_WEBHOOK_URL in the
environment or `.env`, read when the stack starts); `stack stop` stops it whatever the setting.
Without a webhook, alerts wait in the outbox (`tokenmeter alerts run` delivers them later).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from app.stack import processes
from app.stack.paths import StackPaths

MODULE = "app.alerts"


class AlertsWorkerError(RuntimeError):
    """The worker exited at once; the message says where its log is."""


def pid_file(paths: StackPaths) -> Path:
    return paths.state / "alerts.pid"


def log_file(paths: StackPaths) -> Path:
    return paths.logs / "alerts.log"


def enabled() -> bool:
    """A webhook is configured. Raises ConfigError when it is configured wrongly."""
    # Imported here: app.alerts loads supabase-py, which `stack` commands otherwise never need.
    from app.alerts import WebhookSettings

    return WebhookSettings.from_env() is not None


def _pid(paths: StackPaths) -> int | None:
    """The pid in the pid file when that process is alive and is this stack's worker."""
    return processes.owned_pid(pid_file(paths), MODULE, paths.state)


def running(paths: StackPaths) -> bool:
    return _pid(paths) is not None


def start(paths: StackPaths, progress: Callable[[str], None] = lambda _msg: None) -> None:
    """Start the worker unless it runs already (idempotent). Raises AlertsWorkerError when it
    exits within its first half second (a configuration it refuses)."""
    if running(paths):
        return
    progress("starting alerts worker")
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
            raise AlertsWorkerError(
                f"alerts worker exited with code {code}; log: {log_file(paths)}"
            )
        time.sleep(0.05)


def stop(paths: StackPaths) -> None:
    """Stop this stack's worker (its process group); forget a stale pid file."""
    processes.stop_group(_pid(paths), pid_file(paths))
