"""Is the pid in a pid file still the process the stack started?

A pid file outlives its process: after a `kill -9` or a crash the pid may be gone, a zombie that
nobody has reaped yet (the init process of a container often reaps late, and `kill(pid, 0)`
succeeds on a zombie), or reused by an unrelated process. Acting on such a pid would skip a
needed start or signal a stranger. On Linux we read `/proc`; elsewhere `ps` answers the same
questions less precisely, and without either we fall back to `kill(pid, 0)`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")


def _has_proc() -> bool:
    return (PROC / "self" / "stat").is_file()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    if _has_proc():
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        # The state follows the command name in parentheses, which may itself hold ") ".
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _ps(pid, "stat")
    return stat is None or not stat.startswith("Z")


def command(pid: int) -> str | None:
    """The command line, arguments joined by spaces; None when it cannot be read."""
    if _has_proc():
        try:
            raw = (PROC / str(pid) / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return _ps(pid, "command")


def environment(pid: int) -> dict[str, str] | None:
    """The environment the process started with (Linux only); None when it cannot be read."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def working_directory(pid: int) -> Path | None:
    """The current directory (Linux only); None when it cannot be read."""
    try:
        return Path(os.readlink(PROC / str(pid) / "cwd"))
    except OSError:
        return None


def processes_in(folder: Path) -> list[int] | None:
    """Live processes whose current directory is `folder` (Linux only; None elsewhere)."""
    if not _has_proc():
        return None
    target = folder.resolve()
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and working_directory(int(entry.name)) == target:
            if alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _ps(pid: int, field: str) -> str | None:
    ps = shutil.which("ps")
    if ps is None:
        return None
    out = subprocess.run([ps, "-o", f"{field}=", "-p", str(pid)], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


# ── processes the stack runs beside the gateway (dashboard, mail catcher, workers) ──────────
def owned_pid(pid_file: Path, module: str, state: Path) -> int | None:
    """The pid in `pid_file` when it is a live `python -m module` of the stack whose state
    folder is `state`; None for a missing file, a dead pid, a zombie or a reused pid."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not alive(pid):
        return None
    cmd = command(pid)
    if cmd is not None and module not in cmd:
        return None
    env = environment(pid)
    if env is not None and env.get("TOKENMETER_STATE_DIR") != str(state):
        return None
    return pid


def spawn_module(module: str, env: dict[str, str], log: Path, pid_file: Path) -> int:
    """`python -m module` in a session of its own, stdin from /dev/null, stdout and stderr
    appended to `log`, its pid written to `pid_file`. Returns the pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", module],
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
    pid_file.write_text(str(pid))
    return pid


def exit_code(pid: int) -> int | None:
    """The exit code of our child `pid` once it has exited (reaping it), else None."""
    exited, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if exited else None


def stop_group(pid: int | None, pid_file: Path) -> None:
    """SIGTERM the process group of `pid` (an owned_pid), SIGKILL after 5 s; then forget the
    pid file, stale or not."""
    if pid is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 5.0
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not alive(pid):
                break
    pid_file.unlink(missing_ok=True)
