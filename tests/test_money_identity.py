"""Money paths of issue 9 (1.) through the API (supabase-py as the service) and, for the races,
two SQL sessions.

1. A replay is the same request: a retry of record_usage, settle_usage or record_usage_batch
   under a stored request_id that differs in any argument the stored row keeps is a 409
   idempotency_conflict naming it, in its own transaction (each HTTP call is one), so an
   occurred_at left out means "when the call is recorded" and is compared as such
   (migration 20251130000004).
2. Re-pricing never credits refunded usage: a refunded request's net charge stays what the
   refund left, whichever order refund and re-prices come in, also when they race
   (20251130000004).
Every test ends with `balance_audit()` empty.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from app.client import call
from app.errors import IdempotencyConflict
from app.meter import Meter
from app.pricing import Pricing
from supabase import Client

TIMEOUT = 60  # seconds for a call waiting on another session's lock
Model = tuple[str, str]  # (provider, model)
T0 = datetime.now(UTC) - timedelta(hours=1)

# The original call of every identity test, and one change per argument the row keeps: the
# argument (which the PT409 detail must name) and the value the retry sends (None = left out).
ORIGINAL: dict[str, Any] = {
    "input_tokens": 100,
    "output_tokens": 50,
    "cached_input_tokens": 10,
    "metadata": {"images": "2", "tag": "x"},
    "occurred_at": T0.isoformat(),
    "latency_ms": 120,
    "status": "success",
}
CHANGES: list[tuple[str, Any]] = [
    ("input_tokens", 101),
    ("output_tokens", 49),
    ("cached_input_tokens", 0),
    ("metadata", {"images": "500", "tag": "x"}),
    ("metadata", {"images": 2, "tag": "x"}),
    ("metadata", {"images": "2"}),
    ("metadata", None),
    ("occurred_at", (T0 + timedelta(microseconds=1)).isoformat()),
    ("occurred_at", None),
    ("latency_ms", 121),
    ("latency_ms", None),
    ("status", "error"),
]
CHANGE_IDS = [
    "input_tokens", "output_tokens", "cached_input_tokens", "images_500", "images_as_number",
    "metadata_key_dropped", "metadata_left_out", "occurred_at_1us_later", "occurred_at_left_out",
    "latency_ms", "latency_ms_left_out", "status",
]  # fmt: skip


def rid() -> str:
    return f"req-{uuid.uuid4()}"


def rpc(client: Client, name: str, args: dict[str, Any]) -> Any:
    return call(
        lambda: client.rpc(name, {k: v for k, v in args.items() if v is not None}).execute()
    ).data


def changed(base: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    return {**base, field: value}


def usage_rows(db: psycopg.Connection, request_id: str) -> tuple[int, int]:
    """(usage rows, balance movements) of a request."""
    row = db.execute(
        "select (select count(*) from public.usage_records where request_id = %s),"
        " (select count(*) from public.balance_movements where reference = %s)",
        (request_id, request_id),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def audit(db: psycopg.Connection) -> list[Any]:
    return db.execute("select * from public.balance_audit()").fetchall()


@pytest.fixture()
def image_model(pricing: Pricing) -> tuple[str, str]:
    """(provider, model) at 1e-6 per input token, 2e-6 per output, 5e-7 cached, 0.01 per image."""
    provider, model = f"test-{uuid.uuid4().hex[:8]}", f"img-{uuid.uuid4().hex[:8]}"
    pricing.set(
        provider=provider, model=model, input="0.000001", output="0.000002",
        cached_input="0.0000005", per_image="0.01", unit="token",
        effective_from=datetime.now(UTC) - timedelta(days=30),
    )  # fmt: skip
    return provider, model


@pytest.fixture()
def funded(sign_up: Callable[[], str], service: Client) -> Callable[[str], str]:
    """A new user topped up with `amount`."""

    def make(amount: str) -> str:
        user_id = sign_up()
        Meter(service).top_up(user_id=user_id, amount=Decimal(amount), reference=rid())
        return user_id

    return make


# ── 1. A replay is the same request ────────────────────────────────────────────────────────
def test_record_usage_retry_with_other_image_count_is_conflict_not_cheap_replay(
    service, image_model, funded, db
):
    """The issue's repro: 1 image recorded at $0.01, then 500 images under the same
    request_id answered 200 replayed at $0.01."""
    provider, model = image_model
    user_id, request_id = funded("10"), rid()
    meter = Meter(service)
    args = dict(user_id=user_id, provider=provider, model=model, input_tokens=0, output_tokens=0,
                request_id=request_id)  # fmt: skip
    first = meter.record_usage(**args, metadata={"images": "1"})
    assert first.cost == Decimal("0.01")
    with pytest.raises(IdempotencyConflict) as info:
        meter.record_usage(**args, metadata={"images": "500"})
    assert info.value.detail is not None and "(metadata differs)" in info.value.detail
    assert meter.record_usage(**args, metadata={"images": "1"}).replayed
    assert usage_rows(db, request_id) == (1, 1)
    assert audit(db) == []


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=CHANGE_IDS)
def test_record_usage_retry_changing_one_field_conflicts_naming_it(
    service, image_model, funded, db, field, value
):
    provider, model = image_model
    user_id, request_id = funded("10"), rid()
    original = {**ORIGINAL, "user_id": user_id, "provider": provider, "model": model,
                "request_id": request_id}  # fmt: skip
    first = rpc(service, "record_usage", original)
    assert Decimal(first["cost"]) == Decimal("0.020195") and not first["replayed"]
    with pytest.raises(IdempotencyConflict) as info:
        rpc(service, "record_usage", changed(original, field, value))
    assert info.value.detail == (
        f"request_id {request_id} was already recorded with another payload ({field} differs)"
    )
    # The identical call, in its own transaction, is still a replay of the original.
    again = rpc(service, "record_usage", original)
    assert again["replayed"] and again["usage_id"] == first["usage_id"]
    assert usage_rows(db, request_id) == (1, 1)
    assert audit(db) == []


def test_record_usage_retry_for_another_user_model_or_provider_conflicts(
    service, image_model, funded, pricing, db
):
    provider, model = image_model
    user_id, other_user, request_id = funded("10"), funded("10"), rid()
    original = {**ORIGINAL, "user_id": user_id, "provider": provider, "model": model,
                "request_id": request_id}  # fmt: skip
    rpc(service, "record_usage", original)
    for field, value in (("user_id", other_user), ("model", "gpt-4o"), ("provider", "openai")):
        with pytest.raises(IdempotencyConflict) as info:
            rpc(service, "record_usage", changed(original, field, value))
        assert info.value.detail is not None and f"({field} differs)" in info.value.detail
    # The provider left out: the row does not keep whether the original named one.
    assert rpc(service, "record_usage", changed(original, "provider", None))["replayed"]
    assert usage_rows(db, request_id) == (1, 1)
    assert audit(db) == []


def test_record_usage_occurred_at_left_out_replays_across_transactions(
    service, image_model, funded, db
):
    """Each HTTP call is its own transaction, so a left-out occurred_at defaults to another
    now() each time: it means "when recorded", and matches an original that also left it out
    (or the exact time the result reported), never another time."""
    provider, model = image_model
    user_id = funded("10")
    base = {"user_id": user_id, "provider": provider, "model": model, "input_tokens": 10,
            "output_tokens": 0}  # fmt: skip
    implicit = {**base, "request_id": rid()}
    first = rpc(service, "record_usage", implicit)
    assert rpc(service, "record_usage", implicit)["replayed"]
    assert rpc(service, "record_usage", {**implicit, "occurred_at": first["occurred_at"]})[
        "replayed"
    ]
    with pytest.raises(IdempotencyConflict) as info:
        rpc(service, "record_usage", {**implicit, "occurred_at": T0.isoformat()})
    assert info.value.detail is not None and "(occurred_at differs)" in info.value.detail
    # Named at first: leaving it out on the retry is another time ("now").
    explicit = {**base, "request_id": rid(), "occurred_at": T0.isoformat()}
    rpc(service, "record_usage", explicit)
    with pytest.raises(IdempotencyConflict) as info:
        rpc(service, "record_usage", {**explicit, "occurred_at": None})
    assert info.value.detail is not None and "(occurred_at differs)" in info.value.detail
    assert audit(db) == []


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=CHANGE_IDS)
def test_settle_usage_retry_changing_one_field_conflicts_naming_it(
    service, image_model, funded, db, field, value
):
    provider, model = image_model
    user_id, request_id = funded("10"), rid()
    Meter(service).reserve(
        user_id=user_id, request_id=request_id, amount=Decimal(1), model=model, provider=provider
    )
    original = {**ORIGINAL, "request_id": request_id}
    first = rpc(service, "settle_usage", original)
    assert (
        Decimal(first["cost"]) == Decimal("0.020195") and first["reservation_status"] == "settled"
    )
    with pytest.raises(IdempotencyConflict) as info:
        rpc(service, "settle_usage", changed(original, field, value))
    assert info.value.detail == (
        f"request_id {request_id} was already recorded with another payload ({field} differs)"
    )
    assert rpc(service, "settle_usage", original)["replayed"]
    assert usage_rows(db, request_id) == (1, 1)
    assert audit(db) == []


def test_settle_usage_retry_naming_another_model_or_provider_conflicts(
    service, image_model, funded, db
):
    provider, model = image_model
    user_id, request_id = funded("10"), rid()
    Meter(service).reserve(
        user_id=user_id, request_id=request_id, amount=Decimal(1), model=model, provider=provider
    )
    original = {**ORIGINAL, "request_id": request_id}
    rpc(service, "settle_usage", original)
    for field, value in (("model", "gpt-4o"), ("provider", "openai")):
        with pytest.raises(IdempotencyConflict) as info:
            rpc(service, "settle_usage", changed(original, field, value))
        assert info.value.detail is not None and f"({field} differs)" in info.value.detail
    assert rpc(service, "settle_usage", {**original, "model": model, "provider": provider})[
        "replayed"
    ]
    assert usage_rows(db, request_id) == (1, 1)


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=CHANGE_IDS)
def test_record_usage_batch_retry_changing_one_field_conflicts_naming_it(
    service, image_model, funded, db, field, value
):
    """Both ways a batch meets a stored row: stored before the batch (a retry of the whole
    batch), and stored by an earlier record of the same batch."""
    provider, model = image_model
    user_id = funded("10")
    meter = Meter(service)

    def record(request_id: str, **change: Any) -> dict[str, Any]:
        rec = {**ORIGINAL, "user_id": user_id, "provider": provider, "model": model,
               "request_id": request_id, **change}  # fmt: skip
        return {k: v for k, v in rec.items() if v is not None}

    stored_before = rid()
    assert meter.record_usage_batch(records=[record(stored_before)]).recorded == 1
    retry = meter.record_usage_batch(
        records=[record(stored_before), record(stored_before, **{field: value})]
    )
    assert (retry.recorded, retry.replayed, retry.failed) == (0, 1, 1)
    in_batch = rid()
    dup = meter.record_usage_batch(records=[record(in_batch), record(in_batch, **{field: value})])
    assert (dup.recorded, dup.replayed, dup.failed) == (1, 0, 1)
    for result, request_id in ((retry.results[1], stored_before), (dup.results[1], in_batch)):
        assert result.error is not None and result.error.code == "PT409"
        assert result.error.detail == (
            f"request_id {request_id} was already recorded with another payload ({field} differs)"
        )
        assert usage_rows(db, request_id) == (1, 1)
    assert audit(db) == []


def test_record_usage_retry_racing_uncommitted_original_conflicts_on_other_metadata(
    image_model, funded, db_url
):
    """The other replay path of record_usage: the original is inserted but not committed when
    a retry with other images arrives; the retry waits on the request_id's unique index, then
    finds the committed row and must refuse it (not answer it as a replay)."""
    provider, model = image_model
    user_id, request_id = funded("10"), rid()
    sql = ("select public.record_usage(%s, %s, 0, 0, %s, provider => %s,"
           " metadata => %s::jsonb) ->> 'cost'")  # fmt: skip
    with psycopg.connect(db_url) as original, psycopg.connect(db_url, autocommit=True) as retry:
        for conn in (original, retry):
            conn.execute("set role service_role")
        original.execute(sql, (user_id, model, request_id, provider, '{"images": "1"}'))

        def send_retry() -> str:
            try:
                retry.execute(sql, (user_id, model, request_id, provider, '{"images": "500"}'))
                return "no error"
            except psycopg.Error as error:
                return f"{error.sqlstate} {error.diag.message_primary}: {error.diag.message_detail}"

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(send_retry)
            assert wait_until_blocked(db_url, retry.info.backend_pid), "the retry never waited"
            original.commit()
            outcome = pending.result(timeout=TIMEOUT)
    assert outcome == (
        f"PT409 idempotency_conflict: request_id {request_id} was already recorded with another"
        " payload (metadata differs)"
    )


def wait_until_blocked(db_url: str, pid: int) -> bool:
    """Whether session `pid` is waiting on a lock within a few seconds."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(200):
            row = conn.execute(
                "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (pid,)
            ).fetchone()
            if row and row[0]:
                return True
            threading.Event().wait(0.05)
    return False


