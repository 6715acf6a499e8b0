"""The `[auth]` settings of supabase/config.toml the Auth API honours, besides the rate limits
(ratelimit.py): today `enable_anonymous_sign_ins`."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

ANONYMOUS_ENV = "TOKENMETER_AUTH_ENABLE_ANONYMOUS_SIGN_INS"


@dataclass(frozen=True)
class AuthSettings:
    # The CLI's default is false, as on a new hosted project.
    anonymous_sign_ins: bool = False


def read_auth_settings(config_toml: Path, environ: Mapping[str, str]) -> AuthSettings:
    """`[auth]` of config.toml (the CLI's defaults when absent); TOKENMETER_AUTH_ENABLE_
    ANONYMOUS_SIGN_INS (`true`/`false`) overrides it, for a gateway started by a test. Raises
    ValueError for a value that is not a boolean."""
    try:
        section = tomllib.loads(config_toml.read_text()).get("auth", {})
    except FileNotFoundError:
        section = {}
    value = section.get("enable_anonymous_sign_ins", False)
    if ANONYMOUS_ENV in environ:
        value = {"true": True, "false": False}.get(
            environ[ANONYMOUS_ENV].lower(), environ[ANONYMOUS_ENV]
        )
    if not isinstance(value, bool):
        raise ValueError(f"[auth] enable_anonymous_sign_ins must be true or false, not {value!r}")
    return AuthSettings(anonymous_sign_ins=value)


def settings_of(request: Request) -> AuthSettings:
    state = request.app.state
    found: AuthSettings | None = getattr(state, "auth_settings", None)
    if found is None:
        config_toml = state.config.paths.root / "supabase" / "config.toml"
        found = read_auth_settings(config_toml, os.environ)
        state.auth_settings = found
    return found
