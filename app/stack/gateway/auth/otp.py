"""Email one-time tokens, as GoTrue's otp.go, magic_link.go, verify.go, recover.go, resend.go and
reauthenticate.go: POST /otp (magic link and code), GET and POST /verify, POST /recover,
POST /resend, GET /reauthenticate. The mails land in the local mail catcher (links.py).

GET /verify is what the link in a mail opens, in a browser: like Kong's open route it needs no
project key, and it answers 303 to the redirect URL with the session in the fragment
(`#access_token=…&expires_at=…&expires_in=…&refresh_token=…&sb=&token_type=bearer&type=…`) or
the error (`#error=…&error_code=…&error_description=…&sb=`). POST /verify takes the code with
the email, or the token hash, and answers the session as JSON.

Phone (phone.py): with `[auth.sms] enable_signup` off (the CLI's default) /otp and /resend with
a phone answer GoTrue's phone-provider-disabled errors; on, the numbers of `[auth.sms.test_otp]`
get their fixed code (nothing is sent) and POST /verify with type sms takes it. PKCE
(`code_challenge`) is not supported: links always answer in the implicit flow's fragment.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from app.stack.gateway.auth import links, mailer
from app.stack.gateway.auth import phone as phone_auth
from app.stack.gateway.auth.caller import check_api_key, current_user
from app.stack.gateway.auth.config import settings_of
from app.stack.gateway.auth.errors import AuthError, email_exists, validation_failed
from app.stack.gateway.auth.ratelimit import rate_limits_of
from app.stack.gateway.auth.sessions import issue_session, sign_up_email
from app.stack.gateway.auth.store import USER_COLUMNS, user_by
from app.stack.gateway.auth.validation import (
    email_address,
    hash_password,
    json_body,
    opt_obj,
    opt_str,
    phone_number,
)

SINGLE_CONFIRMATION = (
    "Confirmation link accepted. Please proceed to confirm link sent to the other email"
)
_OTP_EXPIRED = "Token has expired or is invalid"
_LINK_EXPIRED = "Email link is invalid or has expired"
# GoTrue's oauthErrorMap: the `error` of a redirect, by status.
_OAUTH_ERROR = {
    400: "invalid_request",
    401: "unauthorized_client",
    403: "access_denied",
    500: "server_error",
    503: "temporarily_unavailable",
}
_EMAIL_TYPES = ("signup", "invite", "magiclink", "recovery", "email_change", "email")
_PHONE_TYPES = ("sms", "phone_change")


def _check_pkce(body: dict[str, Any]) -> None:
    """GoTrue's validatePKCEParams: both or neither. (The flow itself is not supported.)"""
    challenge = opt_str(body, "code_challenge") or ""
    method = opt_str(body, "code_challenge_method") or ""
    if bool(challenge) != bool(method):
        raise validation_failed("PKCE flow requires code_challenge_method and code_challenge")
    if method and method.lower() not in ("s256", "plain"):
        raise validation_failed("Unsupported PKCE code challenge method")


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise AuthError(
            400, "bad_json", f"Could not parse request body as JSON: {key} must be a boolean"
        )
    return value


# ── POST /otp ──────────────────────────────────────────────────────────────────────────────────
async def otp(request: Request) -> Response:
    """Magic link and code by email (GoTrue's Otp → MagicLink): an unknown or unconfirmed
    address is signed up first (unless `create_user` is false: 422 otp_disabled); with
    confirmations on, the confirmation mail is the magic link. Answers `{}`."""
    check_api_key(request)
    rate_limits_of(request).check(request, "otp")
    body = await json_body(request)
    email = opt_str(body, "email") or ""
    phone = opt_str(body, "phone") or ""
    channel = opt_str(body, "channel") or ""
    create_user = _bool(body, "create_user", True)
    data = opt_obj(body, "data") or {}
    if email and phone:
        raise validation_failed("Only an email address or phone number should be provided")
    if email and channel:
        raise validation_failed("Channel should only be specified with Phone OTP")
    _check_pkce(body)
    if not create_user and (email or phone):
        async with request.app.state.auth_pool.connection() as conn:
            async with conn.cursor(row_factory=dict_row) as cur:
                found = (
                    await user_by(cur, "email", email_address(email))
                    if email
                    else await user_by(cur, "phone", phone_number(phone))
                )
        if found is None:
            raise AuthError(422, "otp_disabled", "Signups not allowed for otp")
    if email:
        return await _magic_link(request, email, data)
    if phone:
        return await phone_auth.otp(request, phone, channel, data)
    raise validation_failed("One of email or phone must be set")


