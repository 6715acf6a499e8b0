"""authorize_request / complete_request (migrations 20251130000007-09) under concurrency and over
the REST API, as the edge function of issue 11 §2 will call them: directly over SQL (one
statement per call, autocommit: what the transaction-mode pooler allows) and through PostgREST
with the service_role key. The single-connection behaviour is in supabase/tests/53-authorize.sql;
the routing distribution in 51-plans-routing.sql.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.errors import (
    IdempotencyConflict,
    InvalidApiKey,
    InvalidInput,
    ModelNotAllowed,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    Unavailable,
    from_api_code,
)

ROOT = Path(__file__).resolve().parents[1]
# gpt-4o-mini: 0.15 / 0.60 per 1M tokens; 100 input tokens + 100 max_tokens.
HOLD = Decimal("0.000075")


@dataclass(frozen=True)
class Metered:
    user_id: str
    plan: str
    key: str
    subscription_id: str


@pytest.fixture()
def metered(db_url: str, sign_up: Callable[[], str]) -> Callable[..., Metered]:
    """A signed-up user with a funded balance, a one-route plan (gpt-4o-mini at a configured
    upstream), an active subscription with the given quotas and a key for it."""

    def make(*, quota_requests: int | None = None, balance: Decimal = Decimal(10)) -> Metered:
        user_id = sign_up()
        name = f"mt-{uuid.uuid4().hex[:12]}"
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "insert into public.upstreams (name, base_url) values (%s, 'http://127.0.0.1:9/v1')",
                (name,),
            )
            conn.execute("insert into public.plans (name) values (%s)", (name,))
            conn.execute(
                "insert into public.plan_routes (plan_id, upstream_id, model, weight)"
                " select p.id, u.id, 'gpt-4o-mini', 1 from public.plans p, public.upstreams u"
                " where p.name = %s and u.name = %s",
                (name, name),
            )
            row = conn.execute(
                "insert into public.subscriptions (user_id, plan_id, status, quota_requests,"
                " quota_tokens) select %s, id, 'active', %s, null from public.plans where name = %s"
                " returning id::text",
                (user_id, quota_requests, name),
            ).fetchone()
            assert row is not None
            if balance:
                conn.execute("select public.top_up(%s, %s, %s)", (user_id, balance, name))
            key = conn.execute(
                "select public.create_api_key('test', %s, user_id => %s) ->> 'key'",
                (name, user_id),
            ).fetchone()
            assert key is not None
        return Metered(user_id, name, key[0], row[0])

    return make


def authorize_sql(db_url: str, key: str, request_id: str, start: threading.Barrier) -> Any:
    """One authorize over its own connection, released by the barrier: the JSON or the error
    (sqlstate, message, hint)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        start.wait()
        try:
            row = conn.execute(
                "select public.authorize_request(%s, 'gpt-4o-mini', 100, %s, 100)",
                (key, request_id),
            ).fetchone()
        except psycopg.Error as exc:
            return (exc.sqlstate, exc.diag.message_primary, exc.diag.message_hint)
        assert row is not None
        return row[0]


def rpc(api_url: str, api_key: str, function: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{api_url}/rest/v1/rpc/{function}",
        headers={"apikey": api_key, "Authorization": f"Bearer {api_key}"},
        json=body,
        timeout=60,
    )


