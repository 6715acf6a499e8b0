"""The dashboard's process: started, found and stopped by the stack manager like the gateway.

It is a process of its own (`python -m app.dashboard`, pid file `dashboard.pid`, log
`logs/dashboard.log`) rather than a route of the gateway: the gateway's port speaks only
Supabase's APIs (clients and the fuzz suite rely on every other path being a 404), a dashboard
page that renders a chart never takes CPU from a metered request's event loop, and a dashboard
that fails to start cannot take the API down with it.
"""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

import httpx

from app.stack import processes
from app.stack.paths import StackPaths

MODULE = "app.dashboard"
START_TIMEOUT_SECONDS = 20.0


class DashboardError(RuntimeError):
    """The dashboard did not start; the message names its log."""


def enabled(paths: StackPaths) -> bool:
    """`[studio] enabled` in supabase/config.toml (the Supabase CLI's switch for its Studio).
    A missing file or section means off, as an unreadable one does (the gateway's own config
    reader reports a malformed file)."""
    try:
        config = tomllib.loads((paths.root / "supabase" / "config.toml").read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return config.get("studio", {}).get("enabled") is True


def url(paths: StackPaths) -> str:
    return f"http://127.0.0.1:{paths.studio_port}"


def pid_file(paths: StackPaths) -> Path:
    return paths.state / "dashboard.pid"


def log_file(paths: StackPaths) -> Path:
    return paths.logs / "dashboard.log"


def running_pid(paths: StackPaths) -> int | None:
    """The pid in the pid file when it is this stack's live dashboard process; None for a dead
    pid, a zombie, or a pid reused by another process."""
    return processes.owned_pid(pid_file(paths), MODULE, paths.state)


def answers(paths: StackPaths) -> bool:
    try:
        return httpx.get(f"{url(paths)}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def running(paths: StackPaths) -> bool:
    return running_pid(paths) is not None and answers(paths)


def start(paths: StackPaths) -> None:
    """Spawn the dashboard in a session of its own and wait until /health answers.
    Raises DashboardError when it exits or does not answer within START_TIMEOUT_SECONDS."""
    env = dict(os.environ)
    env.update(
        TOKENMETER_PROJECT_DIR=str(paths.root),
        TOKENMETER_STATE_DIR=str(paths.state),
        TOKENMETER_API_PORT=str(paths.api_port),
        TOKENMETER_DB_PORT=str(paths.db_port),
        TOKENMETER_STUDIO_PORT=str(paths.studio_port),
    )
    pid = processes.spawn_module(MODULE, env, log_file(paths), pid_file(paths))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        code = processes.exit_code(pid)
        if code is not None:
            pid_file(paths).unlink(missing_ok=True)
            raise DashboardError(f"dashboard exited with code {code}; log: {log_file(paths)}")
        if answers(paths):
            return
        time.sleep(0.05)
    stop(paths)
    raise DashboardError(
        f"dashboard did not answer on {url(paths)} within {START_TIMEOUT_SECONDS:.0f} s; "
        f"log: {log_file(paths)}"
    )


def stop(paths: StackPaths) -> None:
    """Stop our dashboard (its process group); forget a stale pid file."""
    processes.stop_group(running_pid(paths), pid_file(paths))
