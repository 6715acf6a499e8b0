"""Who is calling: verify the bearer JWT and turn it into PostgREST's claims.

Only HS256 tokens signed with the stack's secret are accepted; `alg: none`, other algorithms,
bad signatures, expired tokens and roles outside the API roles are refused with 401 before any
database work. No token at all means the anon role, as in PostgREST.
"""

from __future__ import annotations

from typing import Any

import jwt
from starlette.requests import Request

from app.stack.gateway.errors import ApiError, jwt_error

API_ROLES = frozenset({"anon", "authenticated", "service_role"})


def bearer_token(request: Request) -> str | None:
    """The caller's token: `Authorization: Bearer …`, else the `apikey` header (as Kong does)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise jwt_error("Authorization header must be 'Bearer <token>'")
        return token.strip()
    return request.headers.get("apikey") or None


def decode(token: str, secret: str) -> dict[str, Any]:
    """Verified claims of `token`. Raises ApiError(401) for anything we will not trust."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise jwt_error(f"Invalid JWT: {exc}") from None
    if header.get("alg") != "HS256":
        raise jwt_error(f"Wrong or unsupported JWT algorithm: {header.get('alg')!r}")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"verify_aud": False, "require": []},
        )
    except jwt.ExpiredSignatureError:
        raise jwt_error("JWT expired", code="PGRST303") from None
    except jwt.InvalidSignatureError:
        raise jwt_error("JWSError JWSInvalidSignature") from None
    except jwt.PyJWTError as exc:
        raise jwt_error(f"Invalid JWT: {exc}") from None
    if not isinstance(claims, dict):
        raise jwt_error("JWT claims must be an object", code="PGRST303")
    return claims


def request_claims(request: Request, secret: str) -> dict[str, Any]:
    """The claims a request runs with; `{"role": "anon"}` when it carries no token."""
    token = bearer_token(request)
    if token is None:
        return {"role": "anon"}
    claims = decode(token, secret)
    role = claims.get("role", "anon")
    if role not in API_ROLES:
        raise ApiError(
            401,
            "42501",
            f'permission denied to set role "{role}"',
            headers={"WWW-Authenticate": "Bearer"},
        )
    claims.setdefault("role", role)
    return claims


def require_service_role(request: Request, secret: str) -> dict[str, Any]:
    """Claims of a service_role caller; anything else gets ApiError 401/403."""
    claims = request_claims(request, secret)
    if claims.get("role") != "service_role":
        raise ApiError(403, "not_admin", "User not allowed")
    return claims
