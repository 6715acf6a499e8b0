"""Asymmetric signing keys (issue 14 §2): with `[auth] signing_keys_path` (here
TOKENMETER_AUTH_SIGNING_KEYS_PATH on a second gateway over the test stack's database) access
tokens are ES256/RS256 with the key's `kid`, the public keys are at
/auth/v1/.well-known/jwks.json, and Auth, REST and the Functions relay verify them by kid; the
anon and service_role keys stay HS256."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from auth_gateway import auth_gateway
from conftest import random_email
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.stack import signing_keys
from app.stack.keys import StackKeys
from supabase import Client, ClientOptions, create_client

PASSWORD = "correct-horse-9"


def _key_file(tmp: Path, algorithm: str) -> tuple[Path, dict[str, object]]:
    key = signing_keys.generate(algorithm)
    path = tmp / f"signing_keys_{algorithm}.json"
    signing_keys.write(path, [key])
    return path, key


@pytest.fixture(scope="module")
def es256(stack: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """(gateway URL, private JWK) of a gateway signing with a new ES256 key."""
    path, key = _key_file(tmp_path_factory.mktemp("keys"), "ES256")
    with auth_gateway({"TOKENMETER_AUTH_SIGNING_KEYS_PATH": str(path)}) as url:
        yield url, key


@pytest.fixture()
def client_on(keys: StackKeys) -> Iterator[Callable[[str], Client]]:
    opened: list[httpx.Client] = []

    def build(url: str) -> Client:
        http = httpx.Client(timeout=60)
        opened.append(http)
        return create_client(
            url, keys.anon_key, ClientOptions(auto_refresh_token=False, httpx_client=http)
        )

    yield build
    for http in opened:
        http.close()


def _signed_up(client: Client) -> tuple[str, str]:
    """(user id, access token) of a new user."""
    response = client.auth.sign_up({"email": random_email(), "password": PASSWORD})
    assert response.session is not None and response.user is not None
    return response.user.id, response.session.access_token


def test_sign_up_with_es256_key_returns_token_with_kid_verified_by_jwks(
    es256: tuple[str, dict], client_on: Callable[[str], Client]
):
    url, key = es256
    user_id, token = _signed_up(client_on(url))
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES256", key["kid"])
    published = httpx.get(f"{url}/auth/v1/.well-known/jwks.json")  # no project key needed
    assert published.status_code == 200
    assert published.headers["cache-control"] == "public, max-age=600"
    jwks = published.json()["keys"]
    assert [k["kid"] for k in jwks] == [key["kid"]]
    assert "d" not in jwks[0] and jwks[0]["key_ops"] == ["verify"] and jwks[0]["use"] == "sig"
    public = jwt.PyJWK(jwks[0])
    claims = jwt.decode(token, public.key, algorithms=["ES256"], audience="authenticated")
    assert claims["sub"] == user_id


def test_get_claims_verifies_es256_token_with_jwks(
    es256: tuple[str, dict], client_on: Callable[[str], Client]
):
    url, key = es256
    client = client_on(url)
    _signed_up(client)
    response = client.auth.get_claims()
    assert response is not None and response["headers"]["kid"] == key["kid"]
    assert client.auth._jwks["keys"][0]["kid"] == key["kid"]


def test_auth_user_endpoint_accepts_es256_token_and_refresh_keeps_kid(
    es256: tuple[str, dict], client_on: Callable[[str], Client]
):
    url, key = es256
    client = client_on(url)
    user_id, _token = _signed_up(client)
    assert client.auth.get_user().user.id == user_id
    refreshed = client.auth.refresh_session().session
    assert jwt.get_unverified_header(refreshed.access_token)["kid"] == key["kid"]


def test_rest_accepts_es256_token_and_applies_rls(
    es256: tuple[str, dict], client_on: Callable[[str], Client]
):
    url, _key = es256
    client = client_on(url)
    user_id, _token = _signed_up(client)
    rows = client.table("user_balances").select("user_id").execute().data
    assert rows == [{"user_id": user_id}]


def test_rest_refuses_es256_token_of_another_key(
    es256: tuple[str, dict], keys: StackKeys, client_on: Callable[[str], Client]
):
    url, key = es256
    _user_id, token = _signed_up(client_on(url))
    claims = jwt.decode(token, options={"verify_signature": False})
    stranger = jwt.PyJWK(signing_keys.generate("ES256"))
    forged = jwt.encode(claims, stranger.key, algorithm="ES256", headers={"kid": key["kid"]})
    unknown_kid = jwt.encode(claims, stranger.key, algorithm="ES256", headers={"kid": "other"})
    headers = {"apikey": keys.anon_key}
    answers = [
        httpx.get(
            f"{url}/rest/v1/user_balances",
            headers={**headers, "Authorization": f"Bearer {bad}"},
        )
        for bad in (forged, unknown_kid)
    ]
    assert [a.status_code for a in answers] == [401, 401]
    assert all(a.json()["code"].startswith("PGRST30") for a in answers)
    auth = httpx.get(
        f"{url}/auth/v1/user", headers={**headers, "Authorization": f"Bearer {forged}"}
    )
    assert (auth.status_code, auth.json()["error_code"]) == (403, "bad_jwt")


def test_rest_on_gateway_without_keys_refuses_es256_token(
    es256: tuple[str, dict], api_url: str, keys: StackKeys, client_on: Callable[[str], Client]
):
    url, _key = es256
    _user_id, token = _signed_up(client_on(url))
    answer = httpx.get(
        f"{api_url}/rest/v1/user_balances",
        headers={"apikey": keys.anon_key, "Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 401


def test_anon_and_service_keys_stay_hs256_and_accepted(es256: tuple[str, dict], keys: StackKeys):
    url, _key = es256
    assert jwt.get_unverified_header(keys.service_role_key)["alg"] == "HS256"
    answer = httpx.get(
        f"{url}/rest/v1/user_balances?select=user_id&limit=1",
        headers={
            "apikey": keys.service_role_key,
            "Authorization": f"Bearer {keys.service_role_key}",
        },
    )
    assert answer.status_code == 200
    admin = httpx.get(
        f"{url}/auth/v1/admin/users?per_page=1",
        headers={
            "apikey": keys.service_role_key,
            "Authorization": f"Bearer {keys.service_role_key}",
        },
    )
    assert admin.status_code == 200


def test_functions_relay_verifies_es256_token(
    es256: tuple[str, dict], keys: StackKeys, client_on: Callable[[str], Client]
):
    url, _key = es256
    _user_id, token = _signed_up(client_on(url))
    headers = {"apikey": keys.anon_key}
    accepted = httpx.post(
        f"{url}/functions/v1/admin",
        headers={**headers, "Authorization": f"Bearer {token}"},
        json={},
        timeout=60,
    )
    # Past the relay: the function itself refuses a user that is not the service_role.
    assert accepted.status_code == 403 and "x-relay-error" not in accepted.headers
    stranger = jwt.PyJWK(signing_keys.generate("ES256"))
    forged = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}),
        stranger.key,
        algorithm="ES256",
        headers=jwt.get_unverified_header(token),
    )
    refused = httpx.post(
        f"{url}/functions/v1/admin",
        headers={**headers, "Authorization": f"Bearer {forged}"},
        json={},
        timeout=60,
    )
    assert refused.status_code == 401 and refused.headers["x-relay-error"] == "true"


def test_rs256_key_signs_rs256_tokens(
    stack: object, tmp_path: Path, client_on: Callable[[str], Client]
):
    path, key = _key_file(tmp_path, "RS256")
    with auth_gateway({"TOKENMETER_AUTH_SIGNING_KEYS_PATH": str(path)}) as url:
        client = client_on(url)
        user_id, token = _signed_up(client)
        jwks = httpx.get(f"{url}/auth/v1/.well-known/jwks.json").json()["keys"]
        rows = client.table("user_balances").select("user_id").execute().data
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": key["kid"], "typ": "JWT"}
    assert [(k["kty"], k["alg"]) for k in jwks] == [("RSA", "RS256")]
    assert rows == [{"user_id": user_id}]


def test_jwks_without_signing_keys_is_empty_and_tokens_hs256(
    api_url: str, client_on: Callable[[str], Client]
):
    assert httpx.get(f"{api_url}/auth/v1/.well-known/jwks.json").json() == {"keys": []}
    _user_id, token = _signed_up(client_on(api_url))
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_gateway_with_bad_signing_keys_file_does_not_start(stack: object, tmp_path: Path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{**signing_keys.generate("ES256"), "key_ops": ["verify"]}]))
    with pytest.raises(AssertionError, match="no signing key detected"):
        with auth_gateway({"TOKENMETER_AUTH_SIGNING_KEYS_PATH": str(path)}):
            pass


# ── the key file ───────────────────────────────────────────────────────────────────────────────
def test_load_refuses_missing_or_malformed_files(tmp_path: Path):
    with pytest.raises(signing_keys.SigningKeysError, match="does not exist"):
        signing_keys.load(tmp_path / "absent.json")
    cases = {
        "not json": "failed to decode",
        "{}": "expected a JSON array",
        json.dumps([{"kty": "EC", "kid": "a", "crv": "P-384", "x": "AA", "y": "AA"}]): "P-256",
        json.dumps([{"kty": "oct", "kid": "a", "alg": "RS256", "k": "c2VjcmV0"}]): "HS256",
        json.dumps([{**signing_keys.generate("ES256"), "x": "AAAA"}]): "not a valid P-256 key",
        json.dumps([{"kty": "OKP", "kid": "a"}]): "kty must be",
    }
    for index, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"keys{index}.json"
        path.write_text(text)
        with pytest.raises(signing_keys.SigningKeysError, match=message):
            signing_keys.load(path)


def test_load_reads_cli_keys_with_short_coordinates(tmp_path: Path):
    """`supabase gen signing-key` writes EC coordinates without leading zero bytes."""
    while True:
        key = signing_keys.generate("ES256")
        x = int.from_bytes(jwt.utils.base64url_decode(key["x"]), "big")
        if x < 2**248:
            break
    short = jwt.utils.base64url_encode(x.to_bytes(31, "big")).decode()
    path = tmp_path / "cli.json"
    signing_keys.write(path, [{**key, "x": short}])
    loaded = signing_keys.load(path)
    assert loaded.signer is not None and loaded.signer.kid == key["kid"]
    assert len(jwt.utils.base64url_decode(loaded.public_jwks[0]["x"])) == 32


def test_first_signing_key_signs_and_others_verify(tmp_path: Path):
    old = {**signing_keys.generate("RS256"), "key_ops": ["verify"]}
    new, spare = signing_keys.generate("ES256"), signing_keys.generate("ES256")
    path = tmp_path / "rotated.json"
    signing_keys.write(path, [old, new, spare])
    loaded = signing_keys.load(path)
    assert loaded.signer is not None and loaded.signer.kid == new["kid"]
    assert set(loaded.verifiers) == {old["kid"], new["kid"], spare["kid"]}
    assert [k["kid"] for k in loaded.public_jwks] == [old["kid"], new["kid"], spare["kid"]]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_cli_signing_key_writes_and_appends_jwk_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "signing_keys.json"
    monkeypatch.setenv("TOKENMETER_AUTH_SIGNING_KEYS_PATH", str(path))
    runner = CliRunner()
    first = runner.invoke(cli_app, ["stack", "signing-key"])
    second = runner.invoke(cli_app, ["stack", "signing-key", "--append", "--algorithm", "RS256"])
    bad = runner.invoke(cli_app, ["stack", "signing-key", "--algorithm", "HS512", "--yes"])
    assert (first.exit_code, second.exit_code, bad.exit_code) == (0, 0, 2)
    written = json.loads(path.read_text())
    assert [(k["kty"], k["alg"], k["key_ops"]) for k in written] == [
        ("EC", "ES256", ["sign", "verify"]),
        ("RSA", "RS256", ["sign", "verify"]),
    ]
    assert signing_keys.load(path).signer.kid == written[0]["kid"]
