"""The one place that builds supabase-py clients and turns their errors into ours.

Every call into Supabase goes through `call` / `acall`, so `postgrest.APIError`, auth errors and
network failures reach callers only as `app.errors` types (raised `from` the original).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from postgrest import APIError
from supabase_auth.errors import AuthError

from app.config import Settings
from app.errors import TokenmeterError, Unavailable, from_api_code
from supabase import AsyncClient, Client, acreate_client, create_client

T = TypeVar("T")


def service_client(settings: Settings) -> Client:
    """A sync client with the service role key (server side only: it bypasses RLS)."""
    return create_client(settings.supabase_url, settings.service_role_key)


async def async_service_client(settings: Settings) -> AsyncClient:
    return await acreate_client(settings.supabase_url, settings.service_role_key)


def close_client(client: Client) -> None:
    """Release the HTTP connections of a client we built (supabase-py has no Client.close)."""
    client.postgrest.aclose()  # sync despite its name: closes the REST httpx.Client
    client.auth.close()


def translate(exc: Exception) -> TokenmeterError:
    """Our error for anything supabase-py raised."""
    if isinstance(exc, APIError):
        return from_api_code(exc.message or exc.code or "error", exc.code, exc.details, exc.hint)
    if isinstance(exc, AuthError):
        code = getattr(exc, "code", None) or "auth_error"
        return from_api_code(code, None, exc.message)
    if isinstance(exc, httpx.HTTPError):
        return Unavailable("unavailable", detail=f"cannot reach the Supabase API: {exc}")
    raise exc


def call(operation: Callable[[], T]) -> T:
    """Run a supabase-py call; raises a TokenmeterError subclass on failure."""
    try:
        return operation()
    except (APIError, AuthError, httpx.HTTPError) as exc:
        raise translate(exc) from exc


async def acall(operation: Callable[[], Awaitable[T]]) -> T:
    try:
        return await operation()
    except (APIError, AuthError, httpx.HTTPError) as exc:
        raise translate(exc) from exc


def rpc_data(response: Any) -> Any:
    """The JSON an rpc returned (supabase-py wraps it in an APIResponse)."""
    return response.data


def json_value(value: Any) -> Any:
    """A value as JSON for an rpc: Decimal as its exact plain text (never a float), datetimes in
    ISO 8601, containers recursively."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def rpc_params(**kwargs: Any) -> dict[str, Any]:
    """Named rpc arguments as JSON; None means 'use the SQL default' and is left out."""
    return {k: json_value(v) for k, v in kwargs.items() if v is not None}
