"""Billing tables and functions as real users see them: supabase-py clients signed up through
the Auth API with the anon key (no minted tokens), against the local stack.

A user reads their own balance, ledger, usage and reservations, and nobody else's; they cannot
change a balance, insert a non-zero one, write any money table or call a service-only function.
What the denied calls did NOT write is checked in the database (`db`, as postgres).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from postgrest import APIError

from app.meter import Meter
from supabase import Client

PASSWORD = "correct-horse-9"


# ── fixtures and helpers ──────────────────────────────────────────────────────────────────
@pytest.fixture()
def anon(new_client: Callable[[str], Client], anon_key: str) -> Client:
    return new_client(anon_key)


@pytest.fixture()
def service(new_client: Callable[[str], Client], service_key: str) -> Meter:
    return Meter(new_client(service_key))


def denied(builder: Any) -> APIError:
    """Runs a request builder that must be refused with SQLSTATE 42501."""
    with pytest.raises(APIError) as info:
        builder.execute()
    assert info.value.code == "42501", repr(info.value)
    return info.value


def rid() -> str:
    return f"req-{uuid.uuid4()}"


def stored_balance(db: psycopg.Connection, user_id: str) -> Decimal | None:
    row = db.execute(
        "select balance from public.user_balances where user_id = %s", (user_id,)
    ).fetchone()
    return None if row is None else row[0]


def counts(db: psycopg.Connection, user_id: str) -> dict[str, int]:
    """Rows per money table for a user."""
    return {
        table: db.execute(
            f"select count(*) from public.{table} where user_id = %s", (user_id,)
        ).fetchone()[0]  # type: ignore[index]
        for table in ("ledger_entries", "usage_records", "credit_reservations")
    }


def activity(service: Meter, user_id: str) -> str:
    """Gives a user a top-up, a usage record and a hold; returns the usage's request_id."""
    service.top_up(user_id=user_id, amount=Decimal(2), reference=rid())
    request_id = rid()
    service.record_usage(
        user_id=user_id,
        model="gpt-4o-mini",
        input_tokens=1000,
        output_tokens=100,
        request_id=request_id,
    )
    service.reserve(user_id=user_id, request_id=rid(), amount=Decimal("0.25"))
    return request_id


# ── reading ───────────────────────────────────────────────────────────────────────────────
def test_new_user_reads_own_balance_at_zero(signed_up_user):
    user_id, client = signed_up_user()
    rows = client.table("user_balances").select("user_id,balance::text,currency").execute().data
    assert rows == [{"user_id": user_id, "balance": "0.000000000000", "currency": "USD"}]
    mine = client.rpc("my_balance", {}).execute().data
    assert mine == {
        "user_id": user_id,
        "balance": "0",
        "held": "0",
        "available": "0",
        "currency": "USD",
    }


def test_user_reads_own_balance_usage_ledger_and_holds_only(signed_up_user, service):
    alice, alice_client = signed_up_user()
    bob, _ = signed_up_user()
    alice_request = activity(service, alice)
    activity(service, bob)
    balances = alice_client.table("user_balances").select("user_id").execute().data
    assert balances == [{"user_id": alice}]
    usage = alice_client.table("usage_records").select("user_id,request_id,cost::text").execute()
    assert [(r["user_id"], r["request_id"]) for r in usage.data] == [(alice, alice_request)]
    assert usage.data[0]["cost"] == "0.000210000000"  # 1000 × 0.15/1M + 100 × 0.60/1M
    # Every movement of the balance: ledger entries and usage charges (20261129200001).
    ledger = (
        alice_client.table("balance_movements")
        .select("user_id,kind,amount::text")
        .order("created_at")
        .order("source")
        .execute()
    )
    assert ledger.data == [
        {"user_id": alice, "kind": "top_up", "amount": "2.000000000000"},
        {"user_id": alice, "kind": "usage", "amount": "-0.000210000000"},
    ]
    holds = alice_client.table("credit_reservations").select("user_id,status").execute().data
    assert holds == [{"user_id": alice, "status": "held"}]
    mine = alice_client.rpc("my_balance", {}).execute().data
    assert (mine["balance"], mine["held"], mine["available"]) == ("1.99979", "0.25", "1.74979")


def test_user_meter_usage_reads_own_records_exactly_and_nobody_elses(signed_up_user, service):
    alice, alice_client = signed_up_user()
    bob, _ = signed_up_user()
    alice_request = activity(service, alice)
    activity(service, bob)
    as_alice = Meter(alice_client)
    [record] = as_alice.usage(user_id=alice)
    assert (record.request_id, record.cost) == (alice_request, Decimal("0.00021"))
    assert as_alice.usage(user_id=bob) == []


