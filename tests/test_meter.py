"""The billing core through the Meter facade (sync `Meter` and `AsyncMeter`) against the stack.

Every test signs its users up through the Auth API (supabase-py, anon key), then meters them as
the service. Expected money is computed here with `Decimal` from the price rows, and what the
API wrote is checked straight in the database (`db`, as postgres): a failed call writes nothing,
a retried call charges once, and `balance_audit()` stays empty.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from conftest import random_email

from app.client import call
from app.errors import (
    IdempotencyConflict,
    InsufficientBalance,
    InvalidInput,
    InvalidUsage,
    NotFound,
    PriceMissing,
    TokenmeterError,
    UnknownModel,
)
from app.meter import AsyncMeter, Meter
from app.models import BatchResult, Reservation, UsageResult
from supabase import AsyncClientOptions, Client, acreate_client

PASSWORD = "correct-horse-9"
FREE_MODEL = ("openrouter", "meta-llama/llama-3.3-70b-instruct:free")


# ── fixtures and helpers ──────────────────────────────────────────────────────────────────
@pytest.fixture(params=["sync", "async"])
async def meter(
    request: pytest.FixtureRequest, api_url: str, service_key: str, service: Client
) -> AsyncIterator[Meter | AsyncMeter]:
    """The service's Meter or AsyncMeter: tests taking it run once with each."""
    if request.param == "sync":
        yield Meter(service)
        return
    http = httpx.AsyncClient(timeout=30)
    client = await acreate_client(
        api_url, service_key, AsyncClientOptions(auto_refresh_token=False, httpx_client=http)
    )
    yield AsyncMeter(client)
    await http.aclose()


@pytest.fixture()
def custom_model(db: psycopg.Connection) -> Iterator[Callable[..., tuple[str, str]]]:
    """Adds a price row under a random provider/model (removed afterwards)."""
    made: list[tuple[str, str]] = []

    def make(
        input_price: str,
        output_price: str,
        *,
        cached_price: str | None = None,
        request_price: str = "0",
        model: str | None = None,
        pricing_type: str = "paid",
        long_context: tuple[int, str, str] | None = None,
    ) -> tuple[str, str]:
        key = (f"test-{uuid.uuid4().hex[:8]}", model or f"model-{uuid.uuid4().hex[:8]}")
        db.execute(
            "insert into public.model_pricing (provider_id, model_id, price_per_input_token,"
            " price_per_output_token, price_per_cached_input_token, price_per_request,"
            " pricing_type) values (%s, %s, %s, %s, %s, %s, %s)",
            (*key, input_price, output_price, cached_price, request_price, pricing_type),
        )
        if long_context is not None:
            db.execute(
                "update public.model_pricing set long_context_threshold = %s,"
                " price_per_input_token_above_threshold = %s,"
                " price_per_output_token_above_threshold = %s"
                " where provider_id = %s and model_id = %s",
                (*long_context, *key),
            )
        made.append(key)
        return key

    yield make
    for provider, model in made:
        # The price row, then the catalog row its insert created (the audit trail stays).
        for table in ("model_pricing", "models"):
            db.execute(
                f"delete from public.{table} where provider_id = %s and model_id = %s",
                (provider, model),
            )


async def run(meter: Meter | AsyncMeter, method: str, **kwargs: Any) -> Any:
    result = getattr(meter, method)(**kwargs)
    return await result if inspect.isawaitable(result) else result


async def fails(
    error_type: type[TokenmeterError], meter: Meter | AsyncMeter, method: str, **kwargs: Any
) -> TokenmeterError:
    with pytest.raises(TokenmeterError) as info:
        await run(meter, method, **kwargs)
    assert isinstance(info.value, error_type), f"{type(info.value).__name__}: {info.value}"
    return info.value


def rid() -> str:
    return f"req-{uuid.uuid4()}"


def price(db: psycopg.Connection, provider: str, model: str) -> dict[str, Decimal]:
    row = db.execute(
        "select price_per_input_token, price_per_output_token,"
        " coalesce(price_per_cached_input_token, price_per_input_token), price_per_request"
        " from public.model_pricing where provider_id = %s and model_id = %s"
        " and effective_from <= now() order by effective_from desc limit 1",
        (provider, model),
    ).fetchone()
    assert row is not None
    return dict(zip(("input", "output", "cached", "request"), row, strict=True))


def expected_cost(
    unit: dict[str, Decimal], input_tokens: int, output_tokens: int, cached: int = 0
) -> Decimal:
    return (
        (input_tokens - cached) * unit["input"]
        + cached * unit["cached"]
        + output_tokens * unit["output"]
        + unit["request"]
    )


def stored_balance(db: psycopg.Connection, user_id: str) -> Decimal | None:
    row = db.execute(
        "select balance from public.user_balances where user_id = %s", (user_id,)
    ).fetchone()
    return None if row is None else row[0]


def ledger(db: psycopg.Connection, user_id: str) -> list[tuple[str, Decimal, str]]:
    return [
        tuple(r)
        for r in db.execute(  # type: ignore[misc]
            "select kind, amount, reference from public.balance_movements where user_id = %s"
            " order by created_at, source, id",
            (user_id,),
        ).fetchall()
    ]


def usage_count(db: psycopg.Connection, request_id: str) -> int:
    row = db.execute(
        "select count(*) from public.usage_records where request_id = %s", (request_id,)
    ).fetchone()
    return int(row[0])  # type: ignore[index]


def reservation_count(db: psycopg.Connection, request_id: str) -> int:
    row = db.execute(
        "select count(*) from public.credit_reservations where request_id = %s", (request_id,)
    ).fetchone()
    return int(row[0])  # type: ignore[index]


async def funded_user(meter: Meter | AsyncMeter, sign_up: Callable[[], str], amount: str) -> str:
    user_id = sign_up()
    await run(meter, "top_up", user_id=user_id, amount=Decimal(amount), reference=rid())
    return user_id


