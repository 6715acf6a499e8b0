"""Hostile input to the Auth API and to every API's token handling (issue 9 §2 and §3).

Each test is a repro from the hostile-input review: before the fix the gateway answered 500,
accepted what it should refuse, or kept what it should not. Now every one is a 4xx with
GoTrue's (Auth) or PostgREST's (REST) error code, nothing is written, and the limits of
docs/limits.md ("Auth") hold: token size, metadata size, rate limits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from conftest import ROOT, random_email

from app.stack.gateway.auth import MAX_METADATA_BYTES, read_rate_limits
from app.stack.gateway.tokens import MAX_TOKEN_BYTES
from app.stack.keys import StackKeys
from app.stack.manager import Stack

PASSWORD = "correct-horse-9"
FIXED_CHALLENGES = {"Bearer", 'Bearer error="invalid_token"'}


# ── helpers ────────────────────────────────────────────────────────────────────────────────────
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, object], claims: dict[str, object], secret: str) -> str:
    """A JWT signed with HMAC-SHA256 whatever its header says (PyJWT would refuse odd `alg`s)."""
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
    )
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{_b64(signature)}"


def signed(secret: str, **claims: object) -> str:
    now = int(time.time())
    base: dict[str, object] = {"role": "authenticated", "iat": now, "exp": now + 3600}
    return forge({"alg": "HS256", "typ": "JWT"}, {**base, **claims}, secret)


def sized_token(secret: str, size: int) -> str:
    """A valid authenticated token exactly `size` characters long, each call a different one.

    Padded in a claim; unpadded base64 never has a length of 4k+1, so the header's `kid`
    shifts the total when the payload alone cannot reach `size`."""
    now = int(time.time())
    claims: dict[str, object] = {
        "role": "authenticated",
        "sub": str(uuid.uuid4()),
        "exp": now + 3600,
    }
    for kid in ("", "k", "kk"):
        header = {"alg": "HS256", "kid": kid}
        base = len(forge(header, {**claims, "pad": ""}, secret))
        for extra in range(-4, 4):
            pad = "x" * max(0, (size - base) * 3 // 4 + extra)
            token = forge(header, {**claims, "pad": pad}, secret)
            if len(token) == size:
                return token
    raise AssertionError(f"no token of {size} characters")


def _challenge_is_fixed(answer: httpx.Response) -> bool:
    value = answer.headers.get("www-authenticate")
    return value is None or value in FIXED_CHALLENGES


@pytest.fixture()
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client


def call(http: httpx.Client, api: str, headers: dict[str, str]) -> httpx.Response:
    """One authenticated read on `api` (rest, auth or functions) with the given headers."""
    if api == "rest":
        return http.get("/rest/v1/model_pricing", params={"limit": "1"}, headers=headers)
    if api == "auth":
        return http.get("/auth/v1/user", headers=headers)
    return http.post("/functions/v1/health", json={}, headers=headers)


def placements(token: str, anon_key: str) -> list[tuple[str, dict[str, str]]]:
    """The token as the project key, and as the caller's bearer beside a valid key."""
    return [
        ("apikey", {"apikey": token}),
        ("Authorization", {"apikey": anon_key, "Authorization": f"Bearer {token}"}),
    ]


def user_row(admin_dsn: str, email: str) -> tuple[object, ...] | None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return conn.execute(
            "select id, raw_user_meta_data, banned_until from auth.users where email = %s",
            (email,),
        ).fetchone()


def sign_up(http: httpx.Client, anon_key: str, **body: object) -> httpx.Response:
    payload = {"email": random_email(), "password": PASSWORD, **body}
    return http.post("/auth/v1/signup", json=payload, headers={"apikey": anon_key})


@pytest.fixture()
def session(http: httpx.Client, anon_key: str) -> dict[str, Any]:
    """A signed-up user: email, access token and the headers that call as them."""
    answer = sign_up(http, anon_key)
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    return {
        "email": answer.json()["user"]["email"],
        "token": token,
        "headers": {"apikey": anon_key, "Authorization": f"Bearer {token}"},
    }


# ── tokens: never a 500, never attacker text in a header (§2) ──────────────────────────────────
@pytest.mark.parametrize("api", ["rest", "auth", "functions"])
@pytest.mark.parametrize("alg", ["HS256\u0100", "\u2028", 'none", error="x'])
def test_token_with_odd_alg_any_api_returns_4xx_with_fixed_challenge(
    http: httpx.Client, keys: StackKeys, api: str, alg: str
):
    token = forge({"alg": alg, "typ": "JWT"}, {"role": "anon"}, keys.jwt_secret)
    for where, headers in placements(token, keys.anon_key):
        answer = call(http, api, headers)
        assert answer.status_code in (401, 403), (where, answer.status_code, answer.text)
        assert _challenge_is_fixed(answer), (where, answer.headers.get("www-authenticate"))


