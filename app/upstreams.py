"""Upstreams of the metered endpoint: `Upstreams` sets (creates or updates by name) and lists
the OpenAI-compatible endpoints plans route to. Plain writes to public.upstreams, which only
service_role may read or write (20251130000007); the table's CHECKs are the last guard, the
checks here give the clear message first."""

from __future__ import annotations

import re

from app.client import call
from app.errors import InvalidInput
from app.facade import ServiceFacade
from app.models import Upstream

# The same rules as the table's CHECK constraints.
NAME_FORMAT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
BASE_URL_FORMAT = re.compile(r"^https?://\S+$")
API_KEY_ENV_FORMAT = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


def _invalid(field: str, detail: str) -> InvalidInput:
    return InvalidInput("invalid_argument", code="invalid_argument", field=field, detail=detail)


class Upstreams(ServiceFacade):
    """Methods take keyword arguments and raise `app.errors` types: InvalidInput (bad name,
    URL or variable name; nothing written), PermissionDenied, Unavailable."""

    def set(self, *, name: str, base_url: str, api_key_env: str | None = None) -> Upstream:
        """Create the upstream NAME or update its base URL (and, when given, the NAME of the
        environment variable holding its API key: the key itself is never stored). A new
        upstream is active and speaks OpenAI chat completions."""
        if not NAME_FORMAT.match(name):
            raise _invalid(
                "name",
                f"name must be 1-63 lowercase letters, digits, '_', '.' or '-', got {name!r}",
            )
        if not BASE_URL_FORMAT.match(base_url) or len(base_url) > 2048:
            raise _invalid(
                "base_url", f"base_url must be an http(s):// URL without spaces, got {base_url!r}"
            )
        row = {"name": name, "base_url": base_url}
        if api_key_env is not None:
            if not API_KEY_ENV_FORMAT.match(api_key_env):
                # Also what a pasted secret (sk-…) looks like: refused, never stored.
                raise _invalid(
                    "api_key_env",
                    "api_key_env must be the NAME of an environment variable (A-Z, 0-9, _), "
                    "e.g. OPENAI_API_KEY, never the key itself",
                )
            row["api_key_env"] = api_key_env
        data = call(
            lambda: self.client.table("upstreams").upsert(row, on_conflict="name").execute()
        ).data
        return Upstream.model_validate(data[0])

    def list(self) -> list[Upstream]:
        """Every upstream, by name."""
        data = call(lambda: self.client.table("upstreams").select("*").order("name").execute()).data
        return [Upstream.model_validate(row) for row in data]


__all__ = ["Upstreams"]
