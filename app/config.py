"""Settings: one typed object read from the environment, `.env`, then the local stack's env file.

Precedence: real environment variables, then `.env` in the project root, then
`.tokenmeter/stack.env` (written by `tokenmeter stack start`), so with no configuration at all
the app talks to the local stack. Secrets are never printed: `Settings.__repr__` masks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dotenv import dotenv_values

from app.stack.paths import StackPaths


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the message names it and where to set it."""


@dataclass(frozen=True)
class Settings:
    supabase_url: str
    service_role_key: str = field(repr=False)
    anon_key: str | None = field(default=None, repr=False)
    db_url: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls) -> Settings:
        """Read settings; raises ConfigError when SUPABASE_URL or the service key is missing."""
        paths = StackPaths.from_env()
        values: dict[str, str | None] = {}
        for source in (paths.env_file, paths.root / ".env"):
            if source.is_file():
                values.update({k: v for k, v in dotenv_values(source).items() if v})
        values.update({k: v for k, v in os.environ.items() if k.startswith("SUPABASE_") and v})
        url = values.get("SUPABASE_URL")
        key = values.get("SUPABASE_SERVICE_ROLE_KEY")
        missing = [
            name
            for name, value in (("SUPABASE_URL", url), ("SUPABASE_SERVICE_ROLE_KEY", key))
            if not value
        ]
        if missing:
            raise ConfigError(
                f"missing {', '.join(missing)}: set it in the environment or .env "
                "(see .env.example), or start the local stack with `tokenmeter stack start`"
            )
        assert url is not None and key is not None
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"SUPABASE_URL must start with http:// or https://, got {url!r}")
        return cls(
            supabase_url=url.rstrip("/"),
            service_role_key=key,
            anon_key=values.get("SUPABASE_ANON_KEY"),
            db_url=values.get("SUPABASE_DB_URL"),
        )