@pytest.mark.parametrize("api", ["rest", "functions"])
@pytest.mark.parametrize("role", [["service_role"], {"name": "service_role"}, 7])
def test_signed_token_with_non_string_role_returns_401(
    http: httpx.Client, keys: StackKeys, api: str, role: object
):
    token = signed(keys.jwt_secret, sub=str(uuid.uuid4()), role=role)
    for where, headers in placements(token, keys.anon_key):
        answer = call(http, api, headers)
        assert answer.status_code == 401, (where, answer.status_code, answer.text)
        assert _challenge_is_fixed(answer)


def test_token_errors_rest_challenge_is_fixed_text(http: httpx.Client, keys: StackKeys):
    bad = [
        "not-a-jwt",
        forge({"alg": "HS256"}, {"role": "anon"}, "some other secret, long enough to sign"),
        signed(keys.jwt_secret, exp=int(time.time()) - 60),
        forge({"alg": "HS512"}, {"role": "anon"}, keys.jwt_secret),
    ]
    for token in bad:
        answer = call(http, "rest", {"apikey": keys.anon_key, "Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# ── token size (§3) ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("api", ["rest", "auth", "functions"])
def test_token_over_size_limit_any_api_returns_4xx(http: httpx.Client, keys: StackKeys, api: str):
    token = sized_token(keys.jwt_secret, MAX_TOKEN_BYTES + 1)
    for where, headers in placements(token, keys.anon_key):
        answer = call(http, api, headers)
        assert answer.status_code in (401, 403), (where, answer.status_code, answer.text)
        assert _challenge_is_fixed(answer)


def test_token_at_size_limit_rest_is_accepted(http: httpx.Client, keys: StackKeys):
    token = sized_token(keys.jwt_secret, MAX_TOKEN_BYTES)
    answer = call(http, "rest", {"apikey": keys.anon_key, "Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text


def test_largest_issued_token_fits_and_works_on_every_api(
    http: httpx.Client, keys: StackKeys, new_client: Callable[[str], object]
):
    """Metadata at its limits and the longest email: the token the Auth API issues still fits
    under MAX_TOKEN_BYTES, so no user can be locked out by the token limit."""
    # GoTrue's email rule is ASCII only, so its longest is 255 bytes in the token too.
    email = f"{uuid.uuid4().hex}{'a' * 211}@example.com"
    user_meta = {"k": "x" * (MAX_METADATA_BYTES - len('{"k":""}'))}
    app_meta = {
        "k": "y" * (MAX_METADATA_BYTES - len('{"k":"","provider":"email","providers":["email"]}'))
    }
    admin = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
    created = http.post(
        "/auth/v1/admin/users",
        headers=admin,
        json={
            "email": email,
            "password": PASSWORD,
            "email_confirm": True,
            "user_metadata": user_meta,
            "app_metadata": app_meta,
        },
    )
    assert created.status_code == 200, created.text
    signed_in = http.post(
        "/auth/v1/token",
        params={"grant_type": "password"},
        headers={"apikey": keys.anon_key},
        json={"email": email, "password": PASSWORD},
    )
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["access_token"]
    assert MAX_TOKEN_BYTES - 5 * 1024 < len(token) <= MAX_TOKEN_BYTES, len(token)
    headers = {"apikey": keys.anon_key, "Authorization": f"Bearer {token}"}
    for api in ("rest", "auth", "functions"):
        answer = call(http, api, headers)
        assert answer.status_code == 200, (api, answer.text)


# ── sign-up with text PostgreSQL cannot store (§2) ─────────────────────────────────────────────
@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("email", "a\\u0000b-{tag}@example.com", 400),
        ("email", "\\ud800-{tag}@example.com", 400),
        ("password", "correct\\u0000horse-{tag}", 422),
        ("password", "\\udfffcorrect-horse-{tag}", 422),
        ("data", '{{"name": "a\\u0000b-{tag}"}}', 400),
        ("data", '{{"\\ud83d-{tag}": 1}}', 400),
        ("data", '{{"x-{tag}": 1e999}}', 400),
    ],
)
def test_sign_up_with_nul_or_lone_surrogate_returns_4xx_and_writes_nothing(
    http: httpx.Client, anon_key: str, admin_dsn: str, field: str, value: str, status: int
):
    tag = uuid.uuid4().hex[:8]
    email = f"plain-{tag}@example.com"
    parts = {"email": f'"{email}"', "password": f'"{PASSWORD}"'}
    rendered = value.format(tag=tag)
    parts[field] = rendered if field == "data" else f'"{rendered}"'
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in parts.items()) + "}"
    answer = http.post(
        "/auth/v1/signup",
        content=body.encode(),
        headers={"apikey": anon_key, "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["error_code"] == "validation_failed"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        found = conn.execute(
            "select count(*) from auth.users where email like %s", (f"%{tag}%",)
        ).fetchone()
    assert found == (0,)


@pytest.mark.parametrize("number", ["1e999", "-1e400", "1" + "0" * 400 + ".5"])
def test_update_user_metadata_number_past_double_returns_400(
    http: httpx.Client, session: dict[str, Any], admin_dsn: str, number: str
):
    """Python reads these as infinity, which jsonb cannot store: it was a 500."""
    answer = http.put(
        "/auth/v1/user",
        content=f'{{"data": {{"x": {number}}}}}'.encode(),
        headers={**session["headers"], "Content-Type": "application/json"},
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "validation_failed"
    row = user_row(admin_dsn, session["email"])
    assert row is not None and row[1] == {}


# ── deep JSON bodies (§2) ──────────────────────────────────────────────────────────────────────
DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    "body",
    [DEEP, '{"email": "a@example.com", "password": "x", "data": {"a": ' + DEEP + "}}"],
)
def test_sign_up_deeply_nested_json_returns_400(http: httpx.Client, anon_key: str, body: str):
    answer = http.post(
        "/auth/v1/signup",
        content=body.encode(),
        headers={"apikey": anon_key, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "bad_json"


def test_update_user_deeply_nested_json_returns_400(
    http: httpx.Client, session: dict[str, Any], admin_dsn: str
):
    answer = http.put(
        "/auth/v1/user",
        content=('{"data": {"a": ' + DEEP + "}}").encode(),
        headers={**session["headers"], "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "bad_json"
    row = user_row(admin_dsn, session["email"])
    assert row is not None and row[1] == {}


# ── metadata size (§3) ─────────────────────────────────────────────────────────────────────────
def test_sign_up_metadata_over_limit_returns_400_and_creates_nobody(
    http: httpx.Client, anon_key: str, admin_dsn: str
):
    email = random_email()
    answer = http.post(
        "/auth/v1/signup",
        headers={"apikey": anon_key},
        json={"email": email, "password": PASSWORD, "data": {"k": "x" * MAX_METADATA_BYTES}},
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "validation_failed"
    assert user_row(admin_dsn, email) is None


def test_update_user_metadata_merged_over_limit_returns_400_and_keeps_metadata(
    http: httpx.Client, session: dict[str, Any], admin_dsn: str
):
    half = "x" * (MAX_METADATA_BYTES // 2)
    first = http.put("/auth/v1/user", headers=session["headers"], json={"data": {"a": half}})
    assert first.status_code == 200, first.text
    # Each request is under the limit; merged, they are over it.
    second = http.put("/auth/v1/user", headers=session["headers"], json={"data": {"b": half}})
    assert second.status_code == 400 and second.json()["error_code"] == "validation_failed"
    row = user_row(admin_dsn, session["email"])
    assert row is not None and row[1] == {"a": half}
    # Replacing a key with a value of the same size stays within the limit.
    third = http.put("/auth/v1/user", headers=session["headers"], json={"data": {"a": half}})
    assert third.status_code == 200


def test_update_user_metadata_megabytes_returns_400_and_tokens_stay_small(
    http: httpx.Client, session: dict[str, Any], anon_key: str
):
    """The repro: bodies under the 1 MiB body limit, merged into megabytes of metadata, were
    copied into every token the user got."""
    for key in ("a", "b", "c", "d", "e"):
        answer = http.put(
            "/auth/v1/user", headers=session["headers"], json={"data": {key: "x" * 900_000}}
        )
        assert answer.status_code == 400, answer.text
    signed_in = http.post(
        "/auth/v1/token",
        params={"grant_type": "password"},
        headers={"apikey": anon_key},
        json={"email": session["email"], "password": PASSWORD},
    )
    assert signed_in.status_code == 200 and len(signed_in.json()["access_token"]) < 2048


def test_admin_update_app_metadata_over_limit_returns_400(
    http: httpx.Client, keys: StackKeys, session: dict[str, Any], admin_dsn: str
):
    row = user_row(admin_dsn, session["email"])
    assert row is not None
    admin = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
    answer = http.put(
        f"/auth/v1/admin/users/{row[0]}",
        headers=admin,
        json={"app_metadata": {"roles": ["r" * 100] * 50}},
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "validation_failed"


# ── sign-in refuses what sign-up refuses (§3) ──────────────────────────────────────────────────
@pytest.mark.parametrize("suffix", ["-and-more", "\u00e9"])
def test_sign_in_password_over_72_bytes_returns_invalid_credentials(
    http: httpx.Client, anon_key: str, suffix: str
):
    """bcrypt compares the first 72 bytes only: a longer password sharing them must not pass."""
    email = random_email()
    password = "p" * 72
    assert sign_up(http, anon_key, email=email, password=password).status_code == 200
    answer = http.post(
        "/auth/v1/token",
        params={"grant_type": "password"},
        headers={"apikey": anon_key},
        json={"email": email, "password": password + suffix},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "invalid_credentials"


@pytest.mark.parametrize("password", ["correct\\u0000horse-9", "\\ud800correct-horse-9"])
def test_sign_in_unstorable_password_returns_invalid_credentials(
    http: httpx.Client, anon_key: str, session: dict[str, Any], password: str
):
    body = f'{{"email": "{session["email"]}", "password": "{password}"}}'
    answer = http.post(
        "/auth/v1/token",
        params={"grant_type": "password"},
        content=body.encode(),
        headers={"apikey": anon_key, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400 and answer.json()["error_code"] == "invalid_credentials"


# ── admin users API (§2) ───────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "params",
    [
        {"page": str(10**30)},
        {"page": str(2**63)},
        {"page": "9223372036854775807", "per_page": "1000"},
        {"per_page": "\u00b2"},
        {"per_page": "\u0663"},
        {"page": "0"},
        {"page": "-1"},
        {"per_page": "1" * 5000},
    ],
)
def test_admin_list_users_bad_pagination_returns_400(
    http: httpx.Client, keys: StackKeys, params: dict[str, str]
):
    admin = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
    answer = http.get("/auth/v1/admin/users", params=params, headers=admin)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "validation_failed"
    assert answer.json()["msg"].startswith("Bad Pagination Parameters")


@pytest.mark.parametrize(
    "duration", ["99999999999h", "1" * 400 + "h", "9223372037s", "\u0663h", "1e9h"]
)
def test_admin_ban_duration_out_of_range_returns_400_and_writes_nothing(
    http: httpx.Client, keys: StackKeys, session: dict[str, Any], admin_dsn: str, duration: str
):
    row = user_row(admin_dsn, session["email"])
    assert row is not None
    admin = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
    answer = http.put(
        f"/auth/v1/admin/users/{row[0]}", headers=admin, json={"ban_duration": duration}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "validation_failed"
    after = user_row(admin_dsn, session["email"])
    assert after is not None and after[2] is None
    email = random_email()
    created = http.post(
        "/auth/v1/admin/users", headers=admin, json={"email": email, "ban_duration": duration}
    )
    assert created.status_code == 400 and user_row(admin_dsn, email) is None


def test_admin_ban_duration_in_range_bans_user(
    http: httpx.Client, keys: StackKeys, session: dict[str, Any], admin_dsn: str
):
    row = user_row(admin_dsn, session["email"])
    assert row is not None
    admin = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
    answer = http.put(
        f"/auth/v1/admin/users/{row[0]}", headers=admin, json={"ban_duration": "2562047h"}
    )
    assert answer.status_code == 200, answer.text
    after = user_row(admin_dsn, session["email"])
    assert after is not None and after[2] is not None


@pytest.mark.parametrize(
    "body",
    [
        {"phone": "1" * 5000},
        {"phone": "+1 555 0100 x"},
        {"email": "{email}", "role": "r" * 64},
        {"email": "{email}", "app_metadata": {"k": "x" * MAX_METADATA_BYTES}},
    ],
)
def test_admin_create_user_oversized_fields_return_400(
    http: httpx.Client, keys: StackKeys, body: dict[str, object]
):
    admin = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
    filled = {k: (random_email() if v == "{email}" else v) for k, v in body.items()}
    answer = http.post("/auth/v1/admin/users", headers=admin, json=filled)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "validation_failed"


# ── rate limits (§3) ───────────────────────────────────────────────────────────────────────────
def test_rate_limits_read_from_config_toml_with_env_override(tmp_path: Path):
    config = ROOT / "supabase" / "config.toml"
    assert read_rate_limits(config, {}) == {
        "sign_in_sign_ups": 30,
        "token_refresh": 150,
        "anonymous_users": 30,
        "token_verifications": 30,
    }
    override = {"TOKENMETER_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS": "2"}
    assert read_rate_limits(config, override)["sign_in_sign_ups"] == 2
    assert read_rate_limits(tmp_path / "missing.toml", {})["token_refresh"] == 150
    off = {"TOKENMETER_AUTH_RATE_LIMIT_TOKEN_REFRESH": "unlimited"}
    assert read_rate_limits(config, off)["token_refresh"] == float("inf")
    bad = tmp_path / "config.toml"
    for value in ("-1", '"unlimited"', "inf"):
        bad.write_text(f"[auth.rate_limit]\nsign_in_sign_ups = {value}\n")
        with pytest.raises(ValueError):
            read_rate_limits(bad, {})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def limited_gateway(stack: Stack) -> Iterator[str]:
    """A second gateway on the test stack's database, with both limits at 1 per 5 minutes (the
    session's gateway has them raised by conftest). Yields its base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "TOKENMETER_API_PORT": str(port),
        "TOKENMETER_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS": "1",
        "TOKENMETER_AUTH_RATE_LIMIT_TOKEN_REFRESH": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.stack.gateway"],
        cwd=ROOT,
        env=env,
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


BURST = 30  # GoTrue's bucket size, whatever the configured rate


def test_sign_up_over_rate_limit_returns_429(limited_gateway: str, anon_key: str):
    with httpx.Client(base_url=limited_gateway, headers={"apikey": anon_key}) as http:
        # Refused sign-ups count too (as in GoTrue): cheap requests that empty the bucket.
        for _ in range(BURST):
            weak = http.post("/auth/v1/signup", json={"email": random_email(), "password": "x"})
            assert weak.status_code == 422
        answer = http.post("/auth/v1/signup", json={"email": random_email(), "password": PASSWORD})
        assert answer.status_code == 429
        assert answer.json() == {
            "code": 429,
            "error_code": "over_request_rate_limit",
            "msg": "Request rate limit reached",
        }


def test_sign_in_over_rate_limit_returns_429(limited_gateway: str, anon_key: str):
    with httpx.Client(base_url=limited_gateway, headers={"apikey": anon_key}, timeout=30) as http:
        body = {"email": random_email(), "password": "wrong-password-1"}
        for _ in range(BURST):
            refused = http.post("/auth/v1/token", params={"grant_type": "password"}, json=body)
            assert refused.status_code == 400
        answer = http.post("/auth/v1/token", params={"grant_type": "password"}, json=body)
        assert (
            answer.status_code == 429 and answer.json()["error_code"] == "over_request_rate_limit"
        )
        refresh = http.post(
            "/auth/v1/token", params={"grant_type": "refresh_token"}, json={"refresh_token": "x"}
        )
        assert refresh.status_code == 429


def test_sign_up_test_stack_unlimited_does_not_refuse_a_burst(http: httpx.Client, anon_key: str):
    """conftest turns the limits off for the test stack: more than a burst at once passes."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda _: sign_up(http, anon_key, password="x").status_code, range(BURST + 10))
        )
    assert statuses == [422] * (BURST + 10)


# ── headers built from stored values (§2) ──────────────────────────────────────────────────────
@pytest.fixture()
def text_key_table(db: psycopg.Connection, http: httpx.Client, keys: StackKeys) -> str:
    """A table keyed by text that the service role may insert into, visible to the REST cache."""
    db.execute(
        "create table if not exists public.hostile_text_keys (key text primary key);"
        "alter table public.hostile_text_keys enable row level security;"
        "grant select, insert on public.hostile_text_keys to service_role;"
        "notify pgrst, 'reload schema'"
    )
    admin = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
    deadline = time.monotonic() + 10
    while http.get("/rest/v1/hostile_text_keys", headers=admin).status_code != 200:
        assert time.monotonic() < deadline, "schema cache never saw hostile_text_keys"
        time.sleep(0.05)
    return "hostile_text_keys"


@pytest.mark.parametrize("key", ["\u0100-{tag}", "line\nbreak-{tag}", "a&b=c, d-{tag}"])
def test_insert_headers_only_location_header_is_percent_encoded(
    http: httpx.Client, keys: StackKeys, text_key_table: str, key: str
):
    """The Location header quotes the new row's key: any text, so it must be encoded, not
    copied (a non-Latin-1 key was a 500 after the row was written)."""
    value = key.format(tag=uuid.uuid4().hex[:8])
    answer = http.post(
        f"/rest/v1/{text_key_table}",
        json={"key": value},
        headers={
            "apikey": keys.service_role_key,
            "Authorization": f"Bearer {keys.service_role_key}",
            "Prefer": "return=headers-only",
        },
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/{text_key_table}?key=eq.{quote(value, safe='')}"
