"""Start and stop the mail catcher with the stack: its own process (`python -m app.stack.mail`) in
its own session, a pid file and a log in the stack's state folder, as the gateway has.

`stack start` runs it when `[inbucket] enabled = true`; `stack stop` stops it whatever the
setting says (one started before the setting was turned off must not be left behind).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from app.stack import processes
from app.stack.mail.settings import read_mail_settings
from app.stack.paths import StackPaths

START_TIMEOUT_SECONDS = 20.0


class MailCatcherError(RuntimeError):
    """The mail catcher did not start; the message says where its log is."""


def pid_file(paths: StackPaths) -> Path:
    return paths.state / "mailcatcher.pid"


def log_file(paths: StackPaths) -> Path:
    return paths.logs / "mailcatcher.log"


def url(paths: StackPaths) -> str:
    return f"http://127.0.0.1:{paths.inbucket_port}"


def enabled(paths: StackPaths) -> bool:
    return read_mail_settings(paths.root / "supabase" / "config.toml").enabled


def _pid(paths: StackPaths) -> int | None:
    """The pid in the pid file when that process is alive and is this stack's catcher."""
    return processes.owned_pid(pid_file(paths), "app.stack.mail", paths.state)


def answers(paths: StackPaths) -> bool:
    try:
        return httpx.get(f"{url(paths)}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def running(paths: StackPaths) -> bool:
    return _pid(paths) is not None and answers(paths)


def start(paths: StackPaths, progress: Callable[[str], None] = lambda _msg: None) -> None:
    """Start the catcher unless it runs already (idempotent). Raises MailCatcherError."""
    if running(paths):
        return
    stop(paths)  # one that runs but does not answer
    progress("starting mail catcher")
    env = dict(os.environ)
    env.update(
        TOKENMETER_PROJECT_DIR=str(paths.root),
        TOKENMETER_STATE_DIR=str(paths.state),
        TOKENMETER_API_PORT=str(paths.api_port),
        TOKENMETER_INBUCKET_PORT=str(paths.inbucket_port),
    )
    pid = processes.spawn_module("app.stack.mail", env, log_file(paths), pid_file(paths))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        code = processes.exit_code(pid)
        if code is not None:
            raise MailCatcherError(
                f"mail catcher exited with code {code} "
                f"(is port {paths.inbucket_port} in use?); log: {log_file(paths)}"
            )
        if answers(paths):
            return
        time.sleep(0.05)
    raise MailCatcherError(
        f"mail catcher did not answer on {url(paths)} within {START_TIMEOUT_SECONDS:.0f} s; "
        f"log: {log_file(paths)}"
    )


def stop(paths: StackPaths) -> None:
    """Stop this stack's catcher (its process group); forget a stale pid file."""
    processes.stop_group(_pid(paths), pid_file(paths))
