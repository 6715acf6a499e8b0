"""record_usage_batch claims its request ids in one statement (20261130020001) instead of the
per-row claim trigger: the guarantees of the trigger hold for it — a request id held by an
uncommitted transaction (in another month's partition) is waited for and then replayed, and
batches racing single charges for the same ids still store and charge each id once.
Rows "a month apart" are written directly as postgres with an explicit created_at, as in
tests/test_usage_partitions.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

INSERT_ROW = (
    "insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,"
    " output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,"
    " price_per_request, cost, occurred_at, created_at)"
    " values (%s, %s, 'openai', 'gpt-4o-mini', 1000, 100, 0.00000015, 0.0000006, 0.000000075, 0,"
    " 0.00021, %s, %s)"
)


def scalar(db: psycopg.Connection, query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def make_user(db: psycopg.Connection) -> str:
    user_id = str(uuid.uuid4())
    db.execute(
        "insert into auth.users (id, email) values (%s, %s)",
        (user_id, f"batch-claims-{user_id[:8]}@example.test"),
    )
    db.execute("select public.top_up(%s, 10, %s)", (user_id, f"fund-{user_id}"))
    return user_id


def record(user_id: str, request_id: str, occurred_at: datetime) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        "request_id": request_id,
        "occurred_at": occurred_at.isoformat(),
    }


def test_record_usage_batch_id_held_uncommitted_last_month_waits_then_replays(
    db_url: str, db: psycopg.Connection
) -> None:
    user_id = make_user(db)
    first = datetime.now(UTC).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    at = (first - timedelta(days=1)).replace(day=10)
    db.execute("select private.create_usage_partition(%s)", (at.date(),))
    held, new = f"held-{uuid.uuid4()}", f"new-{uuid.uuid4()}"
    results: list[Any] = []
    with psycopg.connect(db_url) as original:
        # As a charge a month ago would have left it (the balance moves with the row).
        original.execute(INSERT_ROW, (user_id, held, at, at))
        original.execute(
            "update public.user_balances set balance = balance - 0.00021 where user_id = %s",
            (user_id,),
        )

        def batch() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                records = [record(user_id, new, at), record(user_id, held, at)]
                results.append(scalar(conn, "select public.record_usage_batch(%s)", Jsonb(records)))

        thread = threading.Thread(target=batch)
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive(), "the batch must wait for the uncommitted holder of the id"
        original.commit()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert results, "the batch failed"
    assert (results[0]["recorded"], results[0]["replayed"], results[0]["failed"]) == (1, 1, 0)
    assert [r["replayed"] for r in results[0]["results"]] == [False, True]
    assert scalar(db, "select count(*) from public.usage_records where request_id = %s", held) == 1
    # The new id's claim names its row's partition.
    assert (
        scalar(
            db,
            "select count(*) from public.usage_records u join private.usage_request_ids r"
            " on r.request_id = u.request_id and r.created_at = u.created_at"
            " where u.request_id = %s",
            new,
        )
        == 1
    )
    assert (
        scalar(db, "select count(*) from public.balance_audit() where user_id = %s", user_id) == 0
    )


def test_record_usage_batch_racing_record_usage_same_ids_each_charged_once(
    db_url: str, db: psycopg.Connection
) -> None:
    """Batches (set-based claims) and single charges (the row trigger's claims) for the same
    request ids, all at once: one row and one charge per id, however they interleave."""
    user_id = make_user(db)
    now = datetime.now(UTC)
    ids = [f"mix-{uuid.uuid4()}" for _ in range(40)]
    barrier = threading.Barrier(8, timeout=30)
    errors: list[BaseException] = []

    def batch(offset: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                order = ids[offset:] + ids[:offset]  # each batch in its own order
                barrier.wait()
                conn.execute(
                    "select public.record_usage_batch(%s)",
                    (Jsonb([record(user_id, i, now) for i in order]),),
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def singles(step: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                barrier.wait()
                for i in ids[::step]:
                    conn.execute(
                        "select public.record_usage(user_id => %s, model => 'gpt-4o-mini',"
                        " input_tokens => 1000, output_tokens => 100, request_id => %s,"
                        " occurred_at => %s)",
                        (user_id, i, now),
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=batch, args=(n * 10,)) for n in range(4)]
    threads += [threading.Thread(target=singles, args=(n + 1,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert scalar(
        db, "select count(*) from public.usage_records where request_id = any(%s)", ids
    ) == len(ids)
    assert scalar(
        db, "select count(*) from private.usage_request_ids where request_id = any(%s)", ids
    ) == len(ids)
    assert scalar(db, "select balance from public.user_balances where user_id = %s", user_id) == (
        Decimal(10) - len(ids) * Decimal("0.00021")
    )
    assert (
        scalar(db, "select count(*) from public.balance_audit() where user_id = %s", user_id) == 0
    )
