"""The local stack's private PostgreSQL cluster: find the server binaries, create, start, stop.

The cluster's superuser is `supabase_admin` (as on Supabase); `postgres` is an ordinary role
created by the bootstrap. PostgreSQL refuses to run as root, so when we are root every server
command runs as an unprivileged OS user (`postgres` if it exists, else `nobody`).

Durable by default, as hosted Supabase: `synchronous_commit = on`, `fsync` and
`full_page_writes` at PostgreSQL's defaults (on), initdb syncs what it writes. An acknowledged
commit survives a crash of the server (and of the machine). `TOKENMETER_SYNCHRONOUS_COMMIT=off`
trades that for speed (the test suite's own stack does; see README): a crash then loses the last
commits. `start` also recovers from a crash by itself: a stale `postmaster.pid` (its pid gone,
a zombie, or reused by another process) is cleared once no process of the old server is left.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from app.stack import processes
from app.stack.paths import StackPaths

MIN_VERSION = 15
SUPERUSER = "supabase_admin"
PASSWORD = "postgres"
BOOTSTRAP_SQL = Path(__file__).with_name("bootstrap.sql")
SYNCHRONOUS_COMMIT_ENV = "TOKENMETER_SYNCHRONOUS_COMMIT"
# How long orphaned backends of a killed server get to exit before `start` gives up on them.
ORPHAN_WAIT_SECONDS = 30

INSTALL_HINT = (
    "PostgreSQL {min}+ server binaries were not found (looked for pg_config, "
    "/usr/lib/postgresql/*/bin, Homebrew's postgresql@*). Install them, e.g.\n"
    "  Debian/Ubuntu: sudo apt-get install postgresql postgresql-contrib\n"
    "  macOS:         brew install postgresql@15"
)


class PostgresError(RuntimeError):
    """The cluster could not be found, created or started; the message says what to do."""


@dataclass(frozen=True)
class Binaries:
    bindir: Path
    version: int

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def _version_of(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not postgres.is_file():
        return None
    out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def find_binaries() -> Binaries:
    """Locate PostgreSQL >= 15 server binaries, newest first. Raises PostgresError if none."""
    candidates: list[Path] = []
    if override := os.environ.get("TOKENMETER_PG_BINDIR"):
        # An explicit choice is the only candidate: no silent fallback to another version.
        candidates.append(Path(override))
        return _best(candidates)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if out:
            candidates.append(Path(out))
    patterns = [
        "/usr/lib/postgresql/*/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
        "/usr/pgsql-*/bin",
    ]
    for pattern in patterns:
        found = glob.glob(pattern)
        found.sort(key=lambda p: int(re.sub(r"\D", "", p) or 0), reverse=True)
        candidates.extend(Path(p) for p in found)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    return _best(candidates)


def _best(candidates: list[Path]) -> Binaries:
    best: Binaries | None = None
    for bindir in candidates:
        version = _version_of(bindir)
        if version and version >= MIN_VERSION and (bindir / "initdb").is_file():
            if best is None or version > best.version:
                best = Binaries(bindir, version)
    if best is None:
        raise PostgresError(INSTALL_HINT.format(min=MIN_VERSION))
    return best


def synchronous_commit() -> str:
    """The `synchronous_commit` the server starts with: `on` unless the environment says `off`."""
    value = os.environ.get(SYNCHRONOUS_COMMIT_ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise PostgresError(f"{SYNCHRONOUS_COMMIT_ENV} must be 'on' or 'off', not {value!r}")
    return value


def server_user() -> pwd.struct_passwd | None:
    """The OS user that runs the server: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresError("running as root, but no unprivileged user (postgres/nobody) exists")


def _run_as_server_user(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    user = server_user()
    if user is not None:
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _chown_tree(path: Path) -> None:
    user = server_user()
    if user is None:
        return
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid)


