"""Asymmetric JWT signing keys, configured as the Supabase CLI does: `[auth] signing_keys_path` in
supabase/config.toml names a JSON array of private JWKs (relative paths from `supabase/`), the
file `supabase gen signing-key` writes and `tokenmeter stack signing-key` writes here.

With such a file the Auth API signs access tokens with its signing key (ES256 or RS256, the
key's `kid` in the header) and publishes the public keys at /auth/v1/.well-known/jwks.json; REST
and the Functions relay verify tokens by `kid` against the same set. Without one, every token is
HS256 with the stack's secret, as before. The anon and service_role keys stay HS256 either way.

Which key signs: the first whose `key_ops` holds "sign" (the CLI signs its own tokens with the
first key). GoTrue refuses a set with several signing keys; the local stack takes the first, so
a rotation (`--append`, then marking the old key verify-only) never stops the stack. Keys are
EC P-256 (ES256), RSA (RS256, at least 2048 bits) or oct (HS256, verification by `kid`, or
signing when marked so). An oct key is never published.
"""

from __future__ import annotations

import base64
import json
import os
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

PATH_ENV = "TOKENMETER_AUTH_SIGNING_KEYS_PATH"
ALGORITHMS = ("ES256", "RS256")
MIN_RSA_BITS = 2048
# A JWK set file is a few keys; anything much larger is not one.
MAX_FILE_BYTES = 1024 * 1024

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | bytes
VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | bytes


class SigningKeysError(ValueError):
    """The signing keys file is missing or not a JWK set the stack can use."""


@dataclass(frozen=True)
class Signer:
    kid: str
    alg: str  # ES256, RS256 or HS256
    key: SigningKey


@dataclass(frozen=True)
class KeySet:
    """The configured keys: the one that signs, every key that verifies (by kid), and the
    public JWKs to publish. Empty when no file is configured."""

    signer: Signer | None = None
    verifiers: dict[str, tuple[str, VerifyingKey]] = field(default_factory=dict)
    public_jwks: list[dict[str, Any]] = field(default_factory=list)


