"""The money functions under concurrent callers (the races users of other meters hit).

Threads each own their supabase-py client (or psycopg connection), start together on a barrier
and are bounded in number and time: a deadlock or a lost update shows up as an error, a thread
that never finishes, a duplicate row or a non-empty `balance_audit()`.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from app.errors import InsufficientBalance, TokenmeterError
from app.meter import AsyncMeter, Meter
from app.models import Reservation, UsageResult
from supabase import AsyncClientOptions, Client, acreate_client

PASSWORD = "correct-horse-9"
TIMEOUT = 90  # seconds for a whole concurrent run: far above normal (a few s), below hanging
T = TypeVar("T")


@pytest.fixture()
def service_meter(new_client: Callable[[str], Client], service_key: str) -> Callable[[], Meter]:
    """A fresh service Meter (its own HTTP connection pool) per call: one per thread."""
    return lambda: Meter(new_client(service_key))


def run_threads(workers: int, work: Callable[[int, threading.Barrier], T]) -> list[T]:
    """Runs work(i, barrier) on `workers` threads at once; re-raises the first error; fails
    if they are not all done within TIMEOUT."""
    barrier = threading.Barrier(workers, timeout=30)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, i, barrier) for i in range(workers)]
        return [future.result(timeout=TIMEOUT) for future in futures]


def rid() -> str:
    return f"req-{uuid.uuid4()}"


def scalar(db: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


# ── record_usage: one hot user, 16 threads, retries racing their originals ─────────────────
def test_record_usage_sixteen_threads_with_retries_charges_each_request_once(
    sign_up, service_meter, db
):
    threads, requests = 16, 96
    user_id = sign_up()
    service_meter().top_up(user_id=user_id, amount=Decimal(100), reference=rid())
    rng = random.Random(20251018)
    payloads = {rid(): (rng.randint(1, 5000), rng.randint(0, 2000)) for _ in range(requests)}
    # Each request is sent 1-4 times; copies are queued next to each other so that different
    # threads send them at the same moment (a client retrying on a timeout).
    blocks = [[request_id] * rng.randint(1, 4) for request_id in payloads]
    rng.shuffle(blocks)
    queue = [request_id for block in blocks for request_id in block]
    cursor = iter(queue)
    lock = threading.Lock()

    def work(_i: int, barrier: threading.Barrier) -> list[UsageResult]:
        meter = service_meter()
        done: list[UsageResult] = []
        barrier.wait()
        while True:
            with lock:
                request_id = next(cursor, None)
            if request_id is None:
                return done
            input_tokens, output_tokens = payloads[request_id]
            done.append(
                meter.record_usage(
                    user_id=user_id,
                    model="gpt-4o-mini",
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    request_id=request_id,
                )
            )

    results = [r for batch in run_threads(threads, work) for r in batch]
    assert len(results) == len(queue) > requests  # every call answered, none raised

    by_request: dict[str, list[UsageResult]] = defaultdict(list)
    for result in results:
        by_request[result.request_id].append(result)
    assert set(by_request) == set(payloads)
    for request_id, answers in by_request.items():
        assert len({a.usage_id for a in answers}) == 1, request_id
        assert len({a.cost for a in answers}) == 1, request_id
        assert sum(not a.replayed for a in answers) == 1, request_id  # charged exactly once

    total = sum(answers[0].cost for answers in by_request.values())
    assert (
        scalar(db, "select count(*) from public.usage_records where user_id = %s", user_id)
        == requests
    )
    assert (
        scalar(
            db,
            "select count(distinct reference) from public.balance_movements"
            " where user_id = %s and kind = 'usage'",
            user_id,
        )
        == requests
    )
    assert (
        scalar(
            db,
            "select count(*) from public.balance_movements where user_id = %s and kind = 'usage'",
            user_id,
        )
        == requests
    )
    assert (
        scalar(db, "select balance from public.user_balances where user_id = %s", user_id)
        == Decimal(100) - total
    )
    assert service_meter().audit() == []


# ── record_usage_batch: overlapping batches over shared users, in random orders ───────────
def test_record_usage_batch_concurrent_overlapping_batches_no_deadlock_no_duplicate(
    sign_up, service_meter, db
):
    threads, users, per_batch = 8, 4, 40
    user_ids = [sign_up() for _ in range(users)]
    rng = random.Random(7)
    pool = [
        {
            "user_id": rng.choice(user_ids),
            "model": "claude-haiku-4-5",
            "input_tokens": rng.randint(1, 3000),
            "output_tokens": rng.randint(1, 500),
            "request_id": rid(),
        }
        for _ in range(120)
    ]
    # Every batch holds a random third of the same records in its own order: the same request
    # ids and balance rows are contended by every thread.
    batches = [rng.sample(pool, per_batch) for _ in range(threads)]

    def work(i: int, barrier: threading.Barrier) -> Any:
        meter = service_meter()
        barrier.wait()
        return meter.record_usage_batch(records=batches[i])

    outcomes = run_threads(threads, work)
    assert all(o.failed == 0 for o in outcomes)
    sent = {r["request_id"] for batch in batches for r in batch}
    first_charges: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        for item in outcome.results:
            assert item.usage is not None
            first_charges[item.usage.request_id] += not item.usage.replayed
    assert set(first_charges) == sent and set(first_charges.values()) == {1}
    recorded = scalar(
        db, "select count(*) from public.usage_records where user_id = any(%s::uuid[])", user_ids
    )
    assert recorded == len(sent)
    assert service_meter().audit() == []


# ── reserve_credit: 100 concurrent holds of 1 against a balance of 10 ──────────────────────
def test_reserve_hundred_concurrent_holds_against_ten_exactly_ten_succeed(
    sign_up, service_meter, db
):
    threads, attempts = 25, 100
    user_id = sign_up()
    service_meter().top_up(user_id=user_id, amount=Decimal(10), reference=rid())
    per_thread = attempts // threads

    def work(_i: int, barrier: threading.Barrier) -> list[Reservation | TokenmeterError]:
        meter = service_meter()
        outcomes: list[Reservation | TokenmeterError] = []
        barrier.wait()
        for _ in range(per_thread):
            try:
                outcomes.append(meter.reserve(user_id=user_id, request_id=rid(), amount=Decimal(1)))
            except TokenmeterError as error:
                outcomes.append(error)
        return outcomes

    outcomes = [o for chunk in run_threads(threads, work) for o in chunk]
    assert len(outcomes) == attempts
    holds = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if not isinstance(o, Reservation)]
    assert len(holds) == 10
    assert all(isinstance(o, InsufficientBalance) for o in refused), {type(o) for o in refused}
    assert all(h.available is not None and h.available >= 0 for h in holds)
    assert (
        scalar(
            db,
            "select count(*) from public.credit_reservations where user_id = %s"
            " and status = 'held'",
            user_id,
        )
        == 10
    )
    snapshot = service_meter().balance(user_id=user_id)
    assert (snapshot.balance, snapshot.held, snapshot.available) == (10, 10, 0)


def test_reserve_hundred_concurrent_holds_over_sql_connections_exactly_ten_succeed(
    sign_up, service_meter, db_url
):
    """The same race straight on the database as service_role (no gateway pool in between):
    25 connections, 4 holds each, all in flight together."""
    threads, attempts = 25, 100
    user_id = sign_up()
    service_meter().top_up(user_id=user_id, amount=Decimal(10), reference=rid())

    def work(_i: int, barrier: threading.Barrier) -> list[str]:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("set role service_role")
            codes: list[str] = []
            barrier.wait()
            for _ in range(attempts // threads):
                try:
                    conn.execute("select public.reserve_credit(%s, %s, 1)", (user_id, rid()))
                    codes.append("ok")
                except psycopg.Error as error:
                    codes.append(error.diag.message_primary or "?")
            return codes

    codes = [c for chunk in run_threads(threads, work) for c in chunk]
    assert codes.count("ok") == 10
    assert codes.count("insufficient_balance") == attempts - 10
    snapshot = service_meter().balance(user_id=user_id)
    assert (snapshot.held, snapshot.available) == (10, 0)


# ── settle and release racing new holds on the same balance ───────────────────────────────
def test_settle_release_and_reserve_interleaved_keep_holds_within_balance(
    sign_up, service_meter, db
):
    threads, rounds = 12, 6
    user_id = sign_up()
    service_meter().top_up(user_id=user_id, amount=Decimal(5), reference=rid())

    def work(i: int, barrier: threading.Barrier) -> int:
        meter = service_meter()
        barrier.wait()
        granted = 0
        for _ in range(rounds):
            request_id = rid()
            try:
                meter.reserve(
                    user_id=user_id,
                    request_id=request_id,
                    amount=Decimal("0.5"),
                    model="gpt-4o-mini",
                )
            except InsufficientBalance:
                continue
            granted += 1
            if i % 2:
                meter.settle(request_id=request_id, input_tokens=1000, output_tokens=100)
            else:
                meter.release(request_id=request_id)
        return granted

    granted = sum(run_threads(threads, work))
    assert granted >= 10  # 5 / 0.5: at least the first ten holds always fit
    snapshot = service_meter().balance(user_id=user_id)
    assert snapshot.held == 0 and snapshot.available == snapshot.balance
    settled = db.execute(
        "select count(*), coalesce(sum(cost), 0) from public.usage_records where user_id = %s",
        (user_id,),
    ).fetchone()
    assert settled is not None
    assert snapshot.balance == Decimal(5) - settled[1]
    assert db.execute(
        "select count(*) from public.credit_reservations where user_id = %s and status = 'held'",
        (user_id,),
    ).fetchone() == (0,)
    assert service_meter().audit() == []


def test_top_up_same_reference_concurrently_credits_once(sign_up, service_meter, db):
    threads = 10
    user_id = sign_up()
    reference = rid()

    def work(_i: int, barrier: threading.Barrier) -> bool:
        meter = service_meter()
        barrier.wait()
        return meter.top_up(user_id=user_id, amount=Decimal("1.5"), reference=reference).replayed

    replayed = run_threads(threads, work)
    assert replayed.count(False) == 1
    assert db.execute(
        "select balance from public.user_balances where user_id = %s", (user_id,)
    ).fetchone() == (Decimal("1.5"),)
    assert db.execute(
        "select count(*) from public.ledger_entries where reference = %s", (reference,)
    ).fetchone() == (1,)


def test_reserve_same_request_concurrently_replays_the_one_hold(sign_up, service_meter, db):
    """Retries of one reservation racing the original (a client retrying on a timeout) get the
    original hold back (replayed), never insufficient_balance because of their own hold."""
    threads = 10
    user_id = sign_up()
    service_meter().top_up(user_id=user_id, amount=Decimal(1), reference=rid())
    request_id = rid()

    def work(_i: int, barrier: threading.Barrier) -> Reservation | TokenmeterError:
        meter = service_meter()
        barrier.wait()
        try:
            return meter.reserve(user_id=user_id, request_id=request_id, amount=Decimal(1))
        except TokenmeterError as error:
            return error

    outcomes = run_threads(threads, work)
    refused = [o for o in outcomes if not isinstance(o, Reservation)]
    assert refused == [], f"{len(refused)} retries refused: {refused[:1]}"
    holds = [o for o in outcomes if isinstance(o, Reservation)]
    assert len({h.reservation_id for h in holds}) == 1
    assert sum(not h.replayed for h in holds) == 1
    assert db.execute(
        "select count(*) from public.credit_reservations where request_id = %s", (request_id,)
    ).fetchone() == (1,)


def test_reserve_retry_while_original_uncommitted_replays_the_hold(sign_up, service_meter, db_url):
    """The same race made deterministic on two SQL sessions as service_role: the original
    reservation is inserted but not yet committed when its retry arrives; once the original
    commits, the retry must answer with that hold (replayed), not insufficient_balance."""
    user_id = sign_up()
    service_meter().top_up(user_id=user_id, amount=Decimal(1), reference=rid())
    request_id = rid()
    with psycopg.connect(db_url) as original, psycopg.connect(db_url, autocommit=True) as retry:
        original.execute("set role service_role")
        retry.execute("set role service_role")
        original.execute("select public.reserve_credit(%s, %s, 1)", (user_id, request_id))

        def send_retry(_i: int, _barrier: threading.Barrier) -> dict[str, Any] | str:
            try:
                row = retry.execute(
                    "select public.reserve_credit(%s, %s, 1)", (user_id, request_id)
                ).fetchone()
                assert row is not None
                return dict(row[0])
            except psycopg.Error as error:
                return error.diag.message_primary or "?"

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(send_retry, 0, threading.Barrier(1))
            # The retry is now waiting for the original's lock on the balance row.
            waiting = False
            for _ in range(100):
                waiting = _waiting_on_lock(db_url, retry.info.backend_pid)
                if waiting:
                    break
                threading.Event().wait(0.05)
            assert waiting, "the retry never waited for the original's lock"
            original.commit()
            outcome = pending.result(timeout=TIMEOUT)
    assert isinstance(outcome, dict), f"the retry was refused: {outcome}"
    assert outcome["replayed"] is True and outcome["status"] == "held"


def _waiting_on_lock(db_url: str, pid: int) -> bool:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
    return bool(row and row[0])


async def test_async_meter_gathered_reservations_against_five_exactly_five_succeed(
    sign_up, service_meter, api_url, service_key
):
    """AsyncMeter under asyncio.gather: 30 holds of 1 in flight on one client, balance 5."""
    user_id = sign_up()
    service_meter().top_up(user_id=user_id, amount=Decimal(5), reference=rid())
    http = httpx.AsyncClient(timeout=60)
    try:
        client = await acreate_client(
            api_url, service_key, AsyncClientOptions(auto_refresh_token=False, httpx_client=http)
        )
        meter = AsyncMeter(client)
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(
                    meter.reserve(user_id=user_id, request_id=rid(), amount=Decimal(1))
                    for _ in range(30)
                ),
                return_exceptions=True,
            ),
            timeout=TIMEOUT,
        )
    finally:
        await http.aclose()
    holds = [o for o in outcomes if isinstance(o, Reservation)]
    assert len(holds) == 5
    assert all(isinstance(o, InsufficientBalance) for o in outcomes if o not in holds)
    snapshot = service_meter().balance(user_id=user_id)
    assert (snapshot.held, snapshot.available) == (5, 0)
