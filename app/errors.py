"""tokenmeter's errors. Every failure a caller can act on has its own type:

    TokenmeterError
    ├── InvalidInput(code, field)       400-class: bad tokens, amounts, ids — nothing was written
    │   └── InvalidUsage
    ├── NotFound                        no such user, reservation, …
    │   └── UnknownModel                no price for this model: never charged as $0
    │       └── PriceMissing            the model is known but its price is `missing`
    ├── PermissionDenied                the key or user may not do this
    │   ├── InvalidApiKey               a tm_ key that is malformed, unknown, revoked or expired (401)
    │   └── ModelNotAllowed             the key may not use the model (403)
    ├── Conflict                        same idempotency key, different payload
    │   └── IdempotencyConflict
    ├── InsufficientBalance             available credit < amount (HTTP 402)
    ├── QuotaExceeded                   a period's quota or spend limit is used up (429, reset_at)
    └── Unavailable                     the API could not be reached or failed (retry later)

The SQL functions raise `message = '<snake_case_code>'`; `from_api_code` maps those codes (and
SQLSTATEs) to these types. Only app/client.py calls it.
"""

from __future__ import annotations

import re


class TokenmeterError(Exception):
    """Base of every tokenmeter error; `code` is the stable machine-readable code."""

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.field = field
        if code:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message}: {self.detail}" if self.detail else self.message


class InvalidInput(TokenmeterError):
    code = "invalid_input"


class InvalidUsage(InvalidInput):
    code = "invalid_usage"


class NotFound(TokenmeterError):
    code = "not_found"


class UnknownModel(NotFound):
    code = "unknown_model"


class PriceMissing(UnknownModel):
    code = "price_missing"


class PermissionDenied(TokenmeterError):
    code = "permission_denied"


class InvalidApiKey(PermissionDenied):
    code = "invalid_api_key"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class Conflict(TokenmeterError):
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class InsufficientBalance(TokenmeterError):
    code = "insufficient_balance"


class QuotaExceeded(TokenmeterError):
    """`reset_at` (ISO 8601, UTC) is when the quota or limit resets: the SQL's hint."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, reset_at: str | None = None, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        self.reset_at = reset_at


class Unavailable(TokenmeterError):
    code = "unavailable"


# message code raised by SQL → error type. A test checks every code the SQL raises is here.
CODE_TO_ERROR: dict[str, type[TokenmeterError]] = {
    "insufficient_balance": InsufficientBalance,
    "unknown_model": UnknownModel,
    "price_missing": PriceMissing,
    "ambiguous_model": InvalidInput,
    "idempotency_conflict": IdempotencyConflict,
    "invalid_usage": InvalidUsage,
    "invalid_amount": InvalidInput,
    "invalid_argument": InvalidInput,
    "currency_mismatch": InvalidInput,
    "user_not_found": NotFound,
    "reservation_not_found": NotFound,
    "usage_not_found": NotFound,
    "not_authenticated": PermissionDenied,
    "forbidden": PermissionDenied,
    "immutable_row": Conflict,
    # pricing (migrations 20251101*)
    "invalid_currency": InvalidInput,
    "alias_loop": InvalidInput,
    "consolidation_would_lose_prices": Conflict,
    # metered endpoint (migrations 20251130000007-09)
    "invalid_api_key": InvalidApiKey,
    "expired_api_key": InvalidApiKey,
    "revoked_api_key": InvalidApiKey,
    "model_not_allowed": ModelNotAllowed,
    "subscription_inactive": PermissionDenied,
    "quota_exceeded": QuotaExceeded,
    "spend_limit_exceeded": QuotaExceeded,
    "plan_not_found": NotFound,
    "api_key_not_found": NotFound,
    "subscription_not_found": NotFound,
    "invalid_status_change": Conflict,
    "request_not_found": NotFound,
    "no_route": Unavailable,
    "key_generation_failed": Unavailable,
    # audit trail and alerts (migrations 20261129230001-11)
    "append_only": Conflict,
    "alert_not_found": NotFound,
    # usage rollups (migration 20261129220001): the id sequence was given a CACHE, an operator's fix
    "sequence_cached": Unavailable,
}

# SQLSTATE → error type, for errors raised by PostgreSQL itself rather than our functions.
SQLSTATE_TO_ERROR: dict[str, type[TokenmeterError]] = {
    "42501": PermissionDenied,
    "23505": Conflict,
    "23503": NotFound,
    "23514": InvalidInput,
    "23502": InvalidInput,
    "22P02": InvalidInput,
    "22023": InvalidInput,
    "22003": InvalidInput,
    "PGRST116": NotFound,
    "PGRST202": NotFound,
    "PGRST205": NotFound,
    "PGRST301": PermissionDenied,
    "PGRST303": PermissionDenied,
}


# The SQL names the offending field as the first word of `detail` ("input_tokens must be ...").
_FIELD_IN_DETAIL = re.compile(r"^([a-z_][a-z0-9_]*) (?:must|is|has) ")


def field_from_detail(detail: str | None) -> str | None:
    """The argument an invalid_* detail names ("amount must be > 0" → "amount"), else None."""
    match = _FIELD_IN_DETAIL.match(detail or "")
    return match.group(1) if match else None


def from_api_code(
    message_code: str, sqlstate: str | None, detail: str | None, hint: str | None = None
) -> TokenmeterError:
    """The typed error for an API error body (`message` holds our code, `code` the SQLSTATE).
    For InvalidInput errors `field` is the argument the detail names (the SQL sets no hint)."""
    error_type = CODE_TO_ERROR.get(message_code)
    if error_type is QuotaExceeded:
        return QuotaExceeded(message_code, code=message_code, detail=detail, reset_at=hint)
    if error_type is not None:
        field = hint
        if field is None and issubclass(error_type, InvalidInput):
            field = field_from_detail(detail if isinstance(detail, str) else None)
        return error_type(message_code, code=message_code, detail=detail, field=field)
    error_type = SQLSTATE_TO_ERROR.get(sqlstate or "", TokenmeterError)
    # 08 connection, 40 transaction rollback (deadlock, serialization failure), 5x resources
    # and operator intervention: nothing is wrong with the request, so retrying can succeed.
    if sqlstate and sqlstate.startswith(("08", "40", "5")):
        error_type = Unavailable
    return error_type(message_code, detail=detail)
