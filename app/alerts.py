"""Low-balance and quota alerts (issue 12 §6): thresholds, the outbox, and the worker that
delivers the outbox to a webhook.

The database writes alerts (migrations 20261129230010-11): a balance going below its threshold,
a subscription reaching 80 % / 100 % of a quota. `AlertWorker` leases due alerts
(`claim_alerts`), POSTs each to the webhook and records the outcome (`record_alert_attempt`):

    POST <TOKENMETER_ALERTS_WEBHOOK_URL>
    Content-Type: application/json
    X-Tokenmeter-Signature: sha256=<hex HMAC-SHA256 of the exact body, key = the secret>
    X-Tokenmeter-Alert-Id: <id>          X-Tokenmeter-Attempt: <n>
    {"created_at": "...", "data": {...}, "id": "<uuid>", "kind": "low_balance", "user_id": "..."}

Any 2xx is delivered. Anything else (a status, a timeout, a refused connection) is retried after
backoff_seconds x 2^(attempt - 1), at most max_backoff_seconds, until max_attempts; then the alert
is `failed` (`tokenmeter alerts retry ID` queues it again). At least once: a worker that dies
after the receiver answered, before recording it, leaves the alert to be sent again when its
lease ends, so receivers dedupe on `id` (the same body, byte for byte, every attempt).

Settings (environment, or `.env` in the project root): TOKENMETER_ALERTS_WEBHOOK_URL,
TOKENMETER_ALERTS_WEBHOOK_SECRET (required with the URL), and optionally
TOKENMETER_ALERTS_MAX_ATTEMPTS (10), TOKENMETER_ALERTS_BACKOFF_SECONDS (10),
TOKENMETER_ALERTS_MAX_BACKOFF_SECONDS (3600), TOKENMETER_ALERTS_TIMEOUT_SECONDS (10),
TOKENMETER_ALERTS_POLL_SECONDS (5).

`python -m app.alerts` runs the worker until SIGTERM (the local stack starts it this way when a
webhook URL is configured).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import httpx
from dotenv import dotenv_values
from pydantic import BaseModel

from app.client import call, rpc_data, rpc_params
from app.config import ConfigError
from app.errors import InvalidInput
from app.facade import ServiceFacade
from app.stack.paths import StackPaths

SIGNATURE_HEADER = "X-Tokenmeter-Signature"
ALERT_ID_HEADER = "X-Tokenmeter-Alert-Id"
ATTEMPT_HEADER = "X-Tokenmeter-Attempt"
STATUSES = ("pending", "delivered", "failed")
_ENV = "TOKENMETER_ALERTS_"


class Alert(BaseModel):
    id: str
    kind: str
    user_id: str | None
    payload: dict[str, Any]
    dedupe_key: str | None = None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    # The database's own text of created_at, so the body is the same at every attempt.
    created_at_text: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Alert:
        return cls(**row, created_at_text=str(row["created_at"]))


class ThresholdResult(BaseModel):
    user_id: str | None = None
    threshold: Decimal | None = None
    default_threshold: Decimal | None = None
    effective: Decimal | None = None
    users: int | None = None


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: 'sha256=' + the hex HMAC-SHA256 of body keyed by secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver checks (constant-time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def alert_body(alert: Alert) -> bytes:
    """The webhook body: compact JSON with sorted keys; money stays the exact decimal strings
    the database wrote."""
    document = {
        "id": alert.id,
        "kind": alert.kind,
        "user_id": alert.user_id,
        "created_at": alert.created_at_text or alert.created_at.isoformat(),
        "data": alert.payload,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Wait before the attempt after `attempt` (1-based): base, 2 base, 4 base, … at most cap."""
    return min(cap, base * 2 ** max(0, attempt - 1))


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: str = field(repr=False)
    max_attempts: int = 10
    backoff_seconds: float = 10.0
    max_backoff_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 5.0

    @classmethod
    def from_env(cls) -> WebhookSettings | None:
        """From the environment, then `.env` in the project root. None when no webhook URL is
        set (alerts then wait in the outbox). Raises ConfigError for a URL without a secret or
        a malformed number."""
        values: dict[str, str] = {}
        dotenv = StackPaths.from_env().root / ".env"
        if dotenv.is_file():
            values.update({k: v for k, v in dotenv_values(dotenv).items() if v})
        values.update({k: v for k, v in os.environ.items() if k.startswith(_ENV) and v})
        url = values.get(_ENV + "WEBHOOK_URL")
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{_ENV}WEBHOOK_URL must start with http:// or https://")
        secret = values.get(_ENV + "WEBHOOK_SECRET")
        if not secret:
            raise ConfigError(
                f"{_ENV}WEBHOOK_SECRET is required with {_ENV}WEBHOOK_URL: the receiver checks "
                f"the {SIGNATURE_HEADER} header with it"
            )

        def number(name: str, default: float, least: float) -> float:
            raw = values.get(_ENV + name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{_ENV}{name} must be a number, got {raw!r}") from None
            if not least <= value < 1e9:
                raise ConfigError(f"{_ENV}{name} must be at least {least}, got {raw!r}")
            return value

        return cls(
            url=url,
            secret=secret,
            max_attempts=int(number("MAX_ATTEMPTS", 10, 1)),
            backoff_seconds=number("BACKOFF_SECONDS", 10.0, 0.0),
            max_backoff_seconds=number("MAX_BACKOFF_SECONDS", 3600.0, 0.0),
            timeout_seconds=number("TIMEOUT_SECONDS", 10.0, 0.1),
            poll_seconds=number("POLL_SECONDS", 5.0, 0.05),
        )


def _threshold(value: Decimal | None) -> str | None:
    if value is None:
        return None
    if not value.is_finite():
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="threshold",
            detail=f"threshold must be a finite amount, got {value}",
        )
    return format(value, "f")


