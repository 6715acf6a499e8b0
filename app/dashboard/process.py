"""The dashboard's process: started, found and stopped by the stack manager like the gateway.

It is a process of its own (`python -m app.dashboard`, pid file `dashboard.pid`, log
`logs/dashboard.log`) rather than a route of the gateway: the gateway's port speaks only
Supabase's APIs (clients and the fuzz suite rely on every other path being a 404), a dashboard
page that renders a chart never takes CPU from a metered request's event loop, and a dashboard
that fails to start cannot take the API down with it.
"""

from __future__ import annotations

import os
import signal
import sys
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
    try:
        pid = int(pid_file(paths).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not processes.alive(pid):
        return None
    cmd = processes.command(pid)
    if cmd is not None and MODULE not in cmd:
        return None
    env = processes.environment(pid)
    if env is not None and env.get("TOKENMETER_STATE_DIR") != str(paths.state):
        return None
    return pid


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
    paths.logs.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_file(paths), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", MODULE],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
    pid_file(paths).write_text(str(pid))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        exited, status = os.waitpid(pid, os.WNOHANG)
        if exited:
            pid_file(paths).unlink(missing_ok=True)
            raise DashboardError(
                f"dashboard exited with code {os.waitstatus_to_exitcode(status)}; "
                f"log: {log_file(paths)}"
            )
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
    pid = running_pid(paths)
    if pid is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 5.0
            while processes.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not processes.alive(pid):
                break
    pid_file(paths).unlink(missing_ok=True)
