"""A second API gateway over the same database, serving the project's `openai` and `admin` edge
functions with function secrets of its own (an upstream's API key, short upstream timeouts).

The stack's own gateway reads the secrets from supabase/functions/.env, a file of the working
tree (git-ignored, the operator's); tests and the benchmark must not write it. This gateway runs
`python -m app.stack.gateway` on a free port with TOKENMETER_FUNCTIONS_DIR pointing at a
temporary `functions/` folder that links to the real function folders and holds its own `.env`,
next to a copy of supabase/config.toml (which the gateway reads for verify_jwt).

`DbProxy` stands between such a gateway (and so its functions' SUPABASE_DB_URL) and the
database, and can be cut and restored: the database becoming unreachable mid-request.
`TransactionPooler` is PgBouncer in transaction mode in the same place, as Supabase's pooler
stands between an edge function and the database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "supabase" / "functions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DbProxy:
    """A TCP relay to the database on a free port. `cut()` closes every relayed connection and
    refuses new ones (accepted, then closed at once) until `restore()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.open:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


class TransactionPooler:
    """PgBouncer (`pool_mode = transaction`, `server_pool_size` server connections per user and
    database) on a free port in front of the database: consecutive transactions of one client
    connection run on different server connections, so a prepared statement or session setting
    kept between calls breaks. Run as the database's OS user when we are root (PgBouncer
    refuses to run as root)."""

    def __init__(self, db_port: int, server_pool_size: int = 2) -> None:
        from app.stack.postgres import server_user

        self.folder = Path(tempfile.mkdtemp(prefix="tokenmeter-pooler-"))
        self.port = free_port()
        (self.folder / "userlist.txt").write_text('"postgres" "postgres"\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"postgres = host=127.0.0.1 port={db_port} dbname=postgres\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = plain\n"
            f"auth_file = {self.folder / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {server_pool_size}\nmin_pool_size = 0\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\n"
        )
        user = server_user()
        kwargs: dict = {}
        if user is not None:
            for path in (self.folder, *self.folder.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.process = subprocess.Popen(
            [binary, str(self.folder / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log_text()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("pgbouncer did not listen within 10 s")

    def log_text(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


class FunctionGateway:
    def __init__(
        self, secrets: dict[str, str], env: dict[str, str] | None = None, root: Path = ROOT
    ) -> None:
        """`root`: the checkout whose gateway (app/) and functions run; another one than this
        lets the benchmark run an earlier commit beside the current one."""
        self.folder = Path(tempfile.mkdtemp(prefix="tokenmeter-fngw-"))
        functions = self.folder / "functions"
        functions.mkdir()
        for entry in (root / "supabase" / "functions").iterdir():
            if entry.is_dir():
                (functions / entry.name).symlink_to(entry, target_is_directory=True)
        (functions / ".env").write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
        shutil.copy(root / "supabase" / "config.toml", self.folder / "config.toml")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            TOKENMETER_API_PORT=str(self.port),
            TOKENMETER_FUNCTIONS_DIR=str(functions),
            **(env or {}),
        )
        self.log = open(self.folder / "gateway.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.stack.gateway"],
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited: {self.log_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the gateway did not answer within 30 s")

    def log_text(self) -> str:
        self.log.flush()
        return (self.folder / "gateway.log").read_text(errors="replace")[-4000:]

    def function_log(self, name: str) -> str:
        state = Path(os.environ["TOKENMETER_STATE_DIR"])
        path = state / "logs" / "functions" / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