# ── 2. Re-pricing never credits refunded usage ─────────────────────────────────────────────
@pytest.fixture()
def repriced(pricing: Pricing, funded, service) -> Callable[[], tuple[str, Model, str]]:
    """A user topped up with 1 and ONE request 3 days ago of 1000 input tokens of a new model
    at 0.0000035 (0.0035, the issue's figures): (user_id, (provider, model), request_id)."""

    def make() -> tuple[str, Model, str]:
        provider, model = f"test-{uuid.uuid4().hex[:8]}", f"rp-{uuid.uuid4().hex[:8]}"
        set_price(pricing, provider, model, "0.0000035", days_ago=30)
        user_id, request_id = funded("1"), rid()
        used = Meter(service).record_usage(
            user_id=user_id, provider=provider, model=model, input_tokens=1000, output_tokens=0,
            request_id=request_id, occurred_at=datetime.now(UTC) - timedelta(days=3),
        )  # fmt: skip
        assert used.cost == Decimal("0.0035")
        return user_id, (provider, model), request_id

    return make


def set_price(pricing: Pricing, provider: str, model: str, input_price: str, *, days_ago: float):
    pricing.set(
        provider=provider, model=model, input=input_price, output="0", unit="token",
        effective_from=datetime.now(UTC) - timedelta(days=days_ago),
    )  # fmt: skip


