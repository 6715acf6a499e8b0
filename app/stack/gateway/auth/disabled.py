"""Endpoints of GoTrue features the local stack has switched off, answered as GoTrue answers them
when they are off in its configuration (as in the Supabase CLI's defaults): SAML single sign-on
and the OAuth 2.1 server. The clients then get GoTrue's own 404 and error code (supabase-py's
`sign_in_with_sso` raises "SAML 2.0 is disabled"), not an unknown route. Both need outside
services or a setup the project does not use; README says so."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.stack.gateway.auth.caller import check_api_key, require_admin
from app.stack.gateway.auth.errors import AuthError

_SAML = (404, "saml_provider_disabled", "SAML 2.0 is disabled")
_OAUTH_SERVER = (404, "feature_disabled", "OAuth server is disabled")


def _off(answer: tuple[int, str, str], *, admin: bool) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        # GoTrue's admin group checks the caller before the feature's own middleware.
        if admin:
            require_admin(request)
        else:
            check_api_key(request)
        raise AuthError(*answer)

    return endpoint


def routes() -> list[BaseRoute]:
    saml, saml_admin = _off(_SAML, admin=False), _off(_SAML, admin=True)
    oauth_admin = _off(_OAUTH_SERVER, admin=True)
    return [
        Route("/sso", saml, methods=["POST"]),
        Route("/sso/saml/metadata", saml, methods=["GET"]),
        Route("/sso/saml/acs", saml, methods=["POST"]),
        Route("/admin/sso/providers", saml_admin, methods=["GET", "POST"]),
        Route("/admin/sso/providers/{idp_id}", saml_admin, methods=["GET", "PUT", "DELETE"]),
        Route("/admin/oauth/clients", oauth_admin, methods=["GET", "POST"]),
        Route("/admin/oauth/clients/{client_id}", oauth_admin, methods=["GET", "PUT", "DELETE"]),
        Route("/admin/oauth/clients/{client_id}/regenerate_secret", oauth_admin, methods=["POST"]),
    ]
