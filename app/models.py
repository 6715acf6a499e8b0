"""Results of the metering API as pydantic models. Money is `Decimal`, parsed from the exact
decimal strings the SQL functions return (never through a float)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    # New keys in a later SQL version must not break older clients.
    model_config = ConfigDict(extra="ignore", frozen=True)


class BalanceCheck(_Result):
    """What a user may spend now: available = balance − unexpired holds."""

    user_id: str
    balance: Decimal
    held: Decimal
    available: Decimal
    currency: str
    estimated_cost: Decimal = Decimal(0)
    allowed: bool = True


class LedgerMovement(_Result):
    """One balance movement (top-up, adjustment, refund) and the balance after it."""

    ledger_entry_id: int
    user_id: str
    kind: str
    amount: Decimal
    currency: str
    balance: Decimal
    created_at: datetime
    replayed: bool = False


class UsageResult(_Result):
    """A recorded usage with the unit prices it was charged at (a snapshot) and its cost."""

    usage_id: int
    request_id: str
    user_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    price_per_input_token: Decimal
    price_per_output_token: Decimal
    price_per_cached_input_token: Decimal
    price_per_request: Decimal
    cost: Decimal
    currency: str
    status: str
    occurred_at: datetime
    balance: Decimal
    negative_balance: bool
    replayed: bool = False
    reservation_id: int | None = None
    reserved_amount: Decimal | None = None
    reservation_status: str | None = None


class BatchError(_Result):
    code: str
    message: str
    detail: str | None = None


class BatchItem(_Result):
    """One record's outcome in a batch: `usage` when ok, `error` otherwise."""

    index: int
    ok: bool
    request_id: str | None = None
    usage: UsageResult | None = None
    error: BatchError | None = None


class BatchResult(_Result):
    results: list[BatchItem]
    recorded: int
    replayed: int
    failed: int


class Reservation(_Result):
    """A credit hold taken before a provider call."""

    reservation_id: int
    request_id: str
    user_id: str
    amount: Decimal
    status: str
    expires_at: datetime
    provider: str | None = None
    model: str | None = None
    balance: Decimal | None = None
    held: Decimal | None = None
    available: Decimal | None = None
    replayed: bool = False
    released: bool | None = None


class BalanceMovement(_Result):
    """A row of public.balance_movements: a ledger entry (source 'ledger') or a usage charge
    (source 'usage': the usage record is its charge's line, amount = −the cost it charged).
    A user's amounts add up to their balance."""

    source: str
    id: int
    user_id: str
    kind: str
    amount: Decimal
    currency: str
    reference: str
    description: str | None = None
    created_at: datetime
    # When it happened (the order of a history): the ledger entry's created_at, the usage
    # record's occurred_at.
    occurred_at: datetime | None = None


class UsageRecord(_Result):
    """A row of usage_records as stored."""

    id: int
    request_id: str
    user_id: str
    provider_id: str
    model_id: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost: Decimal
    currency: str
    status: str
    occurred_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class CostEstimate(_Result):
    """The most a call can cost: input tokens plus `max_output_tokens` at the current price."""

    provider: str
    model: str
    input_tokens: int
    max_output_tokens: int
    cost: Decimal
    currency: str


# ── The metered endpoint's admin objects (issue 11; app/keys.py, plans.py, subscriptions.py) ──
class ApiKey(_Result):
    """An API key as listed: never its secret or hash. state: active | expired | revoked."""

    id: str
    user_id: str
    plan_id: str
    plan: str | None = None
    name: str
    prefix: str
    allowed_models: list[str] | None = None
    spend_limit: Decimal | None = None
    spend_limit_period: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    created_at: datetime
    state: str


class CreatedApiKey(ApiKey):
    """A new key with its secret `key` (`tm_…`): returned this once, stored only as a hash."""

    key: str


class RevokedApiKey(ApiKey):
    """The key after `revoke`; `revoked` is False when it already was revoked."""

    revoked: bool


class Upstream(_Result):
    """An OpenAI-compatible endpoint; `api_key_env` names the secret, never holds it."""

    id: str
    name: str
    base_url: str | None = None
    wire_format: str
    api_key_env: str | None = None
    is_active: bool
    created_at: datetime
    updated_at: datetime


class PlanRoute(_Result):
    """A plan's model at an upstream with a relative weight (0 parks the route)."""

    id: str
    plan_id: str
    upstream_id: str
    upstream: str
    model: str
    weight: int


class Plan(_Result):
    """A plan (seed 002) with its routes; `price` is display text."""

    id: str
    name: str
    price: str | None = None
    period: str
    is_active: bool
    routes: list[PlanRoute] = Field(default_factory=list)


class Subscription(_Result):
    """A user's subscription to a plan. used_* and reset_at are as of now (a period that has
    ended counts as rolled over); quota_* None = unlimited."""

    id: str
    user_id: str
    plan_id: str
    plan: str | None = None
    status: str
    suspension_reason: str | None = None
    quota_requests: int | None = None
    quota_tokens: int | None = None
    used_requests: int
    used_tokens: int
    period: str
    started_at: datetime
    reset_at: datetime
    expires_at: datetime | None = None
    created_at: datetime
    changed: bool | None = None
