"""Email flows of the local Auth API (issue 14 §2), with the real supabase-py client: each mail is
read from the local mail catcher's Mailpit API (tests/inbox.py) and its link followed or its code
entered, as a developer testing against `tokenmeter stack` would.

The test stack runs supabase/config.toml (confirmations off, double_confirm_changes on); flows
that need another configuration (confirmations on, secure password change, small limits) run on
a second gateway over the same database (tests/auth_gateway.py), as GoTrue's own suite runs one
container per configuration.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import inbox
import jwt
import psycopg
import pytest
from auth_gateway import auth_gateway, free_port
from conftest import random_email
from supabase_auth.errors import AuthApiError

from app.stack.keys import StackKeys
from supabase import Client, ClientOptions, create_client

PASSWORD = "correct-horse-9"
SITE_URL = "http://127.0.0.1:3000"
CONFIRMATIONS = {
    "TOKENMETER_AUTH_ENABLE_CONFIRMATIONS": "true",
    # The confirmation gateway's tests send a second mail right after the first.
    "TOKENMETER_AUTH_EMAIL_MAX_FREQUENCY": "0s",
}


def _fragment(location: str) -> dict[str, str]:
    return {
        k: v[0] for k, v in parse_qs(urlsplit(location).fragment, keep_blank_values=True).items()
    }


def _follow(link: str) -> httpx.Response:
    """Open the link in a mail as a browser would, stopping at GoTrue's redirect."""
    answer = httpx.get(link, follow_redirects=False, timeout=30)
    assert answer.status_code == 303, answer.text
    return answer


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture()
def client(new_client: Callable[[str], Client], anon_key: str) -> Client:
    return new_client(anon_key)


@pytest.fixture()
def admin(new_client: Callable[[str], Client], service_key: str) -> Client:
    return new_client(service_key)


@pytest.fixture(scope="module")
def confirming(stack: object) -> Iterator[str]:
    """A gateway with `[auth.email] enable_confirmations = true`."""
    with auth_gateway(CONFIRMATIONS) as url:
        yield url


@pytest.fixture()
def client_on(keys: StackKeys) -> Iterator[Callable[[str], Client]]:
    """supabase-py clients (anon key) on another gateway, closed after the test."""
    opened: list[httpx.Client] = []

    def build(url: str) -> Client:
        http = httpx.Client(timeout=60)
        opened.append(http)
        options = ClientOptions(auto_refresh_token=False, httpx_client=http)
        return create_client(url, keys.anon_key, options)

    yield build
    for http in opened:
        http.close()


# ── magic link and code (/otp, /verify) ────────────────────────────────────────────────────────
def test_sign_in_with_otp_magic_link_from_mail_signs_in(client: Client, api_url: str):
    email = random_email()
    client.auth.sign_in_with_otp({"email": email})
    mail = inbox.wait_for(email)[0]
    assert mail["Subject"] == "Your sign-in link"
    assert mail["From"]["Address"] == "admin@email.com"
    link = inbox.link_in(mail)
    assert link.startswith(f"{api_url}/auth/v1/verify?token=") and "type=magiclink" in link
    location = _follow(link).headers["location"]
    assert location.startswith(SITE_URL + "#")
    fragment = _fragment(location)
    assert fragment["type"] == "magiclink" and fragment["token_type"] == "bearer"
    assert "sb" in fragment and int(fragment["expires_in"]) == 3600
    client.auth.set_session(fragment["access_token"], fragment["refresh_token"])
    user = client.auth.get_user().user
    assert user.email == email and user.email_confirmed_at is not None
    assert [entry["method"] for entry in _claims(fragment["access_token"])["amr"]] == ["otp"]


def test_sign_in_with_otp_code_from_mail_returns_session_once(client: Client):
    email = random_email()
    client.auth.sign_in_with_otp({"email": email})
    code = inbox.code_in(inbox.wait_for(email)[0])
    assert len(code) == 6
    response = client.auth.verify_otp({"email": email, "token": code, "type": "email"})
    assert response.session is not None and response.user.email == email
    with pytest.raises(AuthApiError) as caught:
        client.auth.verify_otp({"email": email, "token": code, "type": "email"})
    assert (caught.value.status, caught.value.code) == (403, "otp_expired")
    assert caught.value.message == "Token has expired or is invalid"


