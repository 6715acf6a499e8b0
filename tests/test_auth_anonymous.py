"""Anonymous sign-in on /auth/v1, through the real supabase-py, as GoTrue has it.

`POST /signup` with neither email nor phone makes an anonymous user (`is_anonymous` on the user
and in its tokens, no identity, empty app_metadata) when `[auth] enable_anonymous_sign_ins` is
on, as it is in this project's supabase/config.toml. The signup trigger gives it a balance like
any user; adding an email later (`PUT /user`) keeps the same user, and so the same balance.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from conftest import ROOT, random_email
from supabase_auth.errors import AuthApiError

from app.stack.gateway.auth.config import read_auth_settings
from app.stack.keys import StackKeys
from app.stack.manager import Stack
from supabase import Client, ClientOptions, create_client

PASSWORD = "correct-horse-9"


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture()
def client(new_client: Callable[[str], Client], anon_key: str) -> Client:
    return new_client(anon_key)


# ── sign-in ────────────────────────────────────────────────────────────────────────────────────
def test_sign_in_anonymously_returns_session_of_anonymous_user(client: Client):
    response = client.auth.sign_in_anonymously()
    assert response.session is not None and response.user is not None
    user = response.user
    assert user.is_anonymous is True
    assert not user.email and not user.phone
    assert user.identities == [] and user.app_metadata == {} and user.role == "authenticated"
    assert user.email_confirmed_at is None and user.last_sign_in_at is not None
    claims = _claims(response.session.access_token)
    assert claims["is_anonymous"] is True and claims["sub"] == user.id
    assert claims["role"] == "authenticated" and claims["email"] == ""
    assert [a["method"] for a in claims["amr"]] == ["anonymous"]  # type: ignore[union-attr]
    assert client.auth.get_user().user.id == user.id


def test_sign_in_anonymously_with_data_sets_user_metadata(client: Client):
    response = client.auth.sign_in_anonymously({"options": {"data": {"plan": "trial"}}})
    assert response.user.user_metadata == {"plan": "trial"}
    assert _claims(response.session.access_token)["user_metadata"] == {"plan": "trial"}


def test_sign_in_anonymously_refresh_keeps_is_anonymous(client: Client):
    first = client.auth.sign_in_anonymously().session
    refreshed = client.auth.refresh_session(first.refresh_token).session
    assert refreshed.refresh_token != first.refresh_token
    assert _claims(refreshed.access_token)["is_anonymous"] is True


def test_sign_in_anonymously_body_with_password_only_is_anonymous(api_url: str, anon_key: str):
    """As GoTrue: no email and no phone means an anonymous sign-up; the password is ignored."""
    answer = httpx.post(
        f"{api_url}/auth/v1/signup", headers={"apikey": anon_key}, json={"password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["is_anonymous"] is True


def test_settings_report_anonymous_users_enabled(api_url: str, anon_key: str):
    answer = httpx.get(f"{api_url}/auth/v1/settings", headers={"apikey": anon_key})
    assert answer.json()["external"]["anonymous_users"] is True


# ── the balance ────────────────────────────────────────────────────────────────────────────────
def test_sign_in_anonymously_user_gets_balance_with_signup_grant(
    client: Client, db: psycopg.Connection
):
    previous = db.execute("select signup_grant from public.billing_settings").fetchone()[0]  # type: ignore[index]
    db.execute("update public.billing_settings set signup_grant = '1.250000000001'")
    try:
        user = client.auth.sign_in_anonymously().user
    finally:
        db.execute("update public.billing_settings set signup_grant = %s", (previous,))
    grant = Decimal("1.250000000001")
    # Read as the anonymous user itself, through REST and its RLS policy.
    rows = client.table("user_balances").select("user_id, balance").execute().data
    assert [(r["user_id"], Decimal(str(r["balance"]))) for r in rows] == [(user.id, grant)]
    ledger = db.execute(
        "select kind, amount from public.ledger_entries where user_id = %s", (user.id,)
    ).fetchall()
    assert ledger == [("signup_grant", grant)]


# ── linking: the anonymous user becomes an email user ──────────────────────────────────────────
def test_update_user_email_and_password_converts_anonymous_user(
    client: Client, new_client: Callable[[str], Client], anon_key: str, db: psycopg.Connection
):
    anonymous = client.auth.sign_in_anonymously().user
    balance_before = db.execute(
        "select balance from public.user_balances where user_id = %s", (anonymous.id,)
    ).fetchone()
    email = random_email()
    linked = client.auth.update_user({"email": email, "password": PASSWORD}).user
    assert linked.id == anonymous.id
    assert linked.is_anonymous is False and linked.email == email
    assert linked.email_confirmed_at is not None
    assert linked.app_metadata == {"provider": "email", "providers": ["email"]}
    [identity] = linked.identities
    assert identity.provider == "email" and identity.id == linked.id
    assert identity.identity_data["email"] == email
    assert identity.identity_data["email_verified"] is True
    # The session's next token says so; the same user signs in with the new credentials.
    refreshed = client.auth.refresh_session().session
    assert _claims(refreshed.access_token)["is_anonymous"] is False
    other = new_client(anon_key)
    signed_in = other.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert signed_in.user.id == anonymous.id
    assert (
        db.execute(
            "select balance from public.user_balances where user_id = %s", (anonymous.id,)
        ).fetchone()
        == balance_before
    )
    assert db.execute(
        "select provider, provider_id, email from auth.identities where user_id = %s",
        (anonymous.id,),
    ).fetchall() == [("email", anonymous.id, email)]


def test_update_anonymous_user_password_without_email_returns_422(
    client: Client, db: psycopg.Connection
):
    user = client.auth.sign_in_anonymously().user
    with pytest.raises(AuthApiError) as caught:
        client.auth.update_user({"password": PASSWORD})
    assert caught.value.status == 422 and caught.value.code == "validation_failed"
    row = db.execute(
        "select is_anonymous, encrypted_password from auth.users where id = %s", (user.id,)
    ).fetchone()
    assert row == (True, "")


def test_update_anonymous_user_metadata_only_stays_anonymous(client: Client):
    client.auth.sign_in_anonymously()
    user = client.auth.update_user({"data": {"nickname": "visitor"}}).user
    assert user.is_anonymous is True and user.user_metadata == {"nickname": "visitor"}


def test_update_anonymous_user_to_registered_email_returns_email_exists(
    client: Client, new_client: Callable[[str], Client], anon_key: str, db: psycopg.Connection
):
    email = random_email()
    new_client(anon_key).auth.sign_up({"email": email, "password": PASSWORD})
    user = client.auth.sign_in_anonymously().user
    with pytest.raises(AuthApiError) as caught:
        client.auth.update_user({"email": email})
    assert caught.value.status == 422 and caught.value.code == "email_exists"
    row = db.execute("select is_anonymous, email from auth.users where id = %s", (user.id,))
    assert row.fetchone() == (True, None)


# ── the setting ────────────────────────────────────────────────────────────────────────────────
def test_read_auth_settings_from_config_toml_and_env(tmp_path: Path):
    assert read_auth_settings(ROOT / "supabase" / "config.toml", {}).anonymous_sign_ins is True
    assert read_auth_settings(tmp_path / "missing.toml", {}).anonymous_sign_ins is False
    config = tmp_path / "config.toml"
    config.write_text("[auth]\nenable_anonymous_sign_ins = false\n")
    assert read_auth_settings(config, {}).anonymous_sign_ins is False
    env = {"TOKENMETER_AUTH_ENABLE_ANONYMOUS_SIGN_INS": "true"}
    assert read_auth_settings(config, env).anonymous_sign_ins is True
    for bad in ('"yes"', "1"):
        config.write_text(f"[auth]\nenable_anonymous_sign_ins = {bad}\n")
        with pytest.raises(ValueError):
            read_auth_settings(config, {})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _gateway(env: dict[str, str]) -> Iterator[str]:
    """A second gateway on the test stack's database with `env` added; yields its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.stack.gateway"],
        cwd=ROOT,
        env={**os.environ, "TOKENMETER_API_PORT": str(port), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_sign_in_anonymously_when_disabled_raises_422_and_writes_nothing(
    stack: Stack, keys: StackKeys, db: psycopg.Connection
):
    count = "select count(*) from auth.users where is_anonymous"
    off_env = {"TOKENMETER_AUTH_ENABLE_ANONYMOUS_SIGN_INS": "false"}
    with _gateway(off_env) as url, httpx.Client(timeout=30) as http:
        before = db.execute(count).fetchone()
        options = ClientOptions(auto_refresh_token=False, httpx_client=http)
        off = create_client(url, keys.anon_key, options)
        with pytest.raises(AuthApiError) as caught:
            off.auth.sign_in_anonymously()
        settings = http.get(f"{url}/auth/v1/settings", headers={"apikey": keys.anon_key})
        # Email sign-ups are not affected.
        signed_up = off.auth.sign_up({"email": random_email(), "password": PASSWORD})
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        422,
        "anonymous_provider_disabled",
        "Anonymous sign-ins are disabled",
    )
    assert db.execute(count).fetchone() == before
    assert settings.json()["external"]["anonymous_users"] is False
    assert signed_up.user is not None and signed_up.user.is_anonymous is False


def test_sign_in_anonymously_over_hourly_rate_limit_returns_429(stack: Stack, keys: StackKeys):
    """GoTrue's anonymous_users limit: that many per hour per IP, all at once at most; email
    sign-ups have their own bucket."""
    env = {"TOKENMETER_AUTH_RATE_LIMIT_ANONYMOUS_USERS": "2"}
    with (
        _gateway(env) as url,
        httpx.Client(base_url=url, headers={"apikey": keys.anon_key}) as http,
    ):
        answers = [http.post("/auth/v1/signup", json={}).status_code for _ in range(3)]
        refused = http.post("/auth/v1/signup", json={})
        email = http.post("/auth/v1/signup", json={"email": random_email(), "password": PASSWORD})
    assert answers == [200, 200, 429]
    assert refused.json() == {
        "code": 429,
        "error_code": "over_request_rate_limit",
        "msg": "Request rate limit reached",
    }
    assert email.status_code == 200, email.text