def reprice(pricing: Pricing, model: Model, new_price: str, *, days_ago: float) -> Any:
    """A back-dated price version for `model`, then reprice_usage of it over the last 5 days."""
    provider, name = model
    set_price(pricing, provider, name, new_price, days_ago=days_ago)
    now = datetime.now(UTC)
    return pricing.reprice(since=now - timedelta(days=5), until=now, model=name, provider=provider)


def refund(service: Client, request_id: str, amount: str | None = None) -> Decimal:
    return Decimal(rpc(service, "refund_usage", {"request_id": request_id, "reason": "test",
                                                 "amount": amount})["amount"])  # fmt: skip


def net_charge(db: psycopg.Connection, user_id: str) -> Decimal:
    """What the user paid for their one request: the top-up of 1 minus the balance."""
    row = db.execute(
        "select 1 - balance from public.user_balances where user_id = %s", (user_id,)
    ).fetchone()
    assert row is not None
    return Decimal(row[0])


def test_reprice_after_full_refund_credits_nothing(repriced, pricing, service, db):
    """The issue's repro: refund, then a lower back-dated price, then reprice_usage credited
    the user again (net -0.00175 on a 0.0035 request)."""
    user_id, model, request_id = repriced()
    assert refund(service, request_id) == Decimal("0.0035")
    result = reprice(pricing, model, "0.00000175", days_ago=4)
    assert (result.changed, result.total_delta, result.adjustments) == (0, Decimal(0), [])
    assert net_charge(db, user_id) == 0
    # and again, at a higher price: still nothing to charge
    assert reprice(pricing, model, "0.00001", days_ago=3.5).changed == 0
    assert net_charge(db, user_id) == 0
    assert audit(db) == []