async def funded_hold(
    meter: Meter | AsyncMeter, sign_up: Callable[[], str], **reserve: Any
) -> tuple[str, str, Reservation]:
    """A user funded with 1 and a hold on a new request_id: (user_id, request_id, the hold)."""
    user_id = await funded_user(meter, sign_up, "1")
    request_id = rid()
    hold = await run(meter, "reserve", user_id=user_id, request_id=request_id, **reserve)
    return user_id, request_id, hold


# ── signup ────────────────────────────────────────────────────────────────────────────────
async def test_signup_through_auth_api_creates_balance_at_zero(meter, sign_up, db):
    user_id = sign_up()
    assert stored_balance(db, user_id) == Decimal(0)
    assert ledger(db, user_id) == []
    snapshot = await run(meter, "balance", user_id=user_id)
    assert (snapshot.balance, snapshot.held, snapshot.available) == (0, 0, 0)
    assert snapshot.currency == "USD"


def test_signup_with_configured_grant_credits_grant_with_ledger_entry(sign_up, db, service):
    previous = db.execute("select signup_grant from public.billing_settings").fetchone()[0]  # type: ignore[index]
    db.execute("update public.billing_settings set signup_grant = '2.500000000001'")
    try:
        user_id = sign_up()
    finally:
        db.execute("update public.billing_settings set signup_grant = %s", (previous,))
    grant = Decimal("2.500000000001")
    assert stored_balance(db, user_id) == grant
    assert ledger(db, user_id) == [("signup_grant", grant, f"signup:{user_id}")]
    assert Meter(service).balance(user_id=user_id).balance == grant
    assert Meter(service).audit() == []
    # The setting is restored: the next user starts at 0 again.
    assert stored_balance(db, sign_up()) == previous


# ── record_usage ──────────────────────────────────────────────────────────────────────────
async def test_record_usage_priced_model_charges_exact_cost_in_ledger(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "10")
    unit = price(db, "openai", "gpt-4o")
    request_id = rid()
    result = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-4o",
        input_tokens=1234,
        output_tokens=567,
        cached_input_tokens=200,
        request_id=request_id,
        metadata={"route": "chat"},
        latency_ms=850,
    )
    cost = expected_cost(unit, 1234, 567, 200)
    assert isinstance(result, UsageResult)
    assert (result.cost, result.provider, result.model) == (cost, "openai", "gpt-4o")
    assert result.price_per_input_token == unit["input"]
    assert result.price_per_cached_input_token == unit["cached"]
    assert result.balance == Decimal(10) - cost and not result.negative_balance
    assert not result.replayed and result.status == "success"
    assert stored_balance(db, user_id) == Decimal(10) - cost
    assert ledger(db, user_id)[-1] == ("usage", -cost, request_id)
    [record] = await run(meter, "usage", user_id=user_id)
    assert (record.request_id, record.cost, record.metadata) == (
        request_id,
        cost,
        {"route": "chat"},
    )
    assert (record.input_tokens, record.output_tokens, record.cached_input_tokens) == (
        1234,
        567,
        200,
    )
    assert await run(meter, "audit") == []


async def test_record_usage_same_request_retried_replays_without_second_charge(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "1")
    request_id = rid()
    first = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="claude-haiku-4-5",
        input_tokens=100,
        output_tokens=50,
        request_id=request_id,
    )
    # The same arguments (naming the provider the original left out is still the same request;
    # any other difference is a 409: tests/test_money_identity.py).
    retry = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="claude-haiku-4-5",
        provider="anthropic",
        input_tokens=100,
        output_tokens=50,
        request_id=request_id,
    )
    assert retry.replayed and not first.replayed
    assert (retry.usage_id, retry.cost, retry.balance) == (
        first.usage_id,
        first.cost,
        first.balance,
    )
    assert usage_count(db, request_id) == 1
    assert [kind for kind, _, _ in ledger(db, user_id)] == ["top_up", "usage"]
    assert stored_balance(db, user_id) == Decimal(1) - first.cost


@pytest.mark.parametrize(
    "change",
    [
        {"input_tokens": 101},
        {"output_tokens": 49},
        {"cached_input_tokens": 1},
        {"model": "gpt-4o"},
        {"provider": "anthropic"},
        {"user_id": "other"},
    ],
    ids=["input_tokens", "output_tokens", "cached_input_tokens", "model", "provider", "user"],
)
async def test_record_usage_conflicting_retry_raises_conflict_and_writes_nothing(
    meter, sign_up, db, change
):
    user_id = await funded_user(meter, sign_up, "1")
    other_user = sign_up()
    request_id = rid()
    original = {
        "user_id": user_id,
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 50,
        "request_id": request_id,
    }
    first = await run(meter, "record_usage", **original)
    retry = {**original, **change}
    if retry["user_id"] == "other":
        retry["user_id"] = other_user
    # Same request_id, another payload: refused, never answered as a replay of the original.
    error = await fails(IdempotencyConflict, meter, "record_usage", **retry)
    assert error.code == "idempotency_conflict"
    assert usage_count(db, request_id) == 1
    assert stored_balance(db, user_id) == Decimal(1) - first.cost
    assert stored_balance(db, other_user) == 0 and ledger(db, other_user) == []


async def test_settle_conflicting_retry_other_model_raises_conflict(meter, sign_up, db):
    user_id, request_id, _ = await funded_hold(
        meter, sign_up, amount=Decimal("0.1"), model="gpt-4o-mini", provider="openai"
    )
    first = await run(meter, "settle", request_id=request_id, input_tokens=100, output_tokens=50)
    await fails(
        IdempotencyConflict,
        meter,
        "settle",
        request_id=request_id,
        model="gpt-4o",
        input_tokens=100,
        output_tokens=50,
    )
    assert stored_balance(db, user_id) == Decimal(1) - first.cost


