"""A second API gateway over the test stack's database with Auth settings of its own (TOKENMETER_
AUTH_* variables: confirmations on, signing keys, limits…), as GoTrue's own suite runs one
container per configuration over one database. Its mail goes to the test stack's mail catcher."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.stack.paths import StackPaths

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def auth_gateway(env: dict[str, str]) -> Iterator[str]:
    """Yields the base URL of a gateway started with `env` added; stops it afterwards."""
    port = free_port()
    paths = StackPaths.from_env()
    full = {
        **os.environ,
        "TOKENMETER_API_PORT": str(port),
        "TOKENMETER_INBUCKET_PORT": str(paths.inbucket_port),
        **env,
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.stack.gateway"],
            cwd=ROOT,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise AssertionError(f"gateway did not start: {log.read()[-2000:]!r}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)
