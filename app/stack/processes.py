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
import subprocess
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