async def test_record_usage_unknown_model_raises_and_writes_nothing(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "1")
    request_id = rid()
    await fails(
        UnknownModel,
        meter,
        "record_usage",
        user_id=user_id,
        model=f"gpt-{uuid.uuid4().hex[:6]}",
        input_tokens=10,
        output_tokens=10,
        request_id=request_id,
    )
    await fails(
        UnknownModel,
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-4o",
        provider="anthropic",
        input_tokens=10,
        output_tokens=10,
        request_id=request_id,
    )
    await fails(
        PriceMissing,
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-image-1",
        input_tokens=10,
        output_tokens=10,
        request_id=request_id,
    )
    assert usage_count(db, request_id) == 0
    assert stored_balance(db, user_id) == Decimal(1)
    assert [kind for kind, _, _ in ledger(db, user_id)] == ["top_up"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"input_tokens": 10_000_001}, "input_tokens"),
        ({"output_tokens": -1}, "output_tokens"),
        ({"cached_input_tokens": 101}, "cached_input_tokens"),
        ({"cached_input_tokens": -1}, "cached_input_tokens"),
        ({"request_id": ""}, "request_id"),
        ({"request_id": "x" * 256}, "request_id"),
        ({"model": "  "}, "model"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"blob": "x" * 20_000}}, "metadata"),
        ({"occurred_at": datetime.now(UTC) + timedelta(hours=1)}, "occurred_at"),
        ({"occurred_at": datetime.now(UTC) - timedelta(days=401)}, "occurred_at"),
        ({"latency_ms": 86_400_001}, "latency_ms"),
        ({"status": "ok"}, "status"),
    ],
)
async def test_record_usage_bad_input_raises_invalid_usage_and_writes_nothing(
    meter, sign_up, db, overrides, field
):
    user_id = await funded_user(meter, sign_up, "1")
    kwargs = {
        "user_id": user_id,
        "model": "gpt-4o",
        "input_tokens": 100,
        "output_tokens": 10,
        "request_id": rid(),
        **overrides,
    }
    error = await fails(InvalidUsage, meter, "record_usage", **kwargs)
    assert error.field == field, error.detail
    assert stored_balance(db, user_id) == Decimal(1)
    assert [kind for kind, _, _ in ledger(db, user_id)] == ["top_up"]
    assert (
        db.execute(
            "select count(*) from public.usage_records where user_id = %s", (user_id,)
        ).fetchone()[0]
        == 0
    )  # type: ignore[index]


async def test_record_usage_unknown_user_raises_not_found_and_writes_nothing(meter, db):
    request_id = rid()
    error = await fails(
        NotFound,
        meter,
        "record_usage",
        user_id=str(uuid.uuid4()),
        model="gpt-4o",
        input_tokens=1,
        output_tokens=1,
        request_id=request_id,
    )
    assert error.code == "user_not_found"
    assert usage_count(db, request_id) == 0


async def test_record_usage_free_model_costs_zero_without_ledger_entry(meter, sign_up, db):
    user_id = sign_up()
    provider, model = FREE_MODEL
    result = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model=model,
        provider=provider,
        input_tokens=5000,
        output_tokens=5000,
        request_id=rid(),
    )
    assert result.cost == 0 and result.balance == 0 and not result.negative_balance
    assert ledger(db, user_id) == []
    assert stored_balance(db, user_id) == 0


async def test_record_usage_over_balance_reports_negative_balance_and_keeps_record(
    meter, sign_up, db
):
    user_id = await funded_user(meter, sign_up, "0.001")
    unit = price(db, "anthropic", "claude-opus-4-1")
    request_id = rid()
    result = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="claude-opus-4-1",
        input_tokens=1000,
        output_tokens=1000,
        request_id=request_id,
    )
    cost = expected_cost(unit, 1000, 1000)
    assert result.cost == cost and cost > Decimal("0.001")
    assert result.negative_balance and result.balance == Decimal("0.001") - cost
    assert usage_count(db, request_id) == 1
    assert stored_balance(db, user_id) == Decimal("0.001") - cost
    check = await run(meter, "check_balance", user_id=user_id, estimated_cost=Decimal(0))
    assert check.balance < 0 and check.available < 0
    # Enforcement is before the call: no hold can be taken on a negative balance.
    await fails(
        InsufficientBalance,
        meter,
        "reserve",
        user_id=user_id,
        request_id=rid(),
        amount=Decimal("0.000000000001"),
    )
    # A second usage still records (usage is a fact) and deepens the debt.
    second = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="claude-opus-4-1",
        input_tokens=1,
        output_tokens=0,
        request_id=rid(),
    )
    assert second.negative_balance and second.balance == result.balance - second.cost
    assert await run(meter, "audit") == []


async def test_record_usage_after_price_change_retry_replays_original_price(
    meter, sign_up, db, custom_model
):
    provider, model = custom_model("0.000001", "0.000002")
    user_id = sign_up()
    request_id = rid()
    first = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model=model,
        provider=provider,
        input_tokens=1000,
        output_tokens=1000,
        request_id=request_id,
    )
    assert first.cost == Decimal("0.003")
    db.execute(
        "update public.model_pricing set price_per_input_token = 0.00001"
        " where provider_id = %s and model_id = %s",
        (provider, model),
    )
    retry = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model=model,
        provider=provider,
        input_tokens=1000,
        output_tokens=1000,
        request_id=request_id,
    )
    assert retry.replayed and retry.cost == Decimal("0.003")
    assert retry.price_per_input_token == Decimal("0.000001")
    fresh = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model=model,
        provider=provider,
        input_tokens=1000,
        output_tokens=1000,
        request_id=rid(),
    )
    assert fresh.cost == Decimal("0.012")
    assert stored_balance(db, user_id) == Decimal("-0.015")


async def test_record_usage_model_at_two_providers_without_provider_charges_its_default(
    meter, sign_up, custom_model, service, db
):
    shared = f"model-{uuid.uuid4().hex[:8]}"
    provider_a, _ = custom_model("0.000001", "0.000001", model=shared)
    provider_b, _ = custom_model("0.000002", "0.000002", model=shared)
    user_id = sign_up()

    def bare() -> dict:
        return dict(
            user_id=user_id, model=shared, input_tokens=1, output_tokens=1, request_id=rid()
        )

    # The first provider of a name is its default; the record keeps the resolved provider.
    first = await run(meter, "record_usage", **bare())
    assert (first.provider, first.cost) == (provider_a, Decimal("0.000002"))
    service.rpc("set_default_provider", {"model": shared, "provider": provider_b}).execute()
    second = await run(meter, "record_usage", **bare())
    assert (second.provider, second.cost) == (provider_b, Decimal("0.000004"))

    # Without a default the name is ambiguous, and the error names the candidates.
    db.execute("update public.models set is_default = false where model_id = %s", (shared,))
    error = await fails(InvalidInput, meter, "record_usage", **bare())
    assert error.code == "ambiguous_model"
    assert provider_a in str(error) and provider_b in str(error)
    result = await run(meter, "record_usage", **{**bare(), "provider": provider_a})
    assert result.cost == Decimal("0.000002")