def test_sign_in_with_otp_wrong_code_returns_403_otp_expired(client: Client):
    email = random_email()
    client.auth.sign_in_with_otp({"email": email})
    code = inbox.code_in(inbox.wait_for(email)[0])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    with pytest.raises(AuthApiError) as caught:
        client.auth.verify_otp({"email": email, "token": wrong, "type": "magiclink"})
    assert (caught.value.status, caught.value.code) == (403, "otp_expired")


def test_sign_in_with_otp_existing_user_keeps_account(client: Client, admin: Client):
    email = random_email()
    created = admin.auth.admin.create_user(
        {"email": email, "password": PASSWORD, "email_confirm": True}
    ).user
    client.auth.sign_in_with_otp({"email": email})
    code = inbox.code_in(inbox.wait_for(email)[0])
    response = client.auth.verify_otp({"email": email, "token": code, "type": "magiclink"})
    assert response.user.id == created.id


def test_sign_in_with_otp_should_create_user_false_unknown_email_returns_422(
    client: Client,
):
    email = random_email()
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_otp({"email": email, "options": {"should_create_user": False}})
    assert (caught.value.status, caught.value.code) == (422, "otp_disabled")
    assert caught.value.message == "Signups not allowed for otp"
    assert inbox.messages_to(email) == []


def test_verify_link_used_twice_redirects_with_otp_expired_error(client: Client):
    email = random_email()
    client.auth.sign_in_with_otp({"email": email})
    link = inbox.link_in(inbox.wait_for(email)[0])
    _follow(link)
    fragment = _fragment(_follow(link).headers["location"])
    assert fragment["error"] == "access_denied" and fragment["error_code"] == "otp_expired"
    assert fragment["error_description"] == "Email link is invalid or has expired"


def test_sign_in_with_otp_redirect_to_allowed_or_falls_back_to_site_url(client: Client):
    allowed, other = random_email(), random_email()
    client.auth.sign_in_with_otp(
        {"email": allowed, "options": {"email_redirect_to": f"{SITE_URL}/welcome"}}
    )
    client.auth.sign_in_with_otp(
        {"email": other, "options": {"email_redirect_to": "https://evil.example/steal"}}
    )
    kept = _follow(inbox.link_in(inbox.wait_for(allowed)[0])).headers["location"]
    dropped = _follow(inbox.link_in(inbox.wait_for(other)[0])).headers["location"]
    assert kept.startswith(f"{SITE_URL}/welcome#access_token=")
    assert dropped.startswith(f"{SITE_URL}#access_token=")


def test_verify_with_token_hash_and_email_returns_400(api_url: str, anon_key: str):
    answer = httpx.post(
        f"{api_url}/auth/v1/verify",
        headers={"apikey": anon_key},
        json={"type": "magiclink", "token_hash": "ab" * 28, "email": random_email()},
    )
    assert answer.status_code == 400
    assert answer.json()["msg"] == "Only the token_hash and type should be provided"


def test_verify_unknown_token_hash_returns_403_otp_expired(api_url: str, anon_key: str):
    answer = httpx.post(
        f"{api_url}/auth/v1/verify",
        headers={"apikey": anon_key},
        json={"type": "signup", "token_hash": "ab" * 28},
    )
    assert answer.status_code == 403
    assert answer.json()["error_code"] == "otp_expired"


def test_verify_otp_sms_unknown_phone_returns_403_and_bad_phone_400(client: Client):
    with pytest.raises(AuthApiError) as unknown:
        client.auth.verify_otp({"phone": "15555550123", "token": "123456", "type": "sms"})
    with pytest.raises(AuthApiError) as malformed:
        client.auth.verify_otp({"phone": "1555-invalid", "token": "123456", "type": "sms"})
    assert (unknown.value.status, unknown.value.message) == (403, "Token has expired or is invalid")
    assert (malformed.value.status, malformed.value.message) == (
        400,
        "Invalid phone number format (E.164 required)",
    )


