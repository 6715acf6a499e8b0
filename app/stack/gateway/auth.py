"""GoTrue-compatible /auth/v1: email/password sign-up and sign-in, sessions, admin users.

Users are real rows in `auth.users` (so triggers on it fire as on Supabase), sessions live in
`auth.sessions` and refresh tokens in `auth.refresh_tokens`. Behaviour follows the local Supabase
CLI stack with `enable_confirmations = false`: sign-up confirms the email at once and signs in.

Refresh tokens rotate on every use. Presenting a token that was already rotated is treated as
theft: every token of that session is revoked, the session ends, and the caller gets 400
`refresh_token_already_used` (GoTrue's reuse detection, with no reuse grace interval).

Error bodies have GoTrue's shape, `{"code": <status>, "error_code": "...", "msg": "..."}`, which
supabase-py and supabase-js turn into AuthApiError / AuthWeakPasswordError. As behind Supabase's
Kong, every request must carry a valid project key in `apikey`; the caller's identity is read
from `Authorization` only.

Limits (docs/limits.md, "Auth"): bodies through gateway/limits.py (1 MiB, JSON nesting 100);
tokens over tokens.MAX_TOKEN_BYTES refused; user_metadata and app_metadata at most
MAX_METADATA_BYTES each, after merging, since both are copied into every access token; strings
holding NUL or an unpaired surrogate (which PostgreSQL cannot store) refused with 400/422;
GoTrue's per-IP rate limits for sign-up, sign-in/refresh and user updates, read from
supabase/config.toml `[auth.rate_limit]` (RateLimits).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import time
import tomllib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.stack.gateway import limits, tokens
from app.stack.gateway.errors import ApiError
from app.stack.paths import project_root

AUDIENCE = "authenticated"
MIN_PASSWORD_LENGTH = 6
MAX_PASSWORD_BYTES = 72  # bcrypt ignores (bcrypt>=5 refuses) anything longer
BCRYPT_COST = 10
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000
# Both metadata objects are copied into every access token; 4 KiB each keeps the largest token
# under tokens.MAX_TOKEN_BYTES. Measured as compact JSON with non-ASCII escaped, which is how
# the token's payload spells them.
MAX_METADATA_BYTES = 4096
# Go's time.Duration (what GoTrue parses ban_duration into) ends at 2**63 - 1 nanoseconds.
MAX_BAN_SECONDS = (2**63 - 1) / 1e9
# The largest offset PostgreSQL takes (bigint).
_MAX_OFFSET = 2**63 - 1
_E164 = re.compile(r"[1-9][0-9]{1,14}")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s|ms)")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_USER_COLUMNS = (
    "id, aud, role, email, phone, email_confirmed_at, phone_confirmed_at, confirmed_at, "
    "last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, "
    "is_anonymous, banned_until, encrypted_password"
)
# A valid hash at the real cost to compare against when the email is unknown, so both failures
# take as long and the answer time does not reveal which emails are registered.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(BCRYPT_COST))
# Unique indexes of auth.users whose violation means "this user already exists"; any other
# violation comes from a trigger and is a database error, as GoTrue reports it.
_USER_UNIQUE = frozenset({"users_pkey", "users_email_partial_key", "users_phone_key"})


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


class GatewayKeyError(ApiError):
    """Kong's answer when the project key is missing or wrong: `{"message": ...}`."""

    def body(self) -> dict[str, Any]:
        return {"message": self.message}


def _validation(msg: str) -> AuthError:
    return AuthError(400, "validation_failed", msg)


def _email_exists() -> AuthError:
    return AuthError(
        422, "email_exists", "A user with this email address has already been registered"
    )


# ── rate limits ────────────────────────────────────────────────────────────────────────────────
# GoTrue's token buckets: each holds RATE_LIMIT_BURST requests and refills at the configured
# number per RATE_LIMIT_WINDOW_SECONDS, per client IP. The CLI passes sign_in_sign_ups to GoTrue
# as GOTRUE_RATE_LIMIT_OTP (sign-ups and user updates, separate buckets) and token_refresh as
# GOTRUE_RATE_LIMIT_TOKEN_REFRESH (every /token grant, password sign-in included).
RATE_LIMIT_BURST = 30
RATE_LIMIT_WINDOW_SECONDS = 300
RATE_LIMIT_DEFAULTS = {"sign_in_sign_ups": 30, "token_refresh": 150}
RATE_LIMIT_ENV = "TOKENMETER_AUTH_RATE_LIMIT_"
_BUCKETS_PER_LIMIT = 10_000
_LIMIT_OF = {
    "sign_in_sign_ups": "sign_in_sign_ups",
    "user_updates": "sign_in_sign_ups",
    "token_refresh": "token_refresh",
}


