"""MFA with TOTP, as GoTrue has it: enroll a factor, challenge it, verify a code (which raises the
session to aal2), unenroll; and the admin factors API.

Codes are RFC 6238 TOTP (SHA-1, 6 digits, 30 s step), accepted one step either side of now, as
GoTrue (pquerna/otp with skew 1). A challenge lives 300 s (GoTrue's default
MFA_CHALLENGE_EXPIRY_DURATION), must be verified from the address that created it, and is used
once. Verifying a factor in a session: the session becomes aal2 with `totp` in its `amr`, its
refresh token is rotated and the answer is a fresh session (GoTrue's response); verifying a new
factor also ends the user's other aal1 sessions, as GoTrue does. Unenrolling a verified factor
needs an aal2 session; sessions raised by the removed factor fall back to aal1.

Not as GoTrue: `totp.qr_code` is empty (no QR encoder is installed; the `uri` is what an
authenticator app needs, and apps can render it themselves); verification attempts are bounded
per factor (MAX_VERIFY_ATTEMPTS a minute, 429) since a 6-digit code with three accepted windows
falls to guessing without a bound; phone and WebAuthn factors are off (422, as GoTrue with them
disabled).
"""

from __future__ import annotations

import ipaddress
import secrets
import time
import tomllib
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pyotp
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.stack.gateway.auth.caller import check_api_key, current_user, require_admin
from app.stack.gateway.auth.errors import AuthError, validation_failed
from app.stack.gateway.auth.sessions import session_assurance, session_json
from app.stack.gateway.auth.store import FACTOR_COLUMNS, factor_json, factors_of, user_by, user_out
from app.stack.gateway.auth.validation import json_body, opt_str

CHALLENGE_EXPIRY_SECONDS = 300
MAX_ENROLLED_FACTORS = 10  # GoTrue's MFA_MAX_ENROLLED_FACTORS default
MAX_NAME_CHARS = 255  # friendly_name and issuer: both go into the otpauth URI and the database
MAX_VERIFY_ATTEMPTS = 15  # per factor per minute (GoTrue's challenge-and-verify rate: 15/min/IP)
_ATTEMPT_WINDOW_SECONDS = 60.0
_TRACKED_FACTORS = 10_000


# ── helpers ────────────────────────────────────────────────────────────────────────────────────
def _path_uuid(request: Request, key: str, not_found: AuthError) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params[key])
    except ValueError:
        raise not_found from None


def _factor_not_found() -> AuthError:
    return AuthError(404, "mfa_factor_not_found", "Factor not found")


def _client_ip(request: Request) -> str:
    """The socket's peer as an inet value (the gateway is not behind a proxy). Test clients
    name themselves ("testclient"): those are stored as 0.0.0.0."""
    host = request.client.host if request.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "0.0.0.0"


def _bounded_name(body: dict[str, Any], key: str) -> str | None:
    value = opt_str(body, key)
    if value is not None and len(value) > MAX_NAME_CHARS:
        raise validation_failed(f"{key} must be at most {MAX_NAME_CHARS} characters")
    return value


def _default_issuer(request: Request) -> str:
    """GoTrue's default issuer: the host of the site URL (config.toml `[auth] site_url`)."""
    path = request.app.state.config.paths.root / "supabase" / "config.toml"
    try:
        site = tomllib.loads(path.read_text()).get("auth", {}).get("site_url", "")
    except (OSError, tomllib.TOMLDecodeError):
        site = ""
    return urlsplit(site).netloc if isinstance(site, str) and site else "localhost"


async def _session_of(claims: dict[str, Any], cur: psycopg.AsyncCursor[Any]) -> dict[str, Any]:
    """The caller's session row (current_user has checked that it exists and is live)."""
    session_id = claims.get("session_id")
    if not session_id:
        raise AuthError(401, "session_not_found", "A session is required for MFA")
    await cur.execute(
        "select id, created_at, coalesce(aal::text, 'aal1') as aal, factor_id "
        "from auth.sessions where id = %s for update",
        (uuid.UUID(str(session_id)),),
    )
    row = await cur.fetchone()
    if row is None:
        raise AuthError(
            403, "session_not_found", "Session from session_id claim in JWT does not exist"
        )
    return row


