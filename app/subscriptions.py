"""Subscriptions of the metered endpoint (seed 003): `Subscriptions` creates them, lists a
user's with what is used of the current period, and suspends or resumes one. Creation is an
insert into public.subscriptions (service_role's column grants, 20251130000008: the database
keeps at most one live subscription per user and plan and fills reset_at); suspend/resume is
`set_subscription_status` (20251130000008), which decides under the row's lock."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.client import call, rpc_params
from app.errors import Conflict, InvalidInput, NotFound
from app.facade import ServiceFacade
from app.models import Subscription

# Seed 003's defaults (the table's too); None = unlimited.
DEFAULT_QUOTA_REQUESTS = 10_000
DEFAULT_QUOTA_TOKENS = 1_000_000
PERIODS = ("day", "week", "month", "year")


def _invalid(field: str, detail: str) -> InvalidInput:
    return InvalidInput("invalid_argument", code="invalid_argument", field=field, detail=detail)


def _subscription_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _invalid(
            "subscription_id", f"subscription_id must be a uuid, got {value!r}"
        ) from None


class Subscriptions(ServiceFacade):
    """Methods take keyword arguments and raise `app.errors` types: InvalidInput (nothing
    written), NotFound (user_not_found, plan_not_found, subscription_not_found), Conflict
    (subscription_exists, invalid_status_change), PermissionDenied, Unavailable."""

    def create(
        self,
        *,
        user_id: str,
        plan: str,
        quota_requests: int | None = DEFAULT_QUOTA_REQUESTS,
        quota_tokens: int | None = DEFAULT_QUOTA_TOKENS,
        period: str | None = None,
        expires_at: datetime | None = None,
    ) -> Subscription:
        """An active subscription of the user to an active plan; quotas count per `period`
        (default: the plan's) from now. None quotas are unlimited. Raises Conflict
        (subscription_exists) when the user already has a live one to the plan."""
        for field, value in (("quota_requests", quota_requests), ("quota_tokens", quota_tokens)):
            if value is not None and value < 0:
                raise _invalid(field, f"{field} must be >= 0 (or unlimited), got {value}")
        if period is not None and period not in PERIODS:
            raise _invalid("period", f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        plans = call(
            lambda: (
                self.client.table("plans")
                .select("id,name,period")
                .eq("name", plan)
                .eq("is_active", True)
                .execute()
            )
        ).data
        if not plans:
            raise NotFound("plan_not_found", code="plan_not_found", detail=f"no active plan {plan}")
        row: dict[str, Any] = {
            "user_id": user_id,
            "plan_id": plans[0]["id"],
            "status": "active",
            "quota_requests": quota_requests,
            "quota_tokens": quota_tokens,
            "period": period or plans[0]["period"],
        }
        if expires_at is not None:
            row["expires_at"] = expires_at.isoformat()
        try:
            data = call(lambda: self.client.table("subscriptions").insert(row).execute()).data
        except Conflict as exc:  # the partial unique index: one live subscription per plan
            raise Conflict(
                "subscription_exists",
                code="subscription_exists",
                detail=f"user {user_id} already has a live subscription to plan {plan}",
            ) from exc
        except NotFound as exc:  # the user_id foreign key
            raise NotFound(
                "user_not_found", code="user_not_found", detail=f"no user {user_id}"
            ) from exc
        return Subscription.model_validate({**data[0], "plan": plans[0]["name"]})

    def list(self, *, user_id: str) -> list[Subscription]:
        """The user's subscriptions, newest first; used_* and reset_at as of now (a period that
        has ended shows as rolled over, as the metering functions will treat it)."""
        rows = call(
            lambda: (
                self.client.table("subscriptions")
                .select("*")
                .eq("user_id", user_id)
                .order("created_at", desc=True)
                .order("id")
                .execute()
            )
        ).data
        if not rows:
            return []
        plans = {
            p["id"]: p["name"]
            for p in call(
                lambda: (
                    self.client.table("plans")
                    .select("id,name")
                    .in_("id", list({r["plan_id"] for r in rows}))
                    .execute()
                )
            ).data
        }
        # active_subscriptions computes the rollover in SQL; it lists the usable ones.
        now = {
            a["id"]: a
            for a in call(
                lambda: (
                    self.client.table("active_subscriptions")
                    .select("id,used_requests,used_tokens,reset_at")
                    .eq("user_id", user_id)
                    .execute()
                )
            ).data
        }
        result = []
        for r in rows:
            current = now.get(r["id"])
            if current is not None:
                r = {**r, **current}
                if r["status"] == "suspended" and r["suspension_reason"] == "quota":
                    r = {**r, "status": "active", "suspension_reason": None}
            result.append(Subscription.model_validate({**r, "plan": plans.get(r["plan_id"])}))
        return result

    def suspend(self, *, subscription_id: str) -> Subscription:
        """Suspend (by the operator: it stays suspended until resumed, over period resets).
        `changed` False when it already was. Raises Conflict (invalid_status_change) for a
        pending, cancelled or expired subscription."""
        return self._set_status(subscription_id, "suspended")

    def resume(self, *, subscription_id: str) -> Subscription:
        """Make a suspended (or pending) subscription active. Raises Conflict
        (invalid_status_change) while a quota is used up in the current period, for a
        cancelled or expired one, and for a pending one when another is live."""
        return self._set_status(subscription_id, "active")

    def _set_status(self, subscription_id: str, status: str) -> Subscription:
        params = rpc_params(subscription_id=_subscription_id(subscription_id), status=status)
        data = call(lambda: self.client.rpc("set_subscription_status", params).execute()).data
        return Subscription.model_validate(data)


__all__ = ["DEFAULT_QUOTA_REQUESTS", "DEFAULT_QUOTA_TOKENS", "Subscriptions"]
