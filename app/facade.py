"""What the admin facades (Keys, Upstreams, Plans, Subscriptions) share: one service_role
supabase-py client, built from the settings or handed in, closed with the facade."""

from __future__ import annotations

from typing import Self

from app.client import close_client, service_client
from app.config import Settings
from supabase import Client


class ServiceFacade:
    """Base of the sync admin facades. Server side only: the service_role key bypasses RLS."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def from_env(cls) -> Self:
        """Using SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (env, .env, local stack); raises
        ConfigError when they are missing. Use it as a context manager (or call close())."""
        return cls(service_client(Settings.load()))

    def close(self) -> None:
        close_client(self.client)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
