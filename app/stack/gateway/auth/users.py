"""GET and PUT /user: the signed-in user reads and changes itself."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.stack.gateway.auth.caller import caller_claims, check_api_key, current_user
from app.stack.gateway.auth.errors import AuthError, email_exists
from app.stack.gateway.auth.ratelimit import rate_limits_of
from app.stack.gateway.auth.store import (
    check_merged_metadata,
    email_identity_data,
    provider_metadata,
    save_identity,
    update_user_row,
    user_out,
)
from app.stack.gateway.auth.validation import (
    check_password,
    email_address,
    hash_password,
    json_body,
    opt_obj,
    opt_str,
)


async def get_user(request: Request) -> JSONResponse:
    check_api_key(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            _claims_, user = await current_user(request, cur)
            body = await user_out(cur, user)
    return JSONResponse(body)


async def update_user(request: Request) -> JSONResponse:
    check_api_key(request)
    caller_claims(request)  # as GoTrue: who is asking (401/403) before the body or the rate limit
    rate_limits_of(request).check(request, "user_updates")
    body = await json_body(request)
    metadata = opt_obj(body, "data", "user_metadata")
    password = opt_str(body, "password")
    email = opt_str(body, "email")
    password_hash = await hash_password(check_password(password)) if password is not None else None
    new_email = email_address(email) if email is not None else None
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            _claims_, user = await current_user(request, cur)
            if user["is_anonymous"] and password and new_email is None:
                raise AuthError(
                    422,
                    "validation_failed",
                    "Updating password of an anonymous user without an email or phone "
                    "is not allowed",
                )
            # An anonymous user given an email becomes a permanent email user at once: with
            # confirmations off GoTrue confirms the new email inline, as a sign-up would.
            linking = bool(user["is_anonymous"]) and new_email is not None
            try:
                async with conn.transaction():
                    if metadata is not None:
                        await check_merged_metadata(cur, user["id"], user_metadata=metadata)
                    user = await update_user_row(
                        cur,
                        user["id"],
                        email=new_email,
                        password_hash=password_hash,
                        user_metadata=metadata,
                        app_metadata=provider_metadata() if linking else None,
                        confirm_email=True if linking else None,
                        banned_until=None,
                        anonymous=False if linking else None,
                    )
                    if new_email is not None:
                        # The change applies at once (no email-change mail yet), so the email
                        # identity follows it, verified as the user's email stays confirmed.
                        await save_identity(
                            cur,
                            user["id"],
                            "email",
                            email_identity_data(user["id"], new_email, verified=True),
                        )
                    body = await user_out(cur, user)
            except psycopg.errors.UniqueViolation:
                raise email_exists() from None
    return JSONResponse(body)
