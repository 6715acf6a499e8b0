"""GET and PUT /user: the signed-in user reads and changes itself (GoTrue's user.go).

An email change of a permanent user waits for confirmation: GoTrue's sendEmailChange mails the
new address (and, with `[auth.email] double_confirm_changes`, the current one) and the user
answers with `new_email` until /verify applies it. An anonymous user given an email while
confirmations are off becomes a permanent email user at once, as a sign-up would.

A new password needs, with `[auth.email] secure_password_change`, a session younger than 24 hours
or the `nonce` mailed by GET /reauthenticate; it must differ from the current one; with a
verified MFA factor, changing the email or password needs an aal2 session.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.stack.gateway.auth import links, mailer
from app.stack.gateway.auth.caller import caller_claims, check_api_key, current_user
from app.stack.gateway.auth.config import settings_of
from app.stack.gateway.auth.errors import AuthError, email_exists
from app.stack.gateway.auth.ratelimit import rate_limits_of
from app.stack.gateway.auth.store import (
    check_merged_metadata,
    email_identity_data,
    provider_metadata,
    save_identity,
    update_user_row,
    user_by,
    user_out,
)
from app.stack.gateway.auth.validation import (
    check_password,
    email_address,
    hash_password,
    json_body,
    opt_obj,
    opt_str,
    verify_password,
)

INVALID_NONCE = "Nonce has expired or is invalid"
# GoTrue asks for the nonce only when the session is older than this.
RECENT_SIGN_IN = timedelta(hours=24)


async def get_user(request: Request) -> JSONResponse:
    check_api_key(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            _claims_, user = await current_user(request, cur)
            body = await user_out(cur, user)
    return JSONResponse(body)


async def _session(cur: psycopg.AsyncCursor[Any], claims: dict[str, Any]) -> dict[str, Any] | None:
    session_id = claims.get("session_id")
    if not session_id:
        return None
    await cur.execute(
        "select created_at, coalesce(aal::text, 'aal1') as aal from auth.sessions where id = %s",
        (uuid.UUID(str(session_id)),),
    )
    return await cur.fetchone()


async def _check_nonce(
    request: Request, cur: psycopg.AsyncCursor[Any], user: dict[str, Any], nonce: str
) -> None:
    """GoTrue's verifyReauthentication: the code GET /reauthenticate mailed, within
    otp_expiry; it is used up. Raises 422 reauthentication_not_valid."""
    stored, sent_at = user["reauthentication_token"] or "", user["reauthentication_sent_at"]
    if not stored or sent_at is None:
        raise AuthError(422, "reauthentication_not_valid", INVALID_NONCE)
    if mailer.token_hash(user["email"] or "", nonce) != stored or mailer.expired(
        sent_at, settings_of(request)
    ):
        raise AuthError(422, "reauthentication_not_valid", INVALID_NONCE)
    await cur.execute(
        "update auth.users set reauthentication_token = '' where id = %s", (user["id"],)
    )


async def update_user(request: Request) -> JSONResponse:
    check_api_key(request)
    caller_claims(request)  # as GoTrue: who is asking (401/403) before the body or the rate limit
    rate_limits_of(request).check(request, "user_updates")
    body = await json_body(request)
    metadata = opt_obj(body, "data", "user_metadata")
    password = opt_str(body, "password")
    email = opt_str(body, "email")
    nonce = opt_str(body, "nonce") or ""
    if body.get("app_metadata") is not None:
        raise AuthError(403, "not_admin", "Updating app_metadata requires admin privileges")
    new_email = email_address(email) if email else None
    if password is not None:
        check_password(password)
    settings = settings_of(request)
    redirect_to = mailer.referrer(request, settings)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            claims, user = await current_user(request, cur)
            session = await _session(cur, claims)
            changing_email = new_email is not None and new_email != user["email"]
            if (password or changing_email) and session is not None and session["aal"] != "aal2":
                await cur.execute(
                    "select 1 from auth.mfa_factors where user_id = %s and status = 'verified'",
                    (user["id"],),
                )
                if await cur.fetchone() is not None:
                    raise AuthError(
                        401,
                        "insufficient_aal",
                        "AAL2 session is required to update email or password when MFA is enabled.",
                    )
            if user["is_anonymous"] and password and new_email is None:
                raise AuthError(
                    422,
                    "validation_failed",
                    "Updating password of an anonymous user without an email or phone "
                    "is not allowed",
                )
            if changing_email:
                other = await user_by(cur, "email", new_email)
                if other is not None and other["id"] != user["id"]:
                    raise email_exists()
            password_hash = None
            if password is not None:
                if settings.secure_password_change and (
                    session is None or datetime.now(UTC) > session["created_at"] + RECENT_SIGN_IN
                ):
                    if not nonce:
                        raise AuthError(
                            400,
                            "reauthentication_needed",
                            "Password update requires reauthentication",
                        )
                    await _check_nonce(request, cur, user, nonce)
                if user["encrypted_password"] and await verify_password(
                    password, user["encrypted_password"]
                ):
                    raise AuthError(
                        422,
                        "same_password",
                        "New password should be different from the old password.",
                    )
                password_hash = await hash_password(password)
            # An anonymous user given an email while confirmations are off becomes a permanent
            # email user at once, as a sign-up would; everyone else confirms by mail.
            link_now = changing_email and user["is_anonymous"] and settings.autoconfirm
            try:
                async with conn.transaction():
                    if metadata is not None:
                        await check_merged_metadata(cur, user["id"], user_metadata=metadata)
                    user = await update_user_row(
                        cur,
                        user["id"],
                        email=new_email if link_now else None,
                        password_hash=password_hash,
                        user_metadata=metadata,
                        app_metadata=provider_metadata() if link_now else None,
                        confirm_email=True if link_now else None,
                        banned_until=None,
                        anonymous=False if link_now else None,
                    )
                    if link_now:
                        await save_identity(
                            cur,
                            user["id"],
                            "email",
                            email_identity_data(user["id"], new_email or "", verified=True),
                        )
                    elif changing_email:
                        user = await links.send_email_change(
                            request, cur, user, new_email or "", redirect_to=redirect_to
                        )
                    body_out = await user_out(cur, user)
            except psycopg.errors.UniqueViolation:
                raise email_exists() from None
    return JSONResponse(body_out)