def test_sign_in_with_otp_phone_returns_400_phone_provider_disabled(client: Client):
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_otp({"phone": "+15555550123"})
    assert (caught.value.status, caught.value.code) == (400, "phone_provider_disabled")


# ── password recovery (/recover) ───────────────────────────────────────────────────────────────
def test_reset_password_link_then_new_password_signs_in(
    client: Client, new_client: Callable[[str], Client], anon_key: str
):
    email = random_email()
    client.auth.sign_up({"email": email, "password": PASSWORD})
    client.auth.reset_password_for_email(email, {"redirect_to": f"{SITE_URL}/reset"})
    mail = inbox.wait_for(email)[0]
    assert mail["Subject"] == "Reset your password"
    location = _follow(inbox.link_in(mail)).headers["location"]
    assert location.startswith(f"{SITE_URL}/reset#")
    fragment = _fragment(location)
    assert fragment["type"] == "recovery"
    recovering = new_client(anon_key)
    recovering.auth.set_session(fragment["access_token"], fragment["refresh_token"])
    recovering.auth.update_user({"password": "a-brand-new-one"})
    fresh = new_client(anon_key)
    signed_in = fresh.auth.sign_in_with_password({"email": email, "password": "a-brand-new-one"})
    assert signed_in.session is not None
    with pytest.raises(AuthApiError):
        fresh.auth.sign_in_with_password({"email": email, "password": PASSWORD})


def test_reset_password_unknown_email_answers_ok_and_sends_nothing(client: Client):
    email = random_email()
    client.auth.reset_password_for_email(email)
    assert inbox.messages_to(email) == []


def test_reset_password_twice_within_max_frequency_returns_429(client: Client):
    email = random_email()
    client.auth.sign_up({"email": email, "password": PASSWORD})
    client.auth.reset_password_for_email(email)
    with pytest.raises(AuthApiError) as caught:
        client.auth.reset_password_for_email(email)
    assert (caught.value.status, caught.value.code) == (429, "over_email_send_rate_limit")
    assert caught.value.message.startswith("For security purposes, you can only request this")
    assert len(inbox.messages_to(email)) == 1


def test_recover_with_mail_catcher_down_returns_500_and_keeps_user_unchanged(
    stack: object, client_on: Callable[[str], Client], db: psycopg.Connection
):
    email = random_email()
    down = {"TOKENMETER_INBUCKET_PORT": str(free_port())}
    with auth_gateway(down) as url:
        client = client_on(url)
        client.auth.sign_up({"email": email, "password": PASSWORD})
        with pytest.raises(AuthApiError) as caught:
            client.auth.reset_password_for_email(email)
    assert (caught.value.status, caught.value.message) == (500, "Error sending recovery email")
    row = db.execute(
        "select recovery_token, recovery_sent_at from auth.users where email = %s", (email,)
    ).fetchone()
    assert row == ("", None)


# ── confirmations on (sign-up, resend, email changes) ──────────────────────────────────────────
def test_sign_up_with_confirmations_returns_user_without_session_until_link_followed(
    confirming: str, client_on: Callable[[str], Client], db: psycopg.Connection
):
    client = client_on(confirming)
    email = random_email()
    response = client.auth.sign_up(
        {"email": email, "password": PASSWORD, "options": {"data": {"plan": "free"}}}
    )
    assert response.session is None and response.user is not None
    assert response.user.email_confirmed_at is None
    assert response.user.confirmation_sent_at is not None
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert (caught.value.status, caught.value.code) == (400, "email_not_confirmed")
    mail = inbox.wait_for(email)[0]
    assert mail["Subject"] == "Confirm your email address"
    fragment = _fragment(_follow(inbox.link_in(mail)).headers["location"])
    assert fragment["type"] == "signup"
    signed_in = client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert signed_in.user.email_confirmed_at is not None
    assert signed_in.user.user_metadata == {"plan": "free", "email_verified": True}
    verified = db.execute(
        "select identity_data->>'email_verified' from auth.identities where user_id = %s",
        (signed_in.user.id,),
    ).fetchone()
    assert verified == ("true",)


