"""`auth.users` rows: reading, inserting and updating them, and their JSON as GoTrue gives it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.stack.gateway.auth.validation import (
    check_metadata_size,
)

AUDIENCE = "authenticated"


USER_COLUMNS = (
    "id, aud, role, email, phone, email_confirmed_at, phone_confirmed_at, confirmed_at, "
    "last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, "
    "is_anonymous, banned_until, encrypted_password, invited_at, "
    "confirmation_token, confirmation_sent_at, recovery_token, recovery_sent_at, "
    "email_change, email_change_token_new, email_change_token_current, email_change_sent_at, "
    "email_change_confirm_status, reauthentication_token, reauthentication_sent_at"
)


# Unique indexes of auth.users whose violation means "this user already exists"; any other
# violation comes from a trigger and is a database error, as GoTrue reports it.
USER_UNIQUE = frozenset({"users_pkey", "users_email_partial_key", "users_phone_key"})


# ── JSON shapes ────────────────────────────────────────────────────────────────────────────────
def ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def identity_json(row: dict[str, Any]) -> dict[str, Any]:
    """An `auth.identities` row as GoTrue serialises it: `identity_id` is the row's id, `id`
    the provider's id for the user (for email and phone, the user's id)."""
    out: dict[str, Any] = {
        "identity_id": str(row["id"]),
        "id": row["provider_id"],
        "user_id": str(row["user_id"]),
        "identity_data": row["identity_data"] or {},
        "provider": row["provider"],
        "created_at": ts(row["created_at"]),
        "updated_at": ts(row["updated_at"]),
    }
    if row["last_sign_in_at"] is not None:
        out["last_sign_in_at"] = ts(row["last_sign_in_at"])
    if row["email"]:
        out["email"] = row["email"]
    return out


def user_json(
    row: dict[str, Any], identities: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A user as GoTrue serialises it (null timestamps are left out, as GoTrue's omitempty),
    with its `auth.identities` rows."""
    out: dict[str, Any] = {
        "id": str(row["id"]),
        "aud": row["aud"] or "",
        "role": row["role"] or "",
        "email": row["email"] or "",
        "phone": row["phone"] or "",
        "app_metadata": row["raw_app_meta_data"] or {},
        "user_metadata": row["raw_user_meta_data"] or {},
        "identities": [identity_json(i) for i in identities or ()],
        "created_at": ts(row["created_at"]),
        "updated_at": ts(row["updated_at"]),
        "is_anonymous": bool(row["is_anonymous"]),
    }
    for key in (
        "email_confirmed_at",
        "invited_at",
        "phone_confirmed_at",
        "confirmation_sent_at",
        "confirmed_at",
        "recovery_sent_at",
        "email_change_sent_at",
        "reauthentication_sent_at",
        "last_sign_in_at",
        "banned_until",
    ):
        if row.get(key) is not None:
            out[key] = ts(row[key])
    if row.get("email_change"):  # GoTrue's `new_email`, omitted when empty
        out["new_email"] = row["email_change"]
    return out


# ── database helpers ───────────────────────────────────────────────────────────────────────────
async def user_by(
    cur: psycopg.AsyncCursor[Any], column: str, value: Any, *, lock: bool = False
) -> dict[str, Any] | None:
    assert column in ("id", "email", "phone")
    await cur.execute(
        f"select {USER_COLUMNS} from auth.users where {column} = %s and deleted_at is null"
        + (" for update" if lock else ""),
        (value,),
    )
    return await cur.fetchone()


