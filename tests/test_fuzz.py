"""Property tests (Hypothesis) against the running test stack: whatever a client sends, the
gateway answers with a documented status, never a 5xx; a refused request writes nothing; and the
single gateway process keeps answering `/health` quickly while the fuzzing runs.

Generated inputs cover the classes a hostile-input review found: PostgREST query strings (logic
trees of random depth, Unicode digits, odd casing, unknown operators), JSON bodies (depth, size,
NaN/Infinity, huge numbers, strings where numbers belong) and headers and JWTs (odd `alg`,
claims of the wrong type, non-ASCII text). CI runs a deterministic, bounded set (the `ci`
profile); `pytest --fuzz-long` runs twenty times more examples with a random seed.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Every status the gateway documents for a refused request (docs/limits.md). A 5xx is a defect.
DOCUMENTED_4XX = {400, 401, 403, 404, 405, 406, 408, 409, 411, 413, 414, 415, 416, 422, 429, 431}

# One fingerprint of everything a request could write: row counts and money sums.
FINGERPRINT_SQL = """
select (select count(*) from auth.users),
       (select count(*) from public.user_balances),
       (select coalesce(sum(balance), 0) from public.user_balances),
       (select count(*) from public.ledger_entries),
       (select count(*) from public.usage_records),
       (select count(*) from public.credit_reservations),
       (select count(*) from public.model_pricing),
       (select count(*) from public.price_audit),
       (select count(*) from public.balance_audit())
"""


# conftest.py turns `pytest --fuzz-long` into this variable before the module is imported.
FUZZ_LONG = os.environ.get("TOKENMETER_FUZZ_LONG") == "1"
FUZZ_SCALE = 20 if FUZZ_LONG else 1


def _examples(base: int) -> Callable[[Any], Any]:
    """`settings` for one property: `base` examples in CI, twenty times more with --fuzz-long."""
    return settings(
        max_examples=base * FUZZ_SCALE,
        deadline=None,
        derandomize=not FUZZ_LONG,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# ---------------------------------------------------------------------------------------------
# Fixtures: one HTTP client, a fingerprint of the database, and the /health watchdog.


# The watchdog runs in a process of its own: a thread here would share this process's GIL with
# Hypothesis generating large examples, and time its own waits rather than the gateway's.
_WATCH_SCRIPT = """
import sys, time, urllib.request
url = sys.argv[1]
while True:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            outcome = "ok" if response.status == 200 else f"status {response.status}"
    except Exception as exc:  # any failure is reported, not raised
        outcome = repr(exc)
    print(f"{time.perf_counter() - started:.6f} {outcome}", flush=True)
    time.sleep(0.05)