def test_sign_up_with_confirmations_code_verifies_with_type_signup(
    confirming: str, client_on: Callable[[str], Client]
):
    client = client_on(confirming)
    email = random_email()
    client.auth.sign_up({"email": email, "password": PASSWORD})
    code = inbox.code_in(inbox.wait_for(email)[0])
    response = client.auth.verify_otp({"email": email, "token": code, "type": "signup"})
    assert response.session is not None and response.user.email_confirmed_at is not None


def test_settings_report_mailer_autoconfirm_per_config(
    confirming: str, api_url: str, keys: StackKeys
):
    headers = {"apikey": keys.anon_key}
    on = httpx.get(f"{confirming}/auth/v1/settings", headers=headers).json()
    off = httpx.get(f"{api_url}/auth/v1/settings", headers=headers).json()
    assert (on["mailer_autoconfirm"], off["mailer_autoconfirm"]) == (False, True)


def test_resend_signup_sends_new_code_and_old_one_fails(
    confirming: str, client_on: Callable[[str], Client]
):
    client = client_on(confirming)
    email = random_email()
    client.auth.sign_up({"email": email, "password": PASSWORD})
    first = inbox.code_in(inbox.wait_for(email)[0])
    client.auth.resend({"type": "signup", "email": email})
    second = inbox.code_in(inbox.wait_for(email, count=2)[0])
    if first != second:  # one in a million: the same code twice
        with pytest.raises(AuthApiError):
            client.auth.verify_otp({"email": email, "token": first, "type": "signup"})
    assert client.auth.verify_otp({"email": email, "token": second, "type": "signup"}).session


def test_resend_unknown_email_answers_ok_and_sends_nothing(
    confirming: str, client_on: Callable[[str], Client]
):
    client = client_on(confirming)
    email = random_email()
    client.auth.resend({"type": "signup", "email": email})
    client.auth.resend({"type": "email_change", "email": email})
    assert inbox.messages_to(email) == []


