"""Phone auth of the local Auth API without an SMS provider, as the Supabase CLI offers it:
`[auth.sms] enable_signup` turns the phone provider on and `[auth.sms.test_otp]` maps numbers to
fixed codes GoTrue accepts without sending anything. The test stack keeps the provider off (the
CLI's default; tests/test_auth_email.py checks its errors); these flows run on second gateways
with it on (tests/auth_gateway.py), with the real supabase-py client.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
from auth_gateway import auth_gateway
from supabase_auth.errors import AuthApiError

from app.stack.keys import StackKeys
from supabase import Client, ClientOptions, create_client

PASSWORD = "correct-horse-9"
CODE = "424242"
# Numbers of this run's `[auth.sms.test_otp]`: the database outlives one run.
TEST_NUMBERS = [f"1555{secrets.randbelow(10**7):07d}" for _ in range(8)]
SMS_ON = {
    "TOKENMETER_AUTH_SMS_ENABLE_SIGNUP": "true",
    "TOKENMETER_AUTH_SMS_TEST_OTP": ",".join(f"{n}={CODE}" for n in TEST_NUMBERS),
}


def _number(i: int) -> str:
    return "+" + TEST_NUMBERS[i]


def _other_number() -> str:
    """A number outside the test map: a code to it would need a real SMS provider."""
    return f"+1666{secrets.randbelow(10**7):07d}"


@pytest.fixture(scope="module")
def sms_on(stack: object) -> Iterator[str]:
    """A gateway with the phone provider on, confirmations off."""
    with auth_gateway({**SMS_ON, "TOKENMETER_AUTH_SMS_ENABLE_CONFIRMATIONS": "false"}) as url:
        yield url


@pytest.fixture(scope="module")
def sms_confirming(stack: object) -> Iterator[str]:
    """A gateway with the phone provider on and `[auth.sms] enable_confirmations = true`."""
    with auth_gateway({**SMS_ON, "TOKENMETER_AUTH_SMS_ENABLE_CONFIRMATIONS": "true"}) as url:
        yield url


@pytest.fixture()
def client_on(keys: StackKeys) -> Iterator[Callable[[str], Client]]:
    opened: list[httpx.Client] = []

    def build(url: str) -> Client:
        http = httpx.Client(timeout=60)
        opened.append(http)
        options = ClientOptions(auto_refresh_token=False, httpx_client=http)
        return create_client(url, keys.anon_key, options)

    yield build
    for http in opened:
        http.close()


def _users_with_phone(admin_dsn: str, phone: str) -> int:
    with psycopg.connect(admin_dsn) as conn:
        row = conn.execute(
            "select count(*) from auth.users where phone = %s", (phone.removeprefix("+"),)
        ).fetchone()
    assert row is not None
    return int(row[0])


# ── sign-up with phone and password ───────────────────────────────────────────────────────────
def test_phone_signup_when_confirmations_off_signs_in_and_password_works(
    sms_on: str, client_on: Callable[[str], Client]
):
    client = client_on(sms_on)
    phone = _other_number()  # nothing is sent, so any number will do
    answer = client.auth.sign_up({"phone": phone, "password": PASSWORD})
    assert answer.session is not None and answer.user is not None
    assert answer.user.phone == phone.removeprefix("+")
    assert answer.user.phone_confirmed_at is not None
    assert answer.user.app_metadata["provider"] == "phone"
    again = client_on(sms_on).auth.sign_in_with_password({"phone": phone, "password": PASSWORD})
    assert again.user is not None and again.user.id == answer.user.id
    with pytest.raises(AuthApiError) as caught:
        client_on(sms_on).auth.sign_up({"phone": phone, "password": PASSWORD})
    assert caught.value.status == 422 and caught.value.code == "user_already_exists"


def test_phone_signup_when_confirmations_on_needs_the_test_code(
    sms_confirming: str, client_on: Callable[[str], Client]
):
    client = client_on(sms_confirming)
    phone = _number(0)
    answer = client.auth.sign_up({"phone": phone, "password": PASSWORD})
    assert answer.session is None and answer.user is not None
    assert answer.user.phone_confirmed_at is None
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_password({"phone": phone, "password": PASSWORD})
    assert caught.value.status == 400 and caught.value.code == "phone_not_confirmed"
    verified = client.auth.verify_otp({"phone": phone, "token": CODE, "type": "sms"})
    assert verified.session is not None and verified.user is not None
    assert verified.user.phone_confirmed_at is not None
    signed_in = client_on(sms_confirming).auth.sign_in_with_password(
        {"phone": phone, "password": PASSWORD}
    )
    assert signed_in.user is not None and signed_in.user.id == answer.user.id


def test_phone_signup_to_number_without_test_code_fails_500_and_saves_no_user(
    sms_confirming: str, client_on: Callable[[str], Client], admin_dsn: str
):
    phone = _other_number()
    with pytest.raises(AuthApiError) as caught:
        client_on(sms_confirming).auth.sign_up({"phone": phone, "password": PASSWORD})
    assert caught.value.status == 500 and caught.value.message == "Unable to get SMS provider"
    assert _users_with_phone(admin_dsn, phone) == 0


# ── /otp and /verify ──────────────────────────────────────────────────────────────────────────
def test_phone_otp_to_test_number_signs_in_with_the_fixed_code(
    sms_on: str, client_on: Callable[[str], Client]
):
    client = client_on(sms_on)
    phone = _number(1)
    client.auth.sign_in_with_otp({"phone": phone})
    with pytest.raises(AuthApiError) as caught:
        client.auth.verify_otp({"phone": phone, "token": "000000", "type": "sms"})
    assert caught.value.status == 403 and caught.value.code == "otp_expired"
    answer = client.auth.verify_otp({"phone": phone, "token": CODE, "type": "sms"})
    assert answer.session is not None and answer.user is not None
    assert answer.user.phone == phone.removeprefix("+")
    assert answer.user.phone_confirmed_at is not None
    # The code is used up.
    with pytest.raises(AuthApiError) as caught:
        client.auth.verify_otp({"phone": phone, "token": CODE, "type": "sms"})
    assert caught.value.status == 403 and caught.value.code == "otp_expired"


def test_phone_otp_to_number_without_test_code_fails_500_and_saves_no_user(
    sms_on: str, client_on: Callable[[str], Client], admin_dsn: str
):
    phone = _other_number()
    with pytest.raises(AuthApiError) as caught:
        client_on(sms_on).auth.sign_in_with_otp({"phone": phone})
    assert caught.value.status == 500 and caught.value.message == "Unable to get SMS provider"
    assert _users_with_phone(admin_dsn, phone) == 0


# ── /resend ───────────────────────────────────────────────────────────────────────────────────
def test_resend_sms_to_unknown_number_answers_empty(
    sms_on: str, client_on: Callable[[str], Client]
):
    # As GoTrue: the same answer whether or not the number is registered.
    client_on(sms_on).auth.resend({"phone": _other_number(), "type": "sms"})


def test_resend_sms_to_unconfirmed_number_sends_the_code_again(
    sms_confirming: str, client_on: Callable[[str], Client], admin_dsn: str
):
    client = client_on(sms_confirming)
    phone = _number(2)
    client.auth.sign_up({"phone": phone, "password": PASSWORD})
    client.auth.verify_otp({"phone": phone, "token": CODE, "type": "sms"})
    with pytest.raises(AuthApiError):
        client.auth.verify_otp({"phone": phone, "token": CODE, "type": "sms"})
    # Confirmed now: nothing to resend, and the code stays used up.
    client.auth.resend({"phone": phone, "type": "sms"})
    with pytest.raises(AuthApiError) as caught:
        client.auth.verify_otp({"phone": phone, "token": CODE, "type": "sms"})
    assert caught.value.code == "otp_expired"
    other = _number(3)
    client.auth.sign_up({"phone": other, "password": PASSWORD})
    # Forget the sign-up's code, so only the resent one can confirm.
    with psycopg.connect(admin_dsn) as conn:
        conn.execute(
            "update auth.users set confirmation_token = '' where phone = %s",
            (other.removeprefix("+"),),
        )
    with pytest.raises(AuthApiError):
        client.auth.verify_otp({"phone": other, "token": CODE, "type": "sms"})
    client.auth.resend({"phone": other, "type": "sms"})
    answer = client.auth.verify_otp({"phone": other, "token": CODE, "type": "sms"})
    assert answer.session is not None
