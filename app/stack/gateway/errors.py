"""PostgREST-shaped errors: `{"code","message","details","hint"}` and the SQLSTATE → HTTP table.

The table follows PostgREST's documented mapping (supabase-database.md §4), so supabase-py and
supabase-js see the same status and body from the local stack as from a hosted project.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from starlette.responses import JSONResponse

_EXACT = {
    "23503": 409,
    "23505": 409,
    "23502": 400,
    "23514": 400,
    "25006": 405,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
    "42703": 400,
    "22P02": 400,
}
_BY_CLASS = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "22": 400,
    "23": 400,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 413,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
    "42": 400,
}
_PT_CODE = re.compile(r"^PT(\d{3})$")


class ApiError(Exception):
    """An error answered to the client as a PostgREST error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: str | None = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class GatewayError(ApiError):
    """An answer of the API gateway itself (Kong on Supabase) rather than of an API behind it:
    Kong's body is `{"message": ...}`; `code` is ours, for logs and tests, and not sent."""

    def body(self) -> dict[str, Any]:
        return {"message": self.message}


def status_for_sqlstate(sqlstate: str, role: str) -> int:
    """HTTP status for a SQLSTATE, as PostgREST maps it (42501 depends on the caller's role)."""
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if match := _PT_CODE.match(sqlstate):
        return int(match.group(1))
    if sqlstate in _EXACT:
        return _EXACT[sqlstate]
    return _BY_CLASS.get(sqlstate[:2], 400)


def from_database_error(exc: psycopg.Error, role: str) -> ApiError:
    """Translate a PostgreSQL error raised while serving a request into its API error."""
    diag = exc.diag
    sqlstate = diag.sqlstate or "XX000"
    status = status_for_sqlstate(sqlstate, role)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return ApiError(
        status,
        sqlstate,
        diag.message_primary or str(exc),
        diag.message_detail,
        diag.message_hint,
        headers,
    )


def jwt_error(message: str, code: str = "PGRST301") -> ApiError:
    """401 for a token we refuse to trust; nothing reaches the database. The message goes in
    the body only: it can quote the token, and a header holds Latin-1 text without quotes or
    line breaks, so the header is fixed text (RFC 6750's invalid_token)."""
    return ApiError(401, code, message, headers={"WWW-Authenticate": INVALID_TOKEN_CHALLENGE})


INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'