def test_resend_bad_type_or_phone_returns_400(client: Client, api_url: str, anon_key: str):
    answer = httpx.post(
        f"{api_url}/auth/v1/resend",
        headers={"apikey": anon_key},
        json={"type": "recovery", "email": random_email()},
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "validation_failed"
    with pytest.raises(AuthApiError) as caught:
        client.auth.resend({"type": "sms", "phone": "+15555550123"})
    assert (caught.value.status, caught.value.code) == (400, "phone_provider_disabled")


def test_update_user_email_double_confirm_needs_both_links(
    confirming: str, client_on: Callable[[str], Client]
):
    client = client_on(confirming)
    old, new = random_email(), random_email()
    client.auth.sign_up({"email": old, "password": PASSWORD})
    code = inbox.code_in(inbox.wait_for(old)[0])
    client.auth.verify_otp({"email": old, "token": code, "type": "signup"})
    pending = client.auth.update_user({"email": new}).user
    assert pending.email == old and pending.new_email == new
    to_new = inbox.wait_for(new)[0]
    to_old = inbox.wait_for(old, count=2)[0]
    assert to_new["Subject"] == to_old["Subject"] == "Confirm your new email address"
    first = _fragment(_follow(inbox.link_in(to_new)).headers["location"])
    assert first["message"].startswith("Confirmation link accepted")
    assert client.auth.get_user().user.email == old
    second = _fragment(_follow(inbox.link_in(to_old)).headers["location"])
    assert second["type"] == "email_change"
    changed = client.auth.get_user().user
    assert changed.email == new and changed.new_email is None
    assert [i.identity_data["email"] for i in changed.identities] == [new]


def test_email_change_to_address_taken_meanwhile_returns_422_email_exists(
    client: Client, admin: Client
):
    new = random_email()
    client.auth.sign_up({"email": random_email(), "password": PASSWORD})
    client.auth.update_user({"email": new})
    code = inbox.code_in(inbox.wait_for(new)[0])
    admin.auth.admin.create_user({"email": new, "password": PASSWORD, "email_confirm": True})
    with pytest.raises(AuthApiError) as caught:
        client.auth.verify_otp({"email": new, "token": code, "type": "email_change"})
    assert (caught.value.status, caught.value.code) == (422, "email_exists")


def test_email_sent_over_project_limit_returns_429_and_creates_no_user(
    stack: object, client_on: Callable[[str], Client], db: psycopg.Connection
):
    env = {**CONFIRMATIONS, "TOKENMETER_AUTH_RATE_LIMIT_EMAIL_SENT": "2"}
    emails = [random_email() for _ in range(3)]
    with auth_gateway(env) as url:
        client = client_on(url)
        client.auth.sign_up({"email": emails[0], "password": PASSWORD})
        client.auth.sign_up({"email": emails[1], "password": PASSWORD})
        with pytest.raises(AuthApiError) as caught:
            client.auth.sign_up({"email": emails[2], "password": PASSWORD})
    assert (caught.value.status, caught.value.code) == (429, "over_email_send_rate_limit")
    assert caught.value.message == "email rate limit exceeded"
    count = db.execute("select count(*) from auth.users where email = %s", (emails[2],))
    assert count.fetchone() == (0,)


# ── reauthentication ───────────────────────────────────────────────────────────────────────────
def test_password_change_on_old_session_needs_reauthentication_nonce(
    stack: object, client_on: Callable[[str], Client], admin_dsn: str
):
    with auth_gateway({"TOKENMETER_AUTH_SECURE_PASSWORD_CHANGE": "true"}) as url:
        client = client_on(url)
        email = random_email()
        session = client.auth.sign_up({"email": email, "password": PASSWORD}).session
        # GoTrue asks for the nonce once the session is a day old.
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                "update auth.sessions set created_at = now() - interval '25 hours' where id = %s",
                (_claims(session.access_token)["session_id"],),
            )
        with pytest.raises(AuthApiError) as needed:
            client.auth.update_user({"password": "another-secret"})
        client.auth.reauthenticate()
        mail = inbox.wait_for(email)[0]
        assert mail["Subject"].endswith("is your verification code")
        nonce = inbox.code_in({"Text": "code: " + mail["Subject"].split()[0]})
        with pytest.raises(AuthApiError) as wrong:
            client.auth.update_user(
                {"password": "another-secret", "nonce": f"{(int(nonce) + 1) % 10**6:06d}"}
            )
        client.auth.update_user({"password": "another-secret", "nonce": nonce})
        with pytest.raises(AuthApiError) as reused:
            client.auth.update_user({"password": "third-secret", "nonce": nonce})
    assert (needed.value.status, needed.value.code) == (400, "reauthentication_needed")
    assert (wrong.value.status, wrong.value.code) == (422, "reauthentication_not_valid")
    assert (reused.value.status, reused.value.code) == (422, "reauthentication_not_valid")


def test_reauthenticate_anonymous_user_without_email_returns_400(client: Client):
    client.auth.sign_in_anonymously()
    with pytest.raises(AuthApiError) as caught:
        client.auth.reauthenticate()
    assert (caught.value.status, caught.value.code) == (400, "validation_failed")
    assert caught.value.message == (
        "Reauthentication requires the user to have an email or a phone number"
    )


def test_update_user_same_password_returns_422(client: Client):
    client.auth.sign_up({"email": random_email(), "password": PASSWORD})
    with pytest.raises(AuthApiError) as caught:
        client.auth.update_user({"password": PASSWORD})
    assert (caught.value.status, caught.value.code) == (422, "same_password")