async def _magic_link(request: Request, email_raw: str, data: dict[str, Any]) -> Response:
    settings = settings_of(request)
    if not settings.email_signup:
        raise AuthError(422, "email_provider_disabled", "Email logins are disabled")
    email = email_address(email_raw)
    redirect_to = mailer.referrer(request, settings)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await user_by(cur, "email", email)
    if user is None or user["email_confirmed_at"] is None:
        # As GoTrue: a sign-up with a random password (its own checks apply: sign-ups on).
        if not settings.enable_signup:
            raise AuthError(422, "signup_disabled", "Signups not allowed for this instance")
        password_hash = await hash_password(secrets.token_urlsafe(24))
        await sign_up_email(
            request,
            email=email,
            password_hash=password_hash,
            metadata=data,
            redirect_to=redirect_to,
            sign_in=False,
        )
        if not settings.autoconfirm:
            return JSONResponse({})  # the confirmation mail is the magic link
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                user = await user_by(cur, "email", email, lock=True)
                assert user is not None
                await links.send_token(
                    request, cur, user, mailer.MAGICLINK, redirect_to=redirect_to
                )
    return JSONResponse({})


# ── POST /recover ──────────────────────────────────────────────────────────────────────────────
async def recover(request: Request) -> Response:
    """Password recovery mail; `{}` whether or not the address is registered."""
    check_api_key(request)
    rate_limits_of(request).check(request, "recover")
    body = await json_body(request)
    email_raw = opt_str(body, "email")
    if not email_raw:
        raise validation_failed("Password recovery requires an email")
    email = email_address(email_raw)
    _check_pkce(body)
    settings = settings_of(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                user = await user_by(cur, "email", email, lock=True)
                if user is not None:
                    await links.send_token(
                        request,
                        cur,
                        user,
                        mailer.RECOVERY,
                        redirect_to=mailer.referrer(request, settings),
                    )
    return JSONResponse({})


# ── POST /resend ───────────────────────────────────────────────────────────────────────────────
async def resend(request: Request) -> Response:
    """The sign-up confirmation or the email-change mails again; `{}` when there is nothing to
    send (no such user, already confirmed, no pending change)."""
    check_api_key(request)
    rate_limits_of(request).check(request, "resend")
    body = await json_body(request)
    kind = opt_str(body, "type") or ""
    email = opt_str(body, "email") or ""
    phone = opt_str(body, "phone") or ""
    if kind in ("signup", "email_change"):
        _check_pkce(body)
    elif kind not in _PHONE_TYPES:
        raise validation_failed(
            "Missing one of these types: signup, email_change, sms, phone_change"
        )
    if not email and kind == "signup":
        raise validation_failed("Type provided requires an email address")
    if not phone and kind == "sms":
        raise validation_failed("Type provided requires a phone number")
    settings = settings_of(request)
    if email and phone:
        raise validation_failed("Only an email address or phone number should be provided.")
    if phone and kind == "sms":
        return await phone_auth.resend(request, phone)
    if phone:
        # phone_change needs a pending new number, which the stack cannot start (no provider).
        phone_auth.check_enabled(settings, "Phone logins are disabled")
        phone_number(phone)
        return JSONResponse({})
    if not email:
        raise validation_failed("Missing email address or phone number")
    if not settings.email_signup:
        raise AuthError(400, "email_provider_disabled", "Email logins are disabled")
    address = email_address(email)
    redirect_to = mailer.referrer(request, settings)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                user = await user_by(cur, "email", address, lock=True)
                if user is None:
                    return JSONResponse({})
                if kind == "signup" and user["email_confirmed_at"] is None:
                    await links.send_token(
                        request, cur, user, mailer.SIGNUP, redirect_to=redirect_to
                    )
                elif kind == "email_change" and user["email_change"]:
                    await links.send_email_change(
                        request, cur, user, user["email_change"], redirect_to=redirect_to
                    )
    return JSONResponse({})


# ── GET /reauthenticate ────────────────────────────────────────────────────────────────────────
async def reauthenticate(request: Request) -> Response:
    """A code to the signed-in user's email, the `nonce` a password change may need
    (`[auth.email] secure_password_change`). Answers `{}`."""
    check_api_key(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            _claims, user = await current_user(request, cur)
            if not user["email"] and not user["phone"]:
                raise validation_failed(
                    "Reauthentication requires the user to have an email or a phone number"
                )
            if not user["email"]:
                raise AuthError(400, "phone_provider_disabled", "Unsupported phone provider")
            if user["email_confirmed_at"] is None:
                raise AuthError(422, "email_not_confirmed", "Please verify your email first.")
            async with conn.transaction():
                locked = await user_by(cur, "id", user["id"], lock=True)
                assert locked is not None
                await links.send_token(request, cur, locked, mailer.REAUTHENTICATION)
    return JSONResponse({})


# ── /verify ────────────────────────────────────────────────────────────────────────────────────
class _Params:
    def __init__(self, kind: str, token: str, token_hash: str, email: str, phone: str) -> None:
        self.kind, self.token, self.token_hash = kind, token, token_hash
        self.email, self.phone = email, phone


async def _find_by_hash(
    cur: psycopg.AsyncCursor[Any], params: _Params, settings: Any
) -> dict[str, Any]:
    """GoTrue's verifyTokenHash: the user whose token of this type is the hash."""
    kind, hashed = params.kind, params.token_hash
    columns = {
        "signup": ["confirmation_token"],
        "invite": ["confirmation_token"],
        "magiclink": ["recovery_token"],
        "recovery": ["recovery_token"],
        "email_change": ["email_change_token_new", "email_change_token_current"],
        "email": ["confirmation_token", "recovery_token"],
    }.get(kind)
    if columns is None:
        raise validation_failed("Invalid email verification type")
    condition = " or ".join(f"{c} = %(hash)s" for c in columns)
    await cur.execute(
        f"select {USER_COLUMNS} from auth.users where deleted_at is null and ({condition}) "
        "for update",
        {"hash": hashed},
    )
    user = await cur.fetchone()
    if user is None:
        raise AuthError(403, "otp_expired", _LINK_EXPIRED)
    _check_banned(user)
    if kind == "email":
        params.kind = "magiclink" if user["recovery_token"] == hashed else "signup"
    sent_at = {
        "signup": "confirmation_sent_at",
        "invite": "confirmation_sent_at",
        "magiclink": "recovery_sent_at",
        "recovery": "recovery_sent_at",
        "email_change": "email_change_sent_at",
    }[params.kind]
    if mailer.expired(user[sent_at], settings):
        raise AuthError(403, "otp_expired", _LINK_EXPIRED)
    return user


def _check_banned(user: dict[str, Any]) -> None:
    if user["banned_until"] and user["banned_until"] > datetime.now(UTC):
        raise AuthError(403, "user_banned", "User is banned")


async def _find_by_code(
    cur: psycopg.AsyncCursor[Any], params: _Params, settings: Any
) -> dict[str, Any]:
    """GoTrue's verifyUserAndToken: the user of the email (or phone) and the code's hash in
    the column of the type, within otp_expiry."""
    invalid = AuthError(403, "otp_expired", _OTP_EXPIRED)
    if params.kind in _PHONE_TYPES:
        column = "phone_change" if params.kind == "phone_change" else "phone"
        await cur.execute(
            f"select {USER_COLUMNS} from auth.users where deleted_at is null and {column} = %s",
            (params.phone,),
        )
        if await cur.fetchone() is None or params.kind != "sms":
            raise invalid
        user = await phone_auth.find_by_code(cur, settings, params.phone, params.token_hash)
        _check_banned(user)
        return user
    if params.kind == "email_change":
        await cur.execute(
            f"select {USER_COLUMNS} from auth.users where deleted_at is null and "
            "(email = %(e)s or email_change = %(e)s) and "
            "(email_change_token_new = %(h)s or email_change_token_current = %(h)s) for update",
            {"e": params.email, "h": params.token_hash},
        )
    else:
        await cur.execute(
            f"select {USER_COLUMNS} from auth.users where deleted_at is null and email = %s "
            "for update",
            (params.email,),
        )
    user = await cur.fetchone()
    if user is None:
        raise invalid
    _check_banned(user)
    hashed = params.token_hash

    def valid(token_column: str, sent_column: str) -> bool:
        stored = user[token_column] or ""
        return bool(stored) and stored == hashed and not mailer.expired(user[sent_column], settings)

    if params.kind == "email":
        if valid("confirmation_token", "confirmation_sent_at"):
            params.kind = "signup"
        elif valid("recovery_token", "recovery_sent_at"):
            params.kind = "magiclink"
        else:
            raise invalid
    elif params.kind in ("signup", "invite"):
        if not valid("confirmation_token", "confirmation_sent_at"):
            raise invalid
    elif params.kind in ("magiclink", "recovery"):
        if not valid("recovery_token", "recovery_sent_at"):
            raise invalid
    elif params.kind == "email_change":
        if not (
            valid("email_change_token_current", "email_change_sent_at")
            or valid("email_change_token_new", "email_change_sent_at")
        ):
            raise invalid
    else:
        raise validation_failed("Unsupported verification type")
    return user


async def _apply(
    request: Request, cur: psycopg.AsyncCursor[Any], user: dict[str, Any], params: _Params
) -> dict[str, Any] | None:
    """What the verified token does; None when it was the first of two email-change
    confirmations (the user must also follow the other mail)."""
    settings = settings_of(request)
    if params.kind in ("signup", "invite"):
        if not user["encrypted_password"] and user["invited_at"] is not None:
            # An invited user gets a random password until the app lets them choose one.
            password_hash = await hash_password(secrets.token_urlsafe(24))
            await cur.execute(
                "update auth.users set encrypted_password = %s where id = %s",
                (password_hash, user["id"]),
            )
        user = await links.confirm(cur, user)
    elif params.kind in ("magiclink", "recovery"):
        user = await links.clear_recovery(cur, user)
    elif params.kind == "sms":
        return await phone_auth.confirm(cur, user)
    elif params.kind == "email_change":
        if (
            settings.confirmations
            and settings.double_confirm_changes
            and user["email_change_confirm_status"] == 0
            and user["email"]
        ):
            matched_current = params.token_hash == user["email_change_token_current"]
            column = "email_change_token_current" if matched_current else "email_change_token_new"
            await cur.execute(
                f"update auth.users set email_change_confirm_status = 1, {column} = '' "
                "where id = %s",
                (user["id"],),
            )
            return None
        user = await links.apply_email_change(cur, user)
    else:
        raise validation_failed("Unsupported verification type")
    return await links.update_providers(cur, user)


async def _verify(request: Request, params: _Params, *, by_hash: bool) -> dict[str, Any] | None:
    """Find, apply and sign in, in one transaction: the session JSON, or None for a first
    email-change confirmation."""
    settings = settings_of(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            try:
                async with conn.transaction():
                    if by_hash:
                        user = await _find_by_hash(cur, params, settings)
                    else:
                        user = await _find_by_code(cur, params, settings)
                    applied = await _apply(request, cur, user, params)
                    if applied is None:
                        return None
                    return await issue_session(request, cur, applied, "otp")
            except psycopg.errors.UniqueViolation:
                # The new address of an email change was taken since the mail went out.
                raise email_exists() from None


async def verify_post(request: Request) -> Response:
    check_api_key(request)
    rate_limits_of(request).check(request, "verify")
    body = await json_body(request)
    params = _Params(
        opt_str(body, "type") or "",
        opt_str(body, "token") or "",
        opt_str(body, "token_hash") or "",
        opt_str(body, "email") or "",
        opt_str(body, "phone") or "",
    )
    redirect_to = opt_str(body, "redirect_to") or ""
    if not params.kind:
        raise validation_failed("Verify requires a verification type")
    if bool(params.token) == bool(params.token_hash):
        raise validation_failed("Verify requires either a token or a token hash")
    if params.token:
        if params.phone and not params.email:
            params.phone = phone_number(params.phone)
            params.token_hash = mailer.token_hash(params.phone, params.token)
        elif params.email and not params.phone:
            try:
                params.email = email_address(params.email)
            except AuthError:
                raise AuthError(422, "validation_failed", "Invalid email format") from None
            params.token_hash = mailer.token_hash(params.email, params.token)
        else:
            raise validation_failed(
                "Only an email address or phone number should be provided on verify"
            )
    elif params.email or params.phone or redirect_to:
        raise validation_failed("Only the token_hash and type should be provided")
    if params.kind not in _EMAIL_TYPES + _PHONE_TYPES:
        raise validation_failed("Unsupported verification type")
    using_hash = not params.token
    if using_hash and params.kind in _PHONE_TYPES:
        raise validation_failed("Invalid email verification type")
    session = await _verify(request, params, by_hash=using_hash)
    if session is None:
        return JSONResponse({"msg": SINGLE_CONFIRMATION, "code": "200"})
    return JSONResponse(session)


async def verify_get(request: Request) -> Response:
    # No project key: this is the link in the mail, opened by a browser (Kong's open route).
    rate_limits_of(request).check(request, "verify")
    settings = settings_of(request)
    params = _Params(
        request.query_params.get("type", ""),
        request.query_params.get("token", ""),
        request.query_params.get("token", ""),
        "",
        "",
    )
    redirect_to = mailer.referrer(request, settings)
    if not params.kind:
        raise validation_failed("Verify requires a verification type")
    if not params.token:
        raise validation_failed("Verify requires a token or a token hash")
    kind = params.kind
    try:
        session = await _verify(request, params, by_hash=True)
    except AuthError as exc:
        fragment = {}
        if exc.status in _OAUTH_ERROR:
            fragment["error"] = _OAUTH_ERROR[exc.status]
        fragment |= {"error_code": exc.code, "error_description": exc.message, "sb": ""}
        return RedirectResponse(_with_fragment(redirect_to, fragment), status_code=303)
    if session is None:
        fragment = {"message": SINGLE_CONFIRMATION, "sb": ""}
    else:
        fragment = {
            "access_token": session["access_token"],
            "expires_at": str(session["expires_at"]),
            "expires_in": str(session["expires_in"]),
            "refresh_token": session["refresh_token"],
            "sb": "",
            "token_type": session["token_type"],
            "type": kind,
        }
    return RedirectResponse(_with_fragment(redirect_to, fragment), status_code=303)


def _with_fragment(url: str, values: dict[str, str]) -> str:
    """`url` with its fragment replaced by `values`, keys sorted as Go's url.Values.Encode."""
    return url.split("#", 1)[0] + "#" + urlencode(sorted(values.items()))
