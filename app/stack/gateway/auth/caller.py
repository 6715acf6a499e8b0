"""Who is calling the Auth API: the project key Kong checks, and the caller's bearer token."""

from __future__ import annotations

import uuid
from typing import Any

import jwt
import psycopg
from starlette.requests import Request

from app.stack.gateway import kong, tokens
from app.stack.gateway.auth.errors import AuthError
from app.stack.gateway.auth.store import user_by


# ── request helpers ────────────────────────────────────────────────────────────────────────────
def jwt_secret(request: Request) -> str:
    return str(request.app.state.config.keys.jwt_secret)


def api_keys(request: Request) -> tuple[str, str]:
    keys = request.app.state.config.keys
    return (keys.anon_key, keys.service_role_key)


def check_api_key(request: Request) -> None:
    """Refuse requests without a project key in `apikey`, as Kong does in front of GoTrue:
    the same check as /rest/v1's (kong.require_api_key), the key compared with the stack's
    anon and service_role keys, whatever the `Authorization` header says."""
    kong.require_api_key(request, api_keys(request))


def bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthError(401, "no_authorization", "This endpoint requires a Bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "bad_jwt", "This endpoint requires a Bearer token")
    if len(token.strip()) > tokens.MAX_TOKEN_BYTES:
        raise AuthError(
            403,
            "bad_jwt",
            f"invalid JWT: unable to parse or verify signature, token is longer than "
            f"{tokens.MAX_TOKEN_BYTES} bytes",
        )
    return token.strip()


def caller_claims(request: Request) -> dict[str, Any]:
    """Verified claims of the caller's `Authorization` token; 401/403 as GoTrue answers.

    `exp` is checked when present and not required, as GoTrue (golang-jwt's default) and
    PostgREST do: the client libraries' own tests sign service_role and user tokens without it."""
    token = bearer(request)
    try:
        # The same keys as REST and Functions: the stack's secret for HS256, and the `kid`'s
        # key of `[auth] signing_keys_path` for ES256/RS256 access tokens.
        algorithm, key = tokens.verification_key(
            jwt.get_unverified_header(token), jwt_secret(request), tokens.key_set_of(request.app)
        )
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            options={"verify_aud": False, "require": []},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(
            403,
            "bad_jwt",
            "invalid JWT: unable to parse or verify signature, "
            "token has invalid claims: token is expired",
        ) from None
    except jwt.PyJWTError as exc:
        raise AuthError(
            403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {exc}"
        ) from None
    if not isinstance(claims, dict):
        raise AuthError(403, "bad_jwt", "invalid JWT: claims must be an object")
    return claims


# GoTrue's default GOTRUE_JWT_ADMIN_ROLES (Supabase does not change it): a token of either role,
# signed with the project's secret, may call the admin API.
ADMIN_ROLES = frozenset({"service_role", "supabase_admin"})


def require_admin(request: Request) -> dict[str, Any]:
    check_api_key(request)
    claims = caller_claims(request)
    if claims.get("role") not in ADMIN_ROLES:
        raise AuthError(403, "not_admin", "User not allowed")
    return claims


async def current_user(
    request: Request, cur: psycopg.AsyncCursor[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(claims, user row) of the signed-in caller; 401/403 as GoTrue when there is none."""
    claims = caller_claims(request)
    try:
        user_id = uuid.UUID(str(claims.get("sub")))
    except ValueError:
        raise AuthError(403, "bad_jwt", "invalid claim: missing sub claim") from None
    user = await user_by(cur, "id", user_id)
    if user is None:
        raise AuthError(403, "user_not_found", "User from sub claim in JWT does not exist")
    session_id = claims.get("session_id")
    if session_id:
        try:
            sid = uuid.UUID(str(session_id))
        except ValueError:
            raise AuthError(
                403, "bad_jwt", "invalid claim: session_id claim is not a UUID"
            ) from None
        await cur.execute(
            "select 1 from auth.sessions where id = %s and user_id = %s "
            "and (not_after is null or not_after > now())",
            (sid, user_id),
        )
        if await cur.fetchone() is None:
            raise AuthError(
                403, "session_not_found", "Session from session_id claim in JWT does not exist"
            )
    return claims, user
