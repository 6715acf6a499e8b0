"""The `[auth]` settings of supabase/config.toml the Auth API honours, besides the rate limits
(ratelimit.py) and the signing keys (app/stack/signing_keys.py), with the Supabase CLI's defaults
when a key is absent:

    [auth]        site_url, additional_redirect_urls, enable_signup, enable_anonymous_sign_ins
    [auth.email]  enable_signup, enable_confirmations, double_confirm_changes,
                  secure_password_change, max_frequency, otp_length, otp_expiry,
                  template.<kind>.subject / content_path
    [auth.sms]    enable_signup (the phone provider), enable_confirmations,
                  test_otp (number → fixed code; phone.py)
    [inbucket]    where mail goes (app/stack/mail)

A second gateway started by a test overrides some with TOKENMETER_AUTH_* variables (ENV below).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request

from app.stack.mail.settings import MailSettings, read_mail_settings

ANONYMOUS_ENV = "TOKENMETER_AUTH_ENABLE_ANONYMOUS_SIGN_INS"
# Environment overrides: variable → (section, key).
ENV = {
    ANONYMOUS_ENV: ("auth", "enable_anonymous_sign_ins"),
    "TOKENMETER_AUTH_ENABLE_SIGNUP": ("auth", "enable_signup"),
    "TOKENMETER_AUTH_SITE_URL": ("auth", "site_url"),
    "TOKENMETER_AUTH_EMAIL_ENABLE_SIGNUP": ("auth.email", "enable_signup"),
    "TOKENMETER_AUTH_ENABLE_CONFIRMATIONS": ("auth.email", "enable_confirmations"),
    "TOKENMETER_AUTH_DOUBLE_CONFIRM_CHANGES": ("auth.email", "double_confirm_changes"),
    "TOKENMETER_AUTH_SECURE_PASSWORD_CHANGE": ("auth.email", "secure_password_change"),
    "TOKENMETER_AUTH_EMAIL_MAX_FREQUENCY": ("auth.email", "max_frequency"),
    "TOKENMETER_AUTH_EMAIL_OTP_EXPIRY": ("auth.email", "otp_expiry"),
    "TOKENMETER_AUTH_SMS_ENABLE_SIGNUP": ("auth.sms", "enable_signup"),
    "TOKENMETER_AUTH_SMS_ENABLE_CONFIRMATIONS": ("auth.sms", "enable_confirmations"),
}
# `[auth.sms.test_otp]` from the environment: "number=code,number=code".
TEST_OTP_ENV = "TOKENMETER_AUTH_SMS_TEST_OTP"
# The CLI's `[auth.email.template.<kind>]` names.
TEMPLATE_KINDS = (
    "invite",
    "confirmation",
    "recovery",
    "magic_link",
    "email_change",
    "reauthentication",
)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s|ms)")


@dataclass(frozen=True)
class Template:
    subject: str | None = None
    content: str | None = None  # the file content_path names, read at start


@dataclass(frozen=True)
class AuthSettings:
    # The CLI's defaults.
    anonymous_sign_ins: bool = False
    site_url: str = "http://127.0.0.1:3000"
    additional_redirect_urls: tuple[str, ...] = ()
    enable_signup: bool = True
    email_signup: bool = True
    confirmations: bool = False
    sms_signup: bool = False
    sms_confirmations: bool = False
    test_otp: dict[str, str] = field(default_factory=dict)
    double_confirm_changes: bool = True
    secure_password_change: bool = False
    max_frequency_seconds: float = 1.0
    otp_length: int = 6
    otp_expiry_seconds: int = 3600
    templates: dict[str, Template] = field(default_factory=dict)
    mail: MailSettings = field(default_factory=MailSettings)

    @property
    def autoconfirm(self) -> bool:
        """GoTrue's GOTRUE_MAILER_AUTOCONFIRM, which the CLI sets to !enable_confirmations."""
        return not self.confirmations


def _bool(section: str, key: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"[{section}] {key} must be true or false, not {value!r}")
    return value


def _int(section: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"[{section}] {key} must be an integer from {low} to {high}, not {value!r}"
        )
    return value


