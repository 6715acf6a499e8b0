"""Start, stop and describe the local stack: PostgreSQL plus the API gateway.

`start` is idempotent: parts already running are left alone. It waits until every part answers
and, when one does not, says which part failed and where its log is. It also recovers from a
crash: pid files whose process died (or whose pid now belongs to another process) are cleared,
never signalled, and a gateway whose database restarted is restarted too (its pooled
connections died with the old server).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.config import ConfigError
from app.dashboard import process as dashboard
from app.stack import alerts_worker, processes, rollup_worker
from app.stack import keys as stack_keys
from app.stack.mail import process as mail_catcher
from app.stack.paths import StackPaths
from app.stack.postgres import (
    Binaries,
    Cluster,
    PostgresError,
    find_binaries,
    synchronous_commit,
)


class StackError(RuntimeError):
    """A part of the stack failed; the message names the part and its log."""


@dataclass(frozen=True)
class StackStatus:
    api_url: str
    db_url: str
    anon_key: str
    service_role_key: str
    jwt_secret: str
    postgres_running: bool
    gateway_running: bool
    # The local dashboard ([studio] enabled in supabase/config.toml); None when switched off.
    dashboard_url: str | None
    dashboard_running: bool
    state_dir: str
    mail_url: str = ""  # the mail catcher's web page and Mailpit API ("" when [inbucket] is off)
    mail_running: bool = False

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class Stack:
    def __init__(self, paths: StackPaths | None = None) -> None:
        self.paths = paths or StackPaths.from_env()
        self.cluster = Cluster(self.paths)

    # ── lifecycle ──────────────────────────────────────────────────────────────────────────
    def start(self, progress: Callable[[str], None] = lambda _msg: None) -> bool:
        """Start what is not running. Returns True when the database was created just now."""
        try:
            synchronous_commit()  # a bad setting is refused before anything starts
        except PostgresError as exc:
            raise StackError(str(exc)) from None
        bins = self._binaries()
        created = False
        if not self.cluster.initialized:
            progress("creating PostgreSQL cluster")
            self.cluster.init(bins)
            created = True
        database_started = False
        if not self.cluster.running():
            progress("starting PostgreSQL")
            try:
                self.cluster.start(bins, progress)
            except PostgresError as exc:
                raise StackError(str(exc)) from None
            database_started = True
        if created or not self.cluster.bootstrapped():
            progress("bootstrapping Supabase roles and auth schema")
            self.cluster.bootstrap()
            created = True
        if not created:
            self._ensure_usage_partitions(progress)
        keys = stack_keys.load_or_create(self.paths)
        stack_keys.write_env_file(self.paths, keys)
        if database_started and self._gateway_process() is not None:
            progress("restarting API gateway (its database restarted)")
            self._stop_gateway()
        if not self.gateway_running():
            progress("starting API gateway")
            self._stop_gateway()  # one that runs but does not answer
            self._start_gateway()
        try:
            if alerts_worker.enabled():
                alerts_worker.start(self.paths, progress)
        except (alerts_worker.AlertsWorkerError, ConfigError) as exc:
            raise StackError(str(exc)) from None
        try:
            if rollup_worker.enabled():
                rollup_worker.start(self.paths, progress)
        except (rollup_worker.RollupWorkerError, ConfigError) as exc:
            raise StackError(str(exc)) from None
        try:
            if mail_catcher.enabled(self.paths):
                mail_catcher.start(self.paths, progress)
        except (mail_catcher.MailCatcherError, ValueError) as exc:
            raise StackError(str(exc)) from None
        self._start_dashboard(progress, restart=database_started)
        return created

    def _start_dashboard(self, progress: Callable[[str], None], restart: bool) -> None:
        """Run the dashboard when config.toml enables it, stop it when it does not."""
        if not dashboard.enabled(self.paths):
            dashboard.stop(self.paths)
            return
        if restart or not dashboard.running(self.paths):
            progress("starting dashboard")
            dashboard.stop(self.paths)  # one that runs but does not answer
            try:
                dashboard.start(self.paths)
            except dashboard.DashboardError as exc:
                raise StackError(str(exc)) from None

    def stop(self) -> None:
        alerts_worker.stop(self.paths)
        rollup_worker.stop(self.paths)
        dashboard.stop(self.paths)
        mail_catcher.stop(self.paths)
        self._stop_gateway()
        if self.cluster.initialized:
            self.cluster.stop(self._binaries())

    def _stop_gateway(self) -> None:
        """Stop our gateway and its function workers (its process group); forget a stale pid."""
        pid = self._gateway_process()
        if pid is not None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while processes.alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not processes.alive(pid):
                    break
        self.paths.gateway_pid.unlink(missing_ok=True)

    def reset_database(self, progress: Callable[[str], None] = lambda _msg: None) -> None:
        """Recreate and bootstrap the local database; the gateway is restarted to drop its pool."""
        if not self.cluster.running():
            raise StackError(
                "the local stack is not running: start it with `tokenmeter stack start`"
            )
        progress("recreating database")
        self.cluster.recreate_database()
        progress("restarting API gateway")
        self._stop_gateway()
        self._start_gateway()

    def status(self) -> StackStatus:
        keys = stack_keys.load_or_create(self.paths)
        return StackStatus(
            api_url=self.paths.api_url,
            db_url=self.paths.db_url(),
            anon_key=keys.anon_key,
            service_role_key=keys.service_role_key,
            jwt_secret=keys.jwt_secret,
            postgres_running=self.cluster.running(),
            gateway_running=self.gateway_running(),
            dashboard_url=dashboard.url(self.paths) if dashboard.enabled(self.paths) else None,
            dashboard_running=dashboard.running(self.paths),
            state_dir=str(self.paths.state),
            mail_url=mail_catcher.url(self.paths) if mail_catcher.enabled(self.paths) else "",
            mail_running=mail_catcher.running(self.paths),
        )

    # ── gateway process ────────────────────────────────────────────────────────────────────
    def gateway_running(self) -> bool:
        return self._gateway_process() is not None and self._gateway_answers()

    def _gateway_process(self) -> int | None:
        """The pid in the gateway's pid file if that process is alive and is this stack's
        gateway; None for a dead pid, a zombie, or a pid reused by another process."""
        try:
            pid = int(self.paths.gateway_pid.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not processes.alive(pid):
            return None
        cmd = processes.command(pid)
        if cmd is not None and "app.stack.gateway" not in cmd:
            return None
        env = processes.environment(pid)
        if env is not None and env.get("TOKENMETER_STATE_DIR") != str(self.paths.state):
            return None
        return pid

    def _gateway_answers(self) -> bool:
        try:
            return httpx.get(f"{self.paths.api_url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _start_gateway(self) -> None:
        env = dict(os.environ)
        env.update(
            TOKENMETER_PROJECT_DIR=str(self.paths.root),
            TOKENMETER_STATE_DIR=str(self.paths.state),
            TOKENMETER_API_PORT=str(self.paths.api_port),
            TOKENMETER_DB_PORT=str(self.paths.db_port),
        )
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        # posix_spawn in a new session: the gateway outlives this CLI process, and no Popen
        # object is left behind to complain about a child it never waited for.
        log_fd = os.open(self.paths.gateway_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-m", "app.stack.gateway"],
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
        self.paths.gateway_pid.write_text(str(pid))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            exited, status = os.waitpid(pid, os.WNOHANG)
            if exited:
                raise StackError(
                    f"API gateway exited with code {os.waitstatus_to_exitcode(status)}; "
                    f"log: {self.paths.gateway_log}"
                )
            if self._gateway_answers():
                return
            time.sleep(0.05)
        raise StackError(
            f"API gateway did not answer on {self.paths.api_url} within 20 s; "
            f"log: {self.paths.gateway_log}"
        )

    def _ensure_usage_partitions(self, progress: Callable[[str], None]) -> None:
        """usage_records' partitions for this month and the next three (issue 12 §2): the local
        stack has no pg_cron, so each start does what its daily job would. A new database is
        partitioned by its migrations, which the caller applies next; one without them yet is
        left alone."""
        from app.partitions import PartitionError, ensure_if_installed

        progress("creating usage partitions ahead")
        try:
            ensure_if_installed(self.paths.db_url())
        except PartitionError as exc:
            raise StackError(f"usage partitions: {exc}") from None

    def _binaries(self) -> Binaries:
        try:
            return find_binaries()
        except PostgresError as exc:
            raise StackError(str(exc)) from None

    def logs(self, lines: int = 50) -> dict[str, list[str]]:
        """The last `lines` lines of each part's log."""
        out: dict[str, list[str]] = {}
        for name, path in (
            ("postgres", self.paths.postgres_log),
            ("gateway", self.paths.gateway_log),
            ("alerts", alerts_worker.log_file(self.paths)),
            ("rollups", rollup_worker.log_file(self.paths)),
            ("mail", mail_catcher.log_file(self.paths)),
            ("dashboard", dashboard.log_file(self.paths)),
        ):
            try:
                out[name] = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                out[name] = []
        return out
