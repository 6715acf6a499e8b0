"""Sign-up, the /token grants (password, refresh_token) and logout: sessions in
`auth.sessions`, rotating refresh tokens in `auth.refresh_tokens`, HS256 access tokens."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import psycopg
from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.stack.gateway import tokens
from app.stack.gateway.auth import links, mailer, phone
from app.stack.gateway.auth.caller import (
    check_api_key,
    current_user,
    jwt_secret,
)
from app.stack.gateway.auth.config import settings_of
from app.stack.gateway.auth.errors import AuthError, validation_failed
from app.stack.gateway.auth.ratelimit import rate_limits_of
from app.stack.gateway.auth.store import (
    AUDIENCE,
    USER_COLUMNS,
    USER_UNIQUE,
    email_identity_data,
    insert_user,
    provider_metadata,
    save_identity,
    ts,
    user_by,
    user_json,
    user_out,
)
from app.stack.gateway.auth.validation import (
    MAX_PASSWORD_BYTES,
    check_password,
    email_address,
    hash_password,
    is_storable,
    json_body,
    opt_obj,
    opt_str,
    verify_password,
)

# A session's assurance level and its `amr` entries (newest first), as session_assurance reads
# them from auth.mfa_amr_claims; a fresh password session has ("aal1", []).
Assurance = tuple[str, list[dict[str, Any]]]

# Sign-in methods recorded in auth.mfa_amr_claims (GoTrue records every method there); a session
# without one began with a password (or, for an anonymous user, anonymously).
SIGN_IN_METHODS = frozenset({"password", "otp", "anonymous", "email/signup", "invite"})


async def session_assurance(cur: psycopg.AsyncCursor[Any], session_id: uuid.UUID) -> Assurance:
    """`auth.sessions.aal` and the session's `auth.mfa_amr_claims` (GoTrue's amr, newest
    first); access_token adds the password/anonymous method when none is recorded."""
    await cur.execute(
        "select coalesce(aal::text, 'aal1') as aal from auth.sessions where id = %s",
        (session_id,),
    )
    row = await cur.fetchone()
    await cur.execute(
        "select authentication_method, created_at from auth.mfa_amr_claims "
        "where session_id = %s order by created_at desc",
        (session_id,),
    )
    amr = [
        {"method": r["authentication_method"], "timestamp": int(r["created_at"].timestamp())}
        for r in await cur.fetchall()
    ]
    return (row["aal"] if row else "aal1"), amr


def access_token(
    request: Request,
    user: dict[str, Any],
    session_id: uuid.UUID,
    signed_in_at: datetime,
    assurance: Assurance | None = None,
) -> tuple[str, int, int]:
    """(token, expires_in, expires_at) for `user` in `session_id`, signed with the configured
    signing key (ES256/RS256 with its `kid`) or, without one, HS256 with the stack's secret."""
    expiry = int(request.app.state.config.jwt_expiry_seconds)
    now = int(time.time())
    aal, amr = assurance or ("aal1", [])
    if not any(entry["method"] in SIGN_IN_METHODS for entry in amr):
        # Sessions that began with a password or anonymously record no method.
        method = "anonymous" if user["is_anonymous"] else "password"
        amr = [*amr, {"method": method, "timestamp": int(signed_in_at.timestamp())}]
    claims = {
        "iss": f"{request.app.state.config.paths.api_url}/auth/v1",
        "sub": str(user["id"]),
        "aud": user["aud"] or AUDIENCE,
        "role": user["role"] or AUDIENCE,
        "email": user["email"] or "",
        "phone": user["phone"] or "",
        "app_metadata": user["raw_app_meta_data"] or {},
        "user_metadata": user["raw_user_meta_data"] or {},
        "aal": aal,
        "amr": amr,
        "session_id": str(session_id),
        "is_anonymous": bool(user["is_anonymous"]),
        "iat": now,
        "exp": now + expiry,
    }
    signer = tokens.key_set_of(request.app).signer
    if signer is None:
        token = jwt.encode(claims, jwt_secret(request), algorithm="HS256")
    else:
        token = jwt.encode(claims, signer.key, algorithm=signer.alg, headers={"kid": signer.kid})
    return token, expiry, now + expiry


