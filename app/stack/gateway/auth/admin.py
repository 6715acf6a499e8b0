"""The admin users API, /admin/users (service_role callers only)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.stack.gateway.auth.caller import (
    require_admin,
)
from app.stack.gateway.auth.errors import AuthError, email_exists, validation_failed
from app.stack.gateway.auth.store import (
    AUDIENCE,
    UNSET_BAN,
    USER_COLUMNS,
    USER_UNIQUE,
    check_merged_metadata,
    email_identity_data,
    identities_of,
    insert_user,
    provider_metadata,
    save_identity,
    update_user_row,
    user_by,
    user_json,
    user_out,
)
from app.stack.gateway.auth.validation import (
    check_metadata_size,
    check_password,
    email_address,
    hash_password,
    json_body,
    opt_obj,
    opt_str,
    phone_number,
)

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000


# Go's time.Duration (what GoTrue parses ban_duration into) ends at 2**63 - 1 nanoseconds.
MAX_BAN_SECONDS = (2**63 - 1) / 1e9
# The largest offset PostgreSQL takes (bigint).
_MAX_OFFSET = 2**63 - 1


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s|ms)")


# ── admin endpoints (service_role only) ────────────────────────────────────────────────────────
def _ban_until(body: dict[str, Any]) -> Any:
    """`ban_duration` ("none", or a Go duration such as "24h", "30m", "90s") as a timestamp."""
    value = opt_str(body, "ban_duration")
    if value is None:
        return UNSET_BAN
    if value == "none":
        return datetime.now(UTC) - timedelta(seconds=1)
    match = _DURATION.fullmatch(value)
    if not match:
        raise validation_failed("invalid format for ban duration")
    factor = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[match.group(2)]
    seconds = float(match.group(1)) * factor
    if seconds > MAX_BAN_SECONDS:
        # GoTrue's time.ParseDuration refuses it the same way ("invalid duration").
        raise validation_failed("invalid format for ban duration: duration out of range")
    try:
        return datetime.now(UTC) + timedelta(seconds=seconds)
    except OverflowError:  # past year 9999: PostgreSQL could not store it either
        raise validation_failed("invalid format for ban duration: duration out of range") from None


def _path_user_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["user_id"])
    except ValueError:
        raise AuthError(404, "user_not_found", "User not found") from None


async def admin_create_user(request: Request) -> JSONResponse:
    require_admin(request)
    body = await json_body(request)
    email_raw = opt_str(body, "email")
    phone_raw = opt_str(body, "phone")
    if not email_raw and not phone_raw:
        raise validation_failed("An email address or phone number is required")
    email = email_address(email_raw) if email_raw else None
    phone = phone_number(phone_raw) if phone_raw else None
    password = opt_str(body, "password")
    password_hash = await hash_password(check_password(password)) if password is not None else None
    user_metadata = opt_obj(body, "user_metadata", "data") or {}
    app_metadata = provider_metadata(opt_obj(body, "app_metadata"))
    check_metadata_size("app_metadata", app_metadata)
    role = opt_str(body, "role") or AUDIENCE
    if len(role.encode(errors="replace")) > 63:
        # A PostgreSQL role name is at most 63 bytes, and the role goes into every token.
        raise validation_failed("role must be at most 63 bytes (a PostgreSQL role name)")
    raw_id = opt_str(body, "id")
    try:
        user_id = uuid.UUID(raw_id) if raw_id else uuid.uuid4()
    except ValueError:
        raise validation_failed("id must be a UUID") from None
    confirm = body.get("email_confirm", False)
    if not isinstance(confirm, bool):
        raise validation_failed("email_confirm must be a boolean")
    ban = _ban_until(body)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            if email and await user_by(cur, "email", email) is not None:
                raise email_exists()
            try:
                async with conn.transaction():
                    user = await insert_user(
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
                    # As GoTrue's admin create: identity claims without email_verified set.
                    if email:
                        await save_identity(
                            cur,
                            user_id,
                            "email",
                            email_identity_data(user_id, email, verified=False),
                        )
                    if phone:
                        await save_identity(
                            cur,
                            user_id,
                            "phone",
                            {
                                "sub": str(user_id),
                                "phone": phone,
                                "email_verified": False,
                                "phone_verified": False,
                            },
                        )
                    if ban is not UNSET_BAN:
                        user = await update_user_row(
                            cur,
                            user_id,
                            email=None,
                            password_hash=None,
                            user_metadata=None,
                            app_metadata=None,
                            confirm_email=None,
                            banned_until=ban,
                        )
                    body_out = await user_out(cur, user)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name not in USER_UNIQUE:
                    raise AuthError(
                        500, "unexpected_failure", "Database error creating new user"
                    ) from None
                raise email_exists() from None
            except psycopg.Error:
                raise AuthError(
                    500, "unexpected_failure", "Database error creating new user"
                ) from None
    return JSONResponse(body_out)


def _positive_int(request: Request, name: str, default: int) -> int:
    """Query parameter `name` as GoTrue parses it (ASCII digits, a uint64), at least 1.
    Raises 400 validation_failed "Bad Pagination Parameters: …"."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    # Not str.isdigit(): it takes "²" and other digits int() refuses, and no length bound.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20 or not 1 <= int(raw) < 2**64:
        raise validation_failed(
            f"Bad Pagination Parameters: {name} must be a positive integer below 2^64"
        )
    return int(raw)


