"""One-time email tokens on `auth.users` and the mails that carry them, as GoTrue's mail.go:
each send checks `[auth.email] max_frequency` against the column's *_sent_at, makes a new code,
stores sha224(address + code) and the time, and mails the code and the link (mailer.py). All
run inside the caller's transaction, so a mail that cannot be sent leaves nothing behind.

Also the changes a verified token makes (confirm, recover, email change), shared by /verify
and the sign-up paths.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from starlette.requests import Request

from app.stack.gateway.auth import mailer
from app.stack.gateway.auth.config import settings_of
from app.stack.gateway.auth.store import (
    USER_COLUMNS,
    email_identity_data,
    save_identity,
)

# Where each kind keeps its token hash and sent time.
_COLUMNS = {
    mailer.SIGNUP: ("confirmation_token", "confirmation_sent_at"),
    mailer.INVITE: ("confirmation_token", "confirmation_sent_at"),
    mailer.MAGICLINK: ("recovery_token", "recovery_sent_at"),
    mailer.RECOVERY: ("recovery_token", "recovery_sent_at"),
    mailer.REAUTHENTICATION: ("reauthentication_token", "reauthentication_sent_at"),
}


async def _store(
    cur: psycopg.AsyncCursor[Any], user_id: uuid.UUID, assignments: str, params: dict[str, Any]
) -> dict[str, Any]:
    await cur.execute(
        f"update auth.users set {assignments}, updated_at = now() "
        f"where id = %(id)s returning {USER_COLUMNS}",
        {**params, "id": user_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def send_token(
    request: Request,
    cur: psycopg.AsyncCursor[Any],
    user: dict[str, Any],
    kind: str,
    *,
    redirect_to: str = "",
    check_frequency: bool = True,
) -> dict[str, Any]:
    """Mail a new `kind` token (signup, invite, magiclink, recovery, reauthentication) to the
    user's email; returns the updated row. Raises AuthError 429 within max_frequency of the
    last one, 500 when the mail cannot be sent."""
    settings = settings_of(request)
    token_column, sent_column = _COLUMNS[kind]
    if check_frequency:  # GoTrue's sendInvite alone has no frequency check
        mailer.check_frequency(user[sent_column], settings)
    otp = mailer.new_otp(settings.otp_length)
    hashed = mailer.token_hash(user["email"], otp)
    extra = ", invited_at = now()" if kind == mailer.INVITE else ""
    row = await _store(
        cur,
        user["id"],
        f"{token_column} = %(hash)s, {sent_column} = now(){extra}",
        {"hash": hashed},
    )
    await mailer.send(
        request, kind, to=row["email"], user=row, otp=otp, hashed=hashed, redirect_to=redirect_to
    )
    return row


async def send_email_change(
    request: Request,
    cur: psycopg.AsyncCursor[Any],
    user: dict[str, Any],
    new_email: str,
    *,
    redirect_to: str = "",
) -> dict[str, Any]:
    """GoTrue's sendEmailChange: a token to the new address and, with `[auth.email]
    double_confirm_changes` and a current address, one to the current address too; the change
    waits in email_change until verified."""
    settings = settings_of(request)
    mailer.check_frequency(user["email_change_sent_at"], settings)
    otp_new = mailer.new_otp(settings.otp_length)
    hash_new = mailer.token_hash(new_email, otp_new)
    otp_current, hash_current = "", ""
    if settings.double_confirm_changes and user["email"]:
        otp_current = mailer.new_otp(settings.otp_length)
        hash_current = mailer.token_hash(user["email"], otp_current)
    row = await _store(
        cur,
        user["id"],
        "email_change = %(new)s, email_change_token_new = %(hash_new)s, "
        "email_change_token_current = %(hash_current)s, email_change_confirm_status = 0, "
        "email_change_sent_at = now()",
        {"new": new_email, "hash_new": hash_new, "hash_current": hash_current},
    )
    await mailer.send(
        request,
        mailer.EMAIL_CHANGE,
        to=new_email,
        user=row,
        otp=otp_new,
        hashed=hash_new,
        redirect_to=redirect_to,
        new_email=new_email,
    )
    if hash_current:
        await mailer.send(
            request,
            mailer.EMAIL_CHANGE,
            to=row["email"],
            user=row,
            otp=otp_current,
            hashed=hash_current,
            redirect_to=redirect_to,
            new_email=new_email,
        )
    return row


# ── what a verified token does ─────────────────────────────────────────────────────────────────
async def confirm(cur: psycopg.AsyncCursor[Any], user: dict[str, Any]) -> dict[str, Any]:
    """GoTrue's User.Confirm: email confirmed, the token cleared, `email_verified: true` in
    user_metadata and in the email identity whose address is the user's."""
    row = await _store(
        cur,
        user["id"],
        "email_confirmed_at = coalesce(email_confirmed_at, now()), confirmation_token = '', "
        "raw_user_meta_data = coalesce(raw_user_meta_data, '{}') || "
        "'{\"email_verified\": true}'::jsonb",
        {},
    )
    await cur.execute(
        "update auth.identities set identity_data = identity_data || "
        "'{\"email_verified\": true}'::jsonb, updated_at = now() "
        "where user_id = %s and provider = 'email' and email = %s",
        (row["id"], row["email"]),
    )
    return row


async def clear_recovery(cur: psycopg.AsyncCursor[Any], user: dict[str, Any]) -> dict[str, Any]:
    """GoTrue's recoverVerify: the recovery token cleared; an unconfirmed user is confirmed."""
    row = await _store(cur, user["id"], "recovery_token = ''", {})
    if row["email_confirmed_at"] is None:
        row = await confirm(cur, row)
    return row


async def apply_email_change(cur: psycopg.AsyncCursor[Any], user: dict[str, Any]) -> dict[str, Any]:
    """GoTrue's ConfirmEmailChange: email_change becomes the email, the tokens are cleared,
    the email identity follows (created when missing), an anonymous user becomes permanent."""
    new_email = user["email_change"]
    row = await _store(
        cur,
        user["id"],
        "email = %(new)s, email_change = '', email_change_token_current = '', "
        "email_change_token_new = '', email_change_confirm_status = 0, is_anonymous = false",
        {"new": new_email},
    )
    await save_identity(
        cur, row["id"], "email", email_identity_data(row["id"], new_email, verified=True)
    )
    if row["email_confirmed_at"] is None:
        row = await confirm(cur, row)
    return row


async def update_providers(cur: psycopg.AsyncCursor[Any], user: dict[str, Any]) -> dict[str, Any]:
    """GoTrue's UpdateAppMetaDataProviders: app_metadata.providers lists the user's identity
    providers (oldest first) and app_metadata.provider is the first of them."""
    await cur.execute(
        "select provider from auth.identities where user_id = %s group by provider "
        "order by min(created_at), provider",
        (user["id"],),
    )
    providers = [r["provider"] for r in await cur.fetchall()]
    payload: dict[str, Any] = {"providers": providers}
    if providers:
        payload["provider"] = providers[0]
    return await _store(
        cur,
        user["id"],
        "raw_app_meta_data = coalesce(raw_app_meta_data, '{}') || %(app)s",
        {"app": Jsonb(payload)},
    )
