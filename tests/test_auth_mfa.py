"""MFA with TOTP on /auth/v1, through the real supabase-py, as GoTrue has it: enroll, challenge,
verify (the session becomes aal2 with `totp` in its amr), unenroll, and the admin factors API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import psycopg
import pyotp
import pytest
from conftest import random_email
from supabase_auth.errors import AuthApiError

from supabase import Client

PASSWORD = "correct-horse-9"


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def _methods(client: Client) -> list[str]:
    session = client.auth.get_session()
    assert session is not None
    return [a["method"] for a in _claims(session.access_token)["amr"]]  # type: ignore[union-attr]


def _aal(client: Client) -> object:
    session = client.auth.get_session()
    assert session is not None
    return _claims(session.access_token)["aal"]


@pytest.fixture()
def user(new_client: Callable[[str], Client], anon_key: str) -> tuple[Client, str]:
    """A signed-up, signed-in client and its email."""
    client = new_client(anon_key)
    email = random_email()
    client.auth.sign_up({"email": email, "password": PASSWORD})
    return client, email


def _enroll(client: Client, name: str = "phone app") -> tuple[str, str]:
    """(factor id, secret) of a new TOTP factor."""
    enrolled = client.auth.mfa.enroll({"factor_type": "totp", "friendly_name": name})
    assert enrolled.totp is not None
    return enrolled.id, enrolled.totp.secret


def _verify(client: Client, factor_id: str, code: str) -> None:
    challenge = client.auth.mfa.challenge({"factor_id": factor_id})
    client.auth.mfa.verify({"factor_id": factor_id, "challenge_id": challenge.id, "code": code})


def _code_error(call: Callable[[], object]) -> AuthApiError:
    with pytest.raises(AuthApiError) as caught:
        call()
    return caught.value


# ── enroll ─────────────────────────────────────────────────────────────────────────────────────
def test_enroll_totp_returns_secret_and_otpauth_uri_of_unverified_factor(user: tuple[Client, str]):
    client, email = user
    enrolled = client.auth.mfa.enroll(
        {"factor_type": "totp", "friendly_name": "phone app", "issuer": "tokenmeter"}
    )
    assert enrolled.type == "totp" and enrolled.totp is not None
    uri = urlsplit(enrolled.totp.uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert uri.path == f"/tokenmeter:{email.replace('@', '%40')}"
    query = parse_qs(uri.query)
    assert query["secret"] == [enrolled.totp.secret] and query["issuer"] == ["tokenmeter"]
    assert len(enrolled.totp.secret) == 32  # base32 of 160 bits
    factors = client.auth.mfa.list_factors()
    assert [(f.id, f.status, f.friendly_name) for f in factors.all] == [
        (enrolled.id, "unverified", "phone app")
    ]
    assert factors.totp == []  # only verified factors count


def test_enroll_duplicate_friendly_name_returns_422_conflict(user: tuple[Client, str]):
    client, _ = user
    _enroll(client, "same")
    error = _code_error(lambda: _enroll(client, "same"))
    assert (error.status, error.code) == (422, "mfa_factor_name_conflict")
    assert len(client.auth.mfa.list_factors().all) == 1


def test_enroll_phone_factor_returns_422_disabled(user: tuple[Client, str]):
    client, _ = user
    error = _code_error(
        lambda: client.auth.mfa.enroll({"factor_type": "phone", "phone": "+15555550100"})
    )
    assert (error.status, error.code) == (422, "mfa_phone_enroll_not_enabled")


def test_enroll_without_session_token_returns_401(api_url: str, anon_key: str):
    answer = httpx.post(
        f"{api_url}/auth/v1/factors", json={"factor_type": "totp"}, headers={"apikey": anon_key}
    )
    assert answer.status_code == 401 and answer.json()["error_code"] == "no_authorization"


# ── challenge and verify ───────────────────────────────────────────────────────────────────────
def test_verify_valid_code_raises_session_to_aal2_with_totp_amr(user: tuple[Client, str]):
    client, _ = user
    factor_id, secret = _enroll(client)
    before = client.auth.mfa.get_authenticator_assurance_level()
    assert (before.current_level, before.next_level) == ("aal1", "aal1")
    old_refresh = client.auth.get_session().refresh_token  # type: ignore[union-attr]
    _verify(client, factor_id, pyotp.TOTP(secret).now())
    assert _aal(client) == "aal2" and _methods(client) == ["totp", "password"]
    level = client.auth.mfa.get_authenticator_assurance_level()
    assert (level.current_level, level.next_level) == ("aal2", "aal2")
    assert [f.status for f in client.auth.mfa.list_factors().totp] == ["verified"]
    assert client.auth.get_session().refresh_token != old_refresh  # type: ignore[union-attr]
    # The session keeps aal2 through refreshes.
    client.auth.refresh_session()
    assert _aal(client) == "aal2" and _methods(client) == ["totp", "password"]


def test_verify_code_of_previous_step_accepted(user: tuple[Client, str]):
    client, _ = user
    factor_id, secret = _enroll(client)
    _verify(client, factor_id, pyotp.TOTP(secret).at(time.time() - 30))
    assert _aal(client) == "aal2"


def test_verify_code_two_steps_old_returns_422_and_changes_nothing(user: tuple[Client, str]):
    client, _ = user
    factor_id, secret = _enroll(client)
    stale = pyotp.TOTP(secret).at(time.time() - 60)
    error = _code_error(lambda: _verify(client, factor_id, stale))
    assert (error.status, error.code) == (422, "mfa_verification_failed")
    assert _aal(client) == "aal1"
    assert [f.status for f in client.auth.mfa.list_factors().all] == ["unverified"]


def test_verify_same_challenge_twice_returns_404(user: tuple[Client, str]):
    client, _ = user
    factor_id, secret = _enroll(client)
    challenge = client.auth.mfa.challenge({"factor_id": factor_id})
    params = {"factor_id": factor_id, "challenge_id": challenge.id, "code": ""}
    params["code"] = pyotp.TOTP(secret).now()
    client.auth.mfa.verify(params)  # type: ignore[arg-type]
    error = _code_error(lambda: client.auth.mfa.verify(params))  # type: ignore[arg-type]
    assert (error.status, error.code) == (404, "mfa_factor_not_found")


def test_verify_expired_challenge_returns_422_expired(user: tuple[Client, str], admin_dsn: str):
    client, _ = user
    factor_id, secret = _enroll(client)
    challenge = client.auth.mfa.challenge({"factor_id": factor_id})
    assert challenge.expires_at - time.time() == pytest.approx(300, abs=5)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            "update auth.mfa_challenges set created_at = now() - interval '301 seconds' "
            "where id = %s",
            (challenge.id,),
        )
    error = _code_error(
        lambda: client.auth.mfa.verify(
            {"factor_id": factor_id, "challenge_id": challenge.id, "code": pyotp.TOTP(secret).now()}
        )
    )
    assert (error.status, error.code) == (422, "mfa_challenge_expired")
    assert _aal(client) == "aal1"


def test_challenge_factor_of_another_user_returns_404(
    user: tuple[Client, str], new_client: Callable[[str], Client], anon_key: str
):
    client, _ = user
    factor_id, _secret = _enroll(client)
    other = new_client(anon_key)
    other.auth.sign_up({"email": random_email(), "password": PASSWORD})
    error = _code_error(lambda: other.auth.mfa.challenge({"factor_id": factor_id}))
    assert (error.status, error.code) == (404, "mfa_factor_not_found")


def test_verify_wrong_codes_bounded_per_factor_returns_429(user: tuple[Client, str]):
    client, _ = user
    factor_id, secret = _enroll(client)
    challenge = client.auth.mfa.challenge({"factor_id": factor_id})
    wrong = f"{(int(pyotp.TOTP(secret).now()) + 500_000) % 1_000_000:06d}"
    params = {"factor_id": factor_id, "challenge_id": challenge.id, "code": wrong}
    statuses = []
    for _ in range(16):
        with pytest.raises(AuthApiError) as caught:
            client.auth.mfa.verify(params)  # type: ignore[arg-type]
        statuses.append(caught.value.status)
    assert statuses == [422] * 15 + [429]
    # Even the right code waits for the minute to pass.
    params["code"] = pyotp.TOTP(secret).now()
    error = _code_error(lambda: client.auth.mfa.verify(params))  # type: ignore[arg-type]
    assert error.status == 429 and _aal(client) == "aal1"


# ── sessions after a factor is verified ────────────────────────────────────────────────────────
def test_sign_in_with_verified_factor_is_aal1_with_next_level_aal2(
    user: tuple[Client, str], new_client: Callable[[str], Client], anon_key: str
):
    client, email = user
    factor_id, secret = _enroll(client)
    _verify(client, factor_id, pyotp.TOTP(secret).now())
    again = new_client(anon_key)
    again.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    level = again.auth.mfa.get_authenticator_assurance_level()
    assert (level.current_level, level.next_level) == ("aal1", "aal2")
    # An aal1 session may neither add a factor nor remove a verified one.
    error = _code_error(lambda: _enroll(again, "second"))
    assert (error.status, error.code) == (422, "insufficient_aal")
    error = _code_error(lambda: again.auth.mfa.unenroll({"factor_id": factor_id}))
    assert (error.status, error.code) == (422, "insufficient_aal")
    assert [f.id for f in again.auth.mfa.list_factors().totp] == [factor_id]
    # Its own challenge and verify raise it to aal2.
    _verify(again, factor_id, pyotp.TOTP(secret).now())
    assert _aal(again) == "aal2"


def test_verify_new_factor_ends_other_aal1_sessions(
    user: tuple[Client, str], new_client: Callable[[str], Client], anon_key: str
):
    client, email = user
    elsewhere = new_client(anon_key)
    elsewhere.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    factor_id, secret = _enroll(client)
    _verify(client, factor_id, pyotp.TOTP(secret).now())
    error = _code_error(lambda: elsewhere.auth.get_user())
    assert error.code == "session_not_found"


def test_unenroll_from_aal2_session_removes_factor_and_drops_to_aal1(user: tuple[Client, str]):
    client, _ = user
    factor_id, secret = _enroll(client)
    _verify(client, factor_id, pyotp.TOTP(secret).now())
    assert client.auth.mfa.unenroll({"factor_id": factor_id}).id == factor_id
    assert client.auth.mfa.list_factors().all == []
    assert "factors" not in client.auth.get_user().user.model_dump(exclude_none=True)  # type: ignore[union-attr]
    client.auth.refresh_session()
    assert _aal(client) == "aal1" and _methods(client) == ["password"]


def test_unenroll_unverified_factor_from_aal1_session_succeeds(user: tuple[Client, str]):
    client, _ = user
    factor_id, _secret = _enroll(client)
    assert client.auth.mfa.unenroll({"factor_id": factor_id}).id == factor_id
    assert client.auth.mfa.list_factors().all == []


# ── admin ──────────────────────────────────────────────────────────────────────────────────────
def test_admin_lists_and_deletes_user_factors(user: tuple[Client, str], service: Client):
    client, _ = user
    user_id = client.auth.get_user().user.id  # type: ignore[union-attr]
    factor_id, secret = _enroll(client)
    _verify(client, factor_id, pyotp.TOTP(secret).now())
    listed = service.auth.admin.mfa.list_factors({"user_id": user_id})
    assert [(f.id, f.status, f.factor_type) for f in listed] == [(factor_id, "verified", "totp")]
    deleted = service.auth.admin.mfa.delete_factor({"user_id": user_id, "id": factor_id})
    assert deleted.id == factor_id
    assert service.auth.admin.mfa.list_factors({"user_id": user_id}) == []
    client.auth.refresh_session()
    assert _aal(client) == "aal1"
    error = _code_error(
        lambda: service.auth.admin.mfa.delete_factor({"user_id": user_id, "id": factor_id})
    )
    assert (error.status, error.code) == (404, "mfa_factor_not_found")


def test_admin_factors_need_admin_token(user: tuple[Client, str], api_url: str, anon_key: str):
    client, _ = user
    session = client.auth.get_session()
    assert session is not None
    answer = httpx.get(
        f"{api_url}/auth/v1/admin/users/{session.user.id}/factors",
        headers={"apikey": anon_key, "Authorization": f"Bearer {session.access_token}"},
    )
    assert answer.status_code == 403 and answer.json()["error_code"] == "not_admin"


# ── schema ─────────────────────────────────────────────────────────────────────────────────────
def test_bootstrap_on_database_from_before_mfa_adds_mfa_tables(admin_dsn: str):
    """A stack bootstrapped before MFA existed is bootstrapped again at start (postgres.py looks
    for auth.mfa_amr_claims); bootstrap.sql must then add the tables and the session columns."""
    from psycopg.conninfo import make_conninfo

    from app.stack.postgres import BOOTSTRAP_SQL

    full = BOOTSTRAP_SQL.read_text()
    before_mfa = full[: full.index("-- MFA (TOTP)")]
    name = f"scratch_mfa_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner postgres')
    try:
        scratch = make_conninfo(admin_dsn, dbname=name)
        # Its own connection: the cut-off file ends inside its `set role supabase_auth_admin`.
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute(before_mfa.encode())
        with psycopg.connect(scratch, autocommit=True) as conn:
            assert conn.execute("select to_regclass('auth.mfa_amr_claims')").fetchone() == (None,)
            conn.execute(full.encode())
            conn.execute(full.encode())  # and again: idempotent
            tables = conn.execute(
                "select count(*) from pg_tables where schemaname = 'auth' and tablename in "
                "('mfa_factors', 'mfa_challenges', 'mfa_amr_claims')"
            ).fetchone()
            assert tables == (3,)
            columns = conn.execute(
                "select array_agg(column_name::text order by column_name) from "
                "information_schema.columns where table_schema = 'auth' "
                "and table_name = 'sessions' and column_name in ('aal', 'factor_id')"
            ).fetchone()
            assert columns == (["aal", "factor_id"],)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'drop database "{name}" with (force)')
