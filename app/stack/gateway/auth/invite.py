"""POST /invite and POST /admin/generate_link (service_role callers), as GoTrue's invite.go and
adminGenerateLink in mail.go.

/invite creates the user (no password, `invited_at` set) and mails the invitation; the link
confirms the user and signs them in (with a random password until the app sets one).
/admin/generate_link sends nothing: it answers the user with the link, the code and the token
hash (`action_link`, `email_otp`, `hashed_token`, `verification_type`, `redirect_to`), for
types signup, invite, magiclink, recovery, email_change_current and email_change_new.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.stack.gateway.auth import links, mailer
from app.stack.gateway.auth.caller import require_admin
from app.stack.gateway.auth.config import settings_of
from app.stack.gateway.auth.errors import AuthError, email_exists, validation_failed
from app.stack.gateway.auth.store import (
    AUDIENCE,
    USER_COLUMNS,
    USER_UNIQUE,
    email_identity_data,
    insert_user,
    provider_metadata,
    save_identity,
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
)

LINK_TYPES = (
    "signup",
    "invite",
    "magiclink",
    "recovery",
    "email_change_current",
    "email_change_new",
)


async def _new_user(
    cur: psycopg.AsyncCursor[Any],
    email: str,
    metadata: dict[str, Any],
    password_hash: str | None,
) -> dict[str, Any]:
    user = await insert_user(
        cur,
        user_id=uuid.uuid4(),
        email=email,
        phone=None,
        password_hash=password_hash,
        confirmed=False,
        app_metadata=provider_metadata(),
        user_metadata=metadata,
        role=AUDIENCE,
        signed_in=False,
    )
    await save_identity(
        cur, user["id"], "email", email_identity_data(user["id"], email, verified=False)
    )
    return user


def _database_error(exc: psycopg.Error, what: str) -> AuthError:
    if isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.constraint_name in USER_UNIQUE:
        return email_exists()
    return AuthError(500, "unexpected_failure", f"Database error {what}")


async def invite(request: Request) -> JSONResponse:
    require_admin(request)
    body = await json_body(request)
    email = email_address(opt_str(body, "email"))
    metadata = opt_obj(body, "data") or {}
    settings = settings_of(request)
    redirect_to = mailer.referrer(request, settings)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            try:
                async with conn.transaction():
                    user = await user_by(cur, "email", email, lock=True)
                    if user is not None and user["email_confirmed_at"] is not None:
                        raise email_exists()
                    if user is None:
                        user = await _new_user(cur, email, metadata, None)
                    user = await links.send_token(
                        request,
                        cur,
                        user,
                        mailer.INVITE,
                        redirect_to=redirect_to,
                        check_frequency=False,
                    )
                    answer = await user_out(cur, user)
            except psycopg.Error as exc:
                raise _database_error(exc, "saving new user") from None
    return JSONResponse(answer)


async def generate_link(request: Request) -> JSONResponse:
    require_admin(request)
    body = await json_body(request)
    kind = opt_str(body, "type") or ""
    email = email_address(opt_str(body, "email"))
    new_email_raw = opt_str(body, "new_email") or ""
    password = opt_str(body, "password") or ""
    metadata = opt_obj(body, "data") or {}
    settings = settings_of(request)
    given_redirect = opt_str(body, "redirect_to") or ""
    redirect_to = (
        given_redirect
        if mailer.redirect_allowed(settings, given_redirect)
        else mailer.referrer(request, settings)
    )
    otp = mailer.new_otp(settings.otp_length)
    hashed = mailer.token_hash(email, otp)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            existing = await user_by(cur, "email", email)
            if existing is None:
                if kind == "magiclink":
                    # As GoTrue: a magic link for an unknown address is a sign-up link.
                    kind, password = "signup", secrets.token_urlsafe(48)
                elif kind in ("recovery", "email_change_current", "email_change_new"):
                    raise AuthError(404, "user_not_found", "User with this email not found")
            password_hash = None
            if kind == "signup" and existing is None:
                password_hash = await hash_password(check_password(password))
            try:
                async with conn.transaction():
                    user = await user_by(cur, "email", email, lock=True)
                    link_kind = kind
                    if kind in ("magiclink", "recovery"):
                        assert user is not None
                        user = await _set(
                            cur, user, "recovery_token = %(h)s, recovery_sent_at = now()", hashed
                        )
                    elif kind in ("invite", "signup"):
                        if user is not None and user["email_confirmed_at"] is not None:
                            raise email_exists()
                        if user is None:
                            user = await _new_user(cur, email, metadata, password_hash)
                        elif kind == "signup" and metadata:
                            await cur.execute(
                                "update auth.users set raw_user_meta_data = "
                                "coalesce(raw_user_meta_data, '{}') || %s where id = %s",
                                (Jsonb(metadata), user["id"]),
                            )
                        extra = ", invited_at = now()" if kind == "invite" else ""
                        user = await _set(
                            cur,
                            user,
                            f"confirmation_token = %(h)s, confirmation_sent_at = now(){extra}",
                            hashed,
                        )
                    elif kind in ("email_change_current", "email_change_new"):
                        assert user is not None
                        user, hashed = await _email_change(
                            cur, settings, user, kind, new_email_raw, otp, hashed
                        )
                        link_kind = "email_change"
                    else:
                        raise validation_failed(f"Invalid email action link type requested: {kind}")
                    answer = await user_out(cur, user)
            except psycopg.Error as exc:
                raise _database_error(exc, "updating user for link") from None
    answer.update(
        action_link=mailer.action_link(request, hashed, link_kind, redirect_to),
        email_otp=otp,
        hashed_token=hashed,
        verification_type=kind,
        redirect_to=redirect_to,
    )
    return JSONResponse(answer)


async def _set(
    cur: psycopg.AsyncCursor[Any], user: dict[str, Any], assignments: str, hashed: str
) -> dict[str, Any]:
    await cur.execute(
        f"update auth.users set {assignments}, updated_at = now() where id = %(id)s "
        f"returning {USER_COLUMNS}",
        {"h": hashed, "id": user["id"]},
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def _email_change(
    cur: psycopg.AsyncCursor[Any],
    settings: Any,
    user: dict[str, Any],
    kind: str,
    new_email_raw: str,
    otp: str,
    hashed: str,
) -> tuple[dict[str, Any], str]:
    """GoTrue's email_change_current / email_change_new links: the pending change and the
    token of the address the link is for; (row, that token's hash)."""
    if kind == "email_change_current" and not settings.double_confirm_changes:
        raise validation_failed("Enable secure email change to generate link for current email")
    new_email = email_address(new_email_raw)
    other = await user_by(cur, "email", new_email)
    if other is not None and other["id"] != user["id"]:
        raise email_exists()
    token_current = hashed if kind == "email_change_current" else ""
    token_new = mailer.token_hash(new_email, otp) if kind == "email_change_new" else ""
    await cur.execute(
        "update auth.users set email_change = %(new)s, email_change_sent_at = now(), "
        "email_change_confirm_status = 0, email_change_token_current = %(cur)s, "
        f"email_change_token_new = %(tnew)s, updated_at = now() where id = %(id)s "
        f"returning {USER_COLUMNS}",
        {"new": new_email, "cur": token_current, "tnew": token_new, "id": user["id"]},
    )
    row = await cur.fetchone()
    assert row is not None
    return row, token_current or token_new
