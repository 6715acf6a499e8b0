"""Phone auth without an SMS provider, as GoTrue run by the Supabase CLI: `[auth.sms]
enable_signup` turns the phone provider on, and `[auth.sms.test_otp]` maps numbers to fixed
codes that GoTrue accepts without sending anything. A code to any other number needs an SMS
provider, which the stack has none of: GoTrue's 500 "Unable to get SMS provider".

The code's hash lands where GoTrue's sendPhoneConfirmation puts it (`confirmation_token`,
`confirmation_sent_at`), so /verify with type sms checks it like an email code.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.stack.gateway.auth import mailer
from app.stack.gateway.auth.config import AuthSettings, settings_of
from app.stack.gateway.auth.errors import AuthError
from app.stack.gateway.auth.store import (
    AUDIENCE,
    USER_COLUMNS,
    USER_UNIQUE,
    insert_user,
    save_identity,
    user_by,
)
from app.stack.gateway.auth.validation import hash_password, phone_number

# GoTrue's messageID for a code from the test map.
TEST_MESSAGE_ID = "test-otp"


def check_enabled(settings: AuthSettings, message: str) -> None:
    if not settings.sms_signup:
        raise AuthError(400, "phone_provider_disabled", message)


def phone_metadata() -> dict[str, Any]:
    return {"provider": "phone", "providers": ["phone"]}


def phone_identity_data(user_id: uuid.UUID, phone: str, *, verified: bool) -> dict[str, Any]:
    return {
        "sub": str(user_id),
        "phone": phone,
        "email_verified": False,
        "phone_verified": verified,
    }


async def send_code(
    cur: psycopg.AsyncCursor[Any], settings: AuthSettings, user: dict[str, Any], phone: str
) -> dict[str, Any]:
    """GoTrue's sendPhoneConfirmation: only a number of `[auth.sms.test_otp]` gets a code (its
    fixed one); the user row afterwards."""
    code = settings.test_otp.get(phone)
    if code is None:
        raise AuthError(500, "unexpected_failure", "Unable to get SMS provider")
    await cur.execute(
        "update auth.users set confirmation_token = %s, confirmation_sent_at = now(), "
        f"updated_at = now() where id = %s returning {USER_COLUMNS}",
        (mailer.token_hash(phone, code), user["id"]),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def confirm(cur: psycopg.AsyncCursor[Any], user: dict[str, Any]) -> dict[str, Any]:
    """GoTrue's smsVerify: the phone is confirmed and the code used up."""
    await cur.execute(
        "update auth.users set phone_confirmed_at = coalesce(phone_confirmed_at, now()), "
        f"confirmation_token = '', updated_at = now() where id = %s returning {USER_COLUMNS}",
        (user["id"],),
    )
    row = await cur.fetchone()
    assert row is not None
    await save_identity(
        cur, row["id"], "phone", phone_identity_data(row["id"], row["phone"], verified=True)
    )
    return row


async def _new_user(
    cur: psycopg.AsyncCursor[Any],
    phone: str,
    password_hash: str,
    metadata: dict[str, Any],
    *,
    confirmed: bool,
) -> dict[str, Any]:
    user = await insert_user(
        cur,
        user_id=uuid.uuid4(),
        email=None,
        phone=phone,
        password_hash=password_hash,
        confirmed=False,
        app_metadata=phone_metadata(),
        user_metadata=metadata,
        role=AUDIENCE,
        signed_in=confirmed,
    )
    await save_identity(
        cur, user["id"], "phone", phone_identity_data(user["id"], phone, verified=False)
    )
    if confirmed:
        user = await confirm(cur, user)
    return user


async def sign_up_phone(
    request: Request, phone_raw: str, password_hash: str, metadata: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """GoTrue's phone Signup: (the user row, whether to start a session). With `[auth.sms]
    enable_confirmations` off the phone is confirmed at once; on, a code goes out (test numbers
    only). A confirmed number is refused (422 user_already_exists)."""
    settings = settings_of(request)
    check_enabled(settings, "Phone signups are disabled")
    phone = phone_number(phone_raw)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            try:
                async with conn.transaction():
                    user = await user_by(cur, "phone", phone, lock=True)
                    if user is not None and user["phone_confirmed_at"] is not None:
                        raise AuthError(422, "user_already_exists", "User already registered")
                    if user is None:
                        user = await _new_user(
                            cur,
                            phone,
                            password_hash,
                            metadata,
                            confirmed=not settings.sms_confirmations,
                        )
                    if settings.sms_confirmations:
                        user = await send_code(cur, settings, user, phone)
                    return user, not settings.sms_confirmations
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name not in USER_UNIQUE:
                    raise AuthError(
                        500, "unexpected_failure", "Database error saving new user"
                    ) from None
                raise AuthError(422, "user_already_exists", "User already registered") from None


async def otp(request: Request, phone_raw: str, channel: str, data: dict[str, Any]) -> JSONResponse:
    """GoTrue's SmsOtp: an unknown number is signed up first (random password); then the
    code. Answers the message id."""
    settings = settings_of(request)
    check_enabled(settings, "Unsupported phone provider")
    if channel and channel != "sms":
        raise AuthError(400, "validation_failed", "Channel should be either sms or whatsapp")
    phone = phone_number(phone_raw)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                user = await user_by(cur, "phone", phone, lock=True)
                if user is None:
                    if not settings.enable_signup:
                        raise AuthError(
                            422, "signup_disabled", "Signups not allowed for this instance"
                        )
                    password_hash = await hash_password(secrets.token_urlsafe(24))
                    user = await _new_user(cur, phone, password_hash, data, confirmed=False)
                await send_code(cur, settings, user, phone)
    return JSONResponse({"message_id": TEST_MESSAGE_ID})


async def resend(request: Request, phone_raw: str) -> JSONResponse:
    """POST /resend with type sms: `{}` for an unknown or confirmed number (no enumeration),
    else the code again."""
    settings = settings_of(request)
    check_enabled(settings, "Phone logins are disabled")
    phone = phone_number(phone_raw)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                user = await user_by(cur, "phone", phone, lock=True)
                if user is None or user["phone_confirmed_at"] is not None:
                    return JSONResponse({})
                await send_code(cur, settings, user, phone)
    return JSONResponse({"message_id": TEST_MESSAGE_ID})


async def find_by_code(
    cur: psycopg.AsyncCursor[Any], settings: AuthSettings, phone: str, token_hash: str
) -> dict[str, Any]:
    """GoTrue's verifyUserAndToken for type sms: the code sent to the number, within
    otp_expiry."""
    invalid = AuthError(403, "otp_expired", "Token has expired or is invalid")
    user = await user_by(cur, "phone", phone, lock=True)
    if user is None or not user["confirmation_token"]:
        raise invalid
    if not secrets.compare_digest(user["confirmation_token"], token_hash) or mailer.expired(
        user["confirmation_sent_at"], settings
    ):
        raise invalid
    return user
