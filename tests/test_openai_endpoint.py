"""The `openai` and `admin` edge functions (issue 11 §2, §4) with real clients: the official
`openai` SDK and httpx against /functions/v1/openai/v1, supabase-js `functions.invoke` under Deno,
and a local stand-in upstream speaking OpenAI's wire format (tests/fake_upstream.py).

The functions run on a second gateway over the session's database (tests/function_gateway.py),
so the upstream's API key is a function secret of that gateway's own `.env`, never the working
tree's. Each test makes its own user, upstream, plan (one gpt-4o-mini route), subscription and
`tm_` key, and checks money in SQL: usage_records, balances, balance_audit().
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import deno
import httpx
import openai
import psycopg
import pytest
from fake_upstream import API_KEY, FakeUpstream
from function_gateway import DbProxy, FunctionGateway, TransactionPooler

from app.stack.manager import Stack

MODEL = "gpt-4o-mini"
JS_INVOKE = Path(__file__).with_name("js_functions") / "openai_invoke.test.ts"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[FunctionGateway]:
    gw = FunctionGateway(
        {
            "FAKE_UPSTREAM_KEY": API_KEY,
            "OPENAI_UPSTREAM_TIMEOUT_MS": "2000",
            # Not 2 s: with 200 streams in one worker on a loaded machine, the worker's event
            # loop can be starved that long, and its idle timer fire before the waiting data.
            "OPENAI_UPSTREAM_IDLE_MS": "20000",
        }
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def endpoint(gateway: FunctionGateway) -> str:
    return f"{gateway.url}/functions/v1/openai/v1"


@dataclass(frozen=True)
class Account:
    user_id: str
    plan: str
    key: str
    subscription_id: str

    @property
    def prefix(self) -> str:
        return self.key[:11]


@pytest.fixture()
def account(
    db_url: str, sign_up: Callable[[], str], upstream: FakeUpstream
) -> Callable[..., Account]:
    """A user with `balance`, a plan routing gpt-4o-mini to the fake upstream (API key from the
    function secret FAKE_UPSTREAM_KEY), an active subscription and a key."""

    def make(
        *,
        balance: Decimal = Decimal(10),
        quota_requests: int | None = None,
        allowed_models: list[str] | None = None,
    ) -> Account:
        user_id = sign_up()
        name = f"oe-{uuid.uuid4().hex[:12]}"
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "insert into public.upstreams (name, base_url, api_key_env)"
                " values (%s, %s, 'FAKE_UPSTREAM_KEY')",
                (name, upstream.base_url),
            )
            conn.execute("insert into public.plans (name) values (%s)", (name,))
            conn.execute(
                "insert into public.plan_routes (plan_id, upstream_id, model, weight)"
                " select p.id, u.id, %s, 1 from public.plans p, public.upstreams u"
                " where p.name = %s and u.name = %s",
                (MODEL, name, name),
            )
            (subscription_id,) = conn.execute(
                "insert into public.subscriptions (user_id, plan_id, status, quota_requests,"
                " quota_tokens) select %s, id, 'active', %s, null from public.plans"
                " where name = %s returning id::text",
                (user_id, quota_requests, name),
            ).fetchone()  # type: ignore[misc]
            if balance:
                conn.execute("select public.top_up(%s, %s, %s)", (user_id, balance, name))
            (key,) = conn.execute(
                "select public.create_api_key('test', %s, allowed_models => %s,"
                " user_id => %s) ->> 'key'",
                (name, allowed_models, user_id),
            ).fetchone()  # type: ignore[misc]
        return Account(user_id, name, key, subscription_id)

    return make


@pytest.fixture()
def sdk(endpoint: str) -> Iterator[Callable[[str], openai.OpenAI]]:
    """OpenAI SDK clients for a key, closed after the test."""
    opened: list[openai.OpenAI] = []

    def build(key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=endpoint, api_key=key, max_retries=0, timeout=30)
        opened.append(client)
        return client

    yield build
    for client in opened:
        client.close()


def price(db: psycopg.Connection) -> tuple[Decimal, Decimal]:
    row = db.execute(
        "select price_per_input_token, price_per_output_token from public.price_for(null, %s)",
        (MODEL,),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def balance(db: psycopg.Connection, user_id: str) -> Decimal:
    row = db.execute(
        "select balance from public.user_balances where user_id = %s", (user_id,)
    ).fetchone()
    assert row is not None
    return row[0]


def usage_record(db: psycopg.Connection, request_id: str) -> dict[str, Any]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            "select u.input_tokens, u.output_tokens, u.cost, u.price_per_input_token,"
            " u.price_per_output_token, u.metadata, m.status, m.http_status, m.usage_estimated,"
            " m.reserved from public.metered_requests m"
            " left join public.usage_records u on u.request_id = m.request_id"
            " where m.request_id = %s",
            (request_id,),
        ).fetchone()
    assert row is not None, f"no metered request {request_id}"
    return row


def metered_rows(db: psycopg.Connection, user_id: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "select request_id, status, http_status, cost, usage_estimated, error"
        " from public.metered_requests where user_id = %s order by id",
        (user_id,),
    ).fetchall()


def wait_settled(db: psycopg.Connection, user_id: str, timeout: float = 15) -> None:
    """Until none of the user's requests is still in flight: a stream whose client did not ask
    for usage ends before its charge commits (the function does not wait for it)."""
    deadline = time.monotonic() + timeout
    while any(row[1] == "authorized" for row in metered_rows(db, user_id)):
        assert time.monotonic() < deadline, metered_rows(db, user_id)
        time.sleep(0.02)


def assert_audit_clean(db: psycopg.Connection) -> None:
    assert db.execute("select * from public.balance_audit()").fetchall() == []


# ── charged exactly what the upstream reported ──────────────────────────────────────────────
def test_chat_completion_sdk_charges_reported_usage_at_price(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
    upstream: FakeUpstream,
):
    acct = account()
    before = balance(db, acct.user_id)
    raw = sdk(acct.key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "say five words please"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "word0 word1 word2 word3 word4"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (14, 5)
    request_id = raw.headers["x-request-id"]
    assert raw.headers["x-tokenmeter-model"] == MODEL

    record = usage_record(db, f"{acct.prefix}:{request_id}")
    per_in, per_out = price(db)
    expected = 14 * per_in + 5 * per_out
    assert (record["input_tokens"], record["output_tokens"]) == (14, 5)
    assert (record["price_per_input_token"], record["price_per_output_token"]) == (per_in, per_out)
    assert record["cost"] == expected and record["usage_estimated"] is False
    assert Decimal(answer.usage.model_extra["cost"]) == expected
    assert balance(db, acct.user_id) == before - expected
    # The upstream got the routed model, its own secret, and the cap that was authorized.
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == MODEL and sent.body["max_tokens"] == 4096
    assert acct.key not in json.dumps(sent.headers)


def test_chat_completion_stream_sdk_charges_usage_chunk(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
    upstream: FakeUpstream,
):
    acct = account()
    before = balance(db, acct.user_id)
    stream = sdk(acct.key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream words:7 please"}],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": f"stream-{uuid.uuid4()}"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(f"word{i}" for i in range(7))
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (13, 7)
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}

    per_in, per_out = price(db)
    expected = 13 * per_in + 7 * per_out
    assert Decimal(final.usage.model_extra["cost"]) == expected
    (row,) = metered_rows(db, acct.user_id)
    assert row[1:5] == ("completed", 200, expected, False)
    assert balance(db, acct.user_id) == before - expected


def test_chat_completion_stream_passes_events_as_they_come_not_buffered(
    endpoint: str, account: Callable[..., Account], db: psycopg.Connection
):
    """SSE goes through chunk by chunk: the first word reaches the client while the upstream is
    still writing the rest (10 words, 400 ms apart), not once the answer is complete."""
    acct = account()
    arrivals: list[float] = []
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST",
            f"{endpoint}/chat/completions",
            headers={"Authorization": f"Bearer {acct.key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "words:10 delay:400"}],
                "stream": True,
            },
        ) as response,
    ):
        started = time.monotonic()
        for line in response.iter_lines():
            if '"content":"word' in line or '"content":" word' in line:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 10
    # The upstream needs 4 s for the whole answer: the first word arrives seconds before.
    assert arrivals[-1] - arrivals[0] > 2.5, arrivals
    wait_settled(db, acct.user_id)
    (row,) = metered_rows(db, acct.user_id)
    assert row[1:3] == ("completed", 200)


def test_chat_completion_stream_without_include_usage_still_charged_no_usage_chunk(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    acct = account()
    chunks = list(
        sdk(acct.key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)  # OpenAI sends no usage chunk when not asked
    per_in, per_out = price(db)
    wait_settled(db, acct.user_id)
    (row,) = metered_rows(db, acct.user_id)
    assert row[1:5] == ("completed", 200, 11 * per_in + 5 * per_out, False)


def test_embeddings_sdk_charges_prompt_tokens(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    acct = account()
    answer = sdk(acct.key).embeddings.create(model=MODEL, input=["one two", "three"])
    assert len(answer.data) == 2 and answer.usage.prompt_tokens == 13
    per_in, _ = price(db)
    (row,) = metered_rows(db, acct.user_id)
    assert row[1:5] == ("completed", 200, 13 * per_in, False)


def test_models_lists_the_key_plan_models(
    sdk: Callable[[str], openai.OpenAI], endpoint: str, account: Callable[..., Account]
):
    acct = account()
    assert [m.id for m in sdk(acct.key).models.list()] == [MODEL]


def test_retry_with_same_request_id_charges_once(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    acct = account()
    client = sdk(acct.key)
    headers = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    )
    after_first = balance(db, acct.user_id)
    with pytest.raises(openai.ConflictError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
        )
    assert caught.value.code == "request_already_completed"
    assert first.usage.model_extra["cost"] in caught.value.message
    assert balance(db, acct.user_id) == after_first and len(metered_rows(db, acct.user_id)) == 1


# ── streams that end without usage ──────────────────────────────────────────────────────────
def wait_completed(db: psycopg.Connection, user_id: str) -> tuple[Any, ...]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = metered_rows(db, user_id)
        if rows and rows[0][1] != "authorized":
            return rows[0]
        time.sleep(0.1)
    pytest.fail("the request was never completed")


def test_stream_cut_by_upstream_charges_streamed_tokens_estimated(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    acct = account()
    before = balance(db, acct.user_id)
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in sdk(acct.key).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "words:20 cut:3"}],
            stream=True,
            max_tokens=100,
        ):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "word0 word1 word2"
    row = wait_completed(db, acct.user_id)
    record = usage_record(db, row[0])
    assert record["status"] == "completed" and record["usage_estimated"] is True
    assert record["metadata"] == {"usage_estimated": True}
    # "word0 word1 word2" is 6 tokens in o200k_base; the prompt is counted as OpenAI does.
    assert record["output_tokens"] == 6 and record["input_tokens"] > 0
    assert 0 < record["cost"] < record["reserved"]
    assert balance(db, acct.user_id) == before - record["cost"]
    assert_audit_clean(db)


def test_stream_finished_without_usage_chunk_charges_streamed_tokens_estimated(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    """An upstream that ends its stream properly but never sends the usage chunk: charged from
    the words streamed, counted, flagged; the client still gets [DONE]."""
    acct = account()
    chunks = list(
        sdk(acct.key).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "words:4 nousage"}],
            stream=True,
            max_tokens=100,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "word0 word1 word2 word3"
    )
    record = usage_record(db, wait_completed(db, acct.user_id)[0])
    assert record["usage_estimated"] is True and record["http_status"] == 200
    # "word0 word1 word2 word3" is 8 tokens in o200k_base (gpt-4o-mini's encoding).
    assert record["output_tokens"] == 8 and record["input_tokens"] > 0
    assert 0 < record["cost"] < record["reserved"]
    assert_audit_clean(db)


def test_stream_client_gone_charges_streamed_tokens_estimated(
    endpoint: str, account: Callable[..., Account], db: psycopg.Connection
):
    acct = account()
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            f"{endpoint}/chat/completions",
            headers={"Authorization": f"Bearer {acct.key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "words:50 delay:100"}],
                "stream": True,
                "max_tokens": 100,
            },
        ) as response,
    ):
        assert response.status_code == 200
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data: ")
            if events == 3:
                break  # leave after the role chunk and two words
    row = wait_completed(db, acct.user_id)
    record = usage_record(db, row[0])
    assert record["usage_estimated"] is True and record["http_status"] == 200
    assert 1 <= record["output_tokens"] < 50 and 0 < record["cost"] < record["reserved"]
    assert_audit_clean(db)


# ── upstream failures charge nothing ────────────────────────────────────────────────────────
def test_upstream_failures_charge_nothing_and_are_logged(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    acct = account()
    client = sdk(acct.key)
    before = balance(db, acct.user_id)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "fail:500"}]
        )
    assert failed.value.status_code == 502 and failed.value.code == "upstream_error"
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "fail:429"}]
        )
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.APIStatusError) as stalled:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "stall:4"}]
        )
    assert stalled.value.status_code == 504
    # The upstream refusing its secret is the operator's problem, not the client's key.
    with pytest.raises(openai.InternalServerError) as misconfigured:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "fail:401"}]
        )
    assert misconfigured.value.status_code == 502
    rows = metered_rows(db, acct.user_id)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("failed", 500, 0),
        ("failed", 429, 0),
        ("failed", 504, 0),
        ("failed", 401, 0),
    ]
    assert "told to fail with 500" in rows[0][5]
    assert balance(db, acct.user_id) == before
    assert db.execute(
        "select count(*) from public.usage_records where user_id = %s", (acct.user_id,)
    ).fetchone() == (0,)


# ── refusals: OpenAI-shaped 4xx, nothing charged ────────────────────────────────────────────
def test_bad_input_answers_openai_4xx_and_charges_nothing(
    endpoint: str, account: Callable[..., Account], db: psycopg.Connection
):
    acct = account()
    url = f"{endpoint}/chat/completions"
    auth = {"Authorization": f"Bearer {acct.key}"}
    ok = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({}, json.dumps(ok).encode(), 401, "missing_api_key"),
        ({"Authorization": "Bearer tm_short"}, json.dumps(ok).encode(), 401, "invalid_api_key"),
        (
            {"Authorization": "Bearer tm_" + "A" * 43},
            json.dumps(ok).encode(),
            401,
            "invalid_api_key",
        ),
        (auth, b'{"model": "gpt-4o-mini", "messages": [', 400, "invalid_json"),
        (auth, b'["not", "an", "object"]', 400, "invalid_json"),
        (auth, json.dumps({"messages": ok["messages"]}).encode(), 400, "missing_model"),
        (auth, json.dumps({**ok, "max_tokens": -5}).encode(), 400, "invalid_value"),
        (auth, json.dumps({**ok, "max_tokens": 2.5}).encode(), 400, "invalid_value"),
        (auth, json.dumps({"model": MODEL}).encode(), 400, "missing_messages"),
        (auth, json.dumps({**ok, "pad": "x" * 1_010_000}).encode(), 413, "request_too_large"),
    ]
    with httpx.Client(timeout=60) as http:
        for headers, body, status, code in cases:
            answer = http.post(url, headers=headers, content=body)
            assert answer.status_code == status, (code, answer.text)
            error = answer.json()["error"]
            assert error["code"] == code and error["type"] and error["message"], answer.text

        # 50 MB, declared (refused from the Content-Length, unread) and chunked (refused past
        # the function's limit): the function's own OpenAI-shaped 413, not the gateway's.
        def chunks() -> Iterator[bytes]:
            yield b"{"
            for _ in range(50):
                yield b" " * (1024 * 1024)
            yield b"}"

        declared = http.post(url, headers=auth, content=b"{" + b" " * (50 * 1024 * 1024) + b"}")
        streamed = http.post(url, headers=auth, content=chunks())
        for huge in (declared, streamed):
            assert huge.status_code == 413, huge.text
            assert huge.json()["error"]["code"] == "request_too_large"
            assert huge.json()["error"]["type"] == "invalid_request_error"
    assert metered_rows(db, acct.user_id) == []
    assert balance(db, acct.user_id) == Decimal(10)


def test_sql_transport_values_with_quotes_and_backslashes_reach_the_database_verbatim(
    endpoint: str, account: Callable[..., Account], db: psycopg.Connection
):
    """The sql transport sends the calls' values as literals (one round trip, not two; see
    supabase/functions/_shared/meter.ts): a request id or model made of quotes, backslashes and
    SQL arrives as the exact text, never as SQL; a NUL, which no text can hold, is a 400."""
    acct = account(allowed_models=[MODEL])
    url = f"{endpoint}/chat/completions"
    messages = [{"role": "user", "content": "hi"}]
    request_id = "it's\\'');select-pg_sleep(5);--\\"
    with httpx.Client(timeout=30) as http:
        served = http.post(
            url,
            headers={"Authorization": f"Bearer {acct.key}", "x-request-id": request_id},
            json={"model": MODEL, "messages": messages},
        )
        assert served.status_code == 200, served.text
        assert served.headers["x-request-id"] == request_id
        (row,) = metered_rows(db, acct.user_id)
        assert row[1] == "completed"
        assert db.execute(
            "select count(*) from public.metered_requests where request_id = %s",
            (f"{acct.prefix}:{request_id}",),
        ).fetchone() == (1,)
        model = "gpt-4o-mini\\'); update public.user_balances set balance = 0; --"
        refused = http.post(
            url,
            headers={"Authorization": f"Bearer {acct.key}"},
            json={"model": model, "messages": messages},
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "model_not_allowed"
        assert refused.json()["error"]["message"].endswith(f"may not use model {model}")
        nul = http.post(
            url,
            headers={"Authorization": f"Bearer {acct.key}"},
            json={"model": "gpt-4o-mini\u0000", "messages": messages},
        )
        assert nul.status_code == 400, nul.text
        assert nul.json()["error"]["code"] == "invalid_argument"
    assert len(metered_rows(db, acct.user_id)) == 1
    assert (
        balance(db, acct.user_id)
        == Decimal(10) - usage_record(db, f"{acct.prefix}:{request_id}")["cost"]
    )
    assert_audit_clean(db)


def test_key_model_balance_quota_refusals_map_to_openai_errors(
    sdk: Callable[[str], openai.OpenAI],
    endpoint: str,
    account: Callable[..., Account],
    db: psycopg.Connection,
    db_url: str,
):
    hi = [{"role": "user", "content": "hi"}]
    restricted = account(allowed_models=[MODEL])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(restricted.key).chat.completions.create(model="gpt-4o", messages=hi)
    assert denied.value.code == "model_not_allowed"

    broke = account(balance=Decimal(0))
    with pytest.raises(openai.APIStatusError) as poor:
        sdk(broke.key).chat.completions.create(model=MODEL, messages=hi)
    assert poor.value.status_code == 402 and poor.value.code == "insufficient_balance"

    limited = account(quota_requests=1)
    sdk(limited.key).chat.completions.create(model=MODEL, messages=hi)
    with pytest.raises(openai.RateLimitError) as quota:
        sdk(limited.key).chat.completions.create(model=MODEL, messages=hi)
    assert quota.value.code == "quota_exceeded"
    assert int(quota.value.response.headers["retry-after"]) > 86400  # the period's reset

    revoked = account()
    expired = account()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("select public.revoke_api_key(%s)", (revoked.prefix,))
        conn.execute(
            "update public.api_keys set expires_at = now() - interval '1 second' where prefix = %s",
            (expired.prefix,),
        )
    for acct, code in ((revoked, "revoked_api_key"), (expired, "expired_api_key")):
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk(acct.key).chat.completions.create(model=MODEL, messages=hi)
        assert refused.value.code == code
    for acct in (restricted, broke, revoked, expired):
        assert metered_rows(db, acct.user_id) == []
    assert len(metered_rows(db, limited.user_id)) == 1


def test_refused_request_never_puts_its_key_in_the_database_log(
    sdk: Callable[[str], openai.OpenAI],
    account: Callable[..., Account],
    stack: Stack,
    admin_dsn: str,
):
    """authorize_request raises for every refused key, balance or quota, and PostgreSQL logs the
    text of a failing statement (log_min_error_statement = error: its default; the local stack
    turns it off, so the test turns it on). The key travels as a bound parameter, which that log
    leaves out; the statement itself is logged, so the test sees the log it checks."""
    broke = account(balance=Decimal(0))
    log = stack.paths.postgres_log
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("alter system set log_min_error_statement = error")
        conn.execute("select pg_reload_conf()")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with psycopg.connect(admin_dsn) as probe:
                if probe.execute("show log_min_error_statement").fetchone() == ("error",):
                    break
            time.sleep(0.05)
        time.sleep(0.2)  # the function's pooled connection reads the reload at its next command
        start = log.stat().st_size
        with pytest.raises(openai.APIStatusError) as poor:
            sdk(broke.key).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        assert poor.value.status_code == 402
        logged = log.read_bytes()[start:].decode(errors="replace")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("alter system reset log_min_error_statement")
            conn.execute("select pg_reload_conf()")
    assert "STATEMENT:  select public.authorize_request(" in logged
    assert broke.key not in logged


# ── concurrency ─────────────────────────────────────────────────────────────────────────────
async def _post_many(
    url: str, key: str, bodies: list[bytes], stream: bool
) -> list[tuple[int, str | None]]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def one(body: bytes) -> tuple[int, str | None]:
            headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
            async with http.stream("POST", url, headers=headers, content=body) as answer:
                data = await answer.aread()
                if answer.status_code != 200:
                    return answer.status_code, json.loads(data)["error"]["code"]
                if stream:
                    assert data.endswith(b"data: [DONE]\n\n"), data[-200:]
                return 200, None

        return await asyncio.gather(*(one(b) for b in bodies))


def test_200_concurrent_streams_against_balance_for_50_never_overdraw(
    endpoint: str, account: Callable[..., Account], db: psycopg.Connection
):
    body = json.dumps(
        {
            "model": MODEL,
            # 3 s per stream: every authorization comes while the first 50 still hold their
            # credit, so the balance, not the timing, decides who is admitted.
            "messages": [{"role": "user", "content": "words:4 delay:750"}],
            "max_tokens": 1000,
            "stream": True,
        }
    ).encode()
    per_in, per_out = price(db)
    hold = len(body) * per_in + 1000 * per_out  # the estimate authorize_request holds
    acct = account(balance=50 * hold)
    results = asyncio.run(_post_many(f"{endpoint}/chat/completions", acct.key, [body] * 200, True))
    served = sum(1 for status, _ in results if status == 200)
    refused = [r for r in results if r[0] != 200]
    assert set(refused) <= {(402, "insufficient_balance")}
    assert served >= 50 and refused, results  # at least the 50 covered; never all 200
    wait_settled(db, acct.user_id)
    charged = db.execute(
        "select count(*), coalesce(sum(cost), 0) from public.usage_records where user_id = %s",
        (acct.user_id,),
    ).fetchone()
    assert charged is not None and charged[0] == served
    assert balance(db, acct.user_id) == 50 * hold - charged[1] >= 0
    assert db.execute(
        "select count(*) from public.credit_reservations where user_id = %s and status = 'held'",
        (acct.user_id,),
    ).fetchone() == (0,)
    assert_audit_clean(db)


def test_100_concurrent_against_quota_10_serve_exactly_10_then_suspend(
    endpoint: str, account: Callable[..., Account], db: psycopg.Connection
):
    acct = account(quota_requests=10)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    results = asyncio.run(_post_many(f"{endpoint}/chat/completions", acct.key, [body] * 100, False))
    assert sum(1 for r in results if r[0] == 200) == 10
    assert {r for r in results if r[0] != 200} == {(429, "quota_exceeded")}
    status = db.execute(
        "select status, suspension_reason, used_requests from public.subscriptions where id = %s",
        (acct.subscription_id,),
    ).fetchone()
    assert status == ("suspended", "quota", 10)
    assert_audit_clean(db)


def test_key_revoked_mid_traffic_refused_from_next_request(
    endpoint: str, account: Callable[..., Account], db_url: str
):
    acct = account()
    url = f"{endpoint}/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    results: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                started = time.monotonic()
                answer = http.post(url, headers={"Authorization": f"Bearer {acct.key}"}, json=body)
                code = None if answer.status_code == 200 else answer.json()["error"]["code"]
                results.append((started, answer.status_code, code))

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("select public.revoke_api_key(%s)", (acct.prefix,))
    revoked_at = time.monotonic()
    time.sleep(1.0)
    stop.set()
    for worker in workers:
        worker.join()
    before = [r for r in results if r[0] < revoked_at]
    after = [r for r in results if r[0] > revoked_at]
    assert before and after and any(r[1] == 200 for r in before)
    assert {(r[1], r[2]) for r in after} == {(401, "revoked_api_key")}


# ── supabase-js and the admin function ──────────────────────────────────────────────────────
def test_supabase_js_functions_invoke_chat_completion_charged(
    gateway: FunctionGateway, account: Callable[..., Account], anon_key: str, db: psycopg.Connection
):
    acct = account()
    env = dict(
        os.environ,
        SUPABASE_URL=gateway.url,
        SUPABASE_ANON_KEY=anon_key,
        TM_KEY=acct.key,
        NO_COLOR="1",
    )
    result = subprocess.run(
        [str(deno.find_deno_bin()), "test", "--allow-all", str(JS_INVOKE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed | 0 failed" in result.stdout, result.stdout
    ((request_id, status, http_status, cost, estimated, _),) = metered_rows(db, acct.user_id)
    assert (status, http_status, estimated) == ("completed", 200, False) and cost > 0
    assert request_id == f"{acct.prefix}:js-invoke-1"


def test_admin_create_key_seed_002_call_returns_working_secret_once(
    gateway: FunctionGateway, service_key: str, anon_key: str, db: psycopg.Connection
):
    url = f"{gateway.url}/functions/v1/admin/keys"
    call = {"name": "alice", "sub_name": "cursor-pro-sonnet", "expires_in": 30}
    with httpx.Client(timeout=60) as http:
        # verify_jwt = true for admin (config.toml): no JWT is refused by the gateway itself.
        no_jwt = http.post(url, json=call)
        assert no_jwt.status_code == 401 and no_jwt.json()["code"] == "UNAUTHORIZED_NO_AUTH_HEADER"
        refused = http.post(url, headers={"Authorization": f"Bearer {anon_key}"}, json=call)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        created = http.post(url, headers={"Authorization": f"Bearer {service_key}"}, json=call)
        assert created.status_code == 201, created.text
        made = created.json()
        assert made["key"].startswith(made["prefix"]) and made["plan"] == "cursor-pro-sonnet"
        models = http.get(
            f"{gateway.url}/functions/v1/openai/v1/models",
            headers={"Authorization": f"Bearer {made['key']}"},
        )
        assert models.status_code == 200 and models.json()["object"] == "list"
        never = http.post(
            url,
            headers={"Authorization": f"Bearer {service_key}"},
            json={**call, "expires_in": -1, "user_id": made["user_id"]},
        )
        assert never.status_code == 201 and never.json()["expires_at"] is None
        assert never.json()["subscription_id"] == made["subscription_id"]
        bad = http.post(
            url,
            headers={"Authorization": f"Bearer {service_key}"},
            json={**call, "sub_name": "no-such-plan"},
        )
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "plan_not_found"
    row = db.execute(
        "select s.status, k.expires_at > now() + interval '29 days', k.name"
        " from public.api_keys k join public.subscriptions s on s.user_id = k.user_id"
        " where k.id = %s",
        (made["id"],),
    ).fetchone()
    assert row == ("active", True, "alice")
    listed = db.execute("select public.list_api_keys(%s)::text", (made["user_id"],)).fetchall()
    assert len(listed) == 2 and all(made["key"] not in r[0] for r in listed)


def test_gateway_verify_jwt_read_per_function_from_config_toml(gateway: FunctionGateway):
    """[functions.openai] verify_jwt = false is what lets a tm_ key reach the function; without
    the entry the gateway asks for a JWT, as Supabase does by default."""
    url = f"{gateway.url}/functions/v1/openai/v1/models"
    headers = {"Authorization": "Bearer tm_" + "A" * 43}
    config = gateway.folder / "config.toml"
    original = config.read_text()
    assert httpx.get(url, headers=headers).json()["error"]["code"] == "invalid_api_key"
    try:
        config.write_text(original.replace("[functions.openai]\nverify_jwt = false", ""))
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED_INVALID_JWT"
    finally:
        config.write_text(original)
    assert httpx.get(url, headers=headers).json()["error"]["code"] == "invalid_api_key"


def test_rpc_transport_charges_and_maps_refusals_like_sql(
    stack: Stack,
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    """OPENAI_DB_ACCESS=rpc (supabase-js through REST) answers as the default SQL transport."""
    gw = FunctionGateway({"FAKE_UPSTREAM_KEY": API_KEY, "OPENAI_DB_ACCESS": "rpc"})
    try:
        client = openai.OpenAI(
            base_url=f"{gw.url}/functions/v1/openai/v1",
            api_key=(acct := account(quota_requests=1)).key,
            max_retries=0,
            timeout=30,
        )
        hi = [{"role": "user", "content": "hi"}]
        answer = client.chat.completions.create(model=MODEL, messages=hi)
        per_in, per_out = price(db)
        assert Decimal(answer.usage.model_extra["cost"]) == 11 * per_in + 5 * per_out
        with pytest.raises(openai.RateLimitError) as quota:
            client.chat.completions.create(model=MODEL, messages=hi)
        assert (
            quota.value.code == "quota_exceeded" and "retry-after" in quota.value.response.headers
        )
        broke = account(balance=Decimal(0))
        with pytest.raises(openai.APIStatusError) as poor:
            client.with_options(api_key=broke.key).chat.completions.create(model=MODEL, messages=hi)
        assert poor.value.status_code == 402 and poor.value.code == "insufficient_balance"
        with pytest.raises(openai.AuthenticationError) as unknown:
            client.with_options(api_key="tm_" + "B" * 43).models.list()
        assert unknown.value.code == "invalid_api_key"
        client.close()
        assert len(metered_rows(db, acct.user_id)) == 1
    finally:
        gw.stop()


# ── the database unreachable between authorize_request and complete_request ─────────────────
@pytest.fixture()
def cut_gateway(stack: Stack) -> Iterator[tuple[FunctionGateway, DbProxy]]:
    """A function gateway whose database (its functions' SUPABASE_DB_URL) is behind a proxy the
    test can cut."""
    proxy = DbProxy(stack.paths.db_port)
    try:
        gw = FunctionGateway(
            {"FAKE_UPSTREAM_KEY": API_KEY}, env={"TOKENMETER_DB_PORT": str(proxy.port)}
        )
    except BaseException:
        proxy.close()
        raise
    try:
        yield gw, proxy
    finally:
        gw.stop()
        proxy.close()


def wait_for(db: psycopg.Connection, user_id: str, status: str, timeout: float = 30) -> tuple:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = metered_rows(db, user_id)
        if rows and rows[0][1] == status:
            return rows[0]
        time.sleep(0.05)
    pytest.fail(f"no metered request reached {status}: {metered_rows(db, user_id)}")


def test_answer_database_unreachable_at_complete_withheld_then_logged_free(
    cut_gateway: tuple[FunctionGateway, DbProxy],
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    """A non-streamed answer that cannot be billed is not handed out: 503 billing_unavailable,
    and once the database is back the request is recorded as failed, nothing charged."""
    gw, proxy = cut_gateway
    acct = account()
    answers: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                f"{gw.url}/functions/v1/openai/v1/chat/completions",
                headers={"Authorization": f"Bearer {acct.key}"},
                json={"model": MODEL, "messages": [{"role": "user", "content": "stall:1 hi"}]},
                timeout=60,
            )
        )
    )
    request.start()
    wait_for(db, acct.user_id, "authorized")  # authorized; the upstream stalls 1 s
    proxy.cut()
    request.join()
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "billing_unavailable"
    assert "word0" not in answer.text  # the upstream's answer was withheld
    proxy.restore()
    row = wait_for(db, acct.user_id, "failed")
    assert row[2:4] == (503, 0) and "answer withheld" in row[5]
    assert balance(db, acct.user_id) == Decimal(10)
    assert_audit_clean(db)


def test_stream_database_unreachable_at_complete_charged_when_back(
    cut_gateway: tuple[FunctionGateway, DbProxy],
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    """A stream is delivered as it comes; its charge, refused by an unreachable database at the
    end, is retried in the background and lands, exactly, once the database is back."""
    gw, proxy = cut_gateway
    acct = account()
    with httpx.Client(timeout=60) as http:
        with http.stream(
            "POST",
            f"{gw.url}/functions/v1/openai/v1/chat/completions",
            headers={"Authorization": f"Bearer {acct.key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "words:5 delay:200"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as response:
            wait_for(db, acct.user_id, "authorized")
            proxy.cut()
            data = response.read()
    assert response.status_code == 200 and data.endswith(b"data: [DONE]\n\n")
    assert b"word4" in data and b'"cost"' not in data  # delivered; not charged yet
    assert data.count(b'"prompt_tokens"') == 1  # one usage chunk, before [DONE]
    assert metered_rows(db, acct.user_id)[0][1] == "authorized"
    proxy.restore()
    row = wait_for(db, acct.user_id, "completed")
    per_in, per_out = price(db)
    assert row[2:5] == (200, 12 * per_in + 5 * per_out, False)
    assert balance(db, acct.user_id) == Decimal(10) - row[3]
    assert_audit_clean(db)


def test_stream_without_usage_requested_ends_without_waiting_for_its_charge(
    cut_gateway: tuple[FunctionGateway, DbProxy],
    account: Callable[..., Account],
    db: psycopg.Connection,
):
    """A client that did not ask for usage receives nothing that depends on the charge, so its
    stream ends at once, even when complete_request cannot reach the database (the function
    retries ~3 s before giving a call up to the background); the charge lands once it is back."""
    gw, proxy = cut_gateway
    acct = account()
    with httpx.Client(timeout=60) as http:
        with http.stream(
            "POST",
            f"{gw.url}/functions/v1/openai/v1/chat/completions",
            headers={"Authorization": f"Bearer {acct.key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "words:5 delay:200"}],
                "stream": True,
            },
        ) as response:
            wait_for(db, acct.user_id, "authorized")
            proxy.cut()
            lines = response.iter_lines()
            while "word4" not in next(lines):
                pass
            last_word = time.monotonic()
            rest = list(lines)
            ended = time.monotonic() - last_word
    assert response.status_code == 200 and "data: [DONE]" in rest
    assert ended < 1.5, ended  # the quick retries alone take 3.15 s
    assert metered_rows(db, acct.user_id)[0][1] == "authorized"
    proxy.restore()
    row = wait_for(db, acct.user_id, "completed")
    per_in, per_out = price(db)
    assert row[2:5] == (200, 12 * per_in + 5 * per_out, False)
    assert balance(db, acct.user_id) == Decimal(10) - row[3]
    assert_audit_clean(db)


def test_sql_transport_through_transaction_pooler_charges_every_request(
    stack: Stack, account: Callable[..., Account], db: psycopg.Connection
):
    """SUPABASE_DB_URL through PgBouncer in transaction mode, as Supabase tells edge functions to
    connect: 60 concurrent calls (streamed and not) share 2 server connections, so a prepared
    statement or session setting kept between calls would fail them; every one is charged."""
    pooler = TransactionPooler(stack.paths.db_port, server_pool_size=2)
    pooled = f"postgresql://postgres:postgres@127.0.0.1:{pooler.port}/postgres"
    try:
        gw = FunctionGateway(
            {"FAKE_UPSTREAM_KEY": API_KEY}, env={"TOKENMETER_FUNCTIONS_DB_URL": pooled}
        )
    except BaseException:
        pooler.stop()
        raise
    try:
        url = f"{gw.url}/functions/v1/openai/v1/chat/completions"
        accounts = [account() for _ in range(4)]
        hi = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        plain = json.dumps(hi).encode()
        streamed = json.dumps({**hi, "stream": True}).encode()

        async def everyone() -> list[list[tuple[int, str | None]]]:
            return await asyncio.gather(
                *(
                    _post_many(url, a.key, [streamed if i % 2 else plain] * 15, bool(i % 2))
                    for i, a in enumerate(accounts)
                )
            )

        results = asyncio.run(everyone())
        assert all(r == (200, None) for rs in results for r in rs), (results, pooler.log_text())
        per_in, per_out = price(db)
        for acct in accounts:
            wait_settled(db, acct.user_id)
            rows = metered_rows(db, acct.user_id)
            assert len(rows) == 15
            assert {r[1:5] for r in rows} == {("completed", 200, 11 * per_in + 5 * per_out, False)}
            assert balance(db, acct.user_id) == Decimal(10) - 15 * (11 * per_in + 5 * per_out)
        assert_audit_clean(db)
    finally:
        gw.stop()
        pooler.stop()
