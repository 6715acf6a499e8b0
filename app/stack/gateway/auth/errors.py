"""GoTrue's error body `{"code": <status>, "error_code": "...", "msg": "..."}`, which
supabase-py and supabase-js turn into AuthApiError / AuthWeakPasswordError."""

from __future__ import annotations

from typing import Any

from app.stack.gateway.errors import ApiError


class AuthError(ApiError):
    """An error answered with GoTrue's body `{"code", "error_code", "msg"}`."""

    def __init__(
        self,
        status: int,
        error_code: str,
        msg: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, error_code, msg, headers=headers)
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.status, "error_code": self.code, "msg": self.message, **self.extra}


def validation_failed(msg: str) -> AuthError:
    return AuthError(400, "validation_failed", msg)


def email_exists() -> AuthError:
    return AuthError(
        422, "email_exists", "A user with this email address has already been registered"
    )