"""


class HealthWatch:
    """Pings /health every 50 ms from a separate process and keeps each answer's latency."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> HealthWatch:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WATCH_SCRIPT, f"{self.api_url}/health"],
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Ends the pings and collects their latencies (idempotent)."""
        if self._process is None:
            return
        process, self._process = self._process, None
        process.terminate()
        output, _ = process.communicate(timeout=10)
        for line in output.splitlines():
            latency, _, outcome = line.partition(" ")
            self.latencies.append(float(latency))
            if outcome != "ok":
                self.failures.append(outcome)


@pytest.fixture(scope="module")
def health_watch(api_url: str) -> Iterator[HealthWatch]:
    with HealthWatch(api_url) as watch:
        yield watch


@pytest.fixture(scope="module")
def http(api_url: str, health_watch: HealthWatch) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def fingerprint(admin_dsn: str) -> Iterator[Callable[[], tuple[Any, ...]]]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:

        def take() -> tuple[Any, ...]:
            row = conn.execute(FINGERPRINT_SQL).fetchone()
            assert row is not None
            return tuple(row)

        yield take


@pytest.fixture(scope="module")
def user_token(api_url: str, anon_key: str) -> str:
    """An access token of a freshly signed-up user, for the user-scoped endpoints."""
    email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    response = httpx.post(
        f"{api_url}/auth/v1/signup",
        headers={"apikey": anon_key},
        json={"email": email, "password": "correct-horse-9"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def check_answer(
    response: httpx.Response, before: tuple[Any, ...], after: Callable[[], tuple[Any, ...]]
) -> None:
    """The property every request must have: a documented status, and nothing written on a 4xx."""
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:500]}"
    if status >= 400:
        assert status in DOCUMENTED_4XX, f"undocumented {status}: {response.text[:300]}"
        assert after() == before, f"a refused request ({status}) wrote: {response.text[:300]}"


# ---------------------------------------------------------------------------------------------
# Strategies: the PostgREST grammar, JSON, headers and JWTs.

COLUMNS = ["model", "provider", "input_price_per_token", "currency", "id", "status", "x", "MoDeL"]
OPERATORS = [
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "like",
    "ilike",
    "match",
    "imatch",
    "in",
    "is",
    "cs",
    "cd",
    "ov",
    "fts",
    "plfts",
    "wfts",
    "isdistinct",
    "EQ",
    "Like",
    "zz",
    "",
]
# Unicode digits (superscripts, Arabic-Indic, fullwidth) that str.isdigit() accepts and
# PostgREST's grammar does not; grammar punctuation; controls and astral characters.
TRICKY = "0123456789²³¹٣٤０１⁵-.,:()*!\"'\\ %&=;[]{}<>~^|@#$+\t\x00\x7f\u200béあ𝟘🙂"
# Text a URL can carry as UTF-8 (a lone surrogate cannot be encoded; invalid UTF-8 is sent as
# raw percent escapes instead, see RAW_ESCAPES).
url_char = st.characters(exclude_categories=["Cs"])
text_piece = st.text(alphabet=st.sampled_from(TRICKY) | url_char, max_size=12)
RAW_ESCAPES = ["", "%FF", "%ED%A0%80", "%C0%AF", "%", "%2", "%00", "%E2%82"]
number_like = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(alphabet="0123456789²³٣０⁵-+. e", min_size=1, max_size=8),
)
column = st.sampled_from(COLUMNS) | text_piece
json_path = st.lists(st.tuples(st.sampled_from(["->", "->>"]), column), max_size=3).map(
    lambda steps: "".join(arrow + name for arrow, name in steps)
)
operator = st.tuples(
    st.sampled_from(["", "not."]),
    st.sampled_from(OPERATORS) | text_piece,
    st.sampled_from(["", "(any)", "(all)", "(english)", "(", "(x(y))"]),
).map("".join)
filter_value = st.one_of(text_piece, number_like, st.just("(a,b)"), st.just('("x,y",z)'))


leaf_condition = st.tuples(column, json_path, operator, filter_value).map(
    lambda t: f"{t[0]}{t[1]}.{t[2]}.{t[3]}"
)


def _tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(
        st.sampled_from(["or", "and", "not.or", "not.and", "OR", "xor"]),
        st.lists(children, min_size=0, max_size=4),
    ).map(lambda t: f"{t[0]}({','.join(t[1])})")


logic_tree = st.recursive(leaf_condition, _tree, max_leaves=30)


@st.composite
def deep_tree(draw: st.DrawFn) -> str:
    """A tree far deeper than any real filter: the parser must refuse it cheaply."""
    depth = draw(st.integers(min_value=20, max_value=3000))
    conj = draw(st.sampled_from(["or", "and"]))
    return conj + "=(" + "or(" * depth + "id.eq.1" + ")" * depth + ")"


select_item = st.tuples(
    st.sampled_from(["", "alias:", "¹:", "a b:"]),
    column,
    json_path,
    st.sampled_from(["", "::text", "::int", "::numeric(1²)", "::"]),
).map("".join)
query_param = st.one_of(
    st.tuples(column, st.tuples(operator, filter_value).map(lambda t: f"{t[0]}.{t[1]}")),
    st.tuples(
        st.sampled_from(["or", "and", "not.or", "not.and"]),
        logic_tree.map(lambda s: s[s.find("(") :] if "(" in s else s),
    ),
    st.tuples(st.just("select"), st.lists(select_item, max_size=4).map(",".join)),
    st.tuples(
        st.just("order"),
        st.lists(
            st.tuples(
                column, json_path, st.sampled_from(["", ".asc", ".desc", ".nullsfirst", ".x"])
            ).map("".join),
            max_size=3,
        ).map(",".join),
    ),
    st.tuples(st.sampled_from(["limit", "offset", "LIMIT"]), number_like),
    st.tuples(text_piece, text_piece),
)
query_string = st.lists(query_param, max_size=6)

# JSON: every JSON value, plus what Python's json module also writes (NaN, Infinity) and huge
# numbers; kept as text so the wire form is exactly what a hostile client would send.
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters() | st.sampled_from(TRICKY), max_size=20),
    st.sampled_from(["1e400", "-0", "0.000000000000000000001", "12", "abc", ""]),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def json_body(draw: st.DrawFn, template: dict[str, Any]) -> bytes:
    """A body shaped like `template` with any field replaced, dropped or added; sometimes not
    JSON at all, sometimes nested thousands deep."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "any", "deep", "raw"]))
    if kind == "deep":
        depth = draw(st.integers(min_value=50, max_value=6000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "raw":
        return draw(st.binary(max_size=64))
    if kind == "any":
        return json.dumps(draw(json_value)).encode()
    body = dict(template)
    for key in draw(st.lists(st.sampled_from(sorted(template)), max_size=3, unique=True)):
        if draw(st.booleans()):
            body[key] = draw(json_value)
        else:
            body.pop(key)
    if draw(st.booleans()):
        body[draw(st.text(max_size=6))] = draw(json_value)
    text = json.dumps(body)
    huge = draw(st.sampled_from(["", "1" * 5000, "9e999999", "NaN", "-Infinity"]))
    if huge and body:
        key = draw(st.sampled_from(sorted(body)))
        text = text.replace(json.dumps(key) + ": ", json.dumps(key) + ": " + huge + ', "_": ', 1)
    return text.encode()


# What an HTTP/1.1 client can put in a header value: visible Latin-1 (obs-text included); h11
# refuses controls and edge whitespace before anything is sent.
HEADER_CHARS = st.characters(
    min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"
).filter(lambda c: not 0x80 <= ord(c) <= 0xA0)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def hostile_token(draw: st.DrawFn, secret: str) -> str:
    """A JWT-looking string: garbage segments, or signed with odd headers and claim types."""
    kind = draw(st.sampled_from(["garbage", "signed", "signed", "unsigned", "huge"]))
    if kind == "garbage":
        parts = draw(
            st.lists(
                st.text(alphabet=HEADER_CHARS, max_size=30),
                min_size=1,
                max_size=4,
            )
        )
        return ".".join(parts)
    if kind == "huge":
        return "eyJ" + "A" * draw(st.integers(min_value=1000, max_value=200_000))
    claims: dict[str, Any] = {
        "role": draw(
            st.one_of(
                st.sampled_from(["anon", "authenticated", "service_role", "postgres", "nobody"]),
                json_value,
            )
        ),
        "exp": draw(st.one_of(st.just(int(time.time()) + 3600), json_value)),
    }
    if draw(st.booleans()):
        claims["sub"] = draw(st.one_of(st.just(str(uuid.uuid4())), json_value))
    header = {
        "alg": draw(
            st.sampled_from(["HS256", "none", "RS256", "HS512", "é", "\u2603", ""])
            | st.text(max_size=6)
        ),
        "typ": "JWT",
    }
    if draw(st.booleans()):
        header["kid"] = draw(json_value)
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    if kind == "unsigned":
        return f"{head}.{body}."
    signature = _b64(
        jwt.api_jws.get_algorithm_by_name("HS256").sign(
            f"{head}.{body}".encode(),
            jwt.api_jws.get_algorithm_by_name("HS256").prepare_key(secret),
        )
    )
    return f"{head}.{body}.{signature}"


header_text = st.text(alphabet=HEADER_CHARS, max_size=40)


# ---------------------------------------------------------------------------------------------
# Properties.

REST_TARGETS = ["model_pricing", "usage_records", "user_balances", "ledger_entries", "nope"]


@_examples(600)
@given(
    table=st.sampled_from(REST_TARGETS),
    params=query_string,
    method=st.sampled_from(["GET", "GET", "HEAD", "PATCH", "DELETE"]),
    raw_escape=st.sampled_from(RAW_ESCAPES),
)
def test_rest_query_strings_never_5xx_and_refusals_write_nothing(
    http: httpx.Client,
    anon_key: str,
    service_key: str,
    fingerprint: Callable[[], tuple[Any, ...]],
    table: str,
    params: list[tuple[str, str]],
    method: str,
    raw_escape: str,
) -> None:
    key = service_key if method == "GET" else anon_key
    query = urllib.parse.urlencode(params) + raw_escape
    before = fingerprint()
    response = http.request(
        method,
        f"/rest/v1/{table}?{query}",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        content=b"{}" if method == "PATCH" else None,
    )
    check_answer(response, before, fingerprint)


@_examples(150)
@given(tree=deep_tree())
def test_rest_deep_logic_trees_are_refused_cheaply(
    http: httpx.Client, anon_key: str, fingerprint: Callable[[], tuple[Any, ...]], tree: str
) -> None:
    before = fingerprint()
    started = time.perf_counter()
    response = http.get(f"/rest/v1/model_pricing?{tree}", headers={"apikey": anon_key})
    check_answer(response, before, fingerprint)
    assert time.perf_counter() - started < 2.0


RPC_TEMPLATES: dict[str, dict[str, Any]] = {
    "record_usage": {
        "user_id": "00000000-0000-0000-0000-000000000000",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 5,
        "request_id": "fuzz",
        "metadata": {"images": "1"},
    },
    "estimate_cost": {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 5},
    "top_up": {"user_id": "00000000-0000-0000-0000-000000000000", "amount": "1", "reference": "r"},
    "reserve_credit": {
        "user_id": "00000000-0000-0000-0000-000000000000",
        "request_id": "r",
        "amount": "1",
    },
    "price_for": {"provider": "openai", "model": "gpt-4o"},
}


@_examples(700)
@given(data=st.data(), function=st.sampled_from(sorted(RPC_TEMPLATES)), as_service=st.booleans())
def test_rpc_json_bodies_never_5xx_and_refusals_write_nothing(
    http: httpx.Client,
    anon_key: str,
    service_key: str,
    fingerprint: Callable[[], tuple[Any, ...]],
    data: st.DataObject,
    function: str,
    as_service: bool,
) -> None:
    body = data.draw(json_body(RPC_TEMPLATES[function]))
    key = service_key if as_service else anon_key
    before = fingerprint()
    response = http.post(
        f"/rest/v1/rpc/{function}",
        content=body,
        headers={
            "apikey": key,
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
        },
    )
    check_answer(response, before, fingerprint)


@_examples(300)
@given(data=st.data(), target=st.sampled_from(["signup", "token", "user", "admin"]))
def test_auth_json_bodies_never_5xx_and_refusals_write_nothing(
    http: httpx.Client,
    anon_key: str,
    service_key: str,
    user_token: str,
    fingerprint: Callable[[], tuple[Any, ...]],
    data: st.DataObject,
    target: str,
) -> None:
    method, path, key, token, template = {
        "signup": (
            "POST",
            "/auth/v1/signup",
            anon_key,
            anon_key,
            {"email": "fuzz@example.com", "password": "correct-horse-9"},
        ),
        "token": (
            "POST",
            "/auth/v1/token?grant_type=password",
            anon_key,
            anon_key,
            {"email": "fuzz@example.com", "password": "x"},
        ),
        "user": ("PUT", "/auth/v1/user", anon_key, user_token, {"data": {"plan": "pro"}}),
        "admin": (
            "POST",
            "/auth/v1/admin/users",
            service_key,
            service_key,
            {"email": "fuzz@example.com", "password": "correct-horse-9", "ban_duration": "1h"},
        ),
    }[target]
    body = data.draw(json_body(template))
    before = fingerprint()
    response = http.request(
        method,
        path,
        content=body,
        headers={
            "apikey": key,
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
    )
    check_answer(response, before, fingerprint)


@_examples(400)
@given(
    data=st.data(),
    path=st.sampled_from(
        [
            "/rest/v1/model_pricing?limit=1",
            "/rest/v1/rpc/my_balance",
            "/auth/v1/user",
            "/auth/v1/admin/users?page=1",
            "/functions/v1/health",
        ]
    ),
    where=st.sampled_from(["apikey", "authorization", "both"]),
)
def test_hostile_tokens_and_headers_never_5xx(
    http: httpx.Client,
    keys: Any,
    fingerprint: Callable[[], tuple[Any, ...]],
    data: st.DataObject,
    path: str,
    where: str,
) -> None:
    token = data.draw(hostile_token(keys.jwt_secret)) or "."
    headers: list[tuple[bytes, bytes]] = []
    encoded = (
        token.encode("latin-1", errors="replace")
        if all(ord(c) < 256 for c in token)
        else token.encode()
    )
    if where in ("apikey", "both"):
        headers.append((b"apikey", encoded))
    if where in ("authorization", "both"):
        headers.append((b"authorization", b"Bearer " + encoded))
    for name, value in data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "x-client-info",
                        "prefer",
                        "accept",
                        "range",
                        "content-profile",
                        "accept-profile",
                        "x-" + "a" * 10,
                    ]
                ),
                header_text,
            ),
            max_size=4,
        )
    ):
        headers.append((name.encode(), value.encode("latin-1")))
    before = fingerprint()
    method = "POST" if "rpc" in path else "GET"
    response = http.request(
        method, path, headers=headers, content=b"{}" if method == "POST" else None
    )
    check_answer(response, before, fingerprint)


