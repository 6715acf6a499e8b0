"""Request bodies and the values in them, checked as GoTrue does and against the limits in
docs/limits.md ("Auth"): JSON objects, strings PostgreSQL can store, emails, phones, passwords
(bcrypt), metadata sizes."""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

import bcrypt
from starlette.requests import Request

from app.stack.gateway import limits
from app.stack.gateway.auth.errors import AuthError, validation_failed

MIN_PASSWORD_LENGTH = 6
MAX_PASSWORD_BYTES = 72  # bcrypt ignores (bcrypt>=5 refuses) anything longer
BCRYPT_COST = 10


# Both metadata objects are copied into every access token; 4 KiB each keeps the largest token
# under tokens.MAX_TOKEN_BYTES. Measured as compact JSON with non-ASCII escaped, which is how
# the token's payload spells them.
MAX_METADATA_BYTES = 4096


_E164 = re.compile(r"[1-9][0-9]{1,14}")


# GoTrue's rule (checkmail.ValidateFormat, github.com/badoux/checkmail at the version GoTrue
# pins): ASCII only, a local part of RFC 5322 atom characters and dots, a domain of LDH labels of
# at most 63 characters; no dot needed in the domain. Checked on the text as sent: GoTrue neither
# trims it nor lowercases it before the check.
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)
MAX_EMAIL_BYTES = 255


# A valid hash at the real cost to compare against when the email is unknown, so both failures
# take as long and the answer time does not reveal which emails are registered.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(BCRYPT_COST))


async def json_body(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request's JSON object (gateway/limits.py: size, time, UTF-8, nesting depth); 413
    request_too_large, 408 request_timeout, 400 bad_json or validation_failed otherwise."""
    limit = request.app.state.config.max_body_bytes
    try:
        body = await limits.read_json(request, max_bytes=limit)
    except limits.BodyTooLarge:
        raise AuthError(413, "request_too_large", f"Request body exceeds {limit} bytes") from None
    except limits.JsonTooDeep as exc:
        raise AuthError(400, "bad_json", f"Could not parse request body as JSON: {exc}") from None
    except limits.BodyRejected as exc:
        if exc.status == 408:
            raise AuthError(408, "request_timeout", exc.message) from None
        raise AuthError(400, "bad_json", "Could not parse request body as JSON") from None
    if body is None:
        if allow_empty:
            return {}
        raise validation_failed("Request body is required")
    if not isinstance(body, dict):
        raise AuthError(400, "bad_json", "Request body must be a JSON object")
    return body


def is_storable(text: str) -> bool:
    """Whether PostgreSQL can store `text`: no NUL, and UTF-8 encodable (JSON's \\ud800
    escapes give Python strings with unpaired surrogates, which are not)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _unstorable(value: Any) -> bool:
    """Whether any key or string in the JSON value cannot be stored (see is_storable), or any
    number: a literal past a double's range (1e999) parses as infinity, which JSON (and so
    jsonb) cannot spell."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_storable(item):
                return True
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def opt_str(body: dict[str, Any], key: str, *, storable: bool = True) -> str | None:
    """body[key] as a string (None when absent). Raises 400 validation_failed for another type
    or, unless `storable` is False, for text PostgreSQL cannot store (GoTrue's message for an
    email; 422 as for any password signup refuses)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise validation_failed(f"{key} must be a string")
    if storable and not is_storable(value):
        if key == "email":
            raise validation_failed("Unable to validate email address: invalid format")
        if key == "password":
            raise AuthError(
                422,
                "validation_failed",
                "Password cannot contain NUL characters or unpaired surrogates",
            )
        raise validation_failed(f"{key} cannot contain NUL characters or unpaired surrogates")
    return value


def _metadata_size(value: dict[str, Any]) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def check_metadata_size(key: str, value: dict[str, Any]) -> None:
    if _metadata_size(value) > MAX_METADATA_BYTES:
        raise validation_failed(
            f"{key} is too large: at most {MAX_METADATA_BYTES} bytes as JSON "
            "(it is copied into every access token)"
        )


def opt_obj(body: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    """The first of body[keys] that is present, as a metadata object: a JSON object whose text
    PostgreSQL can store, at most MAX_METADATA_BYTES. Raises 400 validation_failed."""
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise validation_failed(f"{key} must be a JSON object")
        check_metadata_size(key, value)  # first: the walk below is in Python
        if _unstorable(value):
            raise validation_failed(
                f"{key} cannot contain NUL characters, unpaired surrogates "
                "or numbers out of a double's range"
            )
        return value
    return None


def phone_number(value: str) -> str:
    """GoTrue's phone rule: E.164 digits once spaces and a leading + are dropped."""
    digits = value.replace(" ", "").removeprefix("+")
    if not _E164.fullmatch(digits):
        raise validation_failed("Invalid phone number format (E.164 required)")
    return digits


def email_address(value: str | None) -> str:
    """`value` lowercased, once it passes GoTrue's checks (same order, same messages).
    Raises 400 validation_failed."""
    if not value:
        raise validation_failed("An email address is required")
    if len(value.encode(errors="replace")) > MAX_EMAIL_BYTES:
        raise validation_failed("An email address is too long")
    if not _EMAIL.fullmatch(value):
        raise validation_failed("Unable to validate email address: invalid format")
    return value.lower()


def check_password(password: str | None) -> str:
    if password is None or password == "":
        raise AuthError(422, "validation_failed", "Signup requires a valid password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(
            422,
            "weak_password",
            f"Password should be at least {MIN_PASSWORD_LENGTH} characters.",
            extra={"weak_password": {"reasons": ["length"]}},
        )
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise AuthError(
            422,
            "validation_failed",
            f"Password cannot be longer than {MAX_PASSWORD_BYTES} characters",
        )
    return password


async def hash_password(password: str) -> str:
    """bcrypt at GoTrue's cost, off the event loop (it takes tens of milliseconds)."""
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(BCRYPT_COST))
    return hashed.decode()


async def verify_password(password: str, hashed: str | None) -> bool:
    target = hashed.encode() if hashed else _DUMMY_HASH
    try:
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), target)
    except ValueError:
        return False
    return ok and hashed is not None