async def _own_factor(
    cur: psycopg.AsyncCursor[Any], user_id: uuid.UUID, factor_id: uuid.UUID
) -> dict[str, Any]:
    await cur.execute(
        f"select {FACTOR_COLUMNS} from auth.mfa_factors where id = %s and user_id = %s for update",
        (factor_id, user_id),
    )
    factor = await cur.fetchone()
    if factor is None:
        raise _factor_not_found()
    return factor


async def _downgrade_sessions(cur: psycopg.AsyncCursor[Any], factor_id: uuid.UUID) -> None:
    """Sessions raised to aal2 by a removed factor fall back to aal1 and lose its amr entry."""
    await cur.execute(
        "delete from auth.mfa_amr_claims where authentication_method = 'totp' and session_id in "
        "(select id from auth.sessions where factor_id = %s)",
        (factor_id,),
    )
    await cur.execute(
        "update auth.sessions set aal = 'aal1', factor_id = null, updated_at = now() "
        "where factor_id = %s",
        (factor_id,),
    )


def _take_attempt(request: Request, factor_id: uuid.UUID) -> None:
    """At most MAX_VERIFY_ATTEMPTS verifications of one factor per minute, from any address."""
    state = request.app.state
    attempts: OrderedDict[uuid.UUID, list[float]] | None = getattr(state, "mfa_attempts", None)
    if attempts is None:
        attempts = state.mfa_attempts = OrderedDict()
    now = time.monotonic()
    recent = [t for t in attempts.pop(factor_id, []) if now - t < _ATTEMPT_WINDOW_SECONDS]
    if len(attempts) >= _TRACKED_FACTORS:
        attempts.popitem(last=False)
    if len(recent) >= MAX_VERIFY_ATTEMPTS:
        attempts[factor_id] = recent
        raise AuthError(429, "over_request_rate_limit", "Request rate limit reached")
    attempts[factor_id] = [*recent, now]


# ── the signed-in user's factors ───────────────────────────────────────────────────────────────
async def enroll(request: Request) -> JSONResponse:
    """POST /factors: a new unverified TOTP factor with its secret and otpauth URI."""
    check_api_key(request)
    body = await json_body(request)
    factor_type = opt_str(body, "factor_type")
    if factor_type == "phone":
        raise AuthError(422, "mfa_phone_enroll_not_enabled", "MFA enroll is disabled for Phone")
    if factor_type == "webauthn":
        raise AuthError(
            422, "mfa_web_authn_enroll_not_enabled", "MFA enroll is disabled for WebAuthn"
        )
    if factor_type != "totp":
        raise validation_failed("factor_type needs to be totp, phone, or webauthn")
    friendly_name = _bounded_name(body, "friendly_name") or ""
    issuer = _bounded_name(body, "issuer") or _default_issuer(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                claims, user = await current_user(request, cur)
                session = await _session_of(claims, cur)
                # The user's row lock serialises enrolments, so the count below holds.
                await cur.execute(
                    "select 1 from auth.users where id = %s for update", (user["id"],)
                )
                factors = await factors_of(cur, user["id"])
                if any(f["status"] == "verified" for f in factors) and session["aal"] != "aal2":
                    raise AuthError(422, "insufficient_aal", "AAL2 required to enroll a new factor")
                if len(factors) >= MAX_ENROLLED_FACTORS:
                    raise AuthError(
                        422,
                        "too_many_enrolled_mfa_factors",
                        "Maximum number of verified factors reached, unenroll to continue",
                    )
                if friendly_name.strip() and any(
                    f["friendly_name"] == friendly_name for f in factors
                ):
                    raise AuthError(
                        422,
                        "mfa_factor_name_conflict",
                        f'A factor with the friendly name "{friendly_name}" for this user '
                        "already exists",
                    )
                secret = pyotp.random_base32(32)  # 160 bits, as GoTrue's generator
                account = user["email"] or user["phone"] or str(user["id"])
                uri = pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)
                factor_id = uuid.uuid4()
                await cur.execute(
                    "insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, "
                    "status, created_at, updated_at, secret) "
                    "values (%s, %s, %s, 'totp', 'unverified', now(), now(), %s)",
                    (factor_id, user["id"], friendly_name, secret),
                )
    return JSONResponse(
        {
            "id": str(factor_id),
            "type": "totp",
            "friendly_name": friendly_name,
            "totp": {"qr_code": "", "secret": secret, "uri": uri},
        }
    )