# ── money is exact ────────────────────────────────────────────────────────────────────────
async def test_money_twelve_decimal_cost_and_21_digit_balance_come_back_exactly(
    meter, sign_up, db, service, custom_model
):
    provider, model = custom_model(
        "0.000000000007", "0.000003000001", request_price="0.000000000003"
    )
    user_id = sign_up()
    top = Decimal("123456789.123456789012")  # 21 significant digits: a float keeps 15-17
    moved = await run(meter, "top_up", user_id=user_id, amount=top, reference=rid())
    assert moved.amount == top and moved.balance == top
    request_id = rid()
    result = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model=model,
        provider=provider,
        input_tokens=3,
        cached_input_tokens=1,
        output_tokens=7,
        request_id=request_id,
    )
    # No cached price: cached tokens cost the input price.
    cost = 3 * Decimal("0.000000000007") + 7 * Decimal("0.000003000001") + Decimal("0.000000000003")
    assert cost == Decimal("0.000021000031")
    assert result.cost == cost
    assert result.balance == Decimal("123456789.123435788981") == top - cost
    assert (await run(meter, "balance", user_id=user_id)).balance == top - cost
    [record] = await run(meter, "usage", user_id=user_id)
    assert record.cost == cost
    assert stored_balance(db, user_id) == top - cost
    estimate = await run(
        meter, "estimate_cost", model=model, provider=provider, input_tokens=3, max_output_tokens=7
    )
    assert estimate.cost == Decimal("0.000021000031")
    # On the wire, money is a JSON string, never a float.
    raw = service.rpc("check_balance", {"user_id": user_id}).execute().data
    assert raw["balance"] == "123456789.123435788981"


# ── estimate_cost ─────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o"),
        ("openai", "gpt-5-nano"),
        ("anthropic", "claude-sonnet-4-5"),
        ("google", "gemini-2.5-pro"),
        FREE_MODEL,
    ],
)
async def test_estimate_cost_same_tokens_matches_recorded_charge(
    meter, sign_up, db, provider, model
):
    user_id = sign_up()
    estimate = await run(
        meter,
        "estimate_cost",
        model=model,
        provider=provider,
        input_tokens=4321,
        max_output_tokens=1234,
    )
    charged = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model=model,
        provider=provider,
        input_tokens=4321,
        output_tokens=1234,
        request_id=rid(),
    )
    assert estimate.cost == charged.cost == expected_cost(price(db, provider, model), 4321, 1234)
    assert (estimate.provider, estimate.model, estimate.currency) == (provider, model, "USD")


async def test_estimate_cost_with_cached_tokens_matches_recorded_charge(meter, sign_up, db):
    user_id = sign_up()
    estimate = await run(
        meter,
        "estimate_cost",
        model="gpt-5",
        input_tokens=10_000,
        cached_input_tokens=8_000,
        max_output_tokens=500,
    )
    charged = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-5",
        input_tokens=10_000,
        cached_input_tokens=8_000,
        output_tokens=500,
        request_id=rid(),
    )
    assert (
        estimate.cost
        == charged.cost
        == expected_cost(price(db, "openai", "gpt-5"), 10_000, 500, 8_000)
    )


@pytest.mark.parametrize("input_tokens", [1000, 1001])
async def test_estimate_cost_long_context_tier_matches_recorded_charge(
    meter, sign_up, custom_model, input_tokens
):
    # Above 1000 prompt tokens the whole request moves to the tier's prices.
    provider, model = custom_model(
        "0.000001", "0.000004", long_context=(1000, "0.000002", "0.000008")
    )
    user_id = sign_up()
    estimate = await run(
        meter,
        "estimate_cost",
        model=model,
        provider=provider,
        input_tokens=input_tokens,
        max_output_tokens=100,
    )
    charged = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model=model,
        provider=provider,
        input_tokens=input_tokens,
        output_tokens=100,
        request_id=rid(),
    )
    tier = input_tokens > 1000
    unit_in, unit_out = (
        (Decimal("0.000002"), Decimal("0.000008"))
        if tier
        else (Decimal("0.000001"), Decimal("0.000004"))
    )
    assert estimate.cost == charged.cost == input_tokens * unit_in + 100 * unit_out


def test_estimate_cost_as_anon_and_signed_in_user_matches_service(new_client, anon_key, service):
    signed_in = new_client(anon_key)
    signed_in.auth.sign_up({"email": random_email(), "password": PASSWORD})
    costs = {
        Meter(client).estimate_cost(model="o4-mini", input_tokens=999, max_output_tokens=111).cost
        for client in (new_client(anon_key), signed_in, service)
    }
    assert costs == {999 * Decimal("0.0000011") + 111 * Decimal("0.0000044")}


@pytest.mark.parametrize("overrides", [{"input_tokens": -1}, {"max_output_tokens": 10_000_001}])
async def test_estimate_cost_bad_tokens_raises_invalid_usage(meter, overrides):
    kwargs = {"model": "gpt-4o", "input_tokens": 1, "max_output_tokens": 1, **overrides}
    error = await fails(InvalidUsage, meter, "estimate_cost", **kwargs)
    assert error.field == next(iter(overrides))


# ── price_for ─────────────────────────────────────────────────────────────────────────────
def test_price_for_known_model_returns_its_price_row(service):
    row = call(
        lambda: (
            service.rpc("price_for", {"provider": None, "model": "o3"})
            .select("provider_id,model_id,price_per_output_token::text")
            .execute()
        )
    ).data
    assert row == {
        "provider_id": "openai",
        "model_id": "o3",
        "price_per_output_token": "0.000008000000",
    }


