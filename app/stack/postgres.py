"""The local stack's private PostgreSQL cluster: find the server binaries, create, start, stop.

The cluster's superuser is `supabase_admin` (as on Supabase); `postgres` is an ordinary role
created by the bootstrap. PostgreSQL refuses to run as root, so when we are root every server
command runs as an unprivileged OS user (`postgres` if it exists, else `nobody`).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from app.stack.paths import StackPaths

MIN_VERSION = 15
SUPERUSER = "supabase_admin"
PASSWORD = "postgres"
BOOTSTRAP_SQL = Path(__file__).with_name("bootstrap.sql")

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


def _server_user() -> pwd.struct_passwd | None:
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
    user = _server_user()
    if user is not None:
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _chown_tree(path: Path) -> None:
    user = _server_user()
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
                "--no-sync",
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
                # A development database: losing the last few milliseconds of commits on a
                # machine crash is acceptable; durability of what is flushed is kept.
                "synchronous_commit = off\n"
                "log_min_messages = warning\n"
                "log_min_error_statement = panic\n"
                "timezone = 'UTC'\n"
            )

    def running(self, bins: Binaries) -> bool:
        if not self.initialized:
            return False
        result = _run_as_server_user([bins.tool("pg_ctl"), "-D", str(self.paths.pgdata), "status"])
        return result.returncode == 0

    def start(self, bins: Binaries) -> None:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        _chown_tree(self.paths.logs)
        result = _run_as_server_user(
            [
                bins.tool("pg_ctl"),
                "-D",
                str(self.paths.pgdata),
                "-l",
                str(self.paths.postgres_log),
                "-w",
                "-t",
                "30",
                "start",
            ]
        )
        if result.returncode != 0:
            raise PostgresError(
                f"PostgreSQL did not start on port {self.paths.db_port}: "
                f"{(result.stderr or result.stdout).strip()}\n  log: {self.paths.postgres_log}"
            )

    def stop(self, bins: Binaries) -> None:
        if self.running(bins):
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
            row = conn.execute("select to_regclass('auth.users') is not null").fetchone()
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
