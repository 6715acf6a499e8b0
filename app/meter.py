"""The metering facade: `Meter` (sync) and `AsyncMeter` (async) over supabase-py.

Every operation is one SQL function call (one transaction) through `/rest/v1/rpc`, so the
database — not this process — decides balances, prices and idempotency. The two classes share
`_Operations`, which turns keyword arguments into an rpc call and its result parser; they differ
only in how they send it.

Typical flow for one LLM call::

    meter = Meter.from_env()
    estimate = meter.estimate_cost(model="gpt-4o", input_tokens=1200, max_output_tokens=800)
    meter.reserve(user_id=uid, request_id=rid, amount=estimate.cost)   # InsufficientBalance
    ...call the provider...
    meter.settle(request_id=rid, input_tokens=1187, output_tokens=412)   # or meter.release(...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from app.client import (
    acall,
    async_service_client,
    call,
    close_client,
    json_value,
    service_client,
)
from app.client import rpc_params as _params
from app.config import Settings
from app.models import (
    BalanceCheck,
    BalanceMovement,
    BatchItem,
    BatchResult,
    CostEstimate,
    LedgerMovement,
    Reservation,
    UsageRecord,
    UsageResult,
)
from supabase import AsyncClient, Client

T = TypeVar("T")

# Money columns are read as text so no float ever touches them (PostgREST casts in `select`).
USAGE_COLUMNS = (
    "id,request_id,user_id,provider_id,model_id,input_tokens,output_tokens,"
    "cached_input_tokens,cost::text,currency,status,occurred_at,metadata"
)

MOVEMENT_COLUMNS = (
    "source,id,user_id,kind,amount::text,currency,reference,description,created_at,occurred_at"
)


@dataclass(frozen=True)
class _Call(Generic[T]):
    rpc: str
    params: dict[str, Any]
    parse: Callable[[Any], T]


def _batch(data: Any) -> BatchResult:
    items = []
    for item in data["results"]:
        usage = UsageResult.model_validate(item) if item.get("ok") else None
        items.append(BatchItem.model_validate({**item, "usage": usage}))
    return BatchResult(
        results=items, recorded=data["recorded"], replayed=data["replayed"], failed=data["failed"]
    )


class _Operations:
    """The API: each method returns the rpc to send and how to read its answer."""

    @staticmethod
    def check_balance(*, user_id: str, estimated_cost: Decimal = Decimal(0)) -> _Call[BalanceCheck]:
        return _Call(
            "check_balance",
            _params(user_id=user_id, estimated_cost=estimated_cost),
            BalanceCheck.model_validate,
        )

    @staticmethod
    def reserve(
        *,
        user_id: str,
        request_id: str,
        amount: Decimal,
        ttl_seconds: int = 600,
        model: str | None = None,
        provider: str | None = None,
    ) -> _Call[Reservation]:
        return _Call(
            "reserve_credit",
            _params(
                user_id=user_id,
                request_id=request_id,
                amount=amount,
                ttl_seconds=ttl_seconds,
                model=model,
                provider=provider,
            ),
            Reservation.model_validate,
        )

    @staticmethod
    def settle(
        *,
        request_id: str,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        model: str | None = None,
        provider: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        latency_ms: int | None = None,
        status: str | None = None,
    ) -> _Call[UsageResult]:
        return _Call(
            "settle_usage",
            _params(
                request_id=request_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached_input_tokens,
                model=model,
                provider=provider,
                metadata=metadata,
                latency_ms=latency_ms,
                status=status,
            ),
            UsageResult.model_validate,
        )

    @staticmethod
    def release(*, request_id: str) -> _Call[Reservation]:
        return _Call(
            "release_reservation", _params(request_id=request_id), Reservation.model_validate
        )

    @staticmethod
    def record_usage(
        *,
        user_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        request_id: str,
        provider: str | None = None,
        cached_input_tokens: int = 0,
        metadata: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        latency_ms: int | None = None,
        status: str | None = None,
    ) -> _Call[UsageResult]:
        return _Call(
            "record_usage",
            _params(
                user_id=user_id,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                request_id=request_id,
                provider=provider,
                cached_input_tokens=cached_input_tokens,
                metadata=metadata,
                occurred_at=occurred_at,
                latency_ms=latency_ms,
                status=status,
            ),
            UsageResult.model_validate,
        )

    @staticmethod
    def record_usage_batch(*, records: Iterable[Mapping[str, Any]]) -> _Call[BatchResult]:
        return _Call("record_usage_batch", {"records": json_value(list(records))}, _batch)

    @staticmethod
    def top_up(*, user_id: str, amount: Decimal, reference: str) -> _Call[LedgerMovement]:
        return _Call(
            "top_up",
            _params(user_id=user_id, amount=amount, reference=reference),
            LedgerMovement.model_validate,
        )

    @staticmethod
    def adjust_balance(
        *, user_id: str, amount: Decimal, reason: str, reference: str
    ) -> _Call[LedgerMovement]:
        return _Call(
            "adjust_balance",
            _params(user_id=user_id, amount=amount, reason=reason, reference=reference),
            LedgerMovement.model_validate,
        )

    @staticmethod
    def estimate_cost(
        *,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
        provider: str | None = None,
        cached_input_tokens: int = 0,
    ) -> _Call[CostEstimate]:
        # cached_input_tokens is part of input_tokens, as in record_usage: the estimate then
        # prices the cached part at the cached price, exactly as the charge will.
        return _Call(
            "estimate_cost",
            _params(
                model=model,
                input_tokens=input_tokens,
                max_output_tokens=max_output_tokens,
                provider=provider,
                cached_input_tokens=cached_input_tokens,
            ),
            CostEstimate.model_validate,
        )

    @staticmethod
    def user_id_for_email(*, email: str) -> _Call[str]:
        return _Call("user_id_for_email", _params(email=email), str)

    @staticmethod
    def audit() -> _Call[list[dict[str, Any]]]:
        return _Call("balance_audit", {}, list)


def _usage_rows(data: Any) -> list[UsageRecord]:
    return [UsageRecord.model_validate(row) for row in data]


def _movement_rows(data: Any) -> list[BalanceMovement]:
    return [BalanceMovement.model_validate(row) for row in data]


class Meter(_Operations):
    """Synchronous facade. Methods take keyword arguments and raise `app.errors` types:
    InvalidUsage/InvalidInput (bad input; nothing written), UnknownModel/PriceMissing,
    InsufficientBalance, IdempotencyConflict, NotFound, PermissionDenied, Unavailable."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def from_env(cls) -> Meter:
        """A Meter using SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (env, .env, local stack).
        Use it as a context manager (or call close()) to release its connections."""
        return cls(service_client(Settings.load()))

    def close(self) -> None:
        close_client(self.client)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, op: _Call[T]) -> T:
        response = call(lambda: self.client.rpc(op.rpc, op.params).execute())
        return op.parse(response.data)

    def check_balance(self, **kw: Any) -> BalanceCheck:  # type: ignore[override]
        return self._send(_Operations.check_balance(**kw))

    def balance(self, *, user_id: str) -> BalanceCheck:
        """The user's balance, holds and available credit."""
        return self._send(_Operations.check_balance(user_id=user_id))

    def reserve(self, **kw: Any) -> Reservation:  # type: ignore[override]
        return self._send(_Operations.reserve(**kw))

    def settle(self, **kw: Any) -> UsageResult:  # type: ignore[override]
        return self._send(_Operations.settle(**kw))

    def release(self, **kw: Any) -> Reservation:  # type: ignore[override]
        return self._send(_Operations.release(**kw))

    def record_usage(self, **kw: Any) -> UsageResult:  # type: ignore[override]
        return self._send(_Operations.record_usage(**kw))

    def record_usage_batch(self, **kw: Any) -> BatchResult:  # type: ignore[override]
        return self._send(_Operations.record_usage_batch(**kw))

    def top_up(self, **kw: Any) -> LedgerMovement:  # type: ignore[override]
        return self._send(_Operations.top_up(**kw))

    def adjust_balance(self, **kw: Any) -> LedgerMovement:  # type: ignore[override]
        return self._send(_Operations.adjust_balance(**kw))

    def estimate_cost(self, **kw: Any) -> CostEstimate:  # type: ignore[override]
        return self._send(_Operations.estimate_cost(**kw))

    def user_id_for_email(self, **kw: Any) -> str:  # type: ignore[override]
        return self._send(_Operations.user_id_for_email(**kw))

    def audit(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Users whose balance differs from the sum of their ledger: always empty."""
        return self._send(_Operations.audit())

    def usage(self, *, user_id: str, limit: int = 50) -> list[UsageRecord]:
        """The user's most recent usage records, newest first."""
        response = call(
            lambda: (
                self.client.table("usage_records")
                .select(USAGE_COLUMNS)
                .eq("user_id", user_id)
                .order("occurred_at", desc=True)
                .order("id", desc=True)
                .limit(limit)
                .execute()
            )
        )
        return _usage_rows(response.data)

    def movements(self, *, user_id: str, limit: int = 50) -> list[BalanceMovement]:
        """The user's most recent balance movements (ledger entries and usage charges), newest
        first."""
        response = call(
            lambda: (
                self.client.table("balance_movements")
                .select(MOVEMENT_COLUMNS)
                .eq("user_id", user_id)
                .order("occurred_at", desc=True)  # indexed per user (20261130040002)
                .order("source", desc=True)
                .order("id", desc=True)
                .limit(limit)
                .execute()
            )
        )
        return _movement_rows(response.data)


class AsyncMeter(_Operations):
    """The same API as `Meter`, for asyncio code (`await meter.record_usage(...)`)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    @classmethod
    async def from_env(cls) -> AsyncMeter:
        return cls(await async_service_client(Settings.load()))

    async def _send(self, op: _Call[T]) -> T:
        response = await acall(lambda: self.client.rpc(op.rpc, op.params).execute())
        return op.parse(response.data)

    async def check_balance(self, **kw: Any) -> BalanceCheck:  # type: ignore[override]
        return await self._send(_Operations.check_balance(**kw))

    async def balance(self, *, user_id: str) -> BalanceCheck:
        return await self._send(_Operations.check_balance(user_id=user_id))

    async def reserve(self, **kw: Any) -> Reservation:  # type: ignore[override]
        return await self._send(_Operations.reserve(**kw))

    async def settle(self, **kw: Any) -> UsageResult:  # type: ignore[override]
        return await self._send(_Operations.settle(**kw))

    async def release(self, **kw: Any) -> Reservation:  # type: ignore[override]
        return await self._send(_Operations.release(**kw))

    async def record_usage(self, **kw: Any) -> UsageResult:  # type: ignore[override]
        return await self._send(_Operations.record_usage(**kw))

    async def record_usage_batch(self, **kw: Any) -> BatchResult:  # type: ignore[override]
        return await self._send(_Operations.record_usage_batch(**kw))

    async def top_up(self, **kw: Any) -> LedgerMovement:  # type: ignore[override]
        return await self._send(_Operations.top_up(**kw))

    async def adjust_balance(self, **kw: Any) -> LedgerMovement:  # type: ignore[override]
        return await self._send(_Operations.adjust_balance(**kw))

    async def estimate_cost(self, **kw: Any) -> CostEstimate:  # type: ignore[override]
        return await self._send(_Operations.estimate_cost(**kw))

    async def user_id_for_email(self, **kw: Any) -> str:  # type: ignore[override]
        return await self._send(_Operations.user_id_for_email(**kw))

    async def audit(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return await self._send(_Operations.audit())

    async def usage(self, *, user_id: str, limit: int = 50) -> list[UsageRecord]:
        response = await acall(
            lambda: (
                self.client.table("usage_records")
                .select(USAGE_COLUMNS)
                .eq("user_id", user_id)
                .order("occurred_at", desc=True)
                .order("id", desc=True)
                .limit(limit)
                .execute()
            )
        )
        return _usage_rows(response.data)

    async def movements(self, *, user_id: str, limit: int = 50) -> list[BalanceMovement]:
        response = await acall(
            lambda: (
                self.client.table("balance_movements")
                .select(MOVEMENT_COLUMNS)
                .eq("user_id", user_id)
                .order("occurred_at", desc=True)  # indexed per user (20261130040002)
                .order("source", desc=True)
                .order("id", desc=True)
                .limit(limit)
                .execute()
            )
        )
        return _movement_rows(response.data)


__all__ = ["AsyncMeter", "Meter"]
