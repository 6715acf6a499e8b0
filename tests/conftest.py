"""Integration tests run against a real local stack, started once per test session.

The test stack lives beside the developer's one: its own state folder and ports (override with
TOKENMETER_STATE_DIR / TOKENMETER_API_PORT / TOKENMETER_DB_PORT), recreated from scratch for each
session so tests never depend on leftovers. Tests create their own users and rows (random ids).
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from supabase import Client, ClientOptions, create_client

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENMETER_PROJECT_DIR", str(ROOT))
os.environ.setdefault("TOKENMETER_STATE_DIR", str(ROOT / ".tokenmeter" / "test"))
os.environ.setdefault("TOKENMETER_API_PORT", "54331")
os.environ.setdefault("TOKENMETER_DB_PORT", "54332")
# The suite signs hundreds of users up and in from 127.0.0.1, some at once: the test stack's
# gateway has GoTrue's per-IP limits (supabase/config.toml [auth.rate_limit]) turned off.
# tests/test_hostile_auth.py checks the limits themselves on a gateway of its own.
os.environ.setdefault("TOKENMETER_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS", "unlimited")
os.environ.setdefault("TOKENMETER_AUTH_RATE_LIMIT_TOKEN_REFRESH", "unlimited")
os.environ.setdefault("TOKENMETER_AUTH_RATE_LIMIT_ANONYMOUS_USERS", "unlimited")
os.environ.setdefault("TOKENMETER_AUTH_RATE_LIMIT_TOKEN_VERIFICATIONS", "unlimited")

from app.migrations import Migrator  # noqa: E402
from app.pricing import Pricing  # noqa: E402
from app.stack import keys as stack_keys  # noqa: E402
from app.stack.manager import Stack  # noqa: E402
from app.stack.paths import StackPaths  # noqa: E402


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """A fresh stack with all migrations and the seed applied."""
    paths = StackPaths.from_env()
    running = Stack(paths)
    running.stop()
    shutil.rmtree(paths.state, ignore_errors=True)
    running.start()
    Migrator.local(paths).push(include_seed=True)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def api_url(stack: Stack) -> str:
    return stack.paths.api_url


@pytest.fixture(scope="session")
def keys(stack: Stack) -> stack_keys.StackKeys:
    return stack_keys.load_or_create(stack.paths)


@pytest.fixture(scope="session")
def anon_key(keys: stack_keys.StackKeys) -> str:
    return keys.anon_key


@pytest.fixture(scope="session")
def service_key(keys: stack_keys.StackKeys) -> str:
    return keys.service_role_key


@pytest.fixture(scope="session")
def db_url(stack: Stack) -> str:
    """Connection string for `postgres` (what migrations run as; not a superuser)."""
    return stack.paths.db_url()


@pytest.fixture(scope="session")
def admin_dsn(stack: Stack) -> str:
    """Connection string for the cluster superuser, for fixtures that must bypass everything."""
    return stack.cluster.superuser_dsn()


@pytest.fixture()
def db(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def new_client(api_url: str) -> Iterator[Callable[[str], Client]]:
    """Builds sync supabase-py clients (thread-safe) on HTTP clients closed after the test, with
    no background token-refresh timer."""
    opened: list[httpx.Client] = []
    lock = threading.Lock()

    def build(key: str) -> Client:
        http = httpx.Client(timeout=60)
        with lock:
            opened.append(http)
        return create_client(
            api_url, key, ClientOptions(auto_refresh_token=False, httpx_client=http)
        )

    yield build
    for http in opened:
        http.close()


@pytest.fixture()
def service(new_client: Callable[[str], Client], service_key: str) -> Client:
    """A supabase-py client with the service_role key."""
    return new_client(service_key)


@pytest.fixture()
def pricing(service: Client) -> Pricing:
    """The price catalog facade (app.pricing) as the service."""
    return Pricing(service)


@pytest.fixture()
def signed_up_user(
    new_client: Callable[[str], Client], anon_key: str
) -> Callable[[], tuple[str, Client]]:
    """Signs a new user up through the Auth API with the anon key, as an app does:
    (user id, a client signed in as them)."""

    def make() -> tuple[str, Client]:
        client = new_client(anon_key)
        response = client.auth.sign_up({"email": random_email(), "password": "correct-horse-9"})
        assert response.user is not None and response.session is not None
        return response.user.id, client

    return make


@pytest.fixture()
def sign_up(signed_up_user: Callable[[], tuple[str, Client]]) -> Callable[[], str]:
    """Signs a new user up; returns their id."""
    return lambda: signed_up_user()[0]


def random_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the pgTAP files first, on the freshly migrated database: some of them assert on
    database-wide state (e.g. the pricing consolidation report passes), which rows left behind by
    the Python tests' own (random) users and models would otherwise change."""
    items.sort(key=lambda item: 0 if item.path.name == "test_pgtap.py" else 1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help="run the fuzz suite (tests/test_fuzz.py) with 20x the examples and a random seed",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Read by tests/test_fuzz.py when it is imported (its @settings are built at import time).
    if config.getoption("--fuzz-long"):
        os.environ["TOKENMETER_FUZZ_LONG"] = "1"
