"""The mail GoTrue sends, into the local mail catcher (app/stack/mail): one-time tokens, links,
templates, and the limits on sending.

A mail carries a 6-digit code (`[auth.email] otp_length`) and a link to
`/auth/v1/verify?token=<token_hash>&type=<type>&redirect_to=<url>`; the user row keeps
token_hash = sha224(email + code) (GoTrue's crypto.GenerateTokenHash) in the column of its kind
(confirmation_token, recovery_token, email_change_token_new/_current, reauthentication_token)
and the time it was sent. Either the code (with the email) or the hash verifies, once, within
`[auth.email] otp_expiry` seconds.

Templates: GoTrue's default subjects and bodies, each body followed by the code (GoTrue's
defaults show the link only; the code is added so the code flow works without a custom
template), or `[auth.email.template.<kind>]` subject/content_path, where `{{ .Name }}` fields
(ConfirmationURL, Token, TokenHash, SiteURL, RedirectTo, Email, NewEmail, Data.<key>) are
filled in, HTML-escaped; Go template logic ({{ if }}, {{ range }}) is not evaluated.
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from starlette.requests import Request

from app.stack.gateway.auth.config import AuthSettings, settings_of
from app.stack.gateway.auth.errors import AuthError
from app.stack.gateway.auth.ratelimit import email_limiter_of
from app.stack.mail import client as mail_client
from app.stack.mail import process as mail_process

# GoTrue's mail types (mailer.*Verification) and the template each uses.
SIGNUP, INVITE, MAGICLINK, RECOVERY = "signup", "invite", "magiclink", "recovery"
EMAIL_CHANGE, REAUTHENTICATION = "email_change", "reauthentication"
_TEMPLATE_OF = {
    SIGNUP: "confirmation",
    INVITE: "invite",
    MAGICLINK: "magic_link",
    RECOVERY: "recovery",
    EMAIL_CHANGE: "email_change",
    REAUTHENTICATION: "reauthentication",
}
_SUBJECTS = {
    "invite": "You've been invited",
    "confirmation": "Confirm your email address",
    "recovery": "Reset your password",
    "magic_link": "Your sign-in link",
    "email_change": "Confirm your new email address",
    "reauthentication": "{{ .Token }} is your verification code",
}
_CODE = "<p>Or enter this code: {{ .Token }}</p>"
_BODIES = {
    "invite": "<h2>You've been invited</h2>\n\n<p>You've been invited to create an account. "
    'Follow the link below to accept.</p>\n<p><a href="{{ .ConfirmationURL }}">Accept '
    "invitation</a></p>\n" + _CODE,
    "confirmation": "<h2>Confirm your email address</h2>\n\n<p>Follow the link below to "
    "confirm this email address and finish signing up.</p>\n<p><a "
    'href="{{ .ConfirmationURL }}">Confirm email address</a></p>\n' + _CODE,
    "recovery": "<h2>Reset your password</h2>\n\n<p>We received a request to reset your "
    'password. Follow the link below to choose a new one.</p>\n<p><a href="{{ .ConfirmationURL '
    '}}">Reset password</a></p>\n' + _CODE + "\n<p>If you didn't request this, you can safely "
    "ignore this email.</p>",
    "magic_link": "<h2>Your sign-in link</h2>\n\n<p>Follow the link below to sign in. This "
    'link expires shortly and can only be used once.</p>\n<p><a href="{{ .ConfirmationURL }}">'
    "Sign in</a></p>\n" + _CODE,
    "email_change": "<h2>Confirm your new email address</h2>\n\n<p>Follow the link below to "
    'confirm {{ .NewEmail }} as your new email address.</p>\n<p><a href="{{ .ConfirmationURL '
    '}}">Confirm new email address</a></p>\n' + _CODE + "\n<p>If you didn't request this "
    "change, you can safely ignore this email.</p>",
    "reauthentication": "<h2>Your verification code</h2>\n\n<p>Use the code below to verify "
    "your identity. It expires shortly.</p>\n<p>{{ .Token }}</p>",
}
_FIELD = re.compile(r"\{\{\s*\.([A-Za-z]+)(?:\.([A-Za-z0-9_]+))?\s*\}\}")


# ── tokens ─────────────────────────────────────────────────────────────────────────────────────
def new_otp(length: int) -> str:
    """A code of `length` decimal digits, uniformly random (leading zeros kept)."""
    return f"{secrets.randbelow(10**length):0{length}d}"


def token_hash(email_or_phone: str, otp: str) -> str:
    """GoTrue's crypto.GenerateTokenHash: hex SHA-224 of the address followed by the code."""
    return hashlib.sha224((email_or_phone + otp).encode()).hexdigest()


def expired(sent_at: datetime | None, settings: AuthSettings) -> bool:
    return sent_at is None or datetime.now(UTC) > sent_at + timedelta(
        seconds=settings.otp_expiry_seconds
    )