def read_rate_limits(config_toml: Path, environ: Mapping[str, str]) -> dict[str, float]:
    """Requests per 5 minutes per IP for each limit: supabase/config.toml `[auth.rate_limit]`
    (the CLI's defaults when absent), overridden by TOKENMETER_AUTH_RATE_LIMIT_<KEY>, which
    may also be `unlimited` (infinity: no limit). The test suite turns both off: it signs
    hundreds of users up from one address, some of them at once, and even a huge rate leaves
    GoTrue's burst of 30. Raises ValueError for anything else than a number >= 0."""
    try:
        section = tomllib.loads(config_toml.read_text()).get("auth", {}).get("rate_limit", {})
    except FileNotFoundError:
        section = {}
    out: dict[str, float] = {}
    for key, default in RATE_LIMIT_DEFAULTS.items():
        value = environ.get(RATE_LIMIT_ENV + key.upper(), section.get(key, default))
        if value == "unlimited" and RATE_LIMIT_ENV + key.upper() in environ:
            out[key] = math.inf
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"auth rate limit {key} must be a number, not {value!r}") from None
        if not math.isfinite(out[key]) or out[key] < 0:
            raise ValueError(f"auth rate limit {key} must be a finite number, at least 0")
    return out


class RateLimits:
    """Per-IP token buckets, one set per limit; at most _BUCKETS_PER_LIMIT addresses each."""

    def __init__(self, per_window: dict[str, float]) -> None:
        self.per_window = per_window
        self._buckets: dict[str, dict[str, tuple[float, float]]] = {k: {} for k in _LIMIT_OF}

    def check(self, request: Request, limit: str) -> None:
        """Take one request from the caller's bucket. Raises 429 over_request_rate_limit."""
        # The socket's peer: the gateway is not behind a proxy, and a forwarded-for header
        # would let any caller pick its own bucket.
        ip = request.client.host if request.client else ""
        rate = self.per_window[_LIMIT_OF[limit]] / RATE_LIMIT_WINDOW_SECONDS
        if rate == math.inf:
            return
        buckets = self._buckets[limit]
        now = time.monotonic()
        tokens_left, since = buckets.pop(ip, (float(RATE_LIMIT_BURST), now))
        tokens_left = min(float(RATE_LIMIT_BURST), tokens_left + (now - since) * rate)
        if len(buckets) >= _BUCKETS_PER_LIMIT:
            # Oldest-touched first (re-inserted on every use); a dropped address starts full,
            # as it would after the hour GoTrue keeps a bucket.
            del buckets[next(iter(buckets))]
        if tokens_left < 1:
            buckets[ip] = (tokens_left, now)
            raise AuthError(429, "over_request_rate_limit", "Request rate limit reached")
        buckets[ip] = (tokens_left - 1, now)


def _rate_limits(request: Request) -> RateLimits:
    state = request.app.state
    found: RateLimits | None = getattr(state, "auth_rate_limits", None)
    if found is None:
        config_toml = state.config.paths.root / "supabase" / "config.toml"
        found = RateLimits(read_rate_limits(config_toml, os.environ))
        state.auth_rate_limits = found
    return found


# ── request helpers ────────────────────────────────────────────────────────────────────────────
def _secret(request: Request) -> str:
    return str(request.app.state.config.keys.jwt_secret)


def _check_api_key(request: Request) -> None:
    """Refuse requests without a valid project key, as Supabase's API gateway (Kong) does."""
    key = request.headers.get("apikey")
    if not key:
        raise GatewayKeyError(401, "no_api_key", "No API key found in request")
    if len(key) > tokens.MAX_TOKEN_BYTES:
        raise GatewayKeyError(401, "invalid_api_key", "Invalid API key")
    try:
        claims = jwt.decode(
            key, _secret(request), algorithms=["HS256"], options={"verify_aud": False}
        )
    except jwt.PyJWTError:
        raise GatewayKeyError(401, "invalid_api_key", "Invalid API key") from None
    if claims.get("role") not in ("anon", "service_role"):
        raise GatewayKeyError(401, "invalid_api_key", "Invalid API key")


