"""What Supabase's API gateway (Kong) checks before a request reaches PostgREST or GoTrue.

Kong's key-auth plugin guards /rest/v1 and /auth/v1 (but not /functions/v1, whose functions
check a JWT themselves, nor GoTrue's browser redirects /auth/v1/verify, /callback, /authorize):
a request must carry a project key in `apikey`, compared with the keys it knows, whatever the
`Authorization` header says. Its answers are 401 `{"message": "No API key found in request"}`
and 401 `{"message": "Invalid API key"}` (a hosted project adds a "hint" field).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.requests import Request

from app.stack.gateway.errors import GatewayError

__all__ = ["require_api_key"]


def require_api_key(request: Request, known_keys: Iterable[str]) -> None:
    """Raises GatewayError 401 unless the `apikey` header is one of `known_keys`."""
    key = request.headers.get("apikey")
    if not key:
        raise GatewayError(401, "no_api_key", "No API key found in request")
    # Header values are Latin-1 text (Starlette decodes them so): compare their bytes, in
    # constant time, so a non-ASCII key is simply unknown.
    given = key.encode("latin-1")
    if not any(hmac.compare_digest(given, known.encode("latin-1")) for known in known_keys):
        raise GatewayError(401, "invalid_api_key", "Invalid API key")
