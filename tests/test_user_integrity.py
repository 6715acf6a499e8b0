"""The user of every usage record and ledger entry, without per-row foreign keys
(migration 20251018000003): checked once per insert statement, deleted with the user, and no
orphan left when a user is deleted while their usage is being recorded, in either order.

The races run on two real connections: one records usage in an open transaction, the other
deletes the user; the test waits until one of them is blocked on the other's lock.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from supabase import Client

FREE_MODEL = ("openrouter", "meta-llama/llama-3.3-70b-instruct:free")


def make_user(admin: psycopg.Connection) -> str:
    """A user (the signup trigger creates the balance), funded with 100."""
    uid = str(uuid.uuid4())
    admin.execute(
        "insert into auth.users (id, aud, role, email, created_at, updated_at) "
        "values (%s, 'authenticated', 'authenticated', %s, now(), now())",
        (uid, f"integrity-{uid}@example.com"),
    )
    admin.execute(
        "select public.top_up(user_id => %s, amount => 100, reference => %s)",
        (uid, f"integrity-{uid}"),
    )
    return uid


def rows_of(admin: psycopg.Connection, uid: str) -> dict[str, int]:
    counts = {}
    for table in ("usage_records", "balance_movements", "user_balances"):
        row = admin.execute(f"select count(*) from public.{table} where user_id = %s", (uid,))
        counts[table] = row.fetchone()[0]  # type: ignore[index]
    return counts


def record_usage(conn: psycopg.Connection, uid: str, free: bool) -> None:
    provider, model = FREE_MODEL if free else ("openai", "gpt-4o-mini")
    result = conn.execute(
        "select public.record_usage(user_id => %s, provider => %s, model => %s, "
        "input_tokens => 1000, output_tokens => 200, request_id => %s)",
        (uid, provider, model, f"integrity-{uuid.uuid4()}"),
    ).fetchone()[0]  # type: ignore[index]
    assert (result["cost"] == "0") is free


def record_batch(conn: psycopg.Connection, uid: str, free: bool) -> None:
    provider, model = FREE_MODEL if free else ("openai", "gpt-4o-mini")
    records = [
        {
            "user_id": uid,
            "provider": provider,
            "model": model,
            "input_tokens": 1000,
            "output_tokens": 200,
            "request_id": f"integrity-{uuid.uuid4()}",
        }
        for _ in range(2)
    ]
    result = conn.execute(
        "select public.record_usage_batch(records => %s::jsonb)", (json.dumps(records),)
    ).fetchone()[0]  # type: ignore[index]
    assert result["recorded"] == 2, result
    assert all((r["cost"] == "0") is free for r in result["results"])


WRITERS: dict[str, Callable[[psycopg.Connection, str], None]] = {
    "record_usage charged": lambda conn, uid: record_usage(conn, uid, free=False),
    "record_usage zero-cost": lambda conn, uid: record_usage(conn, uid, free=True),
    "record_usage_batch charged": lambda conn, uid: record_batch(conn, uid, free=False),
    "record_usage_batch zero-cost": lambda conn, uid: record_batch(conn, uid, free=True),
    "top_up": lambda conn, uid: conn.execute(
        "select public.top_up(user_id => %s, amount => 5, reference => %s)",
        (uid, f"integrity-{uuid.uuid4()}"),
    ),
}


@pytest.fixture()
def admin(admin_dsn: str) -> Any:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        yield conn


def wait_until_blocked(admin: psycopg.Connection, pid: int) -> None:
    """Waits (≤ 10 s) until backend `pid` waits for a lock; fails the test otherwise."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = admin.execute(
            "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    pytest.fail(f"backend {pid} never waited for a lock")


def in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


