"""GoTrue-compatible /auth/v1: email/password and anonymous sign-up, sign-in, sessions, the
signed-in user, identities, admin users.

One module per endpoint group, as GoTrue keeps one file per group:

    errors.py      AuthError, GoTrue's error body
    validation.py  request bodies, emails, passwords, metadata
    ratelimit.py   GoTrue's per-IP rate limits
    caller.py      the project key (Kong's check) and the caller's bearer token
    store.py       auth.users rows and their JSON
    sessions.py    sign-up, /token grants, sessions and refresh tokens, logout
    users.py       the signed-in user: GET/PUT /user
    admin.py       the admin users API (service_role and supabase_admin tokens)
    mfa.py         MFA with TOTP: /factors enroll, challenge, verify, unenroll; admin factors
    disabled.py    GoTrue features switched off here (SAML SSO, OAuth server): GoTrue's 404s
    config.py      the [auth] settings of config.toml honoured (anonymous sign-ins)

Users are real rows in `auth.users` (so triggers on it fire as on Supabase), sessions live in
`auth.sessions` and refresh tokens in `auth.refresh_tokens`. Behaviour follows the local Supabase
CLI stack with `enable_confirmations = false`: sign-up confirms the email at once and signs in.

Refresh tokens rotate on every use. Presenting a token that was already rotated is treated as
theft: every token of that session is revoked, the session ends, and the caller gets 400
`refresh_token_already_used` (GoTrue's reuse detection, with no reuse grace interval).

Error bodies have GoTrue's shape, `{"code": <status>, "error_code": "...", "msg": "..."}`, which
supabase-py and supabase-js turn into AuthApiError / AuthWeakPasswordError. As behind Supabase's
Kong, every request must carry one of the project keys in `apikey` (caller.check_api_key, the
same check as /rest/v1's); the caller's identity is read from `Authorization` only.

Limits (docs/limits.md, "Auth"): bodies through gateway/limits.py (1 MiB, JSON nesting 100);
tokens over tokens.MAX_TOKEN_BYTES refused; user_metadata and app_metadata at most
MAX_METADATA_BYTES each, after merging, since both are copied into every access token; strings
holding NUL or an unpaired surrogate (which PostgreSQL cannot store) refused with 400/422;
GoTrue's per-IP rate limits for sign-up, sign-in/refresh and user updates, read from
supabase/config.toml `[auth.rate_limit]` (RateLimits).
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from app.stack.gateway.auth import disabled, mfa
from app.stack.gateway.auth.admin import (
    admin_create_user,
    admin_delete_user,
    admin_get_user,
    admin_list_users,
    admin_update_user,
)
from app.stack.gateway.auth.caller import check_api_key
from app.stack.gateway.auth.config import read_auth_settings, settings_of
from app.stack.gateway.auth.errors import AuthError
from app.stack.gateway.auth.ratelimit import read_rate_limits
from app.stack.gateway.auth.sessions import logout, signup, token
from app.stack.gateway.auth.store import user_json
from app.stack.gateway.auth.users import get_user, update_user
from app.stack.gateway.auth.validation import MAX_METADATA_BYTES
from app.stack.paths import project_root

__all__ = ["MAX_METADATA_BYTES", "AuthError", "read_rate_limits", "routes", "user_json"]


# ── public endpoints ───────────────────────────────────────────────────────────────────────────
async def health(request: Request) -> JSONResponse:
    check_api_key(request)
    return JSONResponse(
        {
            "version": "tokenmeter-local",
            "name": "GoTrue",
            "description": "GoTrue-compatible auth of the tokenmeter local stack",
        }
    )


async def settings(request: Request) -> JSONResponse:
    check_api_key(request)
    return JSONResponse(
        {
            "external": {
                "email": True,
                "phone": False,
                "anonymous_users": settings_of(request).anonymous_sign_ins,
            },
            "disable_signup": False,
            "mailer_autoconfirm": True,
            "phone_autoconfirm": False,
            "sms_provider": "",
            "saml_enabled": False,
        }
    )


# Every method Starlette routes; the catch-all below takes them all.
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _unrouted(api: list[BaseRoute]) -> Route:
    """A last route for any path and method the API does not serve: 405 when the path exists
    with other methods (with `Allow`), else 404, in GoTrue's error body rather than Starlette's
    text/plain, which the clients cannot parse (AuthUnknownError instead of AuthApiError). The
    messages are the text GoTrue's router (chi) answers with. As behind Kong, the project key
    is checked first."""

    async def unrouted(request: Request) -> Response:
        check_api_key(request)
        scope = dict(request.scope)
        allowed: set[str] = set()
        for route in api:
            if isinstance(route, Route) and route.matches(scope)[0] is not Match.NONE:
                allowed |= route.methods or set()
        if allowed:
            raise AuthError(
                405,
                "method_not_allowed",
                "405 method not allowed",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        raise AuthError(404, "not_found", "404 page not found")

    return Route("/{path:path}", unrouted, methods=_ALL_METHODS)


def routes() -> list[BaseRoute]:
    # Read once here so that a bad [auth] or [auth.rate_limit] stops the gateway at start, not at the
    # first sign-up; requests read it again (lazily) from the app's own paths.
    read_rate_limits(project_root() / "supabase" / "config.toml", os.environ)
    read_auth_settings(project_root() / "supabase" / "config.toml", os.environ)
    api: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/settings", settings, methods=["GET"]),
        Route("/signup", signup, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/user", get_user, methods=["GET"]),
        Route("/user", update_user, methods=["PUT"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/admin/users", admin_create_user, methods=["POST"]),
        Route("/admin/users", admin_list_users, methods=["GET"]),
        Route("/admin/users/{user_id}", admin_get_user, methods=["GET"]),
        Route("/admin/users/{user_id}", admin_update_user, methods=["PUT"]),
        Route("/admin/users/{user_id}", admin_delete_user, methods=["DELETE"]),
        Route("/factors", mfa.enroll, methods=["POST"]),
        Route("/factors/{factor_id}/challenge", mfa.challenge, methods=["POST"]),
        Route("/factors/{factor_id}/verify", mfa.verify, methods=["POST"]),
        Route("/factors/{factor_id}", mfa.unenroll, methods=["DELETE"]),
        Route("/admin/users/{user_id}/factors", mfa.admin_list_factors, methods=["GET"]),
        Route(
            "/admin/users/{user_id}/factors/{factor_id}",
            mfa.admin_delete_factor,
            methods=["DELETE"],
        ),
        *disabled.routes(),
    ]
    return [*api, _unrouted(api)]