async def admin_list_users(request: Request) -> JSONResponse:
    require_admin(request)
    page = _positive_int(request, "page", 1)
    per_page = min(_positive_int(request, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    if (page - 1) * per_page > _MAX_OFFSET:
        raise validation_failed("Bad Pagination Parameters: page is past the last possible offset")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("select count(*) as n from auth.users where deleted_at is null")
            total_row = await cur.fetchone()
            await cur.execute(
                f"select {USER_COLUMNS} from auth.users where deleted_at is null "
                "order by created_at desc, id limit %s offset %s",
                (per_page, (page - 1) * per_page),
            )
            rows = await cur.fetchall()
            identities = await identities_of(cur, [r["id"] for r in rows])
    total = int(total_row["n"]) if total_row else 0
    return JSONResponse(
        {"users": [user_json(r, identities.get(r["id"], [])) for r in rows], "aud": AUDIENCE},
        headers={"x-total-count": str(total)},
    )


async def _admin_user(request: Request, cur: psycopg.AsyncCursor[Any]) -> dict[str, Any]:
    user = await user_by(cur, "id", _path_user_id(request))
    if user is None:
        raise AuthError(404, "user_not_found", "User not found")
    return user


async def admin_get_user(request: Request) -> JSONResponse:
    require_admin(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await _admin_user(request, cur)
            body = await user_out(cur, user)
    return JSONResponse(body)


async def admin_update_user(request: Request) -> JSONResponse:
    require_admin(request)
    body = await json_body(request)
    email = opt_str(body, "email")
    password = opt_str(body, "password")
    password_hash = await hash_password(check_password(password)) if password is not None else None
    confirm = body.get("email_confirm")
    if confirm is not None and not isinstance(confirm, bool):
        raise validation_failed("email_confirm must be a boolean")
    ban = _ban_until(body)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await _admin_user(request, cur)
            user_metadata = opt_obj(body, "user_metadata", "data")
            app_metadata = opt_obj(body, "app_metadata")
            try:
                async with conn.transaction():
                    await check_merged_metadata(
                        cur, user["id"], user_metadata=user_metadata, app_metadata=app_metadata
                    )
                    new_email = email_address(email) if email is not None else None
                    user = await update_user_row(
                        cur,
                        user["id"],
                        email=new_email,
                        password_hash=password_hash,
                        user_metadata=user_metadata,
                        app_metadata=app_metadata,
                        confirm_email=confirm,
                        banned_until=ban,
                    )
                    if new_email is not None:
                        await save_identity(
                            cur,
                            user["id"],
                            "email",
                            email_identity_data(user["id"], new_email, verified=bool(confirm)),
                        )
                    body_out = await user_out(cur, user)
            except psycopg.errors.UniqueViolation:
                raise email_exists() from None
    return JSONResponse(body_out)


async def admin_delete_user(request: Request) -> JSONResponse:
    require_admin(request)
    body = await json_body(request, allow_empty=True)
    soft = body.get("should_soft_delete", False)
    if not isinstance(soft, bool):
        raise validation_failed("should_soft_delete must be a boolean")
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
