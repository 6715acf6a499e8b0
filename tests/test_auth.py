"""The local Auth API (/auth/v1) answers supabase-py as GoTrue does (protocol doc §3).

Every call of the table in §3 goes through the unmodified sync and async clients; error shapes
and the few endpoints the clients cannot reach with bad input are checked with raw HTTP.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import inbox
import jwt
import psycopg
import pytest
from conftest import random_email
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from app.stack.keys import StackKeys
from supabase import (
    AClient,
    AsyncClientOptions,
    Client,
    acreate_client,
)

PASSWORD = "correct-horse-9"
CLAIMS = {
    "iss",
    "sub",
    "aud",
    "role",
    "email",
    "phone",
    "app_metadata",
    "user_metadata",
    "aal",
    "amr",
    "session_id",
    "is_anonymous",
    "iat",
    "exp",
}


@pytest.fixture()
async def anew_client(api_url: str) -> AsyncIterator[Callable[[str], Awaitable[AClient]]]:
    opened: list[httpx.AsyncClient] = []

    async def build(key: str) -> AClient:
        http = httpx.AsyncClient(timeout=10)
        opened.append(http)
        return await acreate_client(
            api_url, key, AsyncClientOptions(auto_refresh_token=False, httpx_client=http)
        )

    yield build
    for http in opened:
        await http.aclose()


@pytest.fixture()
def client(new_client: Callable[[str], Client], anon_key: str) -> Client:
    return new_client(anon_key)


@pytest.fixture()
def admin(new_client: Callable[[str], Client], service_key: str) -> Client:
    return new_client(service_key)


@pytest.fixture()
async def aclient(anew_client: Callable[[str], Awaitable[AClient]], anon_key: str) -> AClient:
    return await anew_client(anon_key)


@pytest.fixture()
def raw(api_url: str, anon_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{api_url}/auth/v1", headers={"apikey": anon_key}) as http:
        yield http


def _sign_up(client: Client, email: str | None = None, **data: object) -> tuple[str, object]:
    email = email or random_email()
    response = client.auth.sign_up(
        {"email": email, "password": PASSWORD, "options": {"data": dict(data)}}
    )
    return email, response


# ── sign-up ────────────────────────────────────────────────────────────────────────────────────
def test_sign_up_new_email_returns_confirmed_session(client: Client):
    email, response = _sign_up(client, plan="free")
    assert response.session is not None and response.user is not None
    assert response.session.refresh_token and response.session.expires_in == 3600
    assert response.user.email == email
    assert response.user.email_confirmed_at is not None
    assert response.user.user_metadata == {"plan": "free"}
    assert response.user.app_metadata == {"provider": "email", "providers": ["email"]}
    assert client.auth.get_session() is not None


async def test_sign_up_async_client_returns_session(aclient: AClient):
    email = random_email()
    response = await aclient.auth.sign_up({"email": email, "password": PASSWORD})
    assert response.session is not None
    assert response.user is not None and response.user.email == email
    user = await aclient.auth.get_user()
    assert user is not None and user.user.id == response.user.id


def test_sign_up_existing_email_raises_user_already_exists(
    client: Client, new_client: Callable[[str], Client], anon_key: str
):
    email, _ = _sign_up(client)
    other = new_client(anon_key)
    with pytest.raises(AuthApiError) as caught:
        other.auth.sign_up({"email": email.upper(), "password": PASSWORD})
    assert caught.value.status == 422 and caught.value.code == "user_already_exists"


def test_sign_up_short_password_raises_weak_password_error(client: Client):
    with pytest.raises(AuthWeakPasswordError) as caught:
        client.auth.sign_up({"email": random_email(), "password": "abc"})
    assert caught.value.status == 422 and caught.value.reasons == ["length"]


def test_sign_up_invalid_email_raises_validation_failed(client: Client):
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_up({"email": "not-an-email", "password": PASSWORD})
    assert caught.value.status == 400 and caught.value.code == "validation_failed"


@pytest.mark.parametrize(
    ("email", "msg"),
    [
        ("xx:;x@x.x", "Unable to validate email address: invalid format"),
        ("a b@example.com", "Unable to validate email address: invalid format"),
        (" padded@example.com", "Unable to validate email address: invalid format"),
        ("jos\u00e9@example.com", "Unable to validate email address: invalid format"),
        ("a@-example.com", "Unable to validate email address: invalid format"),
        ("a@example..com", "Unable to validate email address: invalid format"),
        ("a@" + "x" * 64 + ".com", "Unable to validate email address: invalid format"),
        ("a@b.c\n", "Unable to validate email address: invalid format"),
        ("a" * 244 + "@example.com", "An email address is too long"),
    ],
)
def test_admin_create_user_email_gotrue_refuses_returns_400_validation_failed(
    admin: Client, db: psycopg.Connection, email: str, msg: str
):
    """GoTrue's rule (checkmail's pattern, no trimming, at most 255 bytes), via supabase-py."""
    with pytest.raises(AuthApiError) as caught:
        admin.auth.admin.create_user({"email": email, "password": PASSWORD})
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        400,
        "validation_failed",
        msg,
    )
    assert db.execute("select 1 from auth.users where email = %s", (email,)).fetchone() is None


@pytest.mark.parametrize("local", ["o'brien+tag", "a.b!#$%&*/=?^_`{|}~-", "UPPER.Case"])
@pytest.mark.parametrize("domain", ["example.com", "localhost", "x-1.example"])
def test_admin_create_user_email_gotrue_accepts_is_stored_lowercase(
    admin: Client, local: str, domain: str
):
    email = f"{local}{uuid.uuid4().hex[:6]}@{domain}"
    user = admin.auth.admin.create_user({"email": email, "password": PASSWORD}).user
    assert user.email == email.lower()
    admin.auth.admin.delete_user(user.id)


def test_sign_up_email_at_255_bytes_is_accepted(client: Client):
    email = f"{uuid.uuid4().hex}{'a' * (255 - 32 - len('@example.com'))}@example.com"
    assert len(email) == 255
    assert client.auth.sign_up({"email": email, "password": PASSWORD}).user.email == email


def test_sign_up_while_signed_in_sends_user_jwt_and_succeeds(client: Client):
    _sign_up(client)
    # The client now sends the first user's access token; sign-up must not reject it.
    email, response = _sign_up(client)
    assert response.user is not None and response.user.email == email


def test_sign_up_with_trigger_on_auth_users_runs_trigger(client: Client, admin_dsn: str):
    suffix = uuid.uuid4().hex[:8]
    table, func, trigger = (
        f"public.signup_log_{suffix}",
        f"public.log_signup_{suffix}",
        f"log_signup_{suffix}",
    )
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"create table {table} (user_id uuid primary key, email text)")
        conn.execute(f"""
            create function {func}() returns trigger language plpgsql security definer
            set search_path = '' as $$
            begin
              insert into {table} (user_id, email) values (new.id, new.email);
              return new;
            end $$""")
        conn.execute(
            f"create trigger {trigger} after insert on auth.users "
            f"for each row execute function {func}()"
        )
        try:
            email, response = _sign_up(client)
            row = conn.execute(f"select user_id, email from {table}").fetchone()
        finally:
            conn.execute(f"drop trigger {trigger} on auth.users")
            conn.execute(f"drop function {func}()")
            conn.execute(f"drop table {table}")
    assert response.user is not None
    assert row == (uuid.UUID(response.user.id), email)


def test_sign_up_when_trigger_fails_raises_database_error(client: Client, admin_dsn: str):
    suffix = uuid.uuid4().hex[:8]
    func, trigger = f"public.refuse_signup_{suffix}", f"refuse_signup_{suffix}"
    email = f"refused-{suffix}@example.com"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"""
            create function {func}() returns trigger language plpgsql as $$
            begin
              if new.email = '{email}' then raise exception 'no signups today'; end if;
              return new;
            end $$""")
        conn.execute(
            f"create trigger {trigger} before insert on auth.users "
            f"for each row execute function {func}()"
        )
        try:
            with pytest.raises(AuthApiError) as caught:
                client.auth.sign_up({"email": email, "password": PASSWORD})
            stored = conn.execute(
                "select count(*) from auth.users where email = %s", (email,)
            ).fetchone()
        finally:
            conn.execute(f"drop trigger {trigger} on auth.users")
            conn.execute(f"drop function {func}()")
    assert caught.value.status == 500 and caught.value.code == "unexpected_failure"
    assert caught.value.message == "Database error saving new user"
    assert stored == (0,)


def test_sign_up_stores_bcrypt_hash_in_auth_users(client: Client, db: psycopg.Connection):
    email, _ = _sign_up(client)
    row = db.execute(
        "select encrypted_password, aud, role, raw_app_meta_data from auth.users where email = %s",
        (email,),
    ).fetchone()
    assert row is not None
    assert row[0].startswith("$2b$10$") and PASSWORD not in row[0]
    assert row[1:] == (
        "authenticated",
        "authenticated",
        {"provider": "email", "providers": ["email"]},
    )


# ── sign-in and tokens ─────────────────────────────────────────────────────────────────────────
# ── identities ─────────────────────────────────────────────────────────────────────────────────
def test_sign_up_creates_email_identity_in_response_and_table(
    client: Client, db: psycopg.Connection
):
    email, response = _sign_up(client, plan="free")
    user = response.user
    [identity] = user.identities
    assert (identity.provider, identity.id, identity.user_id) == ("email", user.id, user.id)
    assert identity.identity_data == {
        "sub": user.id,
        "email": email,
        "email_verified": False,
        "phone_verified": False,
        "plan": "free",
    }
    assert identity.identity_id and identity.created_at and identity.last_sign_in_at
    row = db.execute(
        "select id, provider_id, email from auth.identities where user_id = %s", (user.id,)
    ).fetchall()
    assert row == [(uuid.UUID(identity.identity_id), user.id, email)]
    for seen in (
        client.auth.get_user().user,
        client.auth.sign_in_with_password({"email": email, "password": PASSWORD}).user,
        client.auth.refresh_session().user,
    ):
        assert [i.identity_id for i in seen.identities] == [identity.identity_id]


def test_admin_create_user_creates_identity_listed_and_deleted_with_user(
    admin: Client, db: psycopg.Connection
):
    email = random_email()
    user = admin.auth.admin.create_user({"email": email, "email_confirm": True}).user
    assert [(i.provider, i.identity_data["email"]) for i in user.identities] == [("email", email)]
    assert admin.auth.admin.get_user_by_id(user.id).user.identities[0].id == user.id
    listed = {u.id: u for u in admin.auth.admin.list_users(per_page=1000)}
    assert len(listed[user.id].identities) == 1
    admin.auth.admin.delete_user(user.id)
    count = db.execute("select count(*) from auth.identities where user_id = %s", (user.id,))
    assert count.fetchone() == (0,)


def test_update_user_email_moves_email_identity(client: Client, db: psycopg.Connection):
    _, response = _sign_up(client)
    new_email = random_email()
    # As GoTrue: the change waits for the link mailed to the new address.
    pending = client.auth.update_user({"email": new_email}).user
    assert pending.new_email == new_email and pending.email != new_email
    followed = httpx.get(inbox.link_in(inbox.wait_for(new_email)[0]))
    assert followed.status_code == 303 and "#access_token=" in followed.headers["location"]
    user = client.auth.get_user().user
    assert [i.identity_data["email"] for i in user.identities] == [new_email]
    assert db.execute(
        "select email from auth.identities where user_id = %s", (response.user.id,)
    ).fetchall() == [(new_email,)]


def test_sign_in_correct_password_returns_session(
    client: Client, new_client: Callable[[str], Client], anon_key: str
):
    email, signed_up = _sign_up(client)
    other = new_client(anon_key)
    response = other.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert response.session is not None and response.user is not None
    assert response.user.id == signed_up.user.id
    assert response.user.last_sign_in_at is not None
    assert response.session.refresh_token != signed_up.session.refresh_token


async def test_sign_in_async_client_returns_session(aclient: AClient):
    email = random_email()
    await aclient.auth.sign_up({"email": email, "password": PASSWORD})
    response = await aclient.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert response.session is not None and response.user.email == email


def test_sign_in_wrong_password_raises_invalid_credentials(client: Client):
    email, _ = _sign_up(client)
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_password({"email": email, "password": "wrong-password"})
    assert caught.value.status == 400 and caught.value.code == "invalid_credentials"
    assert caught.value.message == "Invalid login credentials"


def test_sign_in_unknown_email_raises_invalid_credentials(client: Client):
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_password({"email": random_email(), "password": PASSWORD})
    assert caught.value.status == 400 and caught.value.code == "invalid_credentials"


def test_access_token_claims_match_supabase(client: Client, keys: StackKeys):
    email, response = _sign_up(client, plan="pro")
    token = response.session.access_token
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, keys.jwt_secret, algorithms=["HS256"], audience="authenticated")
    assert set(claims) == CLAIMS
    assert claims["sub"] == response.user.id
    assert (claims["aud"], claims["role"], claims["email"]) == (
        "authenticated",
        "authenticated",
        email,
    )
    assert claims["user_metadata"] == {"plan": "pro"}
    assert claims["app_metadata"]["provider"] == "email"
    assert claims["aal"] == "aal1" and claims["amr"][0]["method"] == "password"
    assert claims["is_anonymous"] is False
    assert claims["exp"] - claims["iat"] == 3600
    uuid.UUID(claims["session_id"])


# ── refresh: rotation and reuse detection ──────────────────────────────────────────────────────
def test_refresh_session_rotates_refresh_token(client: Client):
    _, response = _sign_up(client)
    first = response.session.refresh_token
    refreshed = client.auth.refresh_session()
    assert refreshed.session is not None
    assert refreshed.session.refresh_token != first
    assert refreshed.user.id == response.user.id
    again = client.auth.refresh_session()
    assert again.session.refresh_token not in (first, refreshed.session.refresh_token)


async def test_refresh_session_async_client_rotates_refresh_token(aclient: AClient):
    response = await aclient.auth.sign_up({"email": random_email(), "password": PASSWORD})
    refreshed = await aclient.auth.refresh_session()
    assert refreshed.session.refresh_token != response.session.refresh_token


def test_refresh_session_reused_token_revokes_whole_session(client: Client):
    _, response = _sign_up(client)
    stolen = response.session.refresh_token
    current = client.auth.refresh_session().session
    with pytest.raises(AuthApiError) as caught:
        client.auth.refresh_session(stolen)
    assert caught.value.status == 400 and caught.value.code == "refresh_token_already_used"
    # The thief's replay ended the session: the legitimate, newest token is dead too.
    with pytest.raises(AuthApiError) as after:
        client.auth.refresh_session(current.refresh_token)
    assert after.value.code == "refresh_token_already_used"
    with pytest.raises(AuthApiError) as user_call:
        client.auth.get_user(current.access_token)
    assert user_call.value.code == "session_not_found"


def test_refresh_unknown_token_returns_refresh_token_not_found(raw: httpx.Client):
    response = raw.post(
        "/token", params={"grant_type": "refresh_token"}, json={"refresh_token": "never-issued"}
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "refresh_token_not_found"


# ── the signed-in user ─────────────────────────────────────────────────────────────────────────
def test_get_user_with_session_returns_user(client: Client):
    email, response = _sign_up(client, name="Ada")
    user = client.auth.get_user()
    assert user is not None
    assert user.user.id == response.user.id and user.user.email == email
    assert user.user.user_metadata == {"name": "Ada"}


async def test_get_user_async_with_jwt_returns_user(aclient: AClient):
    response = await aclient.auth.sign_up({"email": random_email(), "password": PASSWORD})
    user = await aclient.auth.get_user(response.session.access_token)
    assert user.user.id == response.user.id


def test_get_user_forged_token_returns_403_bad_jwt(client: Client, raw: httpx.Client):
    _, response = _sign_up(client)
    claims = jwt.decode(response.session.access_token, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-secret-" * 4, algorithm="HS256")
    answer = raw.get("/user", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 403
    assert answer.json()["error_code"] == "bad_jwt"


def test_get_user_expired_token_returns_403_bad_jwt(
    client: Client, raw: httpx.Client, keys: StackKeys
):
    _, response = _sign_up(client)
    claims = jwt.decode(response.session.access_token, options={"verify_signature": False})
    claims.update(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    expired = jwt.encode(claims, keys.jwt_secret, algorithm="HS256")
    answer = raw.get("/user", headers={"Authorization": f"Bearer {expired}"})
    assert answer.status_code == 403
    assert answer.json()["error_code"] == "bad_jwt"


# ── tokens without `exp`: accepted as GoTrue and PostgREST accept them ─────────────────────────
def _without_exp(token: str, secret: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims["exp"]
    return jwt.encode(claims, secret, algorithm="HS256")


def _service_token(secret: str, **claims: object) -> str:
    return jwt.encode({"role": "service_role", "iss": "supabase", **claims}, secret, "HS256")


def test_get_user_token_without_exp_returns_user(
    client: Client, raw: httpx.Client, keys: StackKeys
):
    _, response = _sign_up(client)
    token = _without_exp(response.session.access_token, keys.jwt_secret)
    answer = raw.get("/user", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == response.user.id


def test_admin_call_service_token_without_exp_succeeds(api_url: str, keys: StackKeys):
    token = _service_token(keys.jwt_secret)
    headers = {"apikey": keys.service_role_key, "Authorization": f"Bearer {token}"}
    email = random_email()
    created = httpx.post(f"{api_url}/auth/v1/admin/users", headers=headers, json={"email": email})
    assert created.status_code == 200, created.text
    listed = httpx.get(f"{api_url}/auth/v1/admin/users", headers=headers)
    assert listed.status_code == 200 and int(listed.headers["x-total-count"]) >= 1


def test_admin_call_supabase_admin_role_token_succeeds(api_url: str, keys: StackKeys):
    """GoTrue's admin roles are service_role and supabase_admin (its default); the client
    libraries' tests call the admin API with the latter."""
    token = jwt.encode({"role": "supabase_admin", "sub": "1234567890"}, keys.jwt_secret, "HS256")
    answer = httpx.get(
        f"{api_url}/auth/v1/admin/users",
        headers={"apikey": keys.service_role_key, "Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text


def test_admin_call_service_token_expired_returns_403_bad_jwt(api_url: str, keys: StackKeys):
    token = _service_token(keys.jwt_secret, exp=int(time.time()) - 60)
    answer = httpx.get(
        f"{api_url}/auth/v1/admin/users",
        headers={"apikey": keys.service_role_key, "Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 403 and answer.json()["error_code"] == "bad_jwt"


def test_rest_tokens_without_exp_are_accepted(client: Client, api_url: str, keys: StackKeys):
    """PostgREST requires no `exp` either; a user's token still runs as that user (RLS)."""
    _, response = _sign_up(client)
    rest = f"{api_url}/rest/v1"
    service = {
        "apikey": keys.anon_key,
        "Authorization": f"Bearer {_service_token(keys.jwt_secret)}",
    }
    answer = httpx.get(f"{rest}/model_pricing", params={"limit": "1"}, headers=service)
    assert answer.status_code == 200, answer.text
    user_token = _without_exp(response.session.access_token, keys.jwt_secret)
    user = {"apikey": keys.anon_key, "Authorization": f"Bearer {user_token}"}
    answer = httpx.get(f"{rest}/user_balances", params={"select": "user_id"}, headers=user)
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"user_id": response.user.id}]


def test_get_user_without_token_returns_401_no_authorization(raw: httpx.Client):
    answer = raw.get("/user")
    assert answer.status_code == 401
    assert answer.json() == {
        "code": 401,
        "error_code": "no_authorization",
        "msg": "This endpoint requires a Bearer token",
    }


def test_update_user_metadata_merges_and_reissues_claims(client: Client):
    _sign_up(client, plan="free")
    updated = client.auth.update_user({"data": {"team": "core"}})
    assert updated.user.user_metadata == {"plan": "free", "team": "core"}


def test_update_user_password_allows_sign_in_with_new_password(
    client: Client, new_client: Callable[[str], Client], anon_key: str
):
    email, _ = _sign_up(client)
    client.auth.update_user({"password": "a-new-password"})
    other = new_client(anon_key)
    assert (
        other.auth.sign_in_with_password({"email": email, "password": "a-new-password"}).session
        is not None
    )


# ── sign-out ───────────────────────────────────────────────────────────────────────────────────
def test_sign_out_global_ends_every_session(
    client: Client, new_client: Callable[[str], Client], anon_key: str
):
    email, first = _sign_up(client)
    other = new_client(anon_key)
    second = other.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    client.auth.sign_out()
    assert client.auth.get_session() is None
    for session in (first.session, second.session):
        with pytest.raises(AuthApiError) as caught:
            client.auth.get_user(session.access_token)
        assert caught.value.code == "session_not_found"
        with pytest.raises(AuthApiError) as refresh:
            client.auth.refresh_session(session.refresh_token)
        assert refresh.value.code == "refresh_token_not_found"


def test_sign_out_local_keeps_other_sessions(
    client: Client, new_client: Callable[[str], Client], anon_key: str
):
    email, first = _sign_up(client)
    other = new_client(anon_key)
    second = other.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    client.auth.sign_out({"scope": "local"})
    with pytest.raises(AuthApiError):
        other.auth.get_user(first.session.access_token)
    assert other.auth.get_user(second.session.access_token).user.email == email


async def test_sign_out_async_returns_204_and_clears_session(aclient: AClient, raw: httpx.Client):
    response = await aclient.auth.sign_up({"email": random_email(), "password": PASSWORD})
    await aclient.auth.sign_out()
    assert await aclient.auth.get_session() is None
    answer = raw.post(
        "/logout", headers={"Authorization": f"Bearer {response.session.access_token}"}
    )
    assert answer.status_code == 403  # the session is already gone


# ── admin ──────────────────────────────────────────────────────────────────────────────────────
def test_admin_create_user_returns_confirmed_user(admin: Client, client: Client):
    email = random_email()
    user = admin.auth.admin.create_user(
        {
            "email": email,
            "password": PASSWORD,
            "email_confirm": True,
            "user_metadata": {"name": "Grace"},
            "app_metadata": {"tier": "gold"},
        }
    ).user
    assert user.email == email and user.email_confirmed_at is not None
    assert user.user_metadata == {"name": "Grace"}
    assert user.app_metadata == {"provider": "email", "providers": ["email"], "tier": "gold"}
    signed_in = client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert signed_in.user.id == user.id


def test_admin_create_user_unconfirmed_cannot_sign_in(admin: Client, client: Client):
    email = random_email()
    admin.auth.admin.create_user({"email": email, "password": PASSWORD})
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert caught.value.code == "email_not_confirmed"


def test_admin_list_users_pages_through_users(admin: Client):
    created = {
        admin.auth.admin.create_user(
            {"email": random_email(), "password": PASSWORD, "email_confirm": True}
        ).user.id
        for _ in range(3)
    }
    first_page = admin.auth.admin.list_users(page=1, per_page=2)
    assert len(first_page) == 2
    everyone = admin.auth.admin.list_users(per_page=1000)
    assert created <= {user.id for user in everyone}


def test_admin_get_user_by_id_returns_user(admin: Client):
    user = admin.auth.admin.create_user({"email": random_email(), "email_confirm": True}).user
    fetched = admin.auth.admin.get_user_by_id(user.id).user
    assert fetched.id == user.id and fetched.email == user.email


def test_admin_get_unknown_user_raises_user_not_found(admin: Client):
    with pytest.raises(AuthApiError) as caught:
        admin.auth.admin.get_user_by_id(str(uuid.uuid4()))
    assert caught.value.status == 404 and caught.value.code == "user_not_found"


def test_admin_delete_user_removes_row_and_sessions(
    admin: Client, client: Client, db: psycopg.Connection
):
    _, response = _sign_up(client)
    admin.auth.admin.delete_user(response.user.id)
    assert db.execute(
        "select count(*) from auth.users where id = %s", (response.user.id,)
    ).fetchone() == (0,)
    with pytest.raises(AuthApiError) as caught:
        admin.auth.admin.get_user_by_id(response.user.id)
    assert caught.value.code == "user_not_found"
    with pytest.raises(AuthApiError):
        client.auth.refresh_session()


async def test_admin_async_create_list_get_delete_user(
    anew_client: Callable[[str], Awaitable[AClient]], service_key: str
):
    admin = await anew_client(service_key)
    email = random_email()
    user = (
        await admin.auth.admin.create_user(
            {"email": email, "password": PASSWORD, "email_confirm": True}
        )
    ).user
    assert user.id in {u.id for u in await admin.auth.admin.list_users(per_page=1000)}
    assert (await admin.auth.admin.get_user_by_id(user.id)).user.email == email
    await admin.auth.admin.delete_user(user.id)
    with pytest.raises(AuthApiError):
        await admin.auth.admin.get_user_by_id(user.id)


def test_admin_call_with_anon_key_raises_not_admin(client: Client):
    with pytest.raises(AuthApiError) as caught:
        client.auth.admin.list_users()
    assert caught.value.status == 403 and caught.value.code == "not_admin"


def test_admin_call_with_user_jwt_returns_403_not_admin(client: Client, raw: httpx.Client):
    _, response = _sign_up(client)
    answer = raw.get(
        "/admin/users", headers={"Authorization": f"Bearer {response.session.access_token}"}
    )
    assert answer.status_code == 403 and answer.json()["error_code"] == "not_admin"


# ── malformed requests ─────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'"text"'])
def test_sign_up_body_not_json_object_returns_400(raw: httpx.Client, content: bytes):
    answer = raw.post("/signup", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["code"] == 400 and answer.json()["error_code"]


@pytest.mark.parametrize(
    "body",
    [
        {"email": 42, "password": PASSWORD},
        {"email": "x@example.com", "password": ["a"]},
        {"email": "x@example.com", "password": PASSWORD, "data": "plan=free"},
    ],
)
def test_sign_up_wrong_field_types_return_400_validation_failed(raw: httpx.Client, body: dict):
    answer = raw.post("/signup", json=body)
    assert answer.status_code == 400 and answer.json()["error_code"] == "validation_failed"


def test_token_unknown_grant_type_returns_400(raw: httpx.Client):
    answer = raw.post("/token", params={"grant_type": "magic"}, json={})
    assert answer.status_code == 400 and answer.json()["code"] == 400


def test_auth_request_without_api_key_returns_401(api_url: str):
    answer = httpx.post(
        f"{api_url}/auth/v1/signup", json={"email": random_email(), "password": PASSWORD}
    )
    assert answer.status_code == 401 and answer.json() == {"message": "No API key found in request"}


@pytest.mark.parametrize("role", ["anon", "service_role"])
def test_auth_request_with_signed_token_not_a_project_key_returns_401(
    api_url: str, keys: StackKeys, role: str
):
    """Kong compares `apikey` with the project's keys: a token signed with the secret is not
    one of them, whatever its role (the same check as /rest/v1's)."""
    now = int(time.time())
    token = jwt.encode(
        {"role": role, "iss": "supabase", "iat": now, "exp": now + 600},
        keys.jwt_secret,
        algorithm="HS256",
    )
    for path in ("/auth/v1/health", "/rest/v1/model_pricing"):
        answer = httpx.get(f"{api_url}{path}", headers={"apikey": token})
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json() == {"message": "Invalid API key"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/no-such-route"),
        ("POST", "/no-such-route"),
        ("GET", "/admin/no-such-route"),
        ("DELETE", "/admin/users/x/y/z"),
        ("GET", "/user/"),
    ],
)
def test_auth_unknown_route_returns_404_gotrue_json(raw: httpx.Client, method: str, path: str):
    answer = raw.request(method, path)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"code": 404, "error_code": "not_found", "msg": "404 page not found"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/user", "GET, HEAD, PUT"),
        ("GET", "/signup", "POST"),
        ("PATCH", "/admin/users/00000000-0000-0000-0000-000000000000", "DELETE, GET, HEAD, PUT"),
    ],
)
def test_auth_wrong_method_returns_405_gotrue_json_with_allow(
    raw: httpx.Client, method: str, path: str, allow: str
):
    answer = raw.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.json() == {
        "code": 405,
        "error_code": "method_not_allowed",
        "msg": "405 method not allowed",
    }