# ── reading ────────────────────────────────────────────────────────────────────────────────────
def configured_path(config_toml: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """The signing keys file `[auth] signing_keys_path` names (TOKENMETER_AUTH_SIGNING_KEYS_PATH
    overrides it; an empty value turns it off), resolved as the CLI resolves it: relative to
    the `supabase/` folder. None when unset."""
    environ = os.environ if environ is None else environ
    if PATH_ENV in environ:
        value: Any = environ[PATH_ENV]
    else:
        try:
            auth = tomllib.loads(config_toml.read_text()).get("auth", {})
        except FileNotFoundError:
            auth = {}
        value = auth.get("signing_keys_path", "")
    if not isinstance(value, str):
        raise SigningKeysError(f"[auth] signing_keys_path must be a string, not {value!r}")
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else (config_toml.parent / path).resolve()


def load(path: Path | None) -> KeySet:
    """The key set in `path` (None: no keys). Raises SigningKeysError with what is wrong."""
    if path is None:
        return KeySet()
    try:
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except FileNotFoundError:
        raise SigningKeysError(
            f"failed to read signing keys: {path} does not exist "
            "(write one with `tokenmeter stack signing-key`)"
        ) from None
    except OSError as exc:
        raise SigningKeysError(f"failed to read signing keys: {exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SigningKeysError(f"failed to read signing keys: {path} is over 1 MiB")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SigningKeysError(f"failed to decode signing keys in {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        data = data["keys"]  # a JWKS object is accepted too
    if not isinstance(data, list) or not data:
        raise SigningKeysError(f"failed to decode signing keys in {path}: expected a JSON array")
    signer: Signer | None = None
    verifiers: dict[str, tuple[str, VerifyingKey]] = {}
    public: list[dict[str, Any]] = []
    for index, jwk in enumerate(data):
        where = f"signing key {index + 1} in {path}"
        if not isinstance(jwk, dict):
            raise SigningKeysError(f"{where}: not a JSON object")
        kid, alg, private, verifying, public_jwk = _parse(jwk, where)
        if kid in verifiers:
            raise SigningKeysError(f"{where}: duplicate kid {kid!r}")
        verifiers[kid] = (alg, verifying)
        if public_jwk is not None:
            public.append(public_jwk)
        ops = jwk.get("key_ops") or []
        if signer is None and "sign" in ops:
            if private is None:
                raise SigningKeysError(f"{where}: key_ops has 'sign' but the key has no 'd'")
            signer = Signer(kid, alg, private)
    if signer is None:
        raise SigningKeysError(
            f'no signing key detected in {path}: one key needs "key_ops": ["sign", ...]'
        )
    return KeySet(signer=signer, verifiers=verifiers, public_jwks=public)


def _b64(jwk: dict[str, Any], name: str, where: str, size: int | None = None) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise SigningKeysError(f"{where}: missing '{name}'")
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise SigningKeysError(f"{where}: '{name}' is not base64url") from None
    if size is not None and len(data) > size:
        raise SigningKeysError(f"{where}: '{name}' is longer than {size} bytes")
    return int.from_bytes(data, "big")


def _parse(
    jwk: dict[str, Any], where: str
) -> tuple[str, str, SigningKey | None, VerifyingKey, dict[str, Any] | None]:
    """(kid, alg, private key or None, verifying key, public JWK or None for oct)."""
    kty, kid, alg = jwk.get("kty"), jwk.get("kid"), jwk.get("alg")
    if not isinstance(kid, str) or not kid:
        raise SigningKeysError(f"{where}: missing 'kid'")
    public_jwk: dict[str, Any] | None
    if kty == "EC":
        if alg not in (None, "ES256") or jwk.get("crv") != "P-256":
            raise SigningKeysError(f"{where}: EC keys must be ES256 on curve P-256")
        # The CLI writes coordinates without leading zero bytes (Go's big.Int.Bytes), so they
        # are read as numbers, not as 32-byte strings.
        x, y = _b64(jwk, "x", where, 32), _b64(jwk, "y", where, 32)
        try:
            public_numbers = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1())
            verifying: VerifyingKey = public_numbers.public_key()
            private: SigningKey | None = None
            if "d" in jwk:
                private = ec.EllipticCurvePrivateNumbers(
                    _b64(jwk, "d", where, 32), public_numbers
                ).private_key()
        except ValueError as exc:
            raise SigningKeysError(f"{where}: not a valid P-256 key ({exc})") from None
        alg = "ES256"
        public_jwk = {
            "alg": alg,
            "crv": "P-256",
            "kid": kid,
            "kty": "EC",
            "use": "sig",
            "key_ops": ["verify"],
            "x": _coordinate(x),
            "y": _coordinate(y),
        }
    elif kty == "RSA":
        if alg not in (None, "RS256"):
            raise SigningKeysError(f"{where}: RSA keys must be RS256")
        n, e = _b64(jwk, "n", where, 2048), _b64(jwk, "e", where, 8)
        if n.bit_length() < MIN_RSA_BITS:
            raise SigningKeysError(f"{where}: RSA keys must have at least {MIN_RSA_BITS} bits")
        try:
            public_rsa = rsa.RSAPublicNumbers(e, n)
            verifying = public_rsa.public_key()
            private = None
            if "d" in jwk:
                d = _b64(jwk, "d", where, 2048)
                if "p" in jwk and "q" in jwk:
                    p, q = _b64(jwk, "p", where, 1024), _b64(jwk, "q", where, 1024)
                else:
                    p, q = rsa.rsa_recover_prime_factors(n, e, d)
                private = rsa.RSAPrivateNumbers(
                    p,
                    q,
                    d,
                    rsa.rsa_crt_dmp1(d, p),
                    rsa.rsa_crt_dmq1(d, q),
                    rsa.rsa_crt_iqmp(p, q),
                    public_rsa,
                ).private_key()
        except ValueError as exc:
            raise SigningKeysError(f"{where}: not a valid RSA key ({exc})") from None
        alg = "RS256"
        public_jwk = {
            "alg": alg,
            "e": jwk["e"],
            "kid": kid,
            "kty": "RSA",
            "use": "sig",
            "key_ops": ["verify"],
            "n": jwk["n"],
        }
    elif kty == "oct":
        if alg not in (None, "HS256"):
            raise SigningKeysError(f"{where}: oct keys must be HS256")
        secret = jwk.get("k")
        if not isinstance(secret, str) or not secret:
            raise SigningKeysError(f"{where}: missing 'k'")
        try:
            key_bytes = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        except ValueError:
            raise SigningKeysError(f"{where}: 'k' is not base64url") from None
        return kid, "HS256", key_bytes, key_bytes, None
    else:
        raise SigningKeysError(f"{where}: kty must be EC, RSA or oct, not {kty!r}")
    if "ext" in jwk:
        public_jwk["ext"] = jwk["ext"]
    return kid, alg, private, verifying, dict(sorted(public_jwk.items()))


def _coordinate(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


def _b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ── generating ─────────────────────────────────────────────────────────────────────────────────
def generate(algorithm: str = "ES256") -> dict[str, Any]:
    """A new private JWK as `supabase gen signing-key` writes it: a random UUID as kid,
    use "sig", key_ops ["sign", "verify"], ext true; P-256 for ES256, 2048-bit RSA for RS256.
    Raises SigningKeysError for another algorithm."""
    kid = str(uuid.uuid4())
    base: dict[str, Any] = {"use": "sig", "key_ops": ["sign", "verify"], "ext": True}
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.private_numbers()
        return {
            "kty": "EC",
            "kid": kid,
            **base,
            "alg": "ES256",
            "crv": "P-256",
            "x": _coordinate(numbers.public_numbers.x),
            "y": _coordinate(numbers.public_numbers.y),
            "d": _coordinate(numbers.private_value),
        }
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        nums = key.private_numbers()
        return {
            "kty": "RSA",
            "kid": kid,
            **base,
            "alg": "RS256",
            "n": _b64_int(nums.public_numbers.n),
            "e": _b64_int(nums.public_numbers.e),
            "d": _b64_int(nums.d),
            "p": _b64_int(nums.p),
            "q": _b64_int(nums.q),
            "dp": _b64_int(nums.dmp1),
            "dq": _b64_int(nums.dmq1),
            "qi": _b64_int(nums.iqmp),
        }
    raise SigningKeysError(
        f"unsupported algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}"
    )


def write(path: Path, keys: list[dict[str, Any]]) -> None:
    """Write a JWK set file (mode 0600: it holds private keys), as the CLI does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(keys, out, indent=2)
        out.write("\n")
