"""`[inbucket]` of supabase/config.toml, as the Supabase CLI reads it (the section keeps the
name of the catcher the CLI ran before Mailpit)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENABLED_ENV = "TOKENMETER_INBUCKET_ENABLED"


@dataclass(frozen=True)
class MailSettings:
    # The CLI's defaults: off when the section or the key is absent; GoTrue's sender is
    # `admin_email` with `sender_name` as its display name.
    enabled: bool = False
    admin_email: str = "admin@email.com"
    sender_name: str = "Admin"


def read_mail_settings(config_toml: Path, environ: Mapping[str, str] | None = None) -> MailSettings:
    """The `[inbucket]` settings; TOKENMETER_INBUCKET_ENABLED (`true`/`false`) overrides
    `enabled`. Raises ValueError for a value of the wrong type."""
    environ = os.environ if environ is None else environ
    try:
        section = tomllib.loads(config_toml.read_text()).get("inbucket", {})
    except FileNotFoundError:
        section = {}
    enabled = section.get("enabled", False)
    if ENABLED_ENV in environ:
        enabled = {"true": True, "false": False}.get(
            environ[ENABLED_ENV].lower(), environ[ENABLED_ENV]
        )
    if not isinstance(enabled, bool):
        raise ValueError(f"[inbucket] enabled must be true or false, not {enabled!r}")
    admin_email = section.get("admin_email", MailSettings.admin_email)
    sender_name = section.get("sender_name", MailSettings.sender_name)
    if not isinstance(admin_email, str) or "@" not in admin_email:
        raise ValueError(f"[inbucket] admin_email must be an email address, not {admin_email!r}")
    if not isinstance(sender_name, str):
        raise ValueError(f"[inbucket] sender_name must be a string, not {sender_name!r}")
    return MailSettings(enabled=enabled, admin_email=admin_email, sender_name=sender_name)