def test_refund_after_reprice_returns_the_repriced_cost_and_later_reprices_skip_it(
    repriced, pricing, service, db
):
    user_id, model, request_id = repriced()
    assert reprice(pricing, model, "0.00000175", days_ago=4).total_delta == Decimal("-0.00175")
    assert net_charge(db, user_id) == Decimal("0.00175")
    assert refund(service, request_id) == Decimal("0.00175")
    assert net_charge(db, user_id) == 0
    assert reprice(pricing, model, "0.00001", days_ago=3.5).changed == 0
    assert net_charge(db, user_id) == 0
    assert audit(db) == []


def test_reprice_twice_then_refund_then_reprice_nets_zero(repriced, pricing, service, db):
    user_id, model, request_id = repriced()
    assert reprice(pricing, model, "0.000002", days_ago=4).total_delta == Decimal("-0.0015")
    assert reprice(pricing, model, "0.000001", days_ago=3.5).total_delta == Decimal("-0.001")
    assert net_charge(db, user_id) == Decimal("0.001")
    assert refund(service, request_id) == Decimal("0.001")
    assert reprice(pricing, model, "0.0000001", days_ago=3.25).changed == 0
    assert net_charge(db, user_id) == 0
    assert audit(db) == []


def test_reprice_after_partial_refund_keeps_what_the_refund_left(repriced, pricing, service, db):
    user_id, model, request_id = repriced()
    assert refund(service, request_id, "0.001") == Decimal("0.001")
    assert reprice(pricing, model, "0.0000001", days_ago=4).changed == 0
    assert net_charge(db, user_id) == Decimal("0.0025")
    assert audit(db) == []