class Cluster:
    """One private cluster in `paths.pgdata`, listening on 127.0.0.1:`paths.db_port`."""

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths

    @property
    def initialized(self) -> bool:
        return (self.paths.pgdata / "PG_VERSION").is_file()

    def superuser_dsn(self, dbname: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={self.paths.db_port} user={SUPERUSER} password={PASSWORD} "
            f"dbname={dbname} connect_timeout=5"
        )

    def init(self, bins: Binaries) -> None:
        """Create the data directory (initdb) and write the server configuration."""
        for folder in (self.paths.state, self.paths.logs, self.paths.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.paths.pgdata.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.paths.state / ".pwfile"
        pwfile.write_text(PASSWORD + "\n")
        _chown_tree(self.paths.state)
        result = _run_as_server_user(
            [
                bins.tool("initdb"),
                "-D",
                str(self.paths.pgdata),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]
        )
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed:\n{result.stderr.strip()}")
        with open(self.paths.pgdata / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# tokenmeter local stack\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.paths.db_port}\n"
                f"unix_socket_directories = '{self.paths.socket_dir}'\n"
                "max_connections = 200\n"
                "shared_buffers = 256MB\n"
                # synchronous_commit is given on the command line at each start (see start).
                "log_min_messages = warning\n"
                "log_min_error_statement = panic\n"
                "timezone = 'UTC'\n"
            )

    def running(self) -> bool:
        """A live postmaster of this data directory holds its lock file."""
        return self._holder(self.paths.pgdata / "postmaster.pid") == "ours"

    def _lock_files(self) -> list[Path]:
        """The data directory's lock file and the Unix socket's, both naming the postmaster."""
        return [
            self.paths.pgdata / "postmaster.pid",
            self.paths.socket_dir / f".s.PGSQL.{self.paths.db_port}.lock",
        ]

    def _holder(self, lock: Path) -> str:
        """'none' (no lock file), 'ours' (a live postmaster of this data directory) or 'stale'."""
        try:
            first = lock.read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return "none"
        try:
            pid = int(first)
        except ValueError:
            return "stale"
        return "ours" if processes.alive(pid) and self._is_our_postmaster(pid) else "stale"

    def _is_our_postmaster(self, pid: int) -> bool:
        # A postmaster works in its data directory; a process elsewhere only reuses the pid.
        cwd = processes.working_directory(pid)
        if cwd is not None:
            return cwd == self.paths.pgdata.resolve()
        cmd = processes.command(pid)
        return cmd is None or str(self.paths.pgdata) in cmd

    def _clear_stale_locks(self) -> bool:
        """Remove the lock files left by a server that died. True if there were any.

        PostgreSQL removes a stale lock file itself when its pid is gone, but it refuses to start
        while that pid answers `kill(pid, 0)`: a zombie not yet reaped, or another process of the
        same OS user that reuses the pid (on a busy machine, another cluster's backend). Before
        removing them, wait for the old server's orphaned backends to exit: `postmaster.pid`
        also carries the shared-memory key that PostgreSQL uses to refuse starting beside them.
        """
        stale = [lock for lock in self._lock_files() if self._holder(lock) == "stale"]
        if not stale:
            return False
        deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
        while left := processes.processes_in(self.paths.pgdata):
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"processes of a previous PostgreSQL server still run in "
                    f"{self.paths.pgdata} (pids {', '.join(map(str, left))}); stop them and "
                    "run `tokenmeter stack start` again"
                )
            time.sleep(0.1)
        if left is None:
            # No way to see the old server's processes here: leave the lock files to
            # PostgreSQL, which refuses to start beside them.
            return True
        for lock in stale:
            lock.unlink(missing_ok=True)
        return True

    def start(self, bins: Binaries, progress: Callable[[str], None] = lambda _msg: None) -> None:
        sync = synchronous_commit()
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        _chown_tree(self.paths.logs)
        if self._clear_stale_locks():
            progress("starting PostgreSQL (recovering from an unclean stop)")
        result = _run_as_server_user(
            [
                bins.tool("pg_ctl"),
                "-D",
                str(self.paths.pgdata),
                "-l",
                str(self.paths.postgres_log),
                # On the command line so that it also applies to a cluster created before
                # this setting changed (its postgresql.conf says `off`).
                "-o",
                f"-c synchronous_commit={sync}",
                "-w",
                # Crash recovery replays the WAL written since the last checkpoint (up to
                # max_wal_size, 1 GB): it may take more than pg_ctl's default minute.
                "-t",
                "300",
                "start",
            ]
        )
        if result.returncode != 0:
            raise PostgresError(
                f"PostgreSQL did not start on port {self.paths.db_port}: "
                f"{(result.stderr or result.stdout).strip()}\n  log: {self.paths.postgres_log}"
            )

    def stop(self, bins: Binaries) -> None:
        if self.running():
            _run_as_server_user(
                [
                    bins.tool("pg_ctl"),
                    "-D",
                    str(self.paths.pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ]
            )

    def bootstrapped(self) -> bool:
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            # The newest auth table: a database bootstrapped before it existed is bootstrapped
            # again (bootstrap.sql is idempotent) and so gains it.
            row = conn.execute("select to_regclass('auth.mfa_amr_claims') is not null").fetchone()
            return bool(row and row[0])

    def bootstrap(self) -> None:
        """Apply bootstrap.sql (roles, schemas, auth) to the `postgres` database."""
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(BOOTSTRAP_SQL.read_text())

    def recreate_database(self) -> None:
        """Drop and recreate the `postgres` database, then bootstrap it again (db reset)."""
        with psycopg.connect(self.superuser_dsn("template1"), autocommit=True) as conn:
            conn.execute("drop database if exists postgres with (force)")
            conn.execute("create database postgres")
        self.bootstrap()
