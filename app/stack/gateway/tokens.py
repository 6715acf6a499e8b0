"""Who is calling: verify the bearer JWT and turn it into PostgREST's claims.

Accepted: HS256 tokens signed with the stack's secret (the anon and service_role keys, and every
access token when no signing keys are configured), and, when `[auth] signing_keys_path` names a
JWK set (app/stack/signing_keys.py), tokens whose `kid` is a key of that set, verified with that
key's algorithm (ES256, RS256, or HS256 for an oct key). `alg: none`, other algorithms, an
asymmetric token whose kid is unknown, bad signatures, expired tokens and roles outside the API
roles are refused with 401 before any database work. No token at all means the anon role, as in
PostgREST.

Tokens longer than MAX_TOKEN_BYTES are refused before they are decoded, in `apikey` and in
`Authorization`, by every API (REST here, Auth and Functions through `check_size`). Verified
claims are remembered in a ClaimsCache bounded by entries and by bytes, so whatever tokens a
caller sends, the cache holds at most CLAIMS_CACHE_BYTES of them. docs/limits.md says why.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from starlette.requests import Request

from app.stack import signing_keys
from app.stack.gateway.errors import ApiError, jwt_error

API_ROLES = frozenset({"anon", "authenticated", "service_role"})
# The largest token the Auth API issues (4 KiB of user_metadata and of app_metadata, a 255-char
# ASCII email, base64url-encoded) is under 12 KiB; 16 KiB is also the per-header
# limit of the proxies in front of hosted Supabase (Cloudflare), so no real token is refused.
MAX_TOKEN_BYTES = 16 * 1024
CLAIMS_CACHE_ENTRIES = 10_000
CLAIMS_CACHE_BYTES = 8 * 1024 * 1024
# Rough cost of one cache entry beyond its key and the token it came from: the dict entry,
# the tuple, the claims dict and its small values.
_ENTRY_OVERHEAD = 512


def check_size(token: str, header: str) -> None:
    """Raise ApiError 401 when `token` (from `header`) is over MAX_TOKEN_BYTES."""
    if len(token) > MAX_TOKEN_BYTES:
        raise jwt_error(f"JWT in {header} is longer than {MAX_TOKEN_BYTES} bytes")


def bearer_token(request: Request) -> str | None:
    """The caller's token: `Authorization: Bearer …`, else the `apikey` header (as Kong does).

    Raises ApiError 401 for a malformed Authorization header or a token in either header over
    MAX_TOKEN_BYTES."""
    apikey = request.headers.get("apikey")
    if apikey:
        check_size(apikey, "apikey")
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise jwt_error("Authorization header must be 'Bearer <token>'")
        check_size(token.strip(), "Authorization")
        return token.strip()
    return apikey or None


def key_set_of(app: Any) -> signing_keys.KeySet:
    """The gateway's signing keys (`[auth] signing_keys_path`), read once per app. Raises
    SigningKeysError for a bad file (the Auth API reads it at start, so that is where it shows)."""
    state = app.state
    found: signing_keys.KeySet | None = getattr(state, "signing_keys", None)
    if found is None:
        config_toml = state.config.paths.root / "supabase" / "config.toml"
        found = signing_keys.load(signing_keys.configured_path(config_toml))
        state.signing_keys = found
    return found


def verification_key(
    header: dict[str, Any], secret: str, keys: signing_keys.KeySet | None
) -> tuple[str, Any]:
    """(algorithm, key) to verify a token with this header: the key its `kid` names in the
    configured set, else the stack's secret for HS256. Raises jwt.InvalidAlgorithmError for an
    algorithm that key does not use, jwt.InvalidKeyError for an asymmetric token whose kid is
    not in the set."""
    alg, kid = header.get("alg"), header.get("kid")
    if keys is not None and isinstance(kid, str) and kid in keys.verifiers:
        key_alg, key = keys.verifiers[kid]
        if alg != key_alg:
            raise jwt.InvalidAlgorithmError(f"key {kid} is {key_alg}, the token says {alg}")
        return key_alg, key
    if alg == "HS256":
        return "HS256", secret
    if alg in signing_keys.ALGORITHMS:
        raise jwt.InvalidKeyError(f"no signing key with kid {kid!r}")
    raise jwt.InvalidAlgorithmError("only HS256, ES256 and RS256 are accepted")


def decode(token: str, secret: str, keys: signing_keys.KeySet | None = None) -> dict[str, Any]:
    """Verified claims of `token`. Raises ApiError(401) for anything we will not trust."""
    check_size(token, "the request")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:  # DecodeError, and InvalidTokenError for a non-string `kid`
        raise jwt_error(f"Invalid JWT: {exc}") from None
    try:
        algorithm, key = verification_key(header, secret, keys)
    except jwt.InvalidAlgorithmError as exc:
        raise jwt_error(f"Wrong or unsupported JWT algorithm: {exc}") from None
    except jwt.InvalidKeyError as exc:
        raise jwt_error(f"JWSError JWSInvalidSignature: {exc}") from None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
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
    claims = decode(token, secret, key_set_of(request.app))
    role = claims.get("role", "anon")
    if not isinstance(role, str):
        # A list or object here is signed, so it came from whoever holds the secret, but it is
        # still no role: refuse it as an invalid claim rather than fail on it.
        raise jwt_error("JWT claim 'role' must be a string", code="PGRST303")
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


class ClaimsCache:
    """Verified claims by token, until the token's `exp`, within `max_entries` and `max_bytes`.

    An entry's size is estimated from its key, which holds the token (the claims are the token's
    payload, decoded). When an insert would go over either bound the oldest entries go first;
    expired entries are dropped when met."""

    def __init__(
        self, max_entries: int = CLAIMS_CACHE_ENTRIES, max_bytes: int = CLAIMS_CACHE_BYTES
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[str, tuple[dict[str, Any], float, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[1] <= time.time():
            self._drop(key)
            return None
        return hit[0]

    def put(self, key: str, claims: dict[str, Any], exp: float) -> None:
        # The key holds the token; its claims as Python objects take about twice its length.
        cost = 3 * len(key) + _ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        self._drop(key)
        while self._entries and (
            len(self._entries) >= self.max_entries or self.bytes + cost > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))
        self._entries[key] = (claims, exp, cost)
        self.bytes += cost

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]


def cached_claims(request: Request, secret: str, cache: ClaimsCache) -> dict[str, Any]:
    """request_claims, remembered in `cache` per token until `exp`.

    A token's signature and claims never change, so only the clock needs rechecking; tokens
    without `exp` or with `nbf` are verified every time. Raises ApiError 401 as request_claims."""
    header = request.headers.get("authorization")
    apikey = request.headers.get("apikey")
    key = f"a:{header}" if header else (f"k:{apikey}" if apikey else None)
    if key:
        if apikey:
            check_size(apikey, "apikey")  # also when a cached Authorization would answer
        hit = cache.get(key)
        if hit is not None:
            return hit
    claims = request_claims(request, secret)
    exp = claims.get("exp")
    if key and isinstance(exp, (int, float)) and "nbf" not in claims:
        cache.put(key, claims, exp)
    return claims
