"""Low-balance and quota alerts end to end on the test stack (issue 12 §6): charges through the
real API write the outbox; the worker delivers it to a local HTTP receiver that fails the first
attempts, signed (HMAC-SHA256 over the body), retried with exponential backoff, recorded as
delivered once the receiver answers 2xx; a receiver that never answers makes the alert `failed`
after max_attempts, and `alerts retry` queues it again. Concurrent charges crossing a threshold
alert exactly once. The stack runs the worker itself when a webhook is configured. The CLI sets
thresholds and lists alerts. The audit trail records what a user does through the API with the
address and user agent of the request (X-Forwarded-For as a proxy sets it)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.alerts import (
    ALERT_ID_HEADER,
    ATTEMPT_HEADER,
    SIGNATURE_HEADER,
    Alert,
    Alerts,
    AlertWorker,
    WebhookSettings,
    signature_valid,
)
from app.cli import app
from app.client import call
from app.stack import alerts_worker
from app.stack.manager import Stack
from supabase import Client, ClientOptions, create_client

SECRET = "test-webhook-secret"
WIDE = {"COLUMNS": "250"}


@dataclass
class Received:
    at: float
    body: bytes
    headers: dict[str, str]

    @property
    def alert_id(self) -> str:
        return json.loads(self.body)["id"]


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: answers `fail_status` to the first `failures` posts of
    each alert id, then 204."""

    failures: int = 0
    fail_status: int = 500
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def posts_of(self, alert_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.alert_id == alert_id]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — http.server's name
            body = self.rfile.read(int(self.headers["content-length"]))
            got = Received(time.monotonic(), body, {k.lower(): v for k, v in self.headers.items()})
            with state.lock:
                state.received.append(got)
                seen = sum(1 for r in state.received if r.alert_id == got.alert_id)
            self.send_response(state.fail_status if seen <= state.failures else 204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture()
def alerts(service: Client) -> Alerts:
    return Alerts(service)


def settings(url: str, **overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = dict(
        url=url,
        secret=SECRET,
        max_attempts=5,
        backoff_seconds=0.3,
        max_backoff_seconds=5,
        timeout_seconds=3,
        poll_seconds=0.05,
    )
    values.update(overrides)
    return WebhookSettings(**values)


def funded_user(sign_up: Callable[[], str], service: Client, amount: str) -> str:
    user_id = sign_up()
    call(
        lambda: service.rpc(
            "top_up", {"user_id": user_id, "amount": amount, "reference": f"t-{uuid.uuid4()}"}
        ).execute()
    )
    return user_id


def charge(client: Client, user_id: str, input_tokens: int) -> None:
    """gpt-4o-mini at the seed's price: 1,000,000 input tokens cost 0.15."""
    call(
        lambda: client.rpc(
            "record_usage",
            {
                "user_id": user_id,
                "model": "gpt-4o-mini",
                "input_tokens": input_tokens,
                "output_tokens": 0,
                "request_id": f"alert-{uuid.uuid4()}",
            },
        ).execute()
    )


def low_balance_alerts(alerts: Alerts, user_id: str) -> list[Alert]:
    return alerts.list(user_id=user_id, kind="low_balance")


def deliver_until(worker: AlertWorker, done: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the alert was not delivered in time"
        worker.deliver_due()
        time.sleep(0.05)


def test_alert_webhook_failing_first_attempts_retried_with_backoff_delivered_once_signed(
    sign_up, service, alerts, receiver
):
    user_id = funded_user(sign_up, service, "1")
    alerts.set_threshold(user_id=user_id, threshold=Decimal("0.5"))
    charge(service, user_id, 2_000_000)  # 1 -> 0.7
    charge(service, user_id, 2_000_000)  # 0.7 -> 0.4: below 0.5
    charge(service, user_id, 1_000_000)  # 0.4 -> 0.25: still below
    (alert,) = low_balance_alerts(alerts, user_id)
    assert alert.status == "pending"
    assert alert.payload == {
        "user_id": user_id,
        "threshold": "0.5",
        "balance": "0.4",
        "previous_balance": "0.7",
        "currency": "USD",
    }

    receiver.failures = 2
    worker = AlertWorker(alerts, settings(receiver.url))
    try:
        deliver_until(worker, lambda: len(receiver.posts_of(alert.id)) >= 3)
        worker.deliver_due()
    finally:
        worker.close()

    posts = receiver.posts_of(alert.id)
    assert len(posts) == 3, "two failures, one success, nothing after"
    assert [p.headers[ATTEMPT_HEADER.lower()] for p in posts] == ["1", "2", "3"]
    assert len({p.body for p in posts}) == 1, "the same body at every attempt"
    for post in posts:
        assert signature_valid(SECRET, post.body, post.headers[SIGNATURE_HEADER.lower()])
        assert post.headers[ALERT_ID_HEADER.lower()] == alert.id
    assert not signature_valid(
        "another secret", posts[0].body, posts[0].headers["x-tokenmeter-signature"]
    )
    body = json.loads(posts[0].body)
    assert body["id"] == alert.id and body["kind"] == "low_balance"
    assert body["user_id"] == user_id and body["data"]["balance"] == "0.4"
    # Exponential backoff: 0.3 s after the first failure, 0.6 s after the second.
    assert posts[1].at - posts[0].at >= 0.3
    assert posts[2].at - posts[1].at >= 0.6
    (done,) = low_balance_alerts(alerts, user_id)
    assert (done.status, done.attempts, done.last_error) == ("delivered", 3, "HTTP 500")
    assert done.delivered_at is not None


def test_alert_webhook_never_answering_fails_after_max_attempts_then_retry_requeues(
    sign_up, service, alerts, receiver
):
    user_id = funded_user(sign_up, service, "1")
    alerts.set_threshold(user_id=user_id, threshold=Decimal("0.9"))
    charge(service, user_id, 1_000_000)  # 1 -> 0.85
    (alert,) = low_balance_alerts(alerts, user_id)
    receiver.failures = 1_000
    receiver.fail_status = 503
    worker = AlertWorker(alerts, settings(receiver.url, max_attempts=2, backoff_seconds=0.1))
    try:
        deliver_until(worker, lambda: low_balance_alerts(alerts, user_id)[0].status == "failed")
    finally:
        worker.close()
    (failed,) = low_balance_alerts(alerts, user_id)
    assert (failed.attempts, failed.last_error) == (2, "HTTP 503")
    assert len(receiver.posts_of(alert.id)) == 2

    result = CliRunner().invoke(app, ["alerts", "retry", alert.id, "--json"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "pending"


def test_alert_webhook_unreachable_is_recorded_as_error_and_retried(sign_up, service, alerts):
    user_id = funded_user(sign_up, service, "1")
    alerts.set_threshold(user_id=user_id, threshold=Decimal("0.9"))
    charge(service, user_id, 1_000_000)
    (alert,) = low_balance_alerts(alerts, user_id)
    # A port nobody listens on: the connection is refused.
    worker = AlertWorker(alerts, settings("http://127.0.0.1:9/hook", backoff_seconds=60))
    try:
        worker.deliver_due()
    finally:
        worker.close()
    (after,) = low_balance_alerts(alerts, user_id)
    assert after.status == "pending" and after.attempts == 1
    assert after.last_error and after.last_error.startswith("ConnectError")
    assert after.next_attempt_at > alert.next_attempt_at


def test_low_balance_concurrent_charges_crossing_threshold_alert_exactly_once(
    sign_up, service, alerts, new_client, service_key
):
    users = [funded_user(sign_up, service, "1") for _ in range(3)]
    for user_id in users:
        alerts.set_threshold(user_id=user_id, threshold=Decimal("0.5"))
    clients = [new_client(service_key) for _ in range(8)]
    start = threading.Barrier(len(clients))
    errors: list[BaseException] = []

    def hammer(client: Client) -> None:
        try:
            start.wait()
            for _ in range(2):
                for user_id in users:
                    charge(client, user_id, 500_000)  # 0.075 each, 16 per user: 1 -> -0.2
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for user_id in users:
        found = low_balance_alerts(alerts, user_id)
        assert len(found) == 1, f"{len(found)} alerts for 16 concurrent charges crossing once"
        previous = Decimal(found[0].payload["previous_balance"])
        balance = Decimal(found[0].payload["balance"])
        assert previous >= Decimal("0.5") > balance
        assert previous - balance == Decimal("0.075")


def test_stack_with_webhook_configured_runs_the_worker_and_stops_it(
    stack, sign_up, service, alerts, receiver, monkeypatch
):
    monkeypatch.setenv("TOKENMETER_ALERTS_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("TOKENMETER_ALERTS_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TOKENMETER_ALERTS_POLL_SECONDS", "0.1")
    alerts_worker.stop(stack.paths)
    Stack(stack.paths).start()
    try:
        assert alerts_worker.running(stack.paths)
        user_id = funded_user(sign_up, service, "1")
        alerts.set_threshold(user_id=user_id, threshold=Decimal("0.9"))
        charge(service, user_id, 1_000_000)
        (alert,) = low_balance_alerts(alerts, user_id)
        deadline = time.monotonic() + 20
        while low_balance_alerts(alerts, user_id)[0].status != "delivered":
            assert time.monotonic() < deadline, alerts_worker.log_file(stack.paths).read_text()
            time.sleep(0.1)
        (post,) = receiver.posts_of(alert.id)
        assert signature_valid(SECRET, post.body, post.headers["x-tokenmeter-signature"])
    finally:
        alerts_worker.stop(stack.paths)
    assert not alerts_worker.running(stack.paths)


def test_alerts_cli_thresholds_default_and_list(sign_up, service, alerts):
    user_id = funded_user(sign_up, service, "1")
    run = CliRunner().invoke
    result = run(app, ["alerts", "thresholds", "set", user_id, "0.95", "--json"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["effective"] == "0.95"
    result = run(app, ["alerts", "thresholds", "set", user_id, "lots"], env=WIDE)
    assert result.exit_code == 1 and "AMOUNT must be a decimal number" in result.stderr
    result = run(app, ["alerts", "thresholds", "set", str(uuid.uuid4()), "1"], env=WIDE)
    assert result.exit_code == 1 and "user_not_found" in result.stderr
    assert "Traceback" not in result.output
    charge(service, user_id, 1_000_000)  # 1 -> 0.85
    result = run(app, ["alerts", "list", "--user", user_id, "--json"], env=WIDE)
    assert result.exit_code == 0, result.output
    (listed,) = json.loads(result.stdout)
    assert listed["kind"] == "low_balance" and listed["payload"]["balance"] == "0.85"
    result = run(app, ["alerts", "list", "--user", user_id], env=WIDE)
    assert result.exit_code == 0 and "low_balance" in result.stdout
    result = run(app, ["alerts", "list", "--status", "lost"], env=WIDE)
    assert result.exit_code == 1 and "status must be one of" in result.stderr
    result = run(app, ["alerts", "thresholds", "default"], env=WIDE)
    assert result.exit_code == 0 and "default threshold:" in result.stdout


def test_alerts_run_without_webhook_configured_exits_2_with_message(monkeypatch):
    monkeypatch.delenv("TOKENMETER_ALERTS_WEBHOOK_URL", raising=False)
    result = CliRunner().invoke(app, ["alerts", "run", "--once"], env=WIDE)
    assert result.exit_code == 2
    assert "TOKENMETER_ALERTS_WEBHOOK_URL" in result.stderr


def test_alerts_run_webhook_without_secret_exits_2_with_message(monkeypatch):
    monkeypatch.setenv("TOKENMETER_ALERTS_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.delenv("TOKENMETER_ALERTS_WEBHOOK_SECRET", raising=False)
    result = CliRunner().invoke(app, ["alerts", "run", "--once"], env=WIDE)
    assert result.exit_code == 2
    assert "TOKENMETER_ALERTS_WEBHOOK_SECRET is required" in result.stderr


def test_audit_user_action_through_api_records_forwarded_address_and_agent_readable_by_owner(
    api_url, anon_key, service, signed_up_user
):
    plan = call(
        lambda: service.table("plans").select("name").eq("is_active", True).limit(1).execute()
    ).data[0]["name"]
    http = httpx.Client(timeout=30)
    try:
        client = create_client(
            api_url,
            anon_key,
            ClientOptions(
                auto_refresh_token=False,
                httpx_client=http,
                headers={
                    "X-Forwarded-For": "198.51.100.23, 10.0.0.2",
                    "User-Agent": "audit-test/2",
                },
            ),
        )
        email = f"audit-{uuid.uuid4().hex[:10]}@example.com"
        signed = client.auth.sign_up({"email": email, "password": "correct-horse-9"})
        assert signed.user is not None
        made = call(
            lambda: client.rpc("create_api_key", {"name": "audited", "plan": plan}).execute()
        ).data
        own = call(
            lambda: client.table("audit_logs").select("*").eq("resource_id", made["id"]).execute()
        ).data
        assert len(own) == 1
        entry = own[0]
        assert (entry["action"], entry["resource_type"], entry["actor_role"]) == (
            "insert",
            "api_keys",
            "authenticated",
        )
        assert entry["actor_user_id"] == signed.user.id == entry["user_id"]
        # The address the gateway saw, not the chain's first (claimed) one (20261130040000).
        assert entry["ip_address"] == "127.0.0.1"
        assert entry["user_agent"] == "audit-test/2"
        assert entry["metadata"]["forwarded_for"] == "198.51.100.23, 10.0.0.2, 127.0.0.1"
    finally:
        http.close()
    _, other = signed_up_user()
    seen = call(
        lambda: other.table("audit_logs").select("id").eq("resource_id", made["id"]).execute()
    ).data
    assert seen == [], "another user does not see it"
    forged = call(
        lambda: service.table("audit_logs").select("id").eq("resource_id", made["id"]).execute()
    ).data
    assert len(forged) == 1, "service_role reads it"