def session_json(
    request: Request,
    user: dict[str, Any],
    session_id: uuid.UUID,
    signed_in_at: datetime,
    refresh_token: str,
    user_body: dict[str, Any],
    assurance: Assurance | None = None,
) -> dict[str, Any]:
    """The session GoTrue answers with; `user_body` is the user's JSON (store.user_out)."""
    token, expires_in, expires_at = access_token(request, user, session_id, signed_in_at, assurance)
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": expires_in,
        "expires_at": expires_at,
        "refresh_token": refresh_token,
        "user": user_body,
    }


async def new_session(
    cur: psycopg.AsyncCursor[Any], user_id: uuid.UUID, method: str | None = None
) -> tuple[uuid.UUID, datetime, str]:
    """Insert a session and its first refresh token; (session id, created_at, refresh token).
    `method` (e.g. "otp") is recorded as the session's sign-in method in auth.mfa_amr_claims;
    None means a password (or anonymous) sign-in, which is not recorded."""
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
    if method is not None:
        await cur.execute(
            "insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, "
            "authentication_method) values (%s, %s, %s, %s, %s)",
            (uuid.uuid4(), session_id, row["created_at"], row["created_at"], method),
        )
    return session_id, row["created_at"], token


async def issue_session(
    request: Request, cur: psycopg.AsyncCursor[Any], user: dict[str, Any], method: str
) -> dict[str, Any]:
    """A new session for `user` begun by `method` (GoTrue's issueRefreshToken): last_sign_in_at
    set, the session JSON answered. Call inside the caller's transaction."""
    await cur.execute(
        f"update auth.users set last_sign_in_at = now(), updated_at = now() "
        f"where id = %s returning {USER_COLUMNS}",
        (user["id"],),
    )
    signed_in = await cur.fetchone()
    assert signed_in is not None
    session_id, started, refresh = await new_session(cur, signed_in["id"], method)
    body = await user_out(cur, signed_in)
    assurance = await session_assurance(cur, session_id)
    return session_json(request, signed_in, session_id, started, refresh, body, assurance)


async def signup(request: Request) -> JSONResponse:
    """POST /signup: with an email, GoTrue's email sign-up (sign_up_email); with neither email
    nor phone, an anonymous user, when `[auth] enable_anonymous_sign_ins` allows it (GoTrue's
    two sign-ups)."""
    check_api_key(request)
    # As GoTrue: the body first, which decides which of the two rate limits applies.
    body = await json_body(request)
    email_raw = opt_str(body, "email")
    if not email_raw and not opt_str(body, "phone"):
        return await _anonymous_signup(request, body)
    rate_limits_of(request).check(request, "sign_in_sign_ups")
    settings = settings_of(request)
    if not settings.enable_signup:
        raise AuthError(422, "signup_disabled", "Signups not allowed for this instance")
    if not email_raw:
        return await _phone_signup(request, body)
    if not settings.email_signup:
        raise AuthError(400, "email_provider_disabled", "Email signups are disabled")
    email = email_address(email_raw)
    password = check_password(opt_str(body, "password"))
    metadata = opt_obj(body, "data", "user_metadata") or {}
    password_hash = await hash_password(password)
    answer, _user = await sign_up_email(
        request,
        email=email,
        password_hash=password_hash,
        metadata=metadata,
        redirect_to=mailer.referrer(request, settings),
    )
    return JSONResponse(answer)


async def _phone_signup(request: Request, body: dict[str, Any]) -> JSONResponse:
    phone.check_enabled(settings_of(request), "Phone signups are disabled")
    password = check_password(opt_str(body, "password"))
    metadata = opt_obj(body, "data", "user_metadata") or {}
    user, sign_in = await phone.sign_up_phone(
        request, opt_str(body, "phone") or "", await hash_password(password), metadata
    )
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            async with conn.transaction():
                user_body = await user_out(cur, user)
                if not sign_in:
                    return JSONResponse(user_body)
                session_id, started, refresh = await new_session(cur, user["id"])
    return JSONResponse(session_json(request, user, session_id, started, refresh, user_body))