# ── invites and generated links (admin) ────────────────────────────────────────────────────────
def test_invite_user_by_email_link_confirms_and_signs_in(admin: Client, client: Client):
    email = random_email()
    invited = admin.auth.admin.invite_user_by_email(
        email, {"data": {"team": "core"}, "redirect_to": f"{SITE_URL}/welcome"}
    ).user
    assert invited.invited_at is not None and invited.email_confirmed_at is None
    assert invited.user_metadata == {"team": "core"}
    mail = inbox.wait_for(email)[0]
    assert mail["Subject"] == "You've been invited"
    location = _follow(inbox.link_in(mail)).headers["location"]
    assert location.startswith(f"{SITE_URL}/welcome#")
    fragment = _fragment(location)
    assert fragment["type"] == "invite"
    client.auth.set_session(fragment["access_token"], fragment["refresh_token"])
    user = client.auth.get_user().user
    assert user.id == invited.id and user.email_confirmed_at is not None
    client.auth.update_user({"password": "chosen-by-the-user"})


def test_invite_confirmed_email_returns_422_email_exists(admin: Client):
    email = random_email()
    admin.auth.admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    with pytest.raises(AuthApiError) as caught:
        admin.auth.admin.invite_user_by_email(email)
    assert (caught.value.status, caught.value.code) == (422, "email_exists")


def test_invite_with_anon_key_returns_403(client: Client, api_url: str, anon_key: str):
    answer = httpx.post(
        f"{api_url}/auth/v1/invite",
        headers={"apikey": anon_key, "Authorization": f"Bearer {anon_key}"},
        json={"email": random_email()},
    )
    assert answer.status_code == 403 and answer.json()["error_code"] == "not_admin"


def test_generate_link_signup_returns_link_and_sends_no_mail(admin: Client):
    email = random_email()
    response = admin.auth.admin.generate_link(
        {
            "type": "signup",
            "email": email,
            "password": PASSWORD,
            "options": {"data": {"status": "alpha"}, "redirect_to": f"{SITE_URL}/welcome"},
        }
    )
    props = response.properties
    assert response.user.user_metadata == {"status": "alpha"}
    assert response.user.email_confirmed_at is None
    assert props.verification_type == "signup" and props.redirect_to == f"{SITE_URL}/welcome"
    assert len(props.email_otp) == 6 and "type=signup" in props.action_link
    assert inbox.messages_to(email) == []
    fragment = _fragment(_follow(props.action_link).headers["location"])
    assert fragment["type"] == "signup"
    confirmed = admin.auth.admin.get_user_by_id(response.user.id).user
    assert confirmed.email_confirmed_at is not None


def test_generate_link_magiclink_email_otp_verifies(admin: Client, client: Client):
    email = random_email()
    admin.auth.admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    props = admin.auth.admin.generate_link({"type": "magiclink", "email": email}).properties
    response = client.auth.verify_otp({"email": email, "token": props.email_otp, "type": "email"})
    assert response.session is not None and response.user.email == email
    assert props.hashed_token and props.verification_type == "magiclink"


def test_generate_link_recovery_unknown_email_returns_404(admin: Client):
    with pytest.raises(AuthApiError) as caught:
        admin.auth.admin.generate_link({"type": "recovery", "email": random_email()})
    assert (caught.value.status, caught.value.code) == (404, "user_not_found")


def test_generate_link_email_change_links_change_the_email(admin: Client):
    old, new = random_email(), random_email()
    user = admin.auth.admin.create_user(
        {"email": old, "password": PASSWORD, "email_confirm": True}
    ).user
    current = admin.auth.admin.generate_link(
        {"type": "email_change_current", "email": old, "new_email": new}
    )
    assert current.user.new_email == new
    location = _follow(current.properties.action_link).headers["location"]
    assert _fragment(location)["type"] == "email_change"
    assert admin.auth.admin.get_user_by_id(user.id).user.email == new


def test_generate_link_bad_type_returns_400(api_url: str, service_key: str):
    answer = httpx.post(
        f"{api_url}/auth/v1/admin/generate_link",
        headers={"apikey": service_key, "Authorization": f"Bearer {service_key}"},
        json={"type": "teleport", "email": f"{uuid.uuid4().hex}@example.com"},
    )
    assert answer.status_code == 400
    assert answer.json()["msg"] == "Invalid email action link type requested: teleport"
