"""GoTrue's per-IP rate limits, read from supabase/config.toml `[auth.rate_limit]`
(docs/limits.md, "Auth")."""

from __future__ import annotations

import math
import os
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

from starlette.requests import Request

from app.stack.gateway.auth.errors import AuthError

# ── rate limits ────────────────────────────────────────────────────────────────────────────────
# GoTrue's token buckets: each holds RATE_LIMIT_BURST requests and refills at the configured
# number per RATE_LIMIT_WINDOW_SECONDS, per client IP. The CLI passes sign_in_sign_ups to GoTrue
# as GOTRUE_RATE_LIMIT_OTP (sign-ups and user updates, separate buckets) and token_refresh as
# GOTRUE_RATE_LIMIT_TOKEN_REFRESH (every /token grant, password sign-in included).
# anonymous_users (GOTRUE_RATE_LIMIT_ANONYMOUS_USERS) counts anonymous sign-ins per hour, and its
# bucket holds that many (GoTrue sets its burst to the rate).
RATE_LIMIT_BURST = 30
RATE_LIMIT_WINDOW_SECONDS = 300
# token_verifications (GOTRUE_RATE_LIMIT_VERIFY) bounds /verify. /otp, /recover and /resend each
# have a bucket of their own at the sign_in_sign_ups rate (GoTrue's Otp, Recover and Resend
# limiters all read GOTRUE_RATE_LIMIT_OTP).
RATE_LIMIT_DEFAULTS = {
    "sign_in_sign_ups": 30,
    "token_refresh": 150,
    "anonymous_users": 30,
    "token_verifications": 30,
}
_WINDOW_SECONDS = {"anonymous_users": 3600}
_BURST_IS_RATE = frozenset({"anonymous_users"})
RATE_LIMIT_ENV = "TOKENMETER_AUTH_RATE_LIMIT_"
_BUCKETS_PER_LIMIT = 10_000
_LIMIT_OF = {
    "sign_in_sign_ups": "sign_in_sign_ups",
    "user_updates": "sign_in_sign_ups",
    "otp": "sign_in_sign_ups",
    "recover": "sign_in_sign_ups",
    "resend": "sign_in_sign_ups",
    "token_refresh": "token_refresh",
    "anonymous_users": "anonymous_users",
    "verify": "token_verifications",
}
# Mails per hour for the whole project. The Supabase CLI passes [auth.rate_limit] email_sent to
# GoTrue only with a real SMTP server; with its mail catcher it sets GOTRUE_RATE_LIMIT_EMAIL_SENT
# to 360000. The local stack has only the catcher, so the same; TOKENMETER_AUTH_RATE_LIMIT_
# EMAIL_SENT sets another bound (a test uses it). As in GoTrue, it applies only while
# confirmations are on (GOTRUE_MAILER_AUTOCONFIRM off).
EMAIL_SENT_LOCAL = 360_000
EMAIL_SENT_ENV = RATE_LIMIT_ENV + "EMAIL_SENT"


def read_rate_limits(config_toml: Path, environ: Mapping[str, str]) -> dict[str, float]:
    """Requests per window (5 minutes; an hour for anonymous_users) per IP for each limit: supabase/config.toml `[auth.rate_limit]`
    (the CLI's defaults when absent), overridden by TOKENMETER_AUTH_RATE_LIMIT_<KEY>, which
    may also be `unlimited` (infinity: no limit). The test suite turns both off: it signs
    hundreds of users up from one address, some of them at once, and even a huge rate leaves
    GoTrue's burst of 30. Raises ValueError for anything else than a number >= 0."""
    try:
        section = tomllib.loads(config_toml.read_text()).get("auth", {}).get("rate_limit", {})
    except FileNotFoundError:
        section = {}
    out: dict[str, float] = {}
    for key, default in RATE_LIMIT_DEFAULTS.items():
        value = environ.get(RATE_LIMIT_ENV + key.upper(), section.get(key, default))
        if value == "unlimited" and RATE_LIMIT_ENV + key.upper() in environ:
            out[key] = math.inf
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"auth rate limit {key} must be a number, not {value!r}") from None
        if not math.isfinite(out[key]) or out[key] < 0:
            raise ValueError(f"auth rate limit {key} must be a finite number, at least 0")
    return out