@pytest.mark.parametrize(
    ("args", "error_type", "code"),
    [
        ({"provider": None, "model": "no-such-model-xyz"}, UnknownModel, "unknown_model"),
        ({"provider": "google", "model": "gpt-4o"}, UnknownModel, "unknown_model"),
        ({"provider": None, "model": " "}, InvalidUsage, "invalid_usage"),
    ],
)
def test_price_for_unpriceable_model_raises_typed_error(service, args, error_type, code):
    with pytest.raises(error_type) as info:
        call(lambda: service.rpc("price_for", args).execute())
    assert info.value.code == code


# ── top_up, adjust_balance, check_balance ────────────────────────────────────────────────
async def test_top_up_same_reference_retried_credits_once(meter, sign_up, db):
    user_id = sign_up()
    reference = f"pay_{uuid.uuid4().hex}"
    first = await run(meter, "top_up", user_id=user_id, amount=Decimal("5.25"), reference=reference)
    retry = await run(
        meter, "top_up", user_id=user_id, amount=Decimal("5.250"), reference=reference
    )
    assert not first.replayed and retry.replayed
    assert retry.ledger_entry_id == first.ledger_entry_id and retry.balance == Decimal("5.25")
    assert ledger(db, user_id) == [("top_up", Decimal("5.25"), reference)]
    # The same reference for another user is a conflict, not a second credit.
    other = sign_up()
    await fails(
        IdempotencyConflict,
        meter,
        "top_up",
        user_id=other,
        amount=Decimal("5.25"),
        reference=reference,
    )
    assert stored_balance(db, other) == 0


@pytest.mark.parametrize("amount", ["0", "-1", "1000000000", "NaN", "Infinity", "0.0000000000001"])
async def test_top_up_invalid_amount_raises_invalid_input_and_writes_nothing(
    meter, sign_up, db, amount
):
    user_id = sign_up()
    error = await fails(
        InvalidInput, meter, "top_up", user_id=user_id, amount=Decimal(amount), reference=rid()
    )
    assert (error.code, error.field) == ("invalid_amount", "amount")
    assert ledger(db, user_id) == [] and stored_balance(db, user_id) == 0


async def test_top_up_unknown_user_raises_not_found(meter):
    error = await fails(
        NotFound, meter, "top_up", user_id=str(uuid.uuid4()), amount=Decimal(1), reference=rid()
    )
    assert error.code == "user_not_found"


async def test_adjust_balance_negative_amount_debits_with_reason(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "3")
    reference = rid()
    moved = await run(
        meter,
        "adjust_balance",
        user_id=user_id,
        amount=Decimal("-1.75"),
        reason="duplicate charge reversed",
        reference=reference,
    )
    assert (moved.kind, moved.amount, moved.balance) == (
        "adjustment",
        Decimal("-1.75"),
        Decimal("1.25"),
    )
    error = await fails(
        InvalidInput,
        meter,
        "adjust_balance",
        user_id=user_id,
        amount=Decimal(1),
        reason=" ",
        reference=rid(),
    )
    assert (error.code, error.field) == ("invalid_argument", "reason")
    await fails(
        IdempotencyConflict,
        meter,
        "adjust_balance",
        user_id=user_id,
        amount=Decimal("-1.75"),
        reason="another reason",
        reference=reference,
    )
    assert stored_balance(db, user_id) == Decimal("1.25")


async def test_check_balance_estimated_cost_sets_allowed(meter, sign_up):
    user_id = await funded_user(meter, sign_up, "2")
    await run(meter, "reserve", user_id=user_id, request_id=rid(), amount=Decimal("0.5"))
    within = await run(meter, "check_balance", user_id=user_id, estimated_cost=Decimal("1.5"))
    over = await run(
        meter, "check_balance", user_id=user_id, estimated_cost=Decimal("1.500000000001")
    )
    assert within.allowed and not over.allowed
    assert (within.balance, within.held, within.available) == (2, Decimal("0.5"), Decimal("1.5"))
    assert over.estimated_cost == Decimal("1.500000000001")
    error = await fails(
        InvalidInput, meter, "check_balance", user_id=user_id, estimated_cost=Decimal(-1)
    )
    assert error.field == "estimated_cost"


# ── reservations ──────────────────────────────────────────────────────────────────────────
async def test_reserve_within_available_holds_and_replays(meter, sign_up, db):
    user_id, request_id, hold = await funded_hold(
        meter, sign_up, amount=Decimal("0.4"), model="gpt-4o"
    )
    assert (hold.status, hold.amount, hold.held, hold.available) == (
        "held",
        Decimal("0.4"),
        Decimal("0.4"),
        Decimal("0.6"),
    )
    assert (hold.provider, hold.model) == (None, "gpt-4o")
    again = await run(
        meter,
        "reserve",
        user_id=user_id,
        request_id=request_id,
        amount=Decimal("0.4"),
        model="gpt-4o",
    )
    assert again.replayed and again.reservation_id == hold.reservation_id
    assert again.held == Decimal("0.4")
    await fails(
        IdempotencyConflict,
        meter,
        "reserve",
        user_id=user_id,
        request_id=request_id,
        amount=Decimal("0.5"),
    )
    assert reservation_count(db, request_id) == 1
    assert stored_balance(db, user_id) == Decimal(1)  # a hold is not a charge


async def test_reserve_over_available_raises_insufficient_balance_and_holds_nothing(
    meter, sign_up, db
):
    user_id = await funded_user(meter, sign_up, "1")
    await run(meter, "reserve", user_id=user_id, request_id=rid(), amount=Decimal("0.7"))
    request_id = rid()
    await fails(
        InsufficientBalance,
        meter,
        "reserve",
        user_id=user_id,
        request_id=request_id,
        amount=Decimal("0.300000000001"),
    )
    assert reservation_count(db, request_id) == 0
    exact = await run(
        meter, "reserve", user_id=user_id, request_id=request_id, amount=Decimal("0.3")
    )
    assert exact.available == 0


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"amount": Decimal(0)}, "invalid_amount", "amount"),
        ({"amount": Decimal("-0.5")}, "invalid_amount", "amount"),
        ({"amount": Decimal("0.1000000000001")}, "invalid_amount", "amount"),
        ({"amount": Decimal("NaN")}, "invalid_amount", "amount"),
        ({"ttl_seconds": 0}, "invalid_argument", "ttl_seconds"),
        ({"ttl_seconds": 86_401}, "invalid_argument", "ttl_seconds"),
        ({"request_id": " "}, "invalid_argument", "request_id"),
    ],
)
async def test_reserve_bad_input_raises_invalid_input_and_holds_nothing(
    meter, sign_up, db, overrides, code, field
):
    user_id = await funded_user(meter, sign_up, "1")
    kwargs = {"user_id": user_id, "request_id": rid(), "amount": Decimal("0.1"), **overrides}
    error = await fails(InvalidInput, meter, "reserve", **kwargs)
    assert (error.code, error.field) == (code, field)
    assert db.execute(
        "select count(*) from public.credit_reservations where user_id = %s", (user_id,)
    ).fetchone() == (0,)


