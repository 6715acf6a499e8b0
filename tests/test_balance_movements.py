"""Balance movements as users and operators see them since the usage record became its charge's
ledger line (migration 20261129200001): `Meter.movements`, `AsyncMeter.movements` and
`tokenmeter balance history` list top-ups, adjustments, refunds and usage charges together,
newest first, exact, adding up to the balance; a signed-in user sees only their own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal

import httpx
import psycopg
from typer.testing import CliRunner

from app.cli import app
from app.meter import AsyncMeter, Meter
from supabase import AsyncClientOptions, Client, acreate_client


def rid() -> str:
    return f"mv-{uuid.uuid4()}"


def history_of(service: Client, user_id: str) -> tuple[list[str], str]:
    """A top-up, two charges and a refund of the second; returns their references, newest first,
    and the second charge's request_id."""
    meter = Meter(service)
    top_up, first, second = rid(), rid(), rid()
    meter.top_up(user_id=user_id, amount=Decimal("2.5"), reference=top_up)
    meter.record_usage(
        user_id=user_id, model="gpt-4o-mini", input_tokens=1000, output_tokens=200, request_id=first
    )
    meter.record_usage(
        user_id=user_id, model="gpt-4o", input_tokens=1000, output_tokens=500, request_id=second
    )
    service.rpc("refund_usage", {"request_id": second, "reason": "upstream error"}).execute()
    return [second, second, first, top_up], second


def test_meter_movements_after_charges_and_refund_lists_each_newest_first_summing_to_balance(
    sign_up: Callable[[], str], service: Client, db: psycopg.Connection
) -> None:
    user_id = sign_up()
    references, second = history_of(service, user_id)
    rows = Meter(service).movements(user_id=user_id)
    assert [r.reference for r in rows] == references
    assert [(r.source, r.kind) for r in rows] == [
        ("ledger", "refund"),
        ("usage", "usage"),
        ("usage", "usage"),
        ("ledger", "top_up"),
    ]
    # gpt-4o-mini: 1000 × 0.00000015 + 200 × 0.0000006; gpt-4o: 1000 × 0.0000025 + 500 × 0.00001
    assert [r.amount for r in rows] == [
        Decimal("0.0075"),
        Decimal("-0.0075"),
        Decimal("-0.00027"),
        Decimal("2.5"),
    ]
    balance = db.execute(
        "select balance from public.user_balances where user_id = %s", (user_id,)
    ).fetchone()
    assert balance == (sum(r.amount for r in rows),)
    assert balance == (Decimal("2.5") - Decimal("0.00027"),)
    assert not db.execute(
        "select 1 from public.ledger_entries where kind = 'usage' and user_id = %s", (user_id,)
    ).fetchall()


async def test_async_meter_movements_with_limit_returns_the_newest(
    sign_up: Callable[[], str], service: Client, api_url: str, service_key: str
) -> None:
    user_id = sign_up()
    references, _ = history_of(service, user_id)
    http = httpx.AsyncClient(timeout=30)
    client = await acreate_client(
        api_url, service_key, AsyncClientOptions(auto_refresh_token=False, httpx_client=http)
    )
    try:
        rows = await AsyncMeter(client).movements(user_id=user_id, limit=2)
    finally:
        await http.aclose()
    assert [r.reference for r in rows] == references[:2]


def test_balance_history_cli_json_is_exact_and_table_names_the_charges(
    sign_up: Callable[[], str], service: Client
) -> None:
    user_id = sign_up()
    references, _ = history_of(service, user_id)
    result = CliRunner().invoke(app, ["balance", "history", user_id, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    # amounts travel as exact decimal strings (numeric(24,12) as stored)
    assert [(r["kind"], Decimal(r["amount"]), r["reference"]) for r in rows] == [
        ("refund", Decimal("0.0075"), references[0]),
        ("usage", Decimal("-0.0075"), references[1]),
        ("usage", Decimal("-0.00027"), references[2]),
        ("top_up", Decimal("2.5"), references[3]),
    ]
    assert rows[2]["amount"] == "-0.000270000000"
    table = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["balance", "history", user_id])
    assert table.exit_code == 0, table.output
    assert "-0.00027 USD" in table.stdout and "upstream error" in table.stdout


def test_signed_in_user_movements_through_rest_are_only_their_own(
    signed_up_user: Callable[[], tuple[str, Client]], service: Client
) -> None:
    alice, alice_client = signed_up_user()
    bob, _ = signed_up_user()
    history_of(service, alice)
    history_of(service, bob)
    rows = alice_client.table("balance_movements").select("user_id,amount::text").execute().data
    assert {r["user_id"] for r in rows} == {alice} and len(rows) == 4
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal("2.5") - Decimal("0.00027")