class RateLimits:
    """Per-IP token buckets, one set per limit; at most _BUCKETS_PER_LIMIT addresses each."""

    def __init__(self, per_window: dict[str, float]) -> None:
        self.per_window = per_window
        self._buckets: dict[str, dict[str, tuple[float, float]]] = {k: {} for k in _LIMIT_OF}

    def check(self, request: Request, limit: str) -> None:
        """Take one request from the caller's bucket. Raises 429 over_request_rate_limit."""
        # The socket's peer: the gateway is not behind a proxy, and a forwarded-for header
        # would let any caller pick its own bucket.
        ip = request.client.host if request.client else ""
        key = _LIMIT_OF[limit]
        per_window = self.per_window[key]
        rate = per_window / _WINDOW_SECONDS.get(key, RATE_LIMIT_WINDOW_SECONDS)
        if rate == math.inf:
            return
        burst = float(per_window if key in _BURST_IS_RATE else RATE_LIMIT_BURST)
        buckets = self._buckets[limit]
        now = time.monotonic()
        tokens_left, since = buckets.pop(ip, (burst, now))
        tokens_left = min(burst, tokens_left + (now - since) * rate)
        if len(buckets) >= _BUCKETS_PER_LIMIT:
            # Oldest-touched first (re-inserted on every use); a dropped address starts full,
            # as it would after the hour GoTrue keeps a bucket.
            del buckets[next(iter(buckets))]
        if tokens_left < 1:
            buckets[ip] = (tokens_left, now)
            raise AuthError(429, "over_request_rate_limit", "Request rate limit reached")
        buckets[ip] = (tokens_left - 1, now)


def rate_limits_of(request: Request) -> RateLimits:
    state = request.app.state
    found: RateLimits | None = getattr(state, "auth_rate_limits", None)
    if found is None:
        config_toml = state.config.paths.root / "supabase" / "config.toml"
        found = RateLimits(read_rate_limits(config_toml, os.environ))
        state.auth_rate_limits = found
    return found


class EmailLimiter:
    """GoTrue's project-wide email limiter: a bucket of `per_hour` mails refilled at that rate."""

    def __init__(self, per_hour: float) -> None:
        self.per_hour = per_hour
        self._tokens = per_hour
        self._since = time.monotonic()

    def allow(self) -> bool:
        if self.per_hour == math.inf:
            return True
        now = time.monotonic()
        self._tokens = min(self.per_hour, self._tokens + (now - self._since) * self.per_hour / 3600)
        self._since = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def read_email_limit(environ: Mapping[str, str]) -> float:
    """Mails per hour: TOKENMETER_AUTH_RATE_LIMIT_EMAIL_SENT (a number, or `unlimited`), else
    EMAIL_SENT_LOCAL. Raises ValueError for anything else."""
    value = environ.get(EMAIL_SENT_ENV)
    if value is None:
        return float(EMAIL_SENT_LOCAL)
    if value == "unlimited":
        return math.inf
    try:
        per_hour = float(value)
    except ValueError:
        raise ValueError(f"{EMAIL_SENT_ENV} must be a number, not {value!r}") from None
    if not math.isfinite(per_hour) or per_hour < 0:
        raise ValueError(f"{EMAIL_SENT_ENV} must be a finite number, at least 0")
    return per_hour


def email_limiter_of(request: Request) -> EmailLimiter:
    state = request.app.state
    found: EmailLimiter | None = getattr(state, "auth_email_limiter", None)
    if found is None:
        found = EmailLimiter(read_email_limit(os.environ))
        state.auth_email_limiter = found
    return found