async def test_release_blank_request_raises_invalid_input(meter):
    error = await fails(InvalidInput, meter, "release", request_id="")
    assert (error.code, error.field) == ("invalid_argument", "request_id")


async def test_reserve_unpriceable_model_raises_and_holds_nothing(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "1")
    request_id = rid()
    await fails(
        UnknownModel,
        meter,
        "reserve",
        user_id=user_id,
        request_id=request_id,
        amount=Decimal("0.1"),
        model=f"nope-{uuid.uuid4().hex[:6]}",
    )
    await fails(
        PriceMissing,
        meter,
        "reserve",
        user_id=user_id,
        request_id=request_id,
        amount=Decimal("0.1"),
        model="gpt-image-1",
    )
    assert reservation_count(db, request_id) == 0


async def test_settle_after_reserve_charges_real_cost_and_releases_hold(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "1")
    request_id = rid()
    estimate = await run(
        meter, "estimate_cost", model="claude-sonnet-4-5", input_tokens=2000, max_output_tokens=4000
    )
    await run(
        meter,
        "reserve",
        user_id=user_id,
        request_id=request_id,
        amount=estimate.cost,
        model="claude-sonnet-4-5",
        provider="anthropic",
    )
    during = await run(meter, "balance", user_id=user_id)
    assert during.held == estimate.cost and during.available == 1 - estimate.cost
    # model/provider omitted: the reserved ones are used.
    settled = await run(
        meter, "settle", request_id=request_id, input_tokens=2000, output_tokens=321
    )
    cost = expected_cost(price(db, "anthropic", "claude-sonnet-4-5"), 2000, 321)
    assert settled.cost == cost < estimate.cost
    assert (settled.model, settled.user_id) == ("claude-sonnet-4-5", user_id)
    assert settled.reservation_status == "settled" and settled.reserved_amount == estimate.cost
    assert settled.balance == Decimal(1) - cost
    after = await run(meter, "balance", user_id=user_id)
    assert (after.balance, after.held, after.available) == (1 - cost, 0, 1 - cost)
    retry = await run(meter, "settle", request_id=request_id, input_tokens=2000, output_tokens=321)
    assert retry.replayed and retry.cost == cost
    assert stored_balance(db, user_id) == Decimal(1) - cost
    await fails(
        IdempotencyConflict,
        meter,
        "settle",
        request_id=request_id,
        input_tokens=2000,
        output_tokens=322,
    )
    assert await run(meter, "audit") == []


async def test_settle_real_cost_above_hold_charges_full_cost(meter, sign_up, db):
    user_id, request_id, _ = await funded_hold(
        meter, sign_up, amount=Decimal("0.000001"), model="gpt-4o"
    )
    settled = await run(
        meter, "settle", request_id=request_id, input_tokens=1000, output_tokens=1000
    )
    assert settled.cost == Decimal("0.0125")
    assert stored_balance(db, user_id) == Decimal("0.9875")


async def test_settle_already_recorded_request_releases_hold(meter, sign_up, db):
    """settle_usage promises 'charges it and releases the hold': when the usage of the held
    request was already recorded (record_usage with the same request_id, e.g. by another code
    path), settling must still close the hold instead of leaving it counting until it expires
    (charged AND held: the phantom hold of LiteLLM #27639 / #36926)."""
    user_id, request_id, _ = await funded_hold(
        meter, sign_up, amount=Decimal("0.5"), model="gpt-4o"
    )
    recorded = await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-4o",
        input_tokens=10,
        output_tokens=10,
        request_id=request_id,
    )
    settled = await run(meter, "settle", request_id=request_id, input_tokens=10, output_tokens=10)
    assert settled.replayed and settled.cost == recorded.cost  # charged once
    snapshot = await run(meter, "balance", user_id=user_id)
    assert snapshot.balance == 1 - recorded.cost
    assert (settled.reservation_status, snapshot.held) == ("settled", 0), (
        "the hold still counts after settle_usage returned"
    )


async def test_settle_bad_tokens_raises_invalid_usage_and_keeps_hold(meter, sign_up, db):
    user_id, request_id, _ = await funded_hold(
        meter, sign_up, amount=Decimal("0.2"), model="gpt-4o"
    )
    error = await fails(
        InvalidUsage, meter, "settle", request_id=request_id, input_tokens=-1, output_tokens=1
    )
    assert error.field == "input_tokens"
    assert usage_count(db, request_id) == 0
    snapshot = await run(meter, "balance", user_id=user_id)
    assert (snapshot.balance, snapshot.held) == (1, Decimal("0.2"))


async def test_release_reservation_frees_the_credit(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "1")
    request_id = rid()
    await run(meter, "reserve", user_id=user_id, request_id=request_id, amount=Decimal(1))
    await fails(
        InsufficientBalance,
        meter,
        "reserve",
        user_id=user_id,
        request_id=rid(),
        amount=Decimal("0.01"),
    )
    released = await run(meter, "release", request_id=request_id)
    assert released.released and released.status == "released"
    again = await run(meter, "release", request_id=request_id)
    assert again.released is False and again.status == "released"
    snapshot = await run(meter, "balance", user_id=user_id)
    assert (snapshot.held, snapshot.available) == (0, 1)
    await run(meter, "reserve", user_id=user_id, request_id=rid(), amount=Decimal(1))
    assert stored_balance(db, user_id) == 1 and usage_count(db, request_id) == 0