@pytest.mark.parametrize(
    "table", ["user_balances", "usage_records", "ledger_entries", "credit_reservations"]
)
def test_user_filters_on_other_user_reads_nothing(signed_up_user, service, table):
    _alice, alice_client = signed_up_user()
    bob, _ = signed_up_user()
    activity(service, bob)
    assert alice_client.table(table).select("*").eq("user_id", bob).execute().data == []


def test_user_reads_price_list_and_estimates_cost(signed_up_user):
    _, client = signed_up_user()
    row = (
        client.table("model_pricing")
        .select("provider_id,price_per_input_token::text")
        .eq("model_id", "gpt-4o")
        .single()
        .execute()
        .data
    )
    assert row == {"provider_id": "openai", "price_per_input_token": "0.000002500000"}
    estimate = (
        client.rpc(
            "estimate_cost", {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 1000}
        )
        .execute()
        .data
    )
    assert estimate["cost"] == "0.0125"


@pytest.mark.parametrize("table", ["billing_settings", "signup_errors"])
def test_user_reads_operator_tables_is_denied(signed_up_user, table):
    _, client = signed_up_user()
    denied(client.table(table).select("*"))


@pytest.mark.parametrize(
    "table",
    ["user_balances", "usage_records", "ledger_entries", "credit_reservations", "billing_settings"],
)
def test_anon_reads_billing_tables_is_denied(anon, table):
    denied(anon.table(table).select("*"))


def test_anon_reads_price_list_and_estimates_cost(anon):
    rows = anon.table("model_pricing").select("model_id").eq("provider_id", "anthropic").execute()
    assert {"claude-sonnet-4-5", "claude-haiku-4-5"} <= {r["model_id"] for r in rows.data}
    estimate = (
        anon.rpc(
            "estimate_cost",
            {"model": "claude-haiku-4-5", "input_tokens": 1000, "max_output_tokens": 1000},
        )
        .execute()
        .data
    )
    assert estimate["cost"] == "0.006"


def test_anon_calls_my_balance_is_denied(anon):
    denied(anon.rpc("my_balance", {}))


# ── changing balances ─────────────────────────────────────────────────────────────────────
def test_user_updates_own_balance_is_denied_and_unchanged(signed_up_user, db):
    user_id, client = signed_up_user()
    denied(client.table("user_balances").update({"balance": 1000}).eq("user_id", user_id))
    assert stored_balance(db, user_id) == 0


def test_user_deletes_own_balance_is_denied_and_row_kept(signed_up_user, db):
    user_id, client = signed_up_user()
    denied(client.table("user_balances").delete().eq("user_id", user_id))
    assert stored_balance(db, user_id) == 0


def test_user_upserts_own_balance_is_denied_and_unchanged(signed_up_user, db):
    user_id, client = signed_up_user()
    denied(client.table("user_balances").upsert({"user_id": user_id, "balance": 1000}))
    assert stored_balance(db, user_id) == 0


@pytest.mark.parametrize(
    "row",
    [
        {"balance": 5},
        {"balance": "0.000000000001"},
        {"balance": 0},
        {"currency": "EUR"},
        {"balance": -1},
    ],
)
def test_user_inserts_own_balance_with_explicit_values_is_denied(signed_up_user, db, row):
    user_id, client = signed_up_user()
    # Start from a missing row (the fallback case the insert policy exists for).
    db.execute("delete from public.user_balances where user_id = %s", (user_id,))
    denied(client.table("user_balances").insert({"user_id": user_id, **row}))
    assert stored_balance(db, user_id) is None
    # The allowed fallback: their own row, every value defaulted.
    client.table("user_balances").insert({"user_id": user_id}, returning="minimal").execute()
    assert stored_balance(db, user_id) == 0


def test_user_inserts_balance_for_other_user_is_denied(signed_up_user, db, service):
    _alice, alice_client = signed_up_user()
    bob, _ = signed_up_user()
    db.execute("delete from public.user_balances where user_id = %s", (bob,))
    error = denied(alice_client.table("user_balances").insert({"user_id": bob}))
    assert "row-level security" in (error.message or "")
    assert stored_balance(db, bob) is None
    service.top_up(user_id=bob, amount=Decimal(1), reference=rid())  # recreates bob's row
    assert stored_balance(db, bob) == 1


def test_user_inserts_second_own_balance_conflicts_and_unchanged(signed_up_user, db, service):
    user_id, client = signed_up_user()
    service.top_up(user_id=user_id, amount=Decimal(3), reference=rid())
    with pytest.raises(APIError) as info:
        client.table("user_balances").insert({"user_id": user_id}).execute()
    assert info.value.code == "23505"
    assert stored_balance(db, user_id) == 3


