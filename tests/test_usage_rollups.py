"""Usage rollups (issue 12 §3) under real concurrency: charges, retries, batches, refunds and a
re-price racing rollup_usage() runs on separate connections, then the summaries must equal the
sums over the raw usage records (and their refunds) for every hour, day and month; a record
whose transaction commits after a later id has been rolled up is still counted, once; and a
signed-in user reads only their own statistics through the REST API.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from app.cli import app
from supabase import Client

TIMEOUT = 120  # seconds for a whole concurrent run: far above normal, below hanging
PERIODS = ("hour", "day", "month")


def scalar(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def make_users(db: psycopg.Connection, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for uid in ids:
        db.execute(
            "insert into auth.users (id, email) values (%s, %s)",
            (uid, f"rollup-{uid}@example.test"),
        )
        db.execute("select public.top_up(%s, 1000, %s)", (uid, f"rollup-top-up-{uid}"))
    return ids


def catch_up(db: psycopg.Connection) -> None:
    for _ in range(100):
        if scalar(db, "select (public.rollup_usage() ->> 'behind')::bigint") == 0:
            return
    pytest.fail("rollup_usage() did not catch up")


def rolled(db: psycopg.Connection, users: list[str], period: str) -> set[tuple]:
    return set(
        db.execute(
            "select user_id::text, period_start, model_id, sum(requests), sum(input_tokens), "
            "sum(output_tokens), sum(cost), sum(refunded) from public.usage_summaries "
            "where user_id = any(%s::uuid[]) and period = %s and requests > 0 group by 1, 2, 3",
            (users, period),
        ).fetchall()
    )


def raw(db: psycopg.Connection, users: list[str], period: str) -> set[tuple]:
    return set(
        db.execute(
            "select u.user_id::text, date_trunc(%s, u.occurred_at, 'UTC'), u.model_id, count(*), "
            "sum(u.input_tokens), sum(u.output_tokens), sum(u.cost), coalesce(sum(l.amount), 0) "
            "from public.usage_records u left join public.ledger_entries l "
            "on l.kind = 'refund' and l.reference = u.request_id "
            "where u.user_id = any(%s::uuid[]) group by 1, 2, 3",
            (period, users),
        ).fetchall()
    )


def assert_rollups_equal_raw(db: psycopg.Connection, users: list[str]) -> None:
    for period in PERIODS:
        summaries, truth = rolled(db, users, period), raw(db, users, period)
        assert truth, "the test recorded nothing"
        assert summaries == truth, f"{period}: summaries differ from the raw rows"


def test_rollup_concurrent_charges_retries_refunds_reprice_equal_raw_sums(db, db_url):
    users = make_users(db, 4)
    model = f"rollup-model-{uuid.uuid4().hex[:8]}"
    db.execute(
        "select public.set_model_price('rollup-co', %s, 0.000001, 0.000002, "
        "effective_from => now() - interval '30 days')",
        (model,),
    )
    now = datetime.now(UTC)
    charged: list[str] = []
    charged_lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []
    barrier = threading.Barrier(11, timeout=30)

    def charger(slot: int) -> None:
        rng = random.Random(slot)
        with psycopg.connect(db_url, autocommit=True) as conn:
            barrier.wait()
            for n in range(40):
                request_id = f"rollup-{slot}-{n}-{uuid.uuid4().hex[:6]}"
                args = (
                    rng.choice(users), model, rng.randint(1, 5000), rng.randint(0, 500),
                    request_id, now - timedelta(minutes=rng.randint(0, 3 * 24 * 60)),
                    rng.choice([None, 120, 900]), rng.choice(["success", "success", "error"]),
                )  # fmt: skip
                call = (
                    "select public.record_usage(%s, %s, %s, %s, %s, 'rollup-co', "
                    "occurred_at => %s, latency_ms => %s, status => %s)"
                )
                conn.execute(call, args)
                if n % 5 == 0:  # the client's retry: a replay, charged once
                    replay = scalar(
                        conn, call.replace("select", "select (", 1) + ") ->> 'replayed'", *args
                    )
                    assert replay == "true"
                with charged_lock:
                    charged.append(request_id)

    def batcher(slot: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            barrier.wait()
            for n in range(6):
                records = [
                    {
                        "user_id": users[i % 15 % len(users)],
                        "provider": "rollup-co",
                        "model": model,
                        "input_tokens": 100 + i % 15,
                        "output_tokens": i % 15,
                        "request_id": f"rollup-batch-{slot}-{n}-{i % 15}",
                        "occurred_at": (now - timedelta(hours=i % 15)).isoformat(),
                    }
                    for i in range(20)
                ]  # fmt: skip  (5 duplicates per batch: replays inside the batch)
                conn.execute("select public.record_usage_batch(%s)", (Jsonb(records),))

    def refunder(slot: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            barrier.wait()
            refunded = 0
            while refunded < 25 and not done.is_set():
                with charged_lock:
                    candidate = charged[refunded * 7] if len(charged) > refunded * 7 else None
                if candidate is None:
                    time.sleep(0.01)
                    continue
                conn.execute("select public.refund_usage(%s, 'rollup test')", (candidate,))
                conn.execute("select public.refund_usage(%s, 'rollup test')", (candidate,))
                refunded += 1

    def repricer(slot: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            barrier.wait()
            time.sleep(0.5)
            # Lower: the differences folded into rows already rolled up are negative.
            conn.execute(
                "select public.set_model_price('rollup-co', %s, 0.0000005, 0.000002, "
                "effective_from => now() - interval '10 days')",
                (model,),
            )
            conn.execute(
                "select public.reprice_usage(now() - interval '5 days', now() + interval '1 hour', "
                "model => %s)",
                (model,),
            )

    def roller(slot: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            barrier.wait()
            while not done.is_set():
                conn.execute("select public.rollup_usage(max_rows => 50)")

    def run(work: Callable[[int], None], slot: int) -> None:
        try:
            work(slot)
        except BaseException as exc:
            errors.append(exc)
            done.set()

    workers = [charger] * 6 + [batcher] * 2 + [refunder, repricer, roller]
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        futures = [pool.submit(run, work, i) for i, work in enumerate(workers)]
        for future in futures[:-1]:
            future.result(timeout=TIMEOUT)
        done.set()
        futures[-1].result(timeout=TIMEOUT)
    assert not errors, errors[0]

    assert scalar(db, "select count(*) from public.usage_records where user_id = any(%s::uuid[])",
                  users) == 6 * 40 + 2 * 6 * 15  # fmt: skip
    refunds = scalar(db, "select count(*) from public.ledger_entries where kind = 'refund' "
                     "and user_id = any(%s::uuid[])", users)  # fmt: skip
    assert refunds == 25, "each refund once, its retry a replay"
    catch_up(db)
    assert_rollups_equal_raw(db, users)
    assert scalar(db, "select count(*) from public.usage_summary_adjustments "
                  "where user_id = any(%s::uuid[])", users) == 0  # fmt: skip
    repriced = scalar(db, "select count(*) from public.usage_records where user_id = any(%s::uuid[]) "
                      "and original_cost is not null", users)  # fmt: skip
    assert repriced > 0, "the re-price changed nothing: the test would not check it"


def test_rollup_record_committed_after_a_later_id_is_counted_once(db, db_url):
    users = make_users(db, 2)  # two: a charge locks its user's balance row
    catch_up(db)
    late = psycopg.connect(db_url)  # a transaction left open: its id is taken, not committed
    try:
        late.execute(
            "select public.record_usage(%s, 'gpt-4o-mini', 1000, 10, %s)",
            (users[0], f"rollup-late-{uuid.uuid4().hex}"),
        )
        late_id = scalar(
            late, "select max(id) from public.usage_records where user_id = %s", users[0]
        )
        db.execute(
            "select public.record_usage(%s, 'gpt-4o-mini', 7, 7, %s)",
            (users[1], f"rollup-early-{uuid.uuid4().hex}"),
        )
        first = scalar(db, "select public.rollup_usage()")
        assert first["rolled_up_to"] < late_id, "the rollup went past an id still in flight"
        assert first["pending_to"] >= late_id, "the id in flight waits as the checkpoint"
        late.commit()
    finally:
        late.close()
    catch_up(db)
    assert_rollups_equal_raw(db, users)
    assert scalar(db, "select sum(requests) from public.usage_summaries "
                  "where user_id = any(%s::uuid[]) and period = 'day'", users) == 2  # fmt: skip


def test_rollup_rolled_back_charge_does_not_hold_the_rollup_back(db, db_url):
    users = make_users(db, 2)  # two: a charge locks its user's balance row
    catch_up(db)
    with psycopg.connect(db_url) as aborted:
        aborted.execute(
            "select public.record_usage(%s, 'gpt-4o-mini', 1000, 10, %s)",
            (users[0], f"rollup-aborted-{uuid.uuid4().hex}"),
        )
        db.execute(
            "select public.record_usage(%s, 'gpt-4o-mini', 5, 5, %s)",
            (users[1], f"rollup-kept-{uuid.uuid4().hex}"),
        )
        assert scalar(db, "select public.rollup_usage()")["pending_to"] is not None
        aborted.rollback()
    catch_up(db)
    assert_rollups_equal_raw(db, users)
    assert scalar(db, "select sum(requests) from public.usage_summaries "
                  "where user_id = any(%s::uuid[]) and period = 'month'", users) == 1  # fmt: skip


def test_usage_statistics_views_signed_in_user_reads_only_own_rows(
    signed_up_user: Callable[[], tuple[str, Client]], db
):
    me, client = signed_up_user()
    other = make_users(db, 1)[0]
    db.execute("select public.top_up(%s, 10, %s)", (me, f"rollup-rest-{me}"))
    for who, tokens in ((me, 1000), (other, 2000)):
        db.execute(
            "select public.record_usage(%s, 'gpt-4o-mini', %s, 100, %s, latency_ms => 40)",
            (who, tokens, f"rollup-rest-{uuid.uuid4().hex}"),
        )
    catch_up(db)
    db.execute(
        "select public.record_usage(%s, 'gpt-4o-mini', 10, 0, %s)",
        (me, f"rollup-rest-tail-{uuid.uuid4().hex}"),
    )
    spend = client.table("user_daily_spend").select("*").execute().data
    assert {row["user_id"] for row in spend} == {me}
    expected = scalar(db, "select sum(cost) from public.usage_records where user_id = %s", me)
    assert sum(Decimal(str(row["cost"])) for row in spend) == expected
    stats = client.table("usage_statistics").select("*").execute().data
    assert {row["user_id"] for row in stats} == {me}
    assert sum(row["request_count"] for row in stats) == 2
    assert sum(row["total_tokens"] for row in stats) == 1110
    summaries = client.table("usage_summaries").select("user_id").execute().data
    assert {row["user_id"] for row in summaries} == {me}


def test_usage_rollup_cli_catches_up_and_reports_json(db):
    users = make_users(db, 1)
    db.execute(
        "select public.record_usage(%s, 'gpt-4o-mini', 100, 10, %s)",
        (users[0], f"rollup-cli-{uuid.uuid4().hex}"),
    )
    usage_id = scalar(db, "select max(id) from public.usage_records where user_id = %s", users[0])
    result = CliRunner().invoke(app, ["usage", "rollup", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["behind"] == 0 and report["rolled_up_to"] >= usage_id
    assert scalar(db, "select sum(requests) from public.usage_summaries "
                  "where user_id = %s and period = 'hour'", users[0]) == 1  # fmt: skip


def test_usage_rollup_cli_unreachable_database_exits_2_with_one_line():
    result = CliRunner().invoke(
        app, ["usage", "rollup", "--db-url", "postgresql://postgres:postgres@127.0.0.1:1/postgres"]
    )
    assert result.exit_code == 2
    assert "cannot reach the database" in result.output
    assert "Traceback" not in result.output


def test_stack_rollup_worker_folds_new_usage_without_being_called(db):
    users = make_users(db, 1)
    db.execute(
        "select public.record_usage(%s, 'gpt-4o-mini', 100, 10, %s)",
        (users[0], f"rollup-worker-{uuid.uuid4().hex}"),
    )
    usage_id = scalar(db, "select max(id) from public.usage_records where user_id = %s", users[0])
    deadline = time.monotonic() + 60  # the worker runs every 10 s
    while scalar(db, "select public.usage_rolled_up_to()") < usage_id:
        assert time.monotonic() < deadline, "the stack's rollup worker did not roll the record up"
        time.sleep(0.5)
    assert scalar(db, "select sum(requests) from public.usage_summaries "
                  "where user_id = %s and period = 'day'", users[0]) == 1  # fmt: skip