async def test_reserve_expired_hold_stops_counting(meter, sign_up, db):
    user_id = await funded_user(meter, sign_up, "1")
    request_id = rid()
    await run(
        meter, "reserve", user_id=user_id, request_id=request_id, amount=Decimal(1), ttl_seconds=1
    )
    assert (await run(meter, "balance", user_id=user_id)).available == 0
    await fails(
        InsufficientBalance,
        meter,
        "reserve",
        user_id=user_id,
        request_id=rid(),
        amount=Decimal("0.5"),
    )
    await asyncio.sleep(1.2)
    snapshot = await run(meter, "balance", user_id=user_id)
    assert (snapshot.held, snapshot.available) == (0, 1)
    replay = await run(
        meter, "reserve", user_id=user_id, request_id=request_id, amount=Decimal(1), ttl_seconds=1
    )
    assert replay.replayed and replay.status == "expired"
    fresh = await run(meter, "reserve", user_id=user_id, request_id=rid(), amount=Decimal(1))
    assert fresh.status == "held" and fresh.available == 0
    # Settling the expired hold still records the usage: it happened.
    settled = await run(
        meter, "settle", request_id=request_id, model="gpt-4o", input_tokens=100, output_tokens=0
    )
    assert settled.reservation_status == "settled" and settled.cost == Decimal("0.00025")
    assert usage_count(db, request_id) == 1


# ── record_usage_batch ────────────────────────────────────────────────────────────────────
async def test_record_usage_batch_mixed_records_returns_one_result_each(meter, sign_up, db):
    alice = await funded_user(meter, sign_up, "1")
    bob = sign_up()
    replayed_id, conflicting_id = rid(), rid()
    earlier = await run(
        meter,
        "record_usage",
        user_id=alice,
        model="gpt-4o",
        input_tokens=10,
        output_tokens=10,
        request_id=replayed_id,
    )
    await run(
        meter,
        "record_usage",
        user_id=alice,
        model="gpt-4o",
        input_tokens=20,
        output_tokens=20,
        request_id=conflicting_id,
    )
    ok_a, ok_b, bad_model, bad_tokens, no_user = rid(), rid(), rid(), rid(), rid()
    records = [
        {
            "user_id": alice,
            "model": "gpt-4o",
            "input_tokens": 1000,
            "output_tokens": 100,
            "request_id": ok_a,
            "metadata": {"n": 1},
        },
        {
            "user_id": bob,
            "model": "claude-haiku-4-5",
            "provider": "anthropic",
            "input_tokens": 500,
            "output_tokens": 50,
            "request_id": ok_b,
        },
        {
            "user_id": alice,
            "model": "gpt-4o",
            "input_tokens": 10,
            "output_tokens": 10,
            "request_id": replayed_id,
        },
        {
            "user_id": alice,
            "model": "gpt-4o",
            "input_tokens": 21,
            "output_tokens": 20,
            "request_id": conflicting_id,
        },
        {
            "user_id": alice,
            "model": "no-such-model",
            "input_tokens": 1,
            "output_tokens": 1,
            "request_id": bad_model,
        },
        {
            "user_id": alice,
            "model": "gpt-4o",
            "input_tokens": 1.5,
            "output_tokens": 1,
            "request_id": bad_tokens,
        },
        {
            "user_id": alice,
            "model": "gpt-4o",
            "input_tokens": 1000,
            "output_tokens": 100,
            "request_id": ok_a,
            "metadata": {"n": 1},
        },  # the same request twice in one batch: charged once
        {
            "user_id": str(uuid.uuid4()),
            "model": "gpt-4o",
            "input_tokens": 1,
            "output_tokens": 1,
            "request_id": no_user,
        },
        "not an object",
    ]
    batch = await run(meter, "record_usage_batch", records=records)
    assert isinstance(batch, BatchResult)
    assert (batch.recorded, batch.replayed, batch.failed) == (2, 2, 5)
    results = batch.results
    assert [r.index for r in results] == list(range(len(records)))
    assert [r.ok for r in results] == [True, True, True, False, False, False, True, False, False]
    errors = {r.index: (r.error.code, r.error.message) for r in results if r.error}
    assert errors == {
        3: ("PT409", "idempotency_conflict"),
        4: ("PT422", "unknown_model"),
        5: ("22023", "invalid_usage"),
        7: ("PT404", "user_not_found"),
        8: ("22023", "invalid_usage"),
    }
    assert results[5].request_id == bad_tokens
    cost_a = expected_cost(price(db, "openai", "gpt-4o"), 1000, 100)
    cost_b = expected_cost(price(db, "anthropic", "claude-haiku-4-5"), 500, 50)
    first, second, replay, dup = (results[i].usage for i in (0, 1, 2, 6))
    assert first is not None and second is not None and replay is not None and dup is not None
    assert (first.cost, second.cost) == (cost_a, cost_b)
    assert replay.replayed and replay.usage_id == earlier.usage_id
    assert dup.replayed and dup.usage_id == first.usage_id
    alice_after = (
        Decimal(1) - earlier.cost - expected_cost(price(db, "openai", "gpt-4o"), 20, 20) - cost_a
    )
    assert first.balance == replay.balance == alice_after == stored_balance(db, alice)
    assert second.balance == -cost_b and second.negative_balance
    for request_id in (bad_model, bad_tokens, no_user):
        assert usage_count(db, request_id) == 0
    assert usage_count(db, ok_a) == 1
    assert await run(meter, "audit") == []


@pytest.mark.parametrize("records", [[], [{}] * 1001])
async def test_record_usage_batch_empty_or_oversized_raises_invalid_input(meter, records):
    error = await fails(InvalidInput, meter, "record_usage_batch", records=records)
    assert (error.code, error.field) == ("invalid_argument", "records")


