"""GoTrue-compatible /auth/v1: email/password and anonymous sign-up, sign-in, sessions, the
signed-in user, identities, admin users.

One module per endpoint group, as GoTrue keeps one file per group:

    errors.py      AuthError, GoTrue's error body
    validation.py  request bodies, emails, passwords, metadata
    ratelimit.py   GoTrue's per-IP rate limits
    caller.py      the project key (Kong's check) and the caller's bearer token
    store.py       auth.users rows and their JSON
    sessions.py    sign-up, /token grants, sessions and refresh tokens, logout, access tokens
                   (HS256, or ES256/RS256 with the signing keys of app/stack/signing_keys.py)
    users.py       the signed-in user: GET/PUT /user (email change by mail, reauthentication)
    admin.py       the admin users API (service_role and supabase_admin tokens)
    mfa.py         MFA with TOTP: /factors enroll, challenge, verify, unenroll; admin factors
    otp.py         email links and codes: /otp, /verify, /recover, /resend, /reauthenticate
    invite.py      /invite and /admin/generate_link
    links.py       the one-time tokens on auth.users, and what verifying one changes
    mailer.py      the mails (templates, links, limits), sent into the local mail catcher
    disabled.py    GoTrue features switched off here (SAML SSO, OAuth server): GoTrue's 404s
    config.py      the [auth], [auth.email] and [inbucket] settings of config.toml honoured

Users are real rows in `auth.users` (so triggers on it fire as on Supabase), sessions live in
`auth.sessions` and refresh tokens in `auth.refresh_tokens`. Behaviour follows the local Supabase
CLI stack: with `[auth.email] enable_confirmations = false` sign-up confirms the email at once
and signs in; with it on, sign-up mails a confirmation and answers the user without a session.

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

from app.stack import signing_keys
from app.stack.gateway import tokens
from app.stack.gateway.auth import disabled, invite, mfa, otp
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
    config = settings_of(request)
    return JSONResponse(
        {
            "external": {
                "email": config.email_signup,
                "phone": config.sms_signup,
                "anonymous_users": config.anonymous_sign_ins,
            },
            "disable_signup": not config.enable_signup,
            "mailer_autoconfirm": config.autoconfirm,
            "phone_autoconfirm": not config.sms_confirmations,
            "sms_provider": "",
            "saml_enabled": False,
        }
    )


async def jwks(request: Request) -> JSONResponse:
    """GET /.well-known/jwks.json: the public keys of `[auth] signing_keys_path` (GoTrue's
    WellKnownJwks; HS256 keys are never listed, so without signing keys `{"keys": []}`). Public,
    like Supabase's: verifiers fetch it without a project key."""
    keys = tokens.key_set_of(request.app)
    return JSONResponse(
        {"keys": keys.public_jwks}, headers={"Cache-Control": "public, max-age=600"}
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
    config_toml = project_root() / "supabase" / "config.toml"
    read_rate_limits(config_toml, os.environ)
    read_auth_settings(config_toml, os.environ)
    signing_keys.load(signing_keys.configured_path(config_toml))
    api: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/settings", settings, methods=["GET"]),
        Route("/signup", signup, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/user", get_user, methods=["GET"]),
        Route("/user", update_user, methods=["PUT"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/otp", otp.otp, methods=["POST"]),
        Route("/verify", otp.verify_get, methods=["GET"]),
        Route("/verify", otp.verify_post, methods=["POST"]),
        Route("/recover", otp.recover, methods=["POST"]),
        Route("/resend", otp.resend, methods=["POST"]),
        Route("/reauthenticate", otp.reauthenticate, methods=["GET"]),
        Route("/invite", invite.invite, methods=["POST"]),
        Route("/admin/generate_link", invite.generate_link, methods=["POST"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
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