async def challenge(request: Request) -> JSONResponse:
    """POST /factors/{factor_id}/challenge: a challenge to verify a code against."""
    check_api_key(request)
    factor_id = _path_uuid(request, "factor_id", _factor_not_found())
    body = await json_body(request, allow_empty=True)
    if body.get("channel") is not None:
        raise validation_failed("channel is only for phone factors")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                claims, user = await current_user(request, cur)
                await _session_of(claims, cur)
                await _own_factor(cur, user["id"], factor_id)
                challenge_id = uuid.uuid4()
                await cur.execute(
                    "insert into auth.mfa_challenges (id, factor_id, created_at, ip_address) "
                    "values (%s, %s, now(), %s) returning created_at",
                    (challenge_id, factor_id, _client_ip(request)),
                )
                row = await cur.fetchone()
                assert row is not None
                await cur.execute(
                    "update auth.mfa_factors set last_challenged_at = clock_timestamp() "
                    "where id = %s",
                    (factor_id,),
                )
    expires_at = row["created_at"] + timedelta(seconds=CHALLENGE_EXPIRY_SECONDS)
    return JSONResponse(
        {"id": str(challenge_id), "type": "totp", "expires_at": int(expires_at.timestamp())}
    )


async def verify(request: Request) -> JSONResponse:
    """POST /factors/{factor_id}/verify: a TOTP code for a challenge; the session becomes aal2."""
    check_api_key(request)
    factor_id = _path_uuid(request, "factor_id", _factor_not_found())
    body = await json_body(request)
    code = opt_str(body, "code")
    raw_challenge = opt_str(body, "challenge_id")
    if not code:
        raise validation_failed("code is required")
    try:
        challenge_id = uuid.UUID(raw_challenge or "")
    except ValueError:
        raise validation_failed("challenge_id must be a UUID") from None
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                claims, user = await current_user(request, cur)
                session = await _session_of(claims, cur)
                factor = await _own_factor(cur, user["id"], factor_id)
                await cur.execute(
                    "select id, created_at, host(ip_address) as ip from auth.mfa_challenges "
                    "where id = %s and factor_id = %s for update",
                    (challenge_id, factor_id),
                )
                found = await cur.fetchone()
                if found is None:
                    raise AuthError(
                        404,
                        "mfa_factor_not_found",
                        "MFA factor with the provided challenge ID not found",
                    )
                if found["ip"] != _client_ip(request):
                    raise AuthError(
                        422,
                        "mfa_ip_address_mismatch",
                        "Challenge and verify IP addresses mismatch. Try enrollment again.",
                    )
                expired = found["created_at"] + timedelta(seconds=CHALLENGE_EXPIRY_SECONDS)
                if expired < datetime.now(UTC):
                    await cur.execute(
                        "delete from auth.mfa_challenges where id = %s", (challenge_id,)
                    )
                    expired_error = AuthError(
                        422,
                        "mfa_challenge_expired",
                        f"MFA challenge {challenge_id} has expired, verify against another "
                        "challenge or create a new challenge.",
                    )
                else:
                    expired_error = None
            # The expired challenge's deletion is committed before the refusal.
            if expired_error is not None:
                raise expired_error
            _take_attempt(request, factor_id)
            if not pyotp.TOTP(factor["secret"]).verify(code, valid_window=1):
                raise AuthError(422, "mfa_verification_failed", "Invalid TOTP code entered")
            async with conn.transaction():
                # Locked again: a concurrent verify of the same challenge finds it gone.
                await cur.execute(
                    "delete from auth.mfa_challenges where id = %s returning id", (challenge_id,)
                )
                if await cur.fetchone() is None:
                    raise AuthError(
                        404,
                        "mfa_factor_not_found",
                        "MFA factor with the provided challenge ID not found",
                    )
                newly_verified = factor["status"] != "verified"
                await cur.execute(
                    "update auth.mfa_factors set status = 'verified', updated_at = now() "
                    "where id = %s",
                    (factor_id,),
                )
                await cur.execute(
                    "insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, "
                    "authentication_method) values (%s, %s, now(), now(), 'totp') "
                    "on conflict (session_id, authentication_method) "
                    "do update set updated_at = now(), created_at = now()",
                    (uuid.uuid4(), session["id"]),
                )
                await cur.execute(
                    "update auth.sessions set aal = 'aal2', factor_id = %s, updated_at = now() "
                    "where id = %s",
                    (factor_id, session["id"]),
                )
                if newly_verified:
                    # GoTrue: a new second factor ends the user's sessions that lack it.
                    await cur.execute(
                        "delete from auth.sessions where user_id = %s and id <> %s "
                        "and (aal is null or aal < 'aal2')",
                        (user["id"], session["id"]),
                    )
                refresh = await _rotate_refresh_token(cur, user["id"], session["id"])
                user_body = await user_out(cur, user)
                assurance = await session_assurance(cur, session["id"])
    return JSONResponse(
        session_json(
            request, user, session["id"], session["created_at"], refresh, user_body, assurance
        )
    )