@pytest.mark.parametrize("first", ["reprice", "refund"])
def test_refund_and_reprice_racing_net_zero_either_order(repriced, pricing, db_url, db, first):
    """Two SQL sessions: the first call is done but not committed when the second arrives; the
    second waits on the usage row and then sees what the first committed. Refund first: the
    reprice skips the request. Reprice first: the refund gives back the re-priced cost."""
    user_id, (provider, model), request_id = repriced()
    set_price(pricing, provider, model, "0.00000175", days_ago=4)
    now = datetime.now(UTC)
    calls = {
        "reprice": ("select public.reprice_usage(%s, %s, model => %s) ->> 'changed'",
                    (now - timedelta(days=5), now, model)),
        "refund": ("select public.refund_usage(%s, 'race') ->> 'amount'", (request_id,)),
    }  # fmt: skip
    second = "refund" if first == "reprice" else "reprice"
    with psycopg.connect(db_url) as one, psycopg.connect(db_url, autocommit=True) as two:
        for conn in (one, two):
            conn.execute("set role service_role")
        one.execute(*calls[first])

        def run_second() -> str:
            row = two.execute(*calls[second]).fetchone()
            assert row is not None
            return str(row[0])

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(run_second)
            assert wait_until_blocked(db_url, two.info.backend_pid), "the second never waited"
            one.commit()
            answer = pending.result(timeout=TIMEOUT)
    # refund second: the re-priced cost; reprice second: nothing changed
    assert answer == ("0.00175" if second == "refund" else "0")
    assert net_charge(db, user_id) == 0
    assert audit(db) == []