# ── writing money tables ──────────────────────────────────────────────────────────────────
def _write(client: Client, table: str, op: str, user_id: str) -> Any:
    rows = {
        "ledger_entries": {"user_id": user_id, "kind": "top_up", "amount": 100, "reference": rid()},
        "usage_records": {
            "user_id": user_id,
            "request_id": rid(),
            "provider_id": "openai",
            "model_id": "gpt-4o",
            "input_tokens": 1,
            "output_tokens": 1,
            "price_per_input_token": 0,
            "price_per_output_token": 0,
            "price_per_cached_input_token": 0,
            "price_per_request": 0,
            "cost": 0,
        },
        "credit_reservations": {
            "user_id": user_id,
            "request_id": rid(),
            "amount": -100,
            "expires_at": "2000-01-01T00:00:00Z",
        },
    }
    builder = client.table(table)
    if op == "insert":
        return builder.insert(rows[table])
    if op == "update":
        column = {
            "ledger_entries": "amount",
            "usage_records": "cost",
            "credit_reservations": "status",
        }[table]
        value = "released" if column == "status" else 0
        return builder.update({column: value}).eq("user_id", user_id)
    return builder.delete().eq("user_id", user_id)


@pytest.mark.parametrize("op", ["insert", "update", "delete"])
@pytest.mark.parametrize("table", ["ledger_entries", "usage_records", "credit_reservations"])
def test_user_writes_money_table_is_denied_and_nothing_changes(
    signed_up_user, service, db, table, op
):
    user_id, client = signed_up_user()
    activity(service, user_id)
    before = (counts(db, user_id), stored_balance(db, user_id))
    denied(_write(client, table, op, user_id))
    assert (counts(db, user_id), stored_balance(db, user_id)) == before
    assert service.audit() == []


# ── service-only functions ────────────────────────────────────────────────────────────────
SERVICE_RPCS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "top_up": lambda me, req: {"user_id": me, "amount": "100", "reference": req},
    "adjust_balance": lambda me, req: {
        "user_id": me,
        "amount": "100",
        "reason": "gift",
        "reference": req,
    },
    "record_usage": lambda me, req: {
        "user_id": me,
        "model": "gpt-4o",
        "input_tokens": 1,
        "output_tokens": 1,
        "request_id": req,
    },
    "record_usage_batch": lambda me, req: {
        "records": [
            {
                "user_id": me,
                "model": "gpt-4o",
                "input_tokens": 1,
                "output_tokens": 1,
                "request_id": req,
            }
        ]
    },
    "reserve_credit": lambda me, req: {"user_id": me, "request_id": req, "amount": "1"},
    "settle_usage": lambda me, req: {"request_id": req, "input_tokens": 1, "output_tokens": 1},
    "release_reservation": lambda me, req: {"request_id": req},
    "refund_usage": lambda me, req: {"request_id": req, "reason": "please"},
    "check_balance": lambda me, req: {"user_id": me},
    "balance_audit": lambda me, req: {},
    "repair_missing_balances": lambda me, req: {},
    "user_id_for_email": lambda me, req: {"email": "someone@example.com"},
}


@pytest.mark.parametrize("rpc", sorted(SERVICE_RPCS))
def test_user_calls_service_only_function_is_denied_and_nothing_written(
    signed_up_user, service, db, rpc
):
    user_id, client = signed_up_user()
    request_id = activity(service, user_id)  # an existing request: settle/refund would act on it
    before = (counts(db, user_id), stored_balance(db, user_id))
    error = denied(client.rpc(rpc, SERVICE_RPCS[rpc](user_id, request_id)))
    assert error.message == f"permission denied for function {rpc}"
    assert (counts(db, user_id), stored_balance(db, user_id)) == before


@pytest.mark.parametrize("rpc", sorted(SERVICE_RPCS))
def test_anon_calls_service_only_function_is_denied(anon, rpc):
    denied(anon.rpc(rpc, SERVICE_RPCS[rpc](str(uuid.uuid4()), rid())))


def test_user_my_balance_follows_service_movements(signed_up_user, service):
    user_id, client = signed_up_user()
    service.top_up(user_id=user_id, amount=Decimal("0.000000000003"), reference=rid())
    service.reserve(user_id=user_id, request_id=rid(), amount=Decimal("0.000000000001"))
    mine = client.rpc("my_balance", {}).execute().data
    assert (mine["balance"], mine["held"], mine["available"]) == (
        "0.000000000003",
        "0.000000000001",
        "0.000000000002",
    )