def test_authorize_request_100_concurrent_against_quota_10_admits_exactly_10(
    db_url: str, metered: Callable[..., Metered]
):
    sub = metered(quota_requests=10)
    start = threading.Barrier(100)
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(
            pool.map(
                lambda i: authorize_sql(db_url, sub.key, f"mt-q-{uuid.uuid4()}", start),
                range(100),
            )
        )
    admitted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, tuple)]
    assert len(admitted) == 10
    assert {r[:2] for r in refused} == {("PT429", "quota_exceeded")} and len(refused) == 90

    with psycopg.connect(db_url, autocommit=True) as conn:
        for answer in admitted:
            conn.execute(
                "select public.complete_request(%s, %s, 200)",
                (answer["request_id"], '{"prompt_tokens": 50, "completion_tokens": 20}'),
            )
        status, reason, used, tokens, reset_at = conn.execute(
            "select status, suspension_reason, used_requests, used_tokens, reset_at"
            " from public.subscriptions where id = %s",
            (sub.subscription_id,),
        ).fetchone()  # type: ignore[misc]
        charged = conn.execute(
            "select count(*), sum(u.cost) from public.usage_records u join public.metered_requests m"
            " using (request_id) where m.subscription_id = %s",
            (sub.subscription_id,),
        ).fetchone()
        assert conn.execute("select * from public.balance_audit()").fetchall() == []
    assert (status, reason, used, tokens) == ("suspended", "quota", 10, 700)
    assert charged == (10, Decimal(10) * (50 * Decimal("0.00000015") + 20 * Decimal("0.0000006")))
    late = authorize_sql(db_url, sub.key, f"mt-q-{uuid.uuid4()}", threading.Barrier(1))
    assert late == (
        "PT429",
        "quota_exceeded",
        reset_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def test_authorize_request_40_concurrent_over_rest_against_5_holds_of_balance_admits_5(
    api_url: str, service_key: str, db_url: str, metered: Callable[..., Metered]
):
    sub = metered(balance=HOLD * 5)
    start = threading.Barrier(40)

    def call(_: int) -> httpx.Response:
        start.wait()
        return rpc(
            api_url,
            service_key,
            "authorize_request",
            {
                "key": sub.key,
                "model": "gpt-4o-mini",
                "max_tokens": 100,
                "request_id": f"mt-b-{uuid.uuid4()}",
                "input_tokens": 100,
            },
        )

    with ThreadPoolExecutor(max_workers=40) as pool:
        responses = list(pool.map(call, range(40)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [402] * 35
    assert {r.json()["message"] for r in responses if r.status_code == 402} == {
        "insufficient_balance"
    }
    with psycopg.connect(db_url, autocommit=True) as conn:
        held = conn.execute(
            "select count(*), sum(amount) from public.credit_reservations"
            " where user_id = %s and status = 'held'",
            (sub.user_id,),
        ).fetchone()
    assert held == (5, HOLD * 5)


def test_complete_request_20_concurrent_retries_charge_once(
    db_url: str, metered: Callable[..., Metered]
):
    sub = metered()
    request_id = f"mt-r-{uuid.uuid4()}"
    authorize_sql(db_url, sub.key, request_id, threading.Barrier(1))
    start = threading.Barrier(20)

    def complete(_: int) -> Any:
        with psycopg.connect(db_url, autocommit=True) as conn:
            start.wait()
            row = conn.execute(
                "select public.complete_request(%s, %s, 200, 42)",
                (request_id, '{"prompt_tokens": 100, "completion_tokens": 100}'),
            ).fetchone()
            assert row is not None
            return row[0]

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(complete, range(20)))
    assert sorted(a["replayed"] for a in answers) == [False] + [True] * 19
    assert {a["cost"] for a in answers} == {str(HOLD)}
    with psycopg.connect(db_url, autocommit=True) as conn:
        balance = conn.execute(
            "select balance from public.user_balances where user_id = %s", (sub.user_id,)
        ).fetchone()
        used = conn.execute(
            "select used_requests from public.subscriptions where id = %s",
            (sub.subscription_id,),
        ).fetchone()
    assert balance == (Decimal(10) - HOLD,) and used == (1,)


def test_authorize_request_over_rest_refusals_have_their_http_status(
    api_url: str, service_key: str, anon_key: str, metered: Callable[..., Metered]
):
    sub = metered(quota_requests=1)

    def authorize(**overrides: Any) -> httpx.Response:
        body = {
            "key": sub.key,
            "model": "gpt-4o-mini",
            "max_tokens": 10,
            "request_id": f"mt-h-{uuid.uuid4()}",
            **overrides,
        }
        return rpc(api_url, service_key, "authorize_request", body)

    cases = {
        "malformed key": (authorize(key="sk-abc"), 401, "invalid_api_key"),
        "bad max_tokens": (authorize(max_tokens=-1), 400, "invalid_argument"),
        "anon caller": (
            rpc(
                api_url,
                anon_key,
                "authorize_request",
                {"key": sub.key, "model": "x", "max_tokens": 1, "request_id": "x"},
            ),
            401,
            None,
        ),
        "unknown request": (
            rpc(
                api_url,
                service_key,
                "complete_request",
                {"request_id": "mt-none", "usage": None, "status": 500},
            ),
            404,
            "request_not_found",
        ),
    }
    assert authorize().status_code == 200  # the one request of the quota, in flight
    over = authorize()
    cases["over quota"] = (over, 429, "quota_exceeded")
    for name, (response, status, message) in cases.items():
        assert response.status_code == status, name
        if message:
            assert response.json()["message"] == message, name
    # The hint is the reset time: what an edge function turns into Retry-After.
    body = over.json()
    error = from_api_code(body["message"], body["code"], body["details"], body["hint"])
    assert isinstance(error, QuotaExceeded) and error.reset_at == body["hint"]
    assert datetime.strptime(body["hint"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) > datetime.now(
        UTC
    )


def test_seed_rerun_adds_nothing_and_keeps_operator_changes(db_url: str):
    seed = (ROOT / "supabase" / "seed.sql").read_text()
    tables = ("upstreams", "plans", "plan_routes", "model_pricing", "model_aliases")
    snapshot = " union all ".join(f"select '{t}', count(*) from public.{t}" for t in tables)
    with psycopg.connect(db_url) as conn:  # one transaction, rolled back
        before = conn.execute(snapshot).fetchall()
        conn.execute(
            "update public.upstreams set base_url = 'https://mine.example/v1' where name = 'ghcp'"
        )
        conn.execute(
            "update public.plan_routes r set weight = 7 from public.plans p"
            " where p.id = r.plan_id and p.name = 'cursor-pro-auto' and r.model = 'gpt-5-mini'"
        )
        conn.execute(seed)
        after = conn.execute(snapshot).fetchall()
        kept = conn.execute(
            "select (select base_url from public.upstreams where name = 'ghcp'),"
            " (select r.weight from public.plan_routes r join public.plans p on p.id = r.plan_id"
            "  where p.name = 'cursor-pro-auto' and r.model = 'gpt-5-mini')"
        ).fetchone()
        conn.rollback()
    assert after == before
    assert kept == ("https://mine.example/v1", 7)


@pytest.mark.parametrize(
    ("code", "sqlstate", "expected"),
    [
        ("invalid_api_key", "PT401", InvalidApiKey),
        ("revoked_api_key", "PT401", InvalidApiKey),
        ("expired_api_key", "PT401", InvalidApiKey),
        ("model_not_allowed", "PT403", ModelNotAllowed),
        ("subscription_inactive", "PT403", PermissionDenied),
        ("quota_exceeded", "PT429", QuotaExceeded),
        ("spend_limit_exceeded", "PT429", QuotaExceeded),
        ("request_not_found", "PT404", NotFound),
        ("plan_not_found", "PT404", NotFound),
        ("api_key_not_found", "PT404", NotFound),
        ("no_route", "PT503", Unavailable),
        ("idempotency_conflict", "PT409", IdempotencyConflict),
        ("invalid_argument", "22023", InvalidInput),
    ],
)
def test_from_api_code_metering_code_maps_to_its_type(code, sqlstate, expected):
    error = from_api_code(code, sqlstate, "detail", "2026-12-01T00:00:00Z")
    assert type(error) is expected and error.code == code and error.detail == "detail"
    if expected is QuotaExceeded:
        assert isinstance(error, QuotaExceeded) and error.reset_at == "2026-12-01T00:00:00Z"