async def _rotate_refresh_token(
    cur: psycopg.AsyncCursor[Any], user_id: uuid.UUID, session_id: uuid.UUID
) -> str:
    """GoTrue's refresh-token swap at MFA verification: the session's live token is revoked and
    a child of it issued (using the revoked one later is reuse, as after a refresh)."""
    await cur.execute(
        "update auth.refresh_tokens set revoked = true, updated_at = now() "
        "where session_id = %s and not revoked returning token",
        (session_id,),
    )
    parents = [r["token"] for r in await cur.fetchall()]
    fresh = secrets.token_urlsafe(24)
    await cur.execute(
        "insert into auth.refresh_tokens (token, user_id, session_id, parent) "
        "values (%s, %s, %s, %s)",
        (fresh, user_id, session_id, parents[-1] if parents else None),
    )
    return fresh


async def unenroll(request: Request) -> JSONResponse:
    """DELETE /factors/{factor_id}: a verified factor only from an aal2 session, as GoTrue."""
    check_api_key(request)
    factor_id = _path_uuid(request, "factor_id", _factor_not_found())
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                claims, user = await current_user(request, cur)
                session = await _session_of(claims, cur)
                factor = await _own_factor(cur, user["id"], factor_id)
                if factor["status"] == "verified" and session["aal"] != "aal2":
                    raise AuthError(
                        422, "insufficient_aal", "AAL2 required to unenroll verified factor"
                    )
                await _downgrade_sessions(cur, factor_id)
                await cur.execute("delete from auth.mfa_factors where id = %s", (factor_id,))
    return JSONResponse({"id": str(factor_id)})


# ── admin ──────────────────────────────────────────────────────────────────────────────────────
async def _admin_target(request: Request, cur: psycopg.AsyncCursor[Any]) -> dict[str, Any]:
    not_found = AuthError(404, "user_not_found", "User not found")
    user = await user_by(cur, "id", _path_uuid(request, "user_id", not_found))
    if user is None:
        raise not_found
    return user


async def admin_list_factors(request: Request) -> JSONResponse:
    """GET /admin/users/{user_id}/factors."""
    require_admin(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await _admin_target(request, cur)
            factors = await factors_of(cur, user["id"])
    return JSONResponse([factor_json(f) for f in factors])


async def admin_delete_factor(request: Request) -> JSONResponse:
    """DELETE /admin/users/{user_id}/factors/{factor_id}: answers the deleted factor."""
    require_admin(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                user = await _admin_target(request, cur)
                factor_id = _path_uuid(request, "factor_id", _factor_not_found())
                factor = await _own_factor(cur, user["id"], factor_id)
                await _downgrade_sessions(cur, factor_id)
                await cur.execute("delete from auth.mfa_factors where id = %s", (factor_id,))
    return JSONResponse(factor_json(factor))