def parse_duration(value: Any, what: str) -> float:
    """A Go duration ("1s", "1m30s", "500ms") or a number of seconds, as seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and value and _DURATION_PART.sub("", value) == "":
        factor = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        return sum(float(n) * factor[u] for n, u in _DURATION_PART.findall(value))
    raise ValueError(f'{what} must be a duration such as "1s" or "1m30s", not {value!r}')


def _test_otp(table: Any) -> dict[str, str]:
    """`[auth.sms.test_otp]` keyed as GoTrue stores numbers (no "+", no spaces)."""
    if not isinstance(table, dict):
        raise ValueError("[auth.sms.test_otp] must map phone numbers to codes")
    out: dict[str, str] = {}
    for number, code in table.items():
        digits = str(number).replace(" ", "").removeprefix("+")
        if not digits.isdigit() or not isinstance(code, str) or not code.isdigit():
            raise ValueError(
                f"[auth.sms.test_otp] {number} must be a phone number with a code of digits"
            )
        out[digits] = code
    return out


def read_auth_settings(config_toml: Path, environ: Mapping[str, str]) -> AuthSettings:
    """The settings above from config.toml and the environment. Raises ValueError for a value
    of the wrong type or a template file that cannot be read."""
    try:
        config = tomllib.loads(config_toml.read_text())
    except FileNotFoundError:
        config = {}
    auth = dict(config.get("auth", {}))
    email = dict(auth.get("email", {}))
    sms = dict(auth.get("sms", {}))
    sections: dict[str, dict[str, Any]] = {"auth": auth, "auth.email": email, "auth.sms": sms}
    for variable, (section, key) in ENV.items():
        if variable in environ:
            sections[section][key] = environ[variable]
    test_otp = _test_otp(sms.get("test_otp", {}))
    if TEST_OTP_ENV in environ:
        test_otp = _test_otp(
            dict(p.split("=", 1) for p in environ[TEST_OTP_ENV].split(",") if "=" in p)
        )
    redirects = auth.get("additional_redirect_urls", [])
    if not isinstance(redirects, list) or not all(isinstance(u, str) for u in redirects):
        raise ValueError("[auth] additional_redirect_urls must be a list of strings")
    site_url = auth.get("site_url", AuthSettings.site_url)
    if not isinstance(site_url, str) or not site_url:
        raise ValueError(f"[auth] site_url must be a URL, not {site_url!r}")
    templates: dict[str, Template] = {}
    for kind, spec in (email.get("template") or {}).items():
        if kind not in TEMPLATE_KINDS or not isinstance(spec, dict):
            raise ValueError(
                f"[auth.email.template.{kind}] is not one of {', '.join(TEMPLATE_KINDS)}"
            )
        subject, path = spec.get("subject"), spec.get("content_path")
        content = None
        if path:
            # The CLI resolves content_path from the project root (the templates' own
            # example says "./supabase/templates/invite.html").
            try:
                content = (config_toml.parent.parent / str(path)).read_text()
            except OSError as exc:
                raise ValueError(f"[auth.email.template.{kind}] content_path: {exc}") from None
        templates[kind] = Template(
            subject=subject if isinstance(subject, str) else None, content=content
        )
    return AuthSettings(
        anonymous_sign_ins=_bool(
            "auth", "enable_anonymous_sign_ins", auth.get("enable_anonymous_sign_ins", False)
        ),
        site_url=site_url,
        additional_redirect_urls=tuple(redirects),
        enable_signup=_bool("auth", "enable_signup", auth.get("enable_signup", True)),
        email_signup=_bool("auth.email", "enable_signup", email.get("enable_signup", True)),
        confirmations=_bool(
            "auth.email", "enable_confirmations", email.get("enable_confirmations", False)
        ),
        sms_signup=_bool("auth.sms", "enable_signup", sms.get("enable_signup", False)),
        test_otp=test_otp,
        sms_confirmations=_bool(
            "auth.sms", "enable_confirmations", sms.get("enable_confirmations", False)
        ),
        double_confirm_changes=_bool(
            "auth.email", "double_confirm_changes", email.get("double_confirm_changes", True)
        ),
        secure_password_change=_bool(
            "auth.email", "secure_password_change", email.get("secure_password_change", False)
        ),
        max_frequency_seconds=parse_duration(
            email.get("max_frequency", "1s"), "[auth.email] max_frequency"
        ),
        otp_length=_int("auth.email", "otp_length", email.get("otp_length", 6), 6, 10),
        otp_expiry_seconds=_int(
            "auth.email", "otp_expiry", email.get("otp_expiry", 3600), 1, 86400
        ),
        templates=templates,
        mail=read_mail_settings(config_toml, environ),
    )


def settings_of(request: Request) -> AuthSettings:
    state = request.app.state
    found: AuthSettings | None = getattr(state, "auth_settings", None)
    if found is None:
        config_toml = state.config.paths.root / "supabase" / "config.toml"
        found = read_auth_settings(config_toml, os.environ)
        state.auth_settings = found
    return found