# ── The statement-level check ─────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("table", "columns", "values"),
    [
        (
            "usage_records",
            "user_id, request_id, provider_id, model_id, input_tokens, output_tokens, "
            "price_per_input_token, price_per_output_token, price_per_cached_input_token, "
            "price_per_request, cost",
            "%s, 'integrity-orphan', 'openai', 'gpt-4o-mini', 1, 1, 0, 0, 0, 0, 0",
        ),
        (
            "ledger_entries",
            "user_id, kind, amount, reference",
            "%s, 'top_up', 1, 'integrity-orphan'",
        ),
    ],
)
def test_a_row_for_a_user_who_does_not_exist_is_refused(
    admin: psycopg.Connection, db: psycopg.Connection, table: str, columns: str, values: str
) -> None:
    """Even postgres, writing by hand past the money functions, cannot insert an orphan; a
    statement with one bad row among good ones writes nothing."""
    uid = make_user(admin)
    before = rows_of(admin, uid)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="auth.users"):
        db.execute(
            f"insert into public.{table} ({columns}) values ({values}), "
            f"({values.replace('integrity-orphan', 'integrity-orphan-2')})",
            (uid, str(uuid.uuid4())),
        )
    assert rows_of(admin, uid) == before
    assert (
        admin.execute(
            f"select count(*) from public.{table} where "
            + ("request_id" if table == "usage_records" else "reference")
            + " like 'integrity-orphan%%'"
        ).fetchone()[0]  # type: ignore[index]
        == 0
    )


# ── Deletion ──────────────────────────────────────────────────────────────────────────────
def test_deleting_a_user_through_the_auth_api_deletes_their_usage_and_ledger(
    admin: psycopg.Connection,
    db: psycopg.Connection,
    new_client: Callable[[str], Client],
    service_key: str,
) -> None:
    """The Auth server deletes users as supabase_auth_admin; the cleanup still runs."""
    uid = make_user(admin)
    record_usage(db, uid, free=False)
    record_batch(db, uid, free=True)
    assert rows_of(admin, uid) == {"usage_records": 3, "balance_movements": 2, "user_balances": 1}
    new_client(service_key).auth.admin.delete_user(uid)
    assert rows_of(admin, uid) == {"usage_records": 0, "balance_movements": 0, "user_balances": 0}
    assert admin.execute("select count(*) from public.balance_audit()").fetchone()[0] == 0  # type: ignore[index]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_user_deleted_while_their_usage_is_written_keeps_no_row(
    writer: str, admin: psycopg.Connection, db_url: str, admin_dsn: str
) -> None:
    """The write comes first and is still open: the deletion waits for it, then deletes what it
    committed too."""
    uid = make_user(admin)
    with psycopg.connect(db_url) as writing:  # one open transaction
        WRITERS[writer](writing, uid)
        with psycopg.connect(admin_dsn, autocommit=True) as deleting:
            pid = deleting.info.backend_pid
            thread, errors = in_thread(
                lambda: deleting.execute("delete from auth.users where id = %s", (uid,))
            )
            wait_until_blocked(admin, pid)
            writing.commit()
            thread.join(30)
            assert not thread.is_alive() and not errors
    assert rows_of(admin, uid) == {"usage_records": 0, "balance_movements": 0, "user_balances": 0}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_usage_written_for_a_user_being_deleted_fails_and_writes_nothing(
    writer: str, admin: psycopg.Connection, db_url: str, admin_dsn: str
) -> None:
    """The deletion comes first and is still open: the write waits for it, then fails."""
    uid = make_user(admin)
    with psycopg.connect(admin_dsn) as deleting:  # one open transaction
        deleting.execute("delete from auth.users where id = %s", (uid,))
        with psycopg.connect(db_url, autocommit=True) as writing:
            pid = writing.info.backend_pid
            thread, errors = in_thread(lambda: WRITERS[writer](writing, uid))
            wait_until_blocked(admin, pid)
            deleting.commit()
            thread.join(30)
            assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], psycopg.Error), errors
    assert errors[0].sqlstate in ("PT404", "23503"), errors[0]
    assert rows_of(admin, uid) == {"usage_records": 0, "balance_movements": 0, "user_balances": 0}
