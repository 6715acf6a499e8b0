"""API keys of the metered endpoint: `Keys` creates (the secret shown once), lists and revokes
them through the SQL functions of 20251130000007, so the database draws the secret and keeps only
its hash. `parse_expiry` reads the CLI's `never | 30d | 12h | ISO` forms."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NoReturn

from app.client import call, rpc_params
from app.errors import InvalidInput
from app.facade import ServiceFacade
from app.models import ApiKey, CreatedApiKey, RevokedApiKey
from app.pricing import parse_time

_RELATIVE = re.compile(r"^([1-9][0-9]{0,5})([dh])$")


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime | None:
    """When a key given `--expires TEXT` expires: `never` (or seed 000's `-1`) → None; `30d` /
    `12h` → that long from now; otherwise an ISO 8601 time (no zone means UTC).
    Raises InvalidInput (field `expires`) for anything else; a past time is refused by SQL."""
    value = text.strip().lower()
    if value in ("never", "-1"):
        return None
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = timedelta(days=amount) if unit == "d" else timedelta(hours=amount)
        return (now or datetime.now(UTC)) + delta
    try:
        return parse_time(text, field="expires") if value[:1].isdigit() else _bad_expiry(text)
    except InvalidInput:
        _bad_expiry(text)


def _bad_expiry(text: str) -> NoReturn:
    raise InvalidInput(
        "invalid_argument",
        code="invalid_argument",
        field="expires",
        detail=f"expires must be never, a duration like 30d or 12h, or an ISO time; got {text!r}",
    ) from None


class Keys(ServiceFacade):
    """API keys of any user (service_role). Methods take keyword arguments and raise
    `app.errors` types: InvalidInput (bad argument, named in `field`/detail; nothing written),
    NotFound (user_not_found, plan_not_found, api_key_not_found), PermissionDenied, Unavailable."""

    def create(
        self,
        *,
        user_id: str,
        plan: str,
        name: str = "default",
        expires_at: datetime | None = None,
        allowed_models: Sequence[str] | None = None,
        spend_limit: Decimal | None = None,
        spend_limit_period: str | None = None,
    ) -> CreatedApiKey:
        """A new key for the user on an active plan; `key` (the secret) is in this result only.
        expires_at None = never; allowed_models None = every model of the plan."""
        params = rpc_params(
            name=name,
            plan=plan,
            expires_at=expires_at,
            allowed_models=list(allowed_models) if allowed_models is not None else None,
            spend_limit=spend_limit,
            spend_limit_period=spend_limit_period,
            user_id=user_id,
        )
        data = call(lambda: self.client.rpc("create_api_key", params).execute()).data
        return CreatedApiKey.model_validate(data)

    def list(self, *, user_id: str) -> list[ApiKey]:
        """The user's keys, newest first, revoked and expired ones included (see `state`)."""
        data = call(
            lambda: self.client.rpc("list_api_keys", rpc_params(user_id=user_id)).execute()
        ).data
        return [ApiKey.model_validate(row) for row in data or []]

    def revoke(self, *, key: str) -> RevokedApiKey:
        """Revoke a key given by id or prefix (`tm_` + 8 characters); idempotent (`revoked`
        False when it already was). Refused from the next request on."""
        data = call(lambda: self.client.rpc("revoke_api_key", rpc_params(key=key)).execute()).data
        return RevokedApiKey.model_validate(data)


__all__ = ["Keys", "parse_expiry"]