def _sanitized_user(email: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """GoTrue's sanitizeUser: what a repeated sign-up of a confirmed email answers while
    confirmations are on, shaped like a new unconfirmed user so the answer does not tell
    whether the address is registered."""
    now = ts(datetime.now(UTC))
    return {
        "id": str(uuid.uuid4()),
        "aud": AUDIENCE,
        "role": "",
        "email": email,
        "phone": "",
        "confirmation_sent_at": now,
        "app_metadata": provider_metadata(),
        "user_metadata": metadata,
        "identities": [],
        "created_at": now,
        "updated_at": now,
        "is_anonymous": False,
    }


async def sign_up_email(
    request: Request,
    *,
    email: str,
    password_hash: str,
    metadata: dict[str, Any],
    redirect_to: str,
    sign_in: bool = True,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """GoTrue's email Signup: (answer, user row). With confirmations off (`[auth.email]
    enable_confirmations = false`) the user is confirmed and signed in (the answer is a
    session); with them on, a confirmation mail goes out and the answer is the user without a
    session. A confirmed email is refused (422 user_already_exists), or, with confirmations on
    and `[auth.sms] enable_confirmations` too, answered with a made-up user as GoTrue does; an
    unconfirmed one is mailed again and not changed. The user row is None for a made-up user.
    `sign_in=False` (the sign-up inside /otp) confirms without starting a session and answers
    the user."""
    settings = settings_of(request)
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            existing = await user_by(cur, "email", email)
            if existing is not None and existing["email_confirmed_at"] is not None:
                if settings.autoconfirm or not settings.sms_confirmations:
                    raise AuthError(422, "user_already_exists", "User already registered")
                return _sanitized_user(email, metadata), None
            try:
                async with conn.transaction():
                    if existing is None:
                        user = await insert_user(
                            cur,
                            user_id=uuid.uuid4(),
                            email=email,
                            phone=None,
                            password_hash=password_hash,
                            confirmed=settings.autoconfirm,
                            app_metadata=provider_metadata(),
                            user_metadata=metadata,
                            role=AUDIENCE,
                            signed_in=settings.autoconfirm,
                        )
                        # GoTrue writes the identity before confirming: email_verified false.
                        await save_identity(
                            cur,
                            user["id"],
                            "email",
                            email_identity_data(user["id"], email, verified=False, extra=metadata),
                        )
                    else:
                        # As GoTrue: the claimed identity is not proven, so nothing changes.
                        user = await user_by(cur, "id", existing["id"], lock=True)
                        assert user is not None
                    if not settings.autoconfirm:
                        user = await links.send_token(
                            request, cur, user, mailer.SIGNUP, redirect_to=redirect_to
                        )
                        body = await user_out(cur, user)
                        if user["invited_at"] is not None:
                            body["user_metadata"], body["identities"] = {}, []
                        return body, user
                    if user["email_confirmed_at"] is None:
                        user = await links.confirm(cur, user)
                    user_body = await user_out(cur, user)
                    if not sign_in:
                        return user_body, user
                    session_id, started, refresh = await new_session(cur, user["id"])
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name not in USER_UNIQUE:
                    raise AuthError(
                        500, "unexpected_failure", "Database error saving new user"
                    ) from None
                raise AuthError(422, "user_already_exists", "User already registered") from None
            except psycopg.Error:
                # A failing trigger on auth.users lands here, exactly as in GoTrue.
                raise AuthError(
                    500, "unexpected_failure", "Database error saving new user"
                ) from None
    return session_json(request, user, session_id, started, refresh, user_body), user


async def _anonymous_signup(request: Request, body: dict[str, Any]) -> JSONResponse:
    """GoTrue's SignupAnonymously: a user with no email, phone or password, `is_anonymous`,
    no identity and empty app_metadata, signed in. Triggers on auth.users run as for any
    user (the balance trigger gives it a balance). A password in the body is ignored, as by
    GoTrue."""
    if not settings_of(request).anonymous_sign_ins:
        raise AuthError(422, "anonymous_provider_disabled", "Anonymous sign-ins are disabled")
    rate_limits_of(request).check(request, "anonymous_users")
    metadata = opt_obj(body, "data", "user_metadata") or {}
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            try:
                async with conn.transaction():
                    user = await insert_user(
                        cur,
                        user_id=uuid.uuid4(),
                        email=None,
                        phone=None,
                        password_hash=None,
                        confirmed=False,
                        app_metadata={},
                        user_metadata=metadata,
                        role=AUDIENCE,
                        signed_in=True,
                        anonymous=True,
                    )
                    session_id, started, refresh = await new_session(cur, user["id"])
            except psycopg.Error:
                raise AuthError(
                    500, "unexpected_failure", "Database error creating anonymous user"
                ) from None
    return JSONResponse(
        session_json(request, user, session_id, started, refresh, user_json(user, []))
    )


async def token(request: Request) -> JSONResponse:
    check_api_key(request)
    grant = request.query_params.get("grant_type", "")
    if grant in ("password", "refresh_token"):
        rate_limits_of(request).check(request, "token_refresh")
    body = await json_body(request)
    if grant == "password":
        return await _password_grant(request, body)
    if grant == "refresh_token":
        return await _refresh_grant(request, body)
    raise AuthError(400, "validation_failed", f"unsupported_grant_type: {grant!r}")


async def _password_grant(request: Request, body: dict[str, Any]) -> JSONResponse:
    email = opt_str(body, "email", storable=False)
    phone_raw = opt_str(body, "phone", storable=False)
    password = opt_str(body, "password", storable=False)
    if not (email or phone_raw) or not password:
        raise AuthError(400, "validation_failed", "missing email or phone")
    if not email:
        return await _phone_password_grant(request, phone_raw or "", password)
    if (
        not is_storable(email)
        or not is_storable(password)
        or len(password.encode()) > MAX_PASSWORD_BYTES
    ):
        # No stored password can be one that signup refuses: bcrypt would compare only the
        # first 72 bytes, so a longer one would match any password sharing them.
        raise AuthError(400, "invalid_credentials", "Invalid login credentials")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await user_by(cur, "email", email.strip().lower())
            ok = await verify_password(password, user["encrypted_password"] if user else None)
            if user is None or not ok:
                raise AuthError(400, "invalid_credentials", "Invalid login credentials")
            if user["banned_until"] and user["banned_until"] > datetime.now(UTC):
                raise AuthError(400, "user_banned", "User is banned")
            if user["email_confirmed_at"] is None:
                raise AuthError(400, "email_not_confirmed", "Email not confirmed")
            async with conn.transaction():
                await cur.execute(
                    f"update auth.users set last_sign_in_at = now(), updated_at = now() "
                    f"where id = %s returning {USER_COLUMNS}",
                    (user["id"],),
                )
                user = await cur.fetchone()
                assert user is not None
                session_id, started, refresh = await new_session(cur, user["id"])
                user_body = await user_out(cur, user)
    return JSONResponse(session_json(request, user, session_id, started, refresh, user_body))


async def _phone_password_grant(request: Request, phone_raw: str, password: str) -> JSONResponse:
    """GoTrue's password grant with a phone: the number must be confirmed."""
    phone.check_enabled(settings_of(request), "Phone logins are disabled")
    if (
        not is_storable(phone_raw)
        or not is_storable(password)
        or (len(password.encode()) > MAX_PASSWORD_BYTES)
    ):
        raise AuthError(400, "invalid_credentials", "Invalid login credentials")
    number = phone_raw.replace(" ", "").removeprefix("+")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            user = await user_by(cur, "phone", number)
            ok = await verify_password(password, user["encrypted_password"] if user else None)
            if user is None or not ok:
                raise AuthError(400, "invalid_credentials", "Invalid login credentials")
            if user["banned_until"] and user["banned_until"] > datetime.now(UTC):
                raise AuthError(400, "user_banned", "User is banned")
            if user["phone_confirmed_at"] is None:
                raise AuthError(400, "phone_not_confirmed", "Phone not confirmed")
            async with conn.transaction():
                await cur.execute(
                    f"update auth.users set last_sign_in_at = now(), updated_at = now() "
                    f"where id = %s returning {USER_COLUMNS}",
                    (user["id"],),
                )
                user = await cur.fetchone()
                assert user is not None
                session_id, started, refresh = await new_session(cur, user["id"])
                user_body = await user_out(cur, user)
    return JSONResponse(session_json(request, user, session_id, started, refresh, user_body))


async def _refresh_grant(request: Request, body: dict[str, Any]) -> JSONResponse:
    presented = opt_str(body, "refresh_token")
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
                    user = await user_by(cur, "id", found["user_id"])
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
                    user_body = await user_out(cur, user)
                    assurance = await session_assurance(cur, found["session_id"])
    if reused:
        raise AuthError(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")
    return JSONResponse(
        session_json(
            request, user, found["session_id"], found["created_at"], fresh, user_body, assurance
        )
    )


async def logout(request: Request) -> Response:
    check_api_key(request)
    scope = request.query_params.get("scope", "global")
    if scope not in ("global", "local", "others"):
        raise validation_failed("scope must be one of global, local, others")
    async with request.app.state.auth_pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            claims, user = await current_user(request, cur)
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