def test_token_with_non_string_kid_is_refused_401(http: httpx.Client, keys: Any) -> None:
    """Found by this suite: PyJWT rejects a non-string `kid` with InvalidTokenError, not
    DecodeError, and the header check let it escape as a 500."""
    token = jwt.encode({"role": "anon"}, keys.jwt_secret, algorithm="HS256")
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": None}).encode())
    body = token.split(".")[1]
    signer = jwt.api_jws.get_algorithm_by_name("HS256")
    signature = _b64(signer.sign(f"{head}.{body}".encode(), signer.prepare_key(keys.jwt_secret)))
    forged = f"{head}.{body}.{signature}"
    for path in ("/rest/v1/model_pricing?limit=1", "/auth/v1/user", "/functions/v1/health"):
        response = http.get(path, headers={"apikey": forged, "Authorization": f"Bearer {forged}"})
        assert response.status_code == 401, (path, response.status_code, response.text)


def test_health_answered_quickly_throughout_the_fuzzing(health_watch: HealthWatch) -> None:
    """Runs last in this module (pytest keeps file order): by now every property above ran."""
    health_watch.stop()
    assert not health_watch.failures, health_watch.failures[:5]
    assert len(health_watch.latencies) >= 20
    slow = [latency for latency in health_watch.latencies if latency > 0.1]
    # Every /health answer inside 100 ms; on a shared 2-core runner allow 1 % outliers from the
    # OS scheduler, never a stall (a blocked event loop shows as seconds, not one slow ping).
    assert len(slow) <= len(health_watch.latencies) // 100, (
        f"{len(slow)} of {len(health_watch.latencies)} pings over 100 ms; "
        f"median {statistics.median(health_watch.latencies) * 1000:.1f} ms, worst {max(health_watch.latencies) * 1000:.0f} ms"
    )
    assert max(health_watch.latencies) < 1.0