def check_frequency(sent_at: datetime | None, settings: AuthSettings) -> None:
    """GoTrue's validateSentWithinFrequencyLimit: 429 over_email_send_rate_limit when the last
    mail of this kind to this user went out less than `[auth.email] max_frequency` ago."""
    if sent_at is None:
        return
    wait = sent_at + timedelta(seconds=settings.max_frequency_seconds) - datetime.now(UTC)
    if wait.total_seconds() > 0:
        raise AuthError(
            429,
            "over_email_send_rate_limit",
            "For security purposes, you can only request this after "
            f"{int(wait.total_seconds())} seconds.",
        )


# ── redirects ──────────────────────────────────────────────────────────────────────────────────
def _glob(pattern: str) -> re.Pattern[str]:
    """GoTrue's URI allow list globs (gobwas/glob with '.' and '/' as separators)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^./]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^./]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def redirect_allowed(settings: AuthSettings, url: str) -> bool:
    """GoTrue's IsRedirectURLValid: the site's scheme and host (any port on a loopback host),
    a loopback IP, or a match of `[auth] additional_redirect_urls`."""
    if not url:
        return False
    try:
        base, target = urlsplit(settings.site_url), urlsplit(url)
        base_port, target_port = base.port, target.port
    except ValueError:
        return False
    host = target.hostname or ""
    loopback = host in ("localhost", "127.0.0.1", "::1")
    if (
        base.hostname == target.hostname
        and base.scheme == target.scheme
        and (base_port == target_port or loopback)
    ):
        return True
    if host.isdigit():
        return False
    if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host) and ("." in host or ":" in host):
        return host.startswith("127.") or host == "::1"
    without_fragment = url.split("#", 1)[0]
    return any(_glob(p).fullmatch(without_fragment) for p in settings.additional_redirect_urls)


def referrer(request: Request, settings: AuthSettings, given: str | None = None) -> str:
    """GoTrue's GetReferrer: `given`, else the `redirect_to` header or query parameter, else
    the Referer header, when allowed; else `[auth] site_url`."""
    for candidate in (
        given,
        request.headers.get("redirect_to"),
        request.query_params.get("redirect_to"),
        request.headers.get("referer"),
    ):
        if candidate and redirect_allowed(settings, candidate):
            return candidate
    return settings.site_url


def external_url(request: Request) -> str:
    """The Auth API's public URL, GoTrue's API_EXTERNAL_URL as the CLI sets it."""
    return f"{request.app.state.config.paths.api_url}/auth/v1"


def action_link(request: Request, token: str, kind: str, redirect_to: str) -> str:
    """GoTrue's email action link: /verify?token=&type=&redirect_to= (the redirect encoded
    only when it holds & = or #, as GoTrue's encodeRedirectURL)."""
    redirect = quote(redirect_to, safe="") if re.search(r"[&=#]", redirect_to) else redirect_to
    query = urlencode({"token": token, "type": kind})
    return f"{external_url(request)}/verify?{query}&redirect_to={redirect}"


# ── sending ────────────────────────────────────────────────────────────────────────────────────
def _render(text: str, data: dict[str, Any], *, escape: bool) -> str:
    def field_value(match: re.Match[str]) -> str:
        value: Any = data.get(match.group(1), "")
        if match.group(2) is not None:
            value = value.get(match.group(2), "") if isinstance(value, dict) else ""
        text_value = "" if value is None else str(value)
        return html.escape(text_value) if escape else text_value

    return _FIELD.sub(field_value, text)


async def send(
    request: Request,
    kind: str,
    *,
    to: str,
    user: dict[str, Any],
    otp: str,
    hashed: str = "",
    redirect_to: str = "",
    new_email: str = "",
) -> None:
    """Render the `kind` mail for `user` and hand it to the mail catcher. Raises AuthError 429
    over_email_send_rate_limit (the project-wide limiter), 500 when the catcher does not take
    it (GoTrue's "Error sending … email")."""
    settings = settings_of(request)
    if settings.confirmations and not email_limiter_of(request).allow():
        raise AuthError(429, "over_email_send_rate_limit", "email rate limit exceeded")
    template_name = _TEMPLATE_OF[kind]
    custom = settings.templates.get(template_name)
    data: dict[str, Any] = {
        "SiteURL": settings.site_url,
        "Email": user.get("email") or "",
        "NewEmail": new_email or user.get("email_change") or "",
        "Token": otp,
        "TokenHash": hashed,
        "RedirectTo": redirect_to,
        "Data": user.get("raw_user_meta_data") or {},
        "ConfirmationURL": action_link(request, hashed, kind, redirect_to) if hashed else "",
    }
    subject = (custom.subject if custom and custom.subject else None) or _SUBJECTS[template_name]
    body = (custom.content if custom and custom.content else None) or _BODIES[template_name]
    try:
        await mail_client.send(
            catcher_url=mail_process.url(request.app.state.config.paths),
            settings=settings.mail,
            to=to,
            subject=" ".join(_render(subject, data, escape=False).split()),
            body_html=_render(body, data, escape=True),
        )
    except mail_client.MailNotSent:
        what = {
            SIGNUP: "confirmation",
            INVITE: "invite",
            MAGICLINK: "magic link",
            RECOVERY: "recovery",
            EMAIL_CHANGE: "email change",
            REAUTHENTICATION: "reauthentication",
        }[kind]
        raise AuthError(500, "unexpected_failure", f"Error sending {what} email") from None