def test_auth_unknown_route_without_api_key_returns_401_first(api_url: str):
    answer = httpx.get(f"{api_url}/auth/v1/no-such-route")
    assert answer.status_code == 401 and answer.json() == {"message": "No API key found in request"}


def test_sign_in_with_sso_saml_disabled_raises_404_as_gotrue(client: Client):
    """SSO is out of scope (README): answered as GoTrue with SAML off, so the client raises an
    API error it can handle, not a parse failure of a text/plain body."""
    with pytest.raises(AuthApiError) as caught:
        client.auth.sign_in_with_sso({"domain": "example.com"})
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        404,
        "saml_provider_disabled",
        "SAML 2.0 is disabled",
    )


def test_admin_oauth_clients_server_disabled_raises_404_as_gotrue(admin: Client, client: Client):
    with pytest.raises(AuthApiError) as caught:
        admin.auth.admin.oauth.list_clients()
    assert (caught.value.status, caught.value.code) == (404, "feature_disabled")
    # The admin check comes first, as in GoTrue's admin group.
    with pytest.raises(AuthApiError) as caught:
        client.auth.admin.oauth.list_clients()
    assert (caught.value.status, caught.value.code) == (403, "not_admin")


def test_health_and_settings_answer_with_api_key(raw: httpx.Client):
    assert raw.get("/health").json()["name"] == "GoTrue"
    settings = raw.get("/settings").json()
    assert settings["external"]["email"] is True and settings["mailer_autoconfirm"] is True


def test_admin_create_user_existing_email_or_id_raises_email_exists(admin: Client):
    email = random_email()
    user = admin.auth.admin.create_user({"email": email, "email_confirm": True}).user
    for duplicate in ({"email": email}, {"email": random_email(), "id": user.id}):
        with pytest.raises(AuthApiError) as caught:
            admin.auth.admin.create_user(duplicate)
        assert caught.value.status == 422 and caught.value.code == "email_exists"


async def test_refresh_same_token_concurrently_rotates_once(
    api_url: str, anon_key: str, client: Client
):
    _, response = _sign_up(client)
    token = response.session.refresh_token
    async with httpx.AsyncClient(
        base_url=f"{api_url}/auth/v1", headers={"apikey": anon_key}
    ) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/token", params={"grant_type": "refresh_token"}, json={"refresh_token": token}
                )
                for _ in range(2)
            )
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 400]
    loser = next(answer for answer in answers if answer.status_code == 400)
    assert loser.json()["error_code"] == "refresh_token_already_used"