async def _json_body(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
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
        raise _validation("Request body is required")
    if not isinstance(body, dict):
        raise AuthError(400, "bad_json", "Request body must be a JSON object")
    return body


def _storable(text: str) -> bool:
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
    """Whether any key or string in the JSON value cannot be stored (see _storable), or any
    number: a literal past a double's range (1e999) parses as infinity, which JSON (and so
    jsonb) cannot spell."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _storable(item):
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


def _opt_str(body: dict[str, Any], key: str, *, storable: bool = True) -> str | None:
    """body[key] as a string (None when absent). Raises 400 validation_failed for another type
    or, unless `storable` is False, for text PostgreSQL cannot store (GoTrue's message for an
    email; 422 as for any password signup refuses)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _validation(f"{key} must be a string")
    if storable and not _storable(value):
        if key == "email":
            raise _validation("Unable to validate email address: invalid format")
        if key == "password":
            raise AuthError(
                422,
                "validation_failed",
                "Password cannot contain NUL characters or unpaired surrogates",
            )
        raise _validation(f"{key} cannot contain NUL characters or unpaired surrogates")
    return value


def _metadata_size(value: dict[str, Any]) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _check_metadata_size(key: str, value: dict[str, Any]) -> None:
    if _metadata_size(value) > MAX_METADATA_BYTES:
        raise _validation(
            f"{key} is too large: at most {MAX_METADATA_BYTES} bytes as JSON "
            "(it is copied into every access token)"
        )


def _opt_obj(body: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    """The first of body[keys] that is present, as a metadata object: a JSON object whose text
    PostgreSQL can store, at most MAX_METADATA_BYTES. Raises 400 validation_failed."""
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _validation(f"{key} must be a JSON object")
        _check_metadata_size(key, value)  # first: the walk below is in Python
        if _unstorable(value):
            raise _validation(
                f"{key} cannot contain NUL characters, unpaired surrogates "
                "or numbers out of a double's range"
            )
        return value
    return None


def _phone(value: str) -> str:
    """GoTrue's phone rule: E.164 digits once spaces and a leading + are dropped."""
    digits = value.replace(" ", "").removeprefix("+")
    if not _E164.fullmatch(digits):
        raise _validation("Invalid phone number format (E.164 required)")
    return digits


def _email(value: str | None) -> str:
    if not value:
        raise _validation("An email address is required")
    email = value.strip().lower()
    if len(email) > 255 or not _EMAIL.match(email):
        raise _validation("Unable to validate email address: invalid format")
    return email


def _check_password(password: str | None) -> str:
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


async def _hash(password: str) -> str:
    """bcrypt at GoTrue's cost, off the event loop (it takes tens of milliseconds)."""
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(BCRYPT_COST))
    return hashed.decode()


async def _verify(password: str, hashed: str | None) -> bool:
    target = hashed.encode() if hashed else _DUMMY_HASH
    try:
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), target)
    except ValueError:
        return False
    return ok and hashed is not None


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthError(401, "no_authorization", "This endpoint requires a Bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "bad_jwt", "This endpoint requires a Bearer token")
    if len(token.strip()) > tokens.MAX_TOKEN_BYTES:
        raise AuthError(
            403,
            "bad_jwt",
            f"invalid JWT: unable to parse or verify signature, token is longer than "
            f"{tokens.MAX_TOKEN_BYTES} bytes",
        )
    return token.strip()


def _claims(request: Request) -> dict[str, Any]:
    """Verified claims of the caller's `Authorization` token; 401/403 as GoTrue answers."""
    token = _bearer(request)
    try:
        if jwt.get_unverified_header(token).get("alg") != "HS256":
            raise jwt.InvalidAlgorithmError("unsupported algorithm")
        claims = jwt.decode(
            token,
            _secret(request),
            algorithms=["HS256"],
            options={"verify_aud": False, "require": ["exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(
            403,
            "bad_jwt",
            "invalid JWT: unable to parse or verify signature, "
            "token has invalid claims: token is expired",
        ) from None
    except jwt.PyJWTError as exc:
        raise AuthError(
            403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {exc}"
        ) from None
    if not isinstance(claims, dict):
        raise AuthError(403, "bad_jwt", "invalid JWT: claims must be an object")
    return claims


def _admin(request: Request) -> dict[str, Any]:
    _check_api_key(request)
    claims = _claims(request)
    if claims.get("role") != "service_role":
        raise AuthError(403, "not_admin", "User not allowed")
    return claims


# ── JSON shapes ────────────────────────────────────────────────────────────────────────────────
def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def user_json(row: dict[str, Any]) -> dict[str, Any]:
    """A user as GoTrue serialises it (null timestamps are left out, as GoTrue's omitempty)."""
    out: dict[str, Any] = {
        "id": str(row["id"]),
        "aud": row["aud"] or "",
        "role": row["role"] or "",
        "email": row["email"] or "",
        "phone": row["phone"] or "",
        "app_metadata": row["raw_app_meta_data"] or {},
        "user_metadata": row["raw_user_meta_data"] or {},
        "identities": [],
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
        "is_anonymous": bool(row["is_anonymous"]),
    }
    for key in (
        "email_confirmed_at",
        "phone_confirmed_at",
        "confirmed_at",
        "last_sign_in_at",
        "banned_until",
    ):
        if row.get(key) is not None:
            out[key] = _ts(row[key])
    return out


def _access_token(
    request: Request, user: dict[str, Any], session_id: uuid.UUID, signed_in_at: datetime
) -> tuple[str, int, int]:
    """(token, expires_in, expires_at) for `user` in `session_id`."""
    expiry = int(request.app.state.config.jwt_expiry_seconds)
    now = int(time.time())
    claims = {
        "sub": str(user["id"]),
        "aud": user["aud"] or AUDIENCE,
        "role": user["role"] or AUDIENCE,
        "email": user["email"] or "",
        "phone": user["phone"] or "",
        "app_metadata": user["raw_app_meta_data"] or {},
        "user_metadata": user["raw_user_meta_data"] or {},
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": int(signed_in_at.timestamp())}],
        "session_id": str(session_id),
        "is_anonymous": bool(user["is_anonymous"]),
        "iat": now,
        "exp": now + expiry,
    }
    return jwt.encode(claims, _secret(request), algorithm="HS256"), expiry, now + expiry


def _session_json(
    request: Request,
    user: dict[str, Any],
    session_id: uuid.UUID,
    signed_in_at: datetime,
    refresh_token: str,
) -> dict[str, Any]:
    token, expires_in, expires_at = _access_token(request, user, session_id, signed_in_at)
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "expires_at": expires_at,
        "refresh_token": refresh_token,
        "user": user_json(user),
    }


# ── database helpers ───────────────────────────────────────────────────────────────────────────
async def _user_by(
    cur: psycopg.AsyncCursor[Any], column: str, value: Any, *, lock: bool = False
) -> dict[str, Any] | None:
    assert column in ("id", "email")
    await cur.execute(
        f"select {_USER_COLUMNS} from auth.users where {column} = %s and deleted_at is null"
        + (" for update" if lock else ""),
        (value,),
    )
    return await cur.fetchone()


async def _new_session(
    cur: psycopg.AsyncCursor[Any], user_id: uuid.UUID
) -> tuple[uuid.UUID, datetime, str]:
    """Insert a session and its first refresh token; (session id, created_at, refresh token)."""
    session_id = uuid.uuid4()
    await cur.execute(
        "insert into auth.sessions (id, user_id) values (%s, %s) returning created_at",
        (session_id, user_id),
    )
    row = await cur.fetchone()
    assert row is not None
    token = secrets.token_urlsafe(24)
    await cur.execute(
        "insert into auth.refresh_tokens (token, user_id, session_id) values (%s, %s, %s)",
        (token, user_id, session_id),
    )
    return session_id, row["created_at"], token


async def _insert_user(
    cur: psycopg.AsyncCursor[Any],
    *,
    user_id: uuid.UUID,
    email: str | None,
    phone: str | None,
    password_hash: str | None,
    confirmed: bool,
    app_metadata: dict[str, Any],
    user_metadata: dict[str, Any],
    role: str,
    signed_in: bool,
) -> dict[str, Any]:
    await cur.execute(
        f"""
        insert into auth.users (
          instance_id, id, aud, role, email, phone, encrypted_password, email_confirmed_at,
          last_sign_in_at, raw_app_meta_data, raw_user_meta_data, is_super_admin,
          created_at, updated_at, confirmation_token, recovery_token, email_change_token_new,
          email_change
        ) values (
          '00000000-0000-0000-0000-000000000000', %(id)s, %(aud)s, %(role)s, %(email)s,
          %(phone)s, %(hash)s, case when %(confirmed)s then now() end,
          case when %(signed_in)s then now() end, %(app)s, %(meta)s, false, now(), now(),
          '', '', '', ''
        )
        returning {_USER_COLUMNS}
        """,
        {
            "id": user_id,
            "aud": AUDIENCE,
            "role": role,
            "email": email,
            "phone": phone,
            "hash": password_hash or "",
            "confirmed": confirmed,
            "signed_in": signed_in,
            "app": Jsonb(app_metadata),
            "meta": Jsonb(user_metadata),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


def _provider_metadata(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"provider": "email", "providers": ["email"], **(extra or {})}


# ── public endpoints ───────────────────────────────────────────────────────────────────────────
async def health(request: Request) -> JSONResponse:
    _check_api_key(request)
    return JSONResponse(
        {
            "version": "tokenmeter-local",
            "name": "GoTrue",
            "description": "GoTrue-compatible auth of the tokenmeter local stack",
        }
    )


async def settings(request: Request) -> JSONResponse:
    _check_api_key(request)
    return JSONResponse(
        {
            "external": {"email": True, "phone": False, "anonymous_users": False},
            "disable_signup": False,
            "mailer_autoconfirm": True,
            "phone_autoconfirm": False,
            "sms_provider": "",
            "saml_enabled": False,
        }
    )


async def signup(request: Request) -> JSONResponse:
    _check_api_key(request)
    _rate_limits(request).check(request, "sign_in_sign_ups")
    body = await _json_body(request)
    if body.get("phone") and not body.get("email"):
        raise AuthError(400, "phone_provider_disabled", "Unsupported phone provider")
    email = _email(_opt_str(body, "email"))
    password = _check_password(_opt_str(body, "password"))
    metadata = _opt_obj(body, "data", "user_metadata") or {}
    password_hash = await _hash(password)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            if await _user_by(cur, "email", email) is not None:
                raise AuthError(422, "user_already_exists", "User already registered")
            try:
                async with conn.transaction():
                    user = await _insert_user(
                        cur,
                        user_id=uuid.uuid4(),
                        email=email,
                        phone=None,
                        password_hash=password_hash,
                        confirmed=True,
                        app_metadata=_provider_metadata(),
                        user_metadata=metadata,
                        role=AUDIENCE,
                        signed_in=True,
                    )
                    session_id, started, refresh = await _new_session(cur, user["id"])
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name not in _USER_UNIQUE:
                    raise AuthError(
                        500, "unexpected_failure", "Database error saving new user"
                    ) from None
                raise AuthError(422, "user_already_exists", "User already registered") from None
            except psycopg.Error:
                # A failing trigger on auth.users lands here, exactly as in GoTrue.
                raise AuthError(
                    500, "unexpected_failure", "Database error saving new user"
                ) from None
    return JSONResponse(_session_json(request, user, session_id, started, refresh))


async def token(request: Request) -> JSONResponse:
    _check_api_key(request)
    grant = request.query_params.get("grant_type", "")
    if grant in ("password", "refresh_token"):
        _rate_limits(request).check(request, "token_refresh")
    body = await _json_body(request)
    if grant == "password":
        return await _password_grant(request, body)
    if grant == "refresh_token":
        return await _refresh_grant(request, body)
    raise AuthError(400, "validation_failed", f"unsupported_grant_type: {grant!r}")


async def _password_grant(request: Request, body: dict[str, Any]) -> JSONResponse:
    email = _opt_str(body, "email", storable=False)
    password = _opt_str(body, "password", storable=False)
    if not email or not password:
        raise AuthError(400, "validation_failed", "missing email or phone")
    if (
        not _storable(email)
        or not _storable(password)
        or len(password.encode()) > MAX_PASSWORD_BYTES
    ):
        # No stored password can be one that signup refuses: bcrypt would compare only the
        # first 72 bytes, so a longer one would match any password sharing them.
        raise AuthError(400, "invalid_credentials", "Invalid login credentials")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await _user_by(cur, "email", email.strip().lower())
            ok = await _verify(password, user["encrypted_password"] if user else None)
            if user is None or not ok:
                raise AuthError(400, "invalid_credentials", "Invalid login credentials")
            if user["banned_until"] and user["banned_until"] > datetime.now(UTC):
                raise AuthError(400, "user_banned", "User is banned")
            if user["email_confirmed_at"] is None:
                raise AuthError(400, "email_not_confirmed", "Email not confirmed")
            async with conn.transaction():
                await cur.execute(
                    f"update auth.users set last_sign_in_at = now(), updated_at = now() "
                    f"where id = %s returning {_USER_COLUMNS}",
                    (user["id"],),
                )
                user = await cur.fetchone()
                assert user is not None
                session_id, started, refresh = await _new_session(cur, user["id"])
    return JSONResponse(_session_json(request, user, session_id, started, refresh))


async def _refresh_grant(request: Request, body: dict[str, Any]) -> JSONResponse:
    presented = _opt_str(body, "refresh_token")
    if not presented:
        raise AuthError(400, "validation_failed", "Refresh Token is required")
    reused = False
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                # The row lock serialises concurrent refreshes of one token: the loser sees it
                # revoked and is treated as a reuse.
                await cur.execute(
                    "select t.id, t.revoked, t.session_id, t.user_id, s.created_at, s.not_after "
                    "from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id "
                    "where t.token = %s for update of t, s",
                    (presented,),
                )
                found = await cur.fetchone()
                if found is None:
                    raise AuthError(
                        400,
                        "refresh_token_not_found",
                        "Invalid Refresh Token: Refresh Token Not Found",
                    )
                if found["revoked"]:
                    reused = True
                    await cur.execute(
                        "update auth.refresh_tokens set revoked = true, updated_at = now() "
                        "where session_id = %s",
                        (found["session_id"],),
                    )
                    await cur.execute(
                        "update auth.sessions set not_after = now(), updated_at = now() "
                        "where id = %s",
                        (found["session_id"],),
                    )
                elif found["not_after"] is not None and found["not_after"] <= datetime.now(UTC):
                    raise AuthError(
                        400, "session_expired", "Invalid Refresh Token: Session Expired"
                    )
                else:
                    user = await _user_by(cur, "id", found["user_id"])
                    if user is None:
                        raise AuthError(
                            400,
                            "refresh_token_not_found",
                            "Invalid Refresh Token: Refresh Token Not Found",
                        )
                    if user["banned_until"] and user["banned_until"] > datetime.now(UTC):
                        raise AuthError(400, "user_banned", "User is banned")
                    fresh = secrets.token_urlsafe(24)
                    await cur.execute(
                        "update auth.refresh_tokens set revoked = true, updated_at = now() "
                        "where id = %s",
                        (found["id"],),
                    )
                    await cur.execute(
                        "insert into auth.refresh_tokens (token, user_id, session_id, parent) "
                        "values (%s, %s, %s, %s)",
                        (fresh, found["user_id"], found["session_id"], presented),
                    )
                    await cur.execute(
                        "update auth.sessions set updated_at = now() where id = %s",
                        (found["session_id"],),
                    )
    if reused:
        raise AuthError(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")
    return JSONResponse(
        _session_json(request, user, found["session_id"], found["created_at"], fresh)
    )


async def _current(
    request: Request, cur: psycopg.AsyncCursor[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(claims, user row) of the signed-in caller; 401/403 as GoTrue when there is none."""
    claims = _claims(request)
    try:
        user_id = uuid.UUID(str(claims.get("sub")))
    except ValueError:
        raise AuthError(403, "bad_jwt", "invalid claim: missing sub claim") from None
    user = await _user_by(cur, "id", user_id)
    if user is None:
        raise AuthError(403, "user_not_found", "User from sub claim in JWT does not exist")
    session_id = claims.get("session_id")
    if session_id:
        try:
            sid = uuid.UUID(str(session_id))
        except ValueError:
            raise AuthError(
                403, "bad_jwt", "invalid claim: session_id claim is not a UUID"
            ) from None
        await cur.execute(
            "select 1 from auth.sessions where id = %s and user_id = %s "
            "and (not_after is null or not_after > now())",
            (sid, user_id),
        )
        if await cur.fetchone() is None:
            raise AuthError(
                403, "session_not_found", "Session from session_id claim in JWT does not exist"
            )
    return claims, user


async def get_user(request: Request) -> JSONResponse:
    _check_api_key(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            _claims_, user = await _current(request, cur)
    return JSONResponse(user_json(user))


async def update_user(request: Request) -> JSONResponse:
    _check_api_key(request)
    _claims(request)  # as GoTrue: who is asking (401/403) before the body or the rate limit
    _rate_limits(request).check(request, "user_updates")
    body = await _json_body(request)
    metadata = _opt_obj(body, "data", "user_metadata")
    password = _opt_str(body, "password")
    email = _opt_str(body, "email")
    password_hash = await _hash(_check_password(password)) if password is not None else None
    new_email = _email(email) if email is not None else None
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            _claims_, user = await _current(request, cur)
            try:
                async with conn.transaction():
                    if metadata is not None:
                        await _check_merged_metadata(cur, user["id"], user_metadata=metadata)
                    user = await _update_user_row(
                        cur,
                        user["id"],
                        email=new_email,
                        password_hash=password_hash,
                        user_metadata=metadata,
                        app_metadata=None,
                        confirm_email=None,
                        banned_until=None,
                    )
            except psycopg.errors.UniqueViolation:
                raise _email_exists() from None
    return JSONResponse(user_json(user))


_UNSET_BAN = object()


async def _check_merged_metadata(
    cur: psycopg.AsyncCursor[Any],
    user_id: uuid.UUID,
    *,
    user_metadata: dict[str, Any] | None = None,
    app_metadata: dict[str, Any] | None = None,
) -> None:
    """Raise 400 validation_failed when merging the given metadata into the user's (as
    _update_user_row does, key by key) would go over MAX_METADATA_BYTES. Locks the row, so
    concurrent updates cannot together pass the limit; call inside the update's transaction."""
    row = await _user_by(cur, "id", user_id, lock=True)
    if row is None:
        return
    if user_metadata is not None:
        merged = {**(row["raw_user_meta_data"] or {}), **user_metadata}
        _check_metadata_size("user_metadata", merged)
    if app_metadata is not None:
        merged = {**(row["raw_app_meta_data"] or {}), **app_metadata}
        _check_metadata_size("app_metadata", merged)


async def _update_user_row(
    cur: psycopg.AsyncCursor[Any],
    user_id: uuid.UUID,
    *,
    email: str | None,
    password_hash: str | None,
    user_metadata: dict[str, Any] | None,
    app_metadata: dict[str, Any] | None,
    confirm_email: bool | None,
    banned_until: Any,
) -> dict[str, Any]:
    """Apply the given changes (None = unchanged); metadata is merged key by key, as GoTrue."""
    await cur.execute(
        f"""
        update auth.users set
          email = coalesce(%(email)s, email),
          encrypted_password = coalesce(%(hash)s, encrypted_password),
          raw_user_meta_data = case when %(meta)s::jsonb is null then raw_user_meta_data
                                    else coalesce(raw_user_meta_data, '{{}}') || %(meta)s::jsonb end,
          raw_app_meta_data = case when %(app)s::jsonb is null then raw_app_meta_data
                                   else coalesce(raw_app_meta_data, '{{}}') || %(app)s::jsonb end,
          email_confirmed_at = case when %(confirm)s::boolean is null then email_confirmed_at
                                    when %(confirm)s then coalesce(email_confirmed_at, now())
                                    else email_confirmed_at end,
          banned_until = case when %(set_ban)s then %(ban)s::timestamptz else banned_until end,
          updated_at = now()
        where id = %(id)s
        returning {_USER_COLUMNS}
        """,
        {
            "email": email,
            "hash": password_hash,
            "meta": Jsonb(user_metadata) if user_metadata is not None else None,
            "app": Jsonb(app_metadata) if app_metadata is not None else None,
            "confirm": confirm_email,
            "set_ban": banned_until is not _UNSET_BAN and banned_until is not None,
            "ban": None if banned_until is _UNSET_BAN else banned_until,
            "id": user_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def logout(request: Request) -> Response:
    _check_api_key(request)
    scope = request.query_params.get("scope", "global")
    if scope not in ("global", "local", "others"):
        raise _validation("scope must be one of global, local, others")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            claims, user = await _current(request, cur)
            session_id = claims.get("session_id")
            if scope == "global" or not session_id:
                await cur.execute("delete from auth.sessions where user_id = %s", (user["id"],))
            elif scope == "local":
                await cur.execute(
                    "delete from auth.sessions where id = %s and user_id = %s",
                    (uuid.UUID(session_id), user["id"]),
                )
            else:
                await cur.execute(
                    "delete from auth.sessions where user_id = %s and id <> %s",
                    (user["id"], uuid.UUID(session_id)),
                )
    return Response(status_code=204)


# ── admin endpoints (service_role only) ────────────────────────────────────────────────────────
def _ban_until(body: dict[str, Any]) -> Any:
    """`ban_duration` ("none", or a Go duration such as "24h", "30m", "90s") as a timestamp."""
    value = _opt_str(body, "ban_duration")
    if value is None:
        return _UNSET_BAN
    if value == "none":
        return datetime.now(UTC) - timedelta(seconds=1)
    match = _DURATION.fullmatch(value)
    if not match:
        raise _validation("invalid format for ban duration")
    factor = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[match.group(2)]
    seconds = float(match.group(1)) * factor
    if seconds > MAX_BAN_SECONDS:
        # GoTrue's time.ParseDuration refuses it the same way ("invalid duration").
        raise _validation("invalid format for ban duration: duration out of range")
    try:
        return datetime.now(UTC) + timedelta(seconds=seconds)
    except OverflowError:  # past year 9999: PostgreSQL could not store it either
        raise _validation("invalid format for ban duration: duration out of range") from None


def _path_user_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["user_id"])
    except ValueError:
        raise AuthError(404, "user_not_found", "User not found") from None


async def admin_create_user(request: Request) -> JSONResponse:
    _admin(request)
    body = await _json_body(request)
    email_raw = _opt_str(body, "email")
    phone_raw = _opt_str(body, "phone")
    if not email_raw and not phone_raw:
        raise _validation("An email address or phone number is required")
    email = _email(email_raw) if email_raw else None
    phone = _phone(phone_raw) if phone_raw else None
    password = _opt_str(body, "password")
    password_hash = await _hash(_check_password(password)) if password is not None else None
    user_metadata = _opt_obj(body, "user_metadata", "data") or {}
    app_metadata = _provider_metadata(_opt_obj(body, "app_metadata"))
    _check_metadata_size("app_metadata", app_metadata)
    role = _opt_str(body, "role") or AUDIENCE
    if len(role.encode(errors="replace")) > 63:
        # A PostgreSQL role name is at most 63 bytes, and the role goes into every token.
        raise _validation("role must be at most 63 bytes (a PostgreSQL role name)")
    raw_id = _opt_str(body, "id")
    try:
        user_id = uuid.UUID(raw_id) if raw_id else uuid.uuid4()
    except ValueError:
        raise _validation("id must be a UUID") from None
    confirm = body.get("email_confirm", False)
    if not isinstance(confirm, bool):
        raise _validation("email_confirm must be a boolean")
    ban = _ban_until(body)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            if email and await _user_by(cur, "email", email) is not None:
                raise _email_exists()
            try:
                async with conn.transaction():
                    user = await _insert_user(
                        cur,
                        user_id=user_id,
                        email=email,
                        phone=phone,
                        password_hash=password_hash,
                        confirmed=confirm,
                        app_metadata=app_metadata,
                        user_metadata=user_metadata,
                        role=role,
                        signed_in=False,
                    )
                    if ban is not _UNSET_BAN:
                        user = await _update_user_row(
                            cur,
                            user_id,
                            email=None,
                            password_hash=None,
                            user_metadata=None,
                            app_metadata=None,
                            confirm_email=None,
                            banned_until=ban,
                        )
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name not in _USER_UNIQUE:
                    raise AuthError(
                        500, "unexpected_failure", "Database error creating new user"
                    ) from None
                raise _email_exists() from None
            except psycopg.Error:
                raise AuthError(
                    500, "unexpected_failure", "Database error creating new user"
                ) from None
    return JSONResponse(user_json(user))


def _positive_int(request: Request, name: str, default: int) -> int:
    """Query parameter `name` as GoTrue parses it (ASCII digits, a uint64), at least 1.
    Raises 400 validation_failed "Bad Pagination Parameters: …"."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    # Not str.isdigit(): it takes "²" and other digits int() refuses, and no length bound.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20 or not 1 <= int(raw) < 2**64:
        raise _validation(
            f"Bad Pagination Parameters: {name} must be a positive integer below 2^64"
        )
    return int(raw)


async def admin_list_users(request: Request) -> JSONResponse:
    _admin(request)
    page = _positive_int(request, "page", 1)
    per_page = min(_positive_int(request, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    if (page - 1) * per_page > _MAX_OFFSET:
        raise _validation("Bad Pagination Parameters: page is past the last possible offset")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("select count(*) as n from auth.users where deleted_at is null")
            total_row = await cur.fetchone()
            await cur.execute(
                f"select {_USER_COLUMNS} from auth.users where deleted_at is null "
                "order by created_at desc, id limit %s offset %s",
                (per_page, (page - 1) * per_page),
            )
            rows = await cur.fetchall()
    total = int(total_row["n"]) if total_row else 0
    return JSONResponse(
        {"users": [user_json(r) for r in rows], "aud": AUDIENCE},
        headers={"x-total-count": str(total)},
    )


async def _admin_user(request: Request, cur: psycopg.AsyncCursor[Any]) -> dict[str, Any]:
    user = await _user_by(cur, "id", _path_user_id(request))
    if user is None:
        raise AuthError(404, "user_not_found", "User not found")
    return user


async def admin_get_user(request: Request) -> JSONResponse:
    _admin(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await _admin_user(request, cur)
    return JSONResponse(user_json(user))


async def admin_update_user(request: Request) -> JSONResponse:
    _admin(request)
    body = await _json_body(request)
    email = _opt_str(body, "email")
    password = _opt_str(body, "password")
    password_hash = await _hash(_check_password(password)) if password is not None else None
    confirm = body.get("email_confirm")
    if confirm is not None and not isinstance(confirm, bool):
        raise _validation("email_confirm must be a boolean")
    ban = _ban_until(body)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await _admin_user(request, cur)
            user_metadata = _opt_obj(body, "user_metadata", "data")
            app_metadata = _opt_obj(body, "app_metadata")
            try:
                async with conn.transaction():
                    await _check_merged_metadata(
                        cur, user["id"], user_metadata=user_metadata, app_metadata=app_metadata
                    )
                    user = await _update_user_row(
                        cur,
                        user["id"],
                        email=_email(email) if email is not None else None,
                        password_hash=password_hash,
                        user_metadata=user_metadata,
                        app_metadata=app_metadata,
                        confirm_email=confirm,
                        banned_until=ban,
                    )
            except psycopg.errors.UniqueViolation:
                raise _email_exists() from None
    return JSONResponse(user_json(user))


async def admin_delete_user(request: Request) -> JSONResponse:
    _admin(request)
    body = await _json_body(request, allow_empty=True)
    soft = body.get("should_soft_delete", False)
    if not isinstance(soft, bool):
        raise _validation("should_soft_delete must be a boolean")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await _admin_user(request, cur)
            try:
                async with conn.transaction():
                    if soft:
                        # As GoTrue: keep the row, free the email/phone, end every session.
                        await cur.execute(
                            "delete from auth.sessions where user_id = %s", (user["id"],)
                        )
                        await cur.execute(
                            "update auth.users set deleted_at = now(), updated_at = now(), "
                            "email = null, phone = null, encrypted_password = '' "
                            "where id = %s",
                            (user["id"],),
                        )
                    else:
                        await cur.execute("delete from auth.users where id = %s", (user["id"],))
            except psycopg.Error:
                raise AuthError(500, "unexpected_failure", "Database error deleting user") from None
    return JSONResponse({})


def routes() -> list[BaseRoute]:
    # Read once here so that a bad [auth.rate_limit] stops the gateway at start, not at the
    # first sign-up; requests read it again (lazily) from the app's own paths.
    read_rate_limits(project_root() / "supabase" / "config.toml", os.environ)
    return [
        Route("/health", health, methods=["GET"]),
        Route("/settings", settings, methods=["GET"]),
        Route("/signup", signup, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/user", get_user, methods=["GET"]),
        Route("/user", update_user, methods=["PUT"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/admin/users", admin_create_user, methods=["POST"]),
        Route("/admin/users", admin_list_users, methods=["GET"]),
        Route("/admin/users/{user_id}", admin_get_user, methods=["GET"]),
        Route("/admin/users/{user_id}", admin_update_user, methods=["PUT"]),
        Route("/admin/users/{user_id}", admin_delete_user, methods=["DELETE"]),
    ]