async def test_record_usage_batch_retry_after_price_goes_missing_replays(
    meter, sign_up, db, custom_model
):
    """A batch retry is answered from the stored record, as record_usage's is, even when the
    price list changed since (record_usage_batch promises the same idempotency)."""
    provider, model = custom_model("0.000001", "0.000001")
    user_id = sign_up()
    request_id = rid()
    record = {
        "user_id": user_id,
        "model": model,
        "provider": provider,
        "input_tokens": 10,
        "output_tokens": 10,
        "request_id": request_id,
    }
    first = await run(meter, "record_usage_batch", records=[record])
    assert first.recorded == 1
    db.execute(
        "update public.model_pricing set pricing_type = 'missing',"
        " price_per_input_token = null, price_per_output_token = null"
        " where provider_id = %s and model_id = %s",
        (provider, model),
    )
    single = await run(meter, "record_usage", **record)
    assert single.replayed  # record_usage: the stored record answers the retry
    retry = await run(meter, "record_usage_batch", records=[record])
    assert (retry.replayed, retry.failed) == (1, 0), retry.results[0].error


# ── refunds and repairs (service-only rpcs without a Meter method) ────────────────────────
def test_refund_usage_full_cost_once_and_retry_replays(sign_up, service, db):
    meter = Meter(service)
    user_id = sign_up()
    meter.top_up(user_id=user_id, amount=Decimal(1), reference=rid())
    request_id = rid()
    used = meter.record_usage(
        user_id=user_id,
        model="gpt-4.1",
        input_tokens=1000,
        output_tokens=1000,
        request_id=request_id,
    )
    args = {"request_id": request_id, "reason": "provider error"}
    refund = call(lambda: service.rpc("refund_usage", args).execute()).data
    assert Decimal(refund["amount"]) == used.cost and not refund["replayed"]
    retry = call(lambda: service.rpc("refund_usage", args).execute()).data
    assert retry["replayed"] and retry["ledger_entry_id"] == refund["ledger_entry_id"]
    assert stored_balance(db, user_id) == Decimal(1)
    with pytest.raises(IdempotencyConflict):
        call(lambda: service.rpc("refund_usage", {**args, "amount": "0.001"}).execute())
    with pytest.raises(NotFound) as info:
        call(lambda: service.rpc("refund_usage", {"request_id": rid(), "reason": "x"}).execute())
    assert info.value.code == "usage_not_found"
    assert meter.audit() == []


def test_refund_usage_more_than_cost_raises_invalid_input(sign_up, service, db):
    user_id = sign_up()
    request_id = rid()
    used = Meter(service).record_usage(
        user_id=user_id, model="gpt-4.1", input_tokens=10, output_tokens=10, request_id=request_id
    )
    with pytest.raises(InvalidInput) as info:
        call(
            lambda: service.rpc(
                "refund_usage",
                {
                    "request_id": request_id,
                    "reason": "goodwill",
                    "amount": str(used.cost + Decimal("0.000000000001")),
                },
            ).execute()
        )
    assert (info.value.code, info.value.field) == ("invalid_amount", "amount")
    assert stored_balance(db, user_id) == -used.cost


def test_repair_missing_balances_recreates_a_lost_balance_row(sign_up, service, db):
    user_id = sign_up()
    db.execute("delete from public.user_balances where user_id = %s", (user_id,))
    created = call(lambda: service.rpc("repair_missing_balances", {}).execute()).data
    assert created >= 1
    assert stored_balance(db, user_id) == 0
    assert ledger(db, user_id) == []


def test_meter_from_env_uses_supabase_env_settings(monkeypatch, api_url, service_key):
    monkeypatch.setenv("SUPABASE_URL", api_url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", service_key)
    meter = Meter.from_env()
    try:
        estimate = meter.estimate_cost(model="gpt-4.1-nano", input_tokens=10, max_output_tokens=10)
        assert estimate.cost == Decimal("0.000005")
        assert meter.audit() == []
    finally:
        meter.client.postgrest.aclose()  # the sync client's close (supabase-py's naming)


async def test_async_meter_from_env_uses_supabase_env_settings(monkeypatch, api_url, service_key):
    monkeypatch.setenv("SUPABASE_URL", api_url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", service_key)
    meter = await AsyncMeter.from_env()
    try:
        estimate = await meter.estimate_cost(
            model="gpt-4.1-nano", input_tokens=10, max_output_tokens=10
        )
        assert estimate.cost == Decimal("0.000005")
    finally:
        await meter.client.postgrest.aclose()


async def test_top_up_for_user_without_balance_row_creates_it(meter, sign_up, db):
    user_id = sign_up()
    db.execute("delete from public.user_balances where user_id = %s", (user_id,))
    moved = await run(meter, "top_up", user_id=user_id, amount=Decimal("0.5"), reference=rid())
    assert moved.balance == Decimal("0.5") == stored_balance(db, user_id)


def test_record_usage_batch_results_have_exactly_record_usage_keys_and_values(sign_up, db):
    """The set-based batch builds its results inline, not through private.usage_result: the
    keys, and the values of a replayed record, must match what record_usage returns."""
    user = sign_up()
    db.execute("select public.top_up(user_id => %s, amount => 10, reference => %s)", (user, rid()))
    first = rid()
    single = db.execute(
        "select public.record_usage(user_id => %s, model => 'gpt-4o', input_tokens => 10, "
        "output_tokens => 10, request_id => %s, metadata => '{\"images\": 0}')",
        (user, first),
    ).fetchone()[0]
    records = [
        {"user_id": user, "model": "gpt-4o", "input_tokens": 10, "output_tokens": 10,
         "request_id": first, "metadata": {"images": 0}},
        {"user_id": user, "model": "gpt-4o-mini", "input_tokens": 7, "output_tokens": 3,
         "request_id": rid()},
    ]  # fmt: skip
    batch = db.execute(
        "select public.record_usage_batch(records => %s::jsonb)", (json.dumps(records),)
    ).fetchone()[0]
    replayed, recorded = batch["results"]
    assert set(replayed) - {"index", "ok"} == set(single)
    assert set(recorded) - {"index", "ok"} == set(single)
    changed = {"replayed", "balance", "negative_balance"}
    assert {k: v for k, v in replayed.items() if k not in changed | {"index", "ok"}} == {
        k: v for k, v in single.items() if k not in changed
    }
    assert replayed["replayed"] is True and single["replayed"] is False