async def insert_user(
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
    anonymous: bool = False,
) -> dict[str, Any]:
    await cur.execute(
        f"""
        insert into auth.users (
          instance_id, id, aud, role, email, phone, encrypted_password, email_confirmed_at,
          last_sign_in_at, raw_app_meta_data, raw_user_meta_data, is_super_admin,
          created_at, updated_at, confirmation_token, recovery_token, email_change_token_new,
          email_change, is_anonymous
        ) values (
          '00000000-0000-0000-0000-000000000000', %(id)s, %(aud)s, %(role)s, %(email)s,
          %(phone)s, %(hash)s, case when %(confirmed)s then now() end,
          case when %(signed_in)s then now() end, %(app)s, %(meta)s, false, now(), now(),
          '', '', '', '', %(anonymous)s
        )
        returning {USER_COLUMNS}
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
            "anonymous": anonymous,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


def provider_metadata(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"provider": "email", "providers": ["email"], **(extra or {})}


# ── identities ─────────────────────────────────────────────────────────────────────────────────
_IDENTITY_COLUMNS = (
    "id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, "
    "updated_at, email"
)


def email_identity_data(
    user_id: uuid.UUID, email: str, *, verified: bool, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """GoTrue's identity_data for an email identity: its provider claims (`email_verified` and
    `phone_verified` always present), then any keys of `extra` (sign-up data) not among them."""
    data: dict[str, Any] = {
        "sub": str(user_id),
        "email": email,
        "email_verified": verified,
        "phone_verified": False,
    }
    return {**(extra or {}), **data}


async def save_identity(
    cur: psycopg.AsyncCursor[Any], user_id: uuid.UUID, provider: str, data: dict[str, Any]
) -> None:
    """Create the user's identity for `provider`, or merge `data` into the one it has (GoTrue's
    UpdateIdentityData). For email and phone the provider's id is the user's id."""
    await cur.execute(
        """
        insert into auth.identities (provider_id, user_id, identity_data, provider,
                                     last_sign_in_at, created_at, updated_at)
        values (%(pid)s, %(uid)s, %(data)s, %(provider)s, now(), now(), now())
        on conflict (provider_id, provider) do update
          set identity_data = auth.identities.identity_data || excluded.identity_data,
              updated_at = now()
        """,
        {"pid": str(user_id), "uid": user_id, "data": Jsonb(data), "provider": provider},
    )


async def identities_of(
    cur: psycopg.AsyncCursor[Any], user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The identity rows of each of `user_ids`, oldest first."""
    await cur.execute(
        f"select {_IDENTITY_COLUMNS} from auth.identities where user_id = any(%s) "
        "order by created_at, id",
        (user_ids,),
    )
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row in await cur.fetchall():
        out.setdefault(row["user_id"], []).append(row)
    return out


async def user_out(cur: psycopg.AsyncCursor[Any], user: dict[str, Any]) -> dict[str, Any]:
    """user_json of `user` with its identities and MFA factors read from the database."""
    found = await identities_of(cur, [user["id"]])
    out = user_json(user, found.get(user["id"], []))
    factors = await factors_of(cur, user["id"])
    if factors:  # GoTrue leaves `factors` out when there are none (omitempty)
        out["factors"] = [factor_json(f) for f in factors]
    return out


FACTOR_COLUMNS = (
    "id, user_id, friendly_name, factor_type::text as factor_type, status::text as status, "
    "created_at, updated_at, secret, last_challenged_at"
)


def factor_json(row: dict[str, Any]) -> dict[str, Any]:
    """An `auth.mfa_factors` row as GoTrue serialises it (the secret never leaves)."""
    out: dict[str, Any] = {
        "id": str(row["id"]),
        "friendly_name": row["friendly_name"] or "",
        "factor_type": row["factor_type"],
        "status": row["status"],
        "created_at": ts(row["created_at"]),
        "updated_at": ts(row["updated_at"]),
    }
    if row["last_challenged_at"] is not None:
        out["last_challenged_at"] = ts(row["last_challenged_at"])
    return out


async def factors_of(cur: psycopg.AsyncCursor[Any], user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The MFA factor rows of `user_id`, oldest first."""
    await cur.execute(
        f"select {FACTOR_COLUMNS} from auth.mfa_factors where user_id = %s order by created_at, id",
        (user_id,),
    )
    return list(await cur.fetchall())


UNSET_BAN = object()


async def check_merged_metadata(
    cur: psycopg.AsyncCursor[Any],
    user_id: uuid.UUID,
    *,
    user_metadata: dict[str, Any] | None = None,
    app_metadata: dict[str, Any] | None = None,
) -> None:
    """Raise 400 validation_failed when merging the given metadata into the user's (as
    update_user_row does, key by key) would go over MAX_METADATA_BYTES. Locks the row, so
    concurrent updates cannot together pass the limit; call inside the update's transaction."""
    row = await user_by(cur, "id", user_id, lock=True)
    if row is None:
        return
    if user_metadata is not None:
        merged = {**(row["raw_user_meta_data"] or {}), **user_metadata}
        check_metadata_size("user_metadata", merged)
    if app_metadata is not None:
        merged = {**(row["raw_app_meta_data"] or {}), **app_metadata}
        check_metadata_size("app_metadata", merged)


async def update_user_row(
    cur: psycopg.AsyncCursor[Any],
    user_id: uuid.UUID,
    *,
    email: str | None,
    password_hash: str | None,
    user_metadata: dict[str, Any] | None,
    app_metadata: dict[str, Any] | None,
    confirm_email: bool | None,
    banned_until: Any,
    anonymous: bool | None = None,
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
          is_anonymous = coalesce(%(anonymous)s::boolean, is_anonymous),
          updated_at = now()
        where id = %(id)s
        returning {USER_COLUMNS}
        """,
        {
            "email": email,
            "hash": password_hash,
            "meta": Jsonb(user_metadata) if user_metadata is not None else None,
            "app": Jsonb(app_metadata) if app_metadata is not None else None,
            "confirm": confirm_email,
            "set_ban": banned_until is not UNSET_BAN and banned_until is not None,
            "ban": None if banned_until is UNSET_BAN else banned_until,
            "anonymous": anonymous,
            "id": user_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row