class Alerts(ServiceFacade):
    """Thresholds and the outbox, as service_role. Methods raise `app.errors` types:
    InvalidInput (nothing written), NotFound (user_not_found, alert_not_found),
    PermissionDenied, Unavailable."""

    def set_threshold(self, *, user_id: str, threshold: Decimal | None) -> ThresholdResult:
        """The user's own low-balance threshold; None removes it (the default applies)."""
        data = call(
            lambda: self.client.rpc(
                "set_low_balance_threshold",
                {"user_id": user_id, "threshold": _threshold(threshold)},
            ).execute()
        )
        return ThresholdResult(**rpc_data(data))

    def set_default_threshold(self, *, threshold: Decimal | None) -> ThresholdResult:
        """The threshold of every user without their own; None: no default."""
        data = call(
            lambda: self.client.rpc(
                "set_default_low_balance_threshold", {"threshold": _threshold(threshold)}
            ).execute()
        )
        result = rpc_data(data)
        return ThresholdResult(default_threshold=result["default_threshold"], users=result["users"])

    def default_threshold(self) -> Decimal | None:
        rows = call(
            lambda: (
                self.client.table("alert_settings")
                .select("default_low_balance_threshold")
                .execute()
            )
        ).data
        value = rows[0]["default_low_balance_threshold"] if rows else None
        return None if value is None else Decimal(str(value))

    def list(
        self,
        *,
        status: str | None = None,
        user_id: str | None = None,
        kind: str | None = None,
        limit: int = 50,
    ) -> list[Alert]:
        """Newest first."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(
                "invalid_argument",
                code="invalid_argument",
                field="status",
                detail=f"status must be one of {', '.join(STATUSES)}, got {status!r}",
            )
        if not 1 <= limit <= 1000:
            raise InvalidInput(
                "invalid_argument",
                code="invalid_argument",
                field="limit",
                detail=f"limit must be between 1 and 1000, got {limit}",
            )

        def query() -> Any:
            q = self.client.table("alert_outbox").select("*")
            if status is not None:
                q = q.eq("status", status)
            if user_id is not None:
                q = q.eq("user_id", user_id)
            if kind is not None:
                q = q.eq("kind", kind)
            return q.order("created_at", desc=True).order("id").limit(limit).execute()

        return [Alert.from_row(row) for row in call(query).data]

    def claim(self, *, max_count: int = 20, lease_seconds: int = 60) -> list[Alert]:
        rows = call(
            lambda: self.client.rpc(
                "claim_alerts", {"max_count": max_count, "lease_seconds": lease_seconds}
            ).execute()
        ).data
        return sorted((Alert.from_row(r) for r in rows or []), key=lambda a: a.created_at)

    def record_attempt(
        self,
        *,
        alert_id: str,
        delivered: bool,
        error: str | None = None,
        retry_in_seconds: float | None = None,
    ) -> Alert:
        params = rpc_params(
            id=alert_id,
            delivered=delivered,
            error=error,
            retry_in_seconds=None if retry_in_seconds is None else round(retry_in_seconds, 3),
        )
        row = call(lambda: self.client.rpc("record_alert_attempt", params).execute()).data
        return Alert.from_row(row)

    def requeue(self, *, alert_id: str) -> Alert:
        """A failed (or pending) alert, due now; a delivered one is returned unchanged."""
        row = call(lambda: self.client.rpc("requeue_alert", {"id": alert_id}).execute()).data
        return Alert.from_row(row)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"{self.delivered} delivered, {self.retried} to retry, {self.failed} failed"


class AlertWorker:
    """Delivers the outbox. `deliver_due()` is one pass; `run()` repeats it until stopped."""

    BATCH = 20

    def __init__(
        self,
        alerts: Alerts,
        settings: WebhookSettings,
        http: httpx.Client | None = None,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.alerts = alerts
        self.settings = settings
        self.http = http or httpx.Client(timeout=settings.timeout_seconds)
        self.log = log

    @property
    def lease_seconds(self) -> int:
        # Longer than one batch can take, so no other worker sends the same alert meanwhile.
        return int(self.settings.timeout_seconds * self.BATCH + 30)

    def deliver_due(self) -> DeliveryReport:
        """Send every alert due now (batch after batch). Raises app.errors types when the
        database cannot be reached; a receiver's failure is recorded, never raised."""
        report = DeliveryReport()
        while True:
            batch = self.alerts.claim(max_count=self.BATCH, lease_seconds=self.lease_seconds)
            for alert in batch:
                self._deliver(alert, report)
            if len(batch) < self.BATCH:
                return report

    def _deliver(self, alert: Alert, report: DeliveryReport) -> None:
        body = alert_body(alert)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.settings.secret, body),
            ALERT_ID_HEADER: alert.id,
            ATTEMPT_HEADER: str(alert.attempts),
            "User-Agent": "tokenmeter-alerts",
        }
        error: str | None
        try:
            response = self.http.post(self.settings.url, content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
        if error is None:
            self.alerts.record_attempt(alert_id=alert.id, delivered=True)
            report.delivered += 1
            self.log(f"alert {alert.id} ({alert.kind}) delivered, attempt {alert.attempts}")
            return
        if alert.attempts >= self.settings.max_attempts:
            self.alerts.record_attempt(alert_id=alert.id, delivered=False, error=error)
            report.failed += 1
            self.log(f"alert {alert.id} failed for good after {alert.attempts} attempts: {error}")
            return
        wait = backoff_seconds(
            alert.attempts, self.settings.backoff_seconds, self.settings.max_backoff_seconds
        )
        self.alerts.record_attempt(
            alert_id=alert.id, delivered=False, error=error, retry_in_seconds=wait
        )
        report.retried += 1
        self.log(f"alert {alert.id} attempt {alert.attempts} failed ({error}); retry in {wait:g} s")

    def run(self, stop: threading.Event | None = None) -> None:
        """Deliver, then wait poll_seconds, until `stop` is set. A database that cannot be
        reached (the stack still starting, migrations not applied yet) is logged and retried."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                report = self.deliver_due()
                if report.delivered or report.retried or report.failed:
                    self.log(str(report))
            except Exception as exc:  # noqa: BLE001 — the worker outlives a passing failure
                self.log(f"alerts worker: {type(exc).__name__}: {exc}")
            stop.wait(self.settings.poll_seconds)

    def close(self) -> None:
        self.http.close()


def main() -> int:
    """`python -m app.alerts`: the worker until SIGTERM/SIGINT. Exit 0 when no webhook is set."""
    settings = WebhookSettings.from_env()
    if settings is None:
        print(f"alerts worker: no {_ENV}WEBHOOK_URL set; alerts stay in the outbox", flush=True)
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def log(message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)

    alerts = Alerts.from_env()
    worker = AlertWorker(alerts, settings, log=log)
    log(f"alerts worker: delivering to {settings.url}")
    try:
        worker.run(stop)
    finally:
        worker.close()
        alerts.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
