"""Every error the billing SQL can raise reaches Python as its own typed exception.

Two halves: a static check that each code the migrations raise (`message = '<code>'`, parsed
from supabase/migrations/*.sql) has a mapping in `app.errors.CODE_TO_ERROR`, and live checks
that `Meter` and `AsyncMeter` turn the real API errors of the local stack into those types
(`raise ... from` the `postgrest.APIError`, with the detail and the offending field).
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import random_email
from postgrest import APIError

from app import errors
from app.client import translate
from app.errors import (
    CODE_TO_ERROR,
    Conflict,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidInput,
    InvalidUsage,
    NotFound,
    PermissionDenied,
    PriceMissing,
    TokenmeterError,
    Unavailable,
    UnknownModel,
    from_api_code,
)
from app.meter import AsyncMeter, Meter, _Operations
from supabase import (
    AsyncClientOptions,
    Client,
    ClientOptions,
    acreate_client,
    create_client,
)

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = sorted((ROOT / "supabase" / "migrations").glob("*.sql"))
PASSWORD = "correct-horse-9"

# `message = 'code'` in `raise exception using ...`; `'message', 'code'` in the JSON errors the
# batch returns instead of raising; the third argument of private.check_text (its message).
RAISED = re.compile(r"\bmessage\s*=\s*'([a-z][a-z0-9_]*)'")
RETURNED = re.compile(r"'message'\s*,\s*'([a-z][a-z0-9_]*)'")
CHECK_TEXT = re.compile(r"private\.check_text\(\s*'[^']*'\s*,\s*[^,()]+,\s*'([a-z][a-z0-9_]*)'\)")
CATALOG_ROW = re.compile(
    r"^-- [│└]\s+(\S{5})\s+([a-z][a-z0-9_]*)\s+(\d{3}(?:/\d{3})?)\s", re.MULTILINE
)


def _strip_line_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


RAISED_WITH_STATE = re.compile(
    r"errcode\s*=\s*'([0-9A-Z]{5})'\s*,\s*message\s*=\s*'([a-z][a-z0-9_]*)'"
)


def internal_codes(paths: list[Path] = MIGRATIONS) -> set[str]:
    """Codes used only as control flow: raised with a SQLSTATE that no other code uses and
    that a handler in the same file catches (`exception when sqlstate 'PT000'`), so they never
    reach a client (import_model_prices' dry_run)."""
    raised = [
        (path, state, code)
        for path in paths
        for state, code in RAISED_WITH_STATE.findall(_strip_line_comments(path.read_text()))
    ]
    internal = set()
    for path, state, code in raised:
        shared = {c for _, s, c in raised if s == state} != {code}
        caught = re.search(rf"when\s+sqlstate\s+'{state}'", path.read_text(), re.IGNORECASE)
        if caught and not shared:
            internal.add(code)
    return internal


def sql_error_codes(paths: list[Path] = MIGRATIONS) -> dict[str, set[str]]:
    """code → the migration files that raise or return it to a client (comments ignored)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        body = _strip_line_comments(path.read_text())
        for pattern in (RAISED, RETURNED, CHECK_TEXT):
            for code in pattern.findall(body):
                found.setdefault(code, set()).add(path.name)
    for code in internal_codes(paths):
        found.pop(code, None)
    return found


# ── static: SQL codes ↔ CODE_TO_ERROR ─────────────────────────────────────────────────────
def test_sql_error_codes_parsed_from_migrations_finds_the_known_codes():
    codes = sql_error_codes()
    # The parser must see the codes we know are there, or the next test proves nothing.
    assert {
        "insufficient_balance",
        "invalid_usage",
        "idempotency_conflict",
        "unknown_model",
        "price_missing",
        "forbidden",
        "immutable_row",
        "reservation_not_found",
    } <= set(codes)


def test_sql_error_codes_every_code_raised_has_a_mapping():
    missing = {
        code: sorted(files)
        for code, files in sql_error_codes().items()
        if code not in CODE_TO_ERROR
    }
    assert missing == {}, f"codes raised by the SQL without an app.errors mapping: {missing}"


def test_sql_error_codes_only_dry_run_is_exempt_as_control_flow():
    # The exemption above must stay narrow: a new caught-and-swallowed code is reviewed here.
    assert internal_codes() <= {"dry_run"}


def test_sql_error_catalog_lists_every_billing_core_code_with_its_mapping():
    # The catalog (20251018000003) documents every code of the 0.1.0 baseline; later migrations
    # are checked by the mapping test above, since released migrations are never edited.
    catalog_file = next(p for p in MIGRATIONS if "create_user_balance_trigger" in p.name)
    catalog = {
        code: (sqlstate, http)
        for sqlstate, code, http in CATALOG_ROW.findall(catalog_file.read_text())
    }
    core = [p for p in MIGRATIONS if int(p.name.split("_", 1)[0]) <= 20251130000012]
    assert set(sql_error_codes(core)) <= set(catalog), "a code is raised but not in the catalog"
    assert set(catalog) <= set(CODE_TO_ERROR), "a catalog code has no Python mapping"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("insufficient_balance", InsufficientBalance),
        ("unknown_model", UnknownModel),
        ("ambiguous_model", InvalidInput),
        ("price_missing", PriceMissing),
        ("idempotency_conflict", IdempotencyConflict),
        ("invalid_usage", InvalidUsage),
        ("invalid_amount", InvalidInput),
        ("invalid_argument", InvalidInput),
        ("currency_mismatch", InvalidInput),
        ("user_not_found", NotFound),
        ("reservation_not_found", NotFound),
        ("usage_not_found", NotFound),
        ("not_authenticated", PermissionDenied),
        ("forbidden", PermissionDenied),
        ("immutable_row", Conflict),
    ],
)
def test_code_to_error_each_code_maps_to_its_documented_type(code, expected):
    assert CODE_TO_ERROR[code] is expected
    error = from_api_code(code, "PT000", "some detail")
    assert type(error) is expected and error.code == code and error.detail == "some detail"


def test_code_to_error_price_missing_is_caught_as_unknown_model_and_not_found():
    # Callers that only handle "no price" must also catch the 'missing' price case.
    assert issubclass(PriceMissing, UnknownModel) and issubclass(UnknownModel, NotFound)
    assert issubclass(InvalidUsage, InvalidInput) and issubclass(IdempotencyConflict, Conflict)


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        ("input_tokens must be an integer between 0 and 10000000", "input_tokens"),
        ("user_id is required", "user_id"),
        ("estimated_cost has more than 12 decimal places", "estimated_cost"),
        ("each record must be a JSON object", None),
        (None, None),
    ],
)
def test_from_api_code_invalid_input_detail_names_the_field(detail, field):
    error = from_api_code("invalid_usage", "22023", detail)
    assert isinstance(error, InvalidUsage) and error.field == field


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("42501", PermissionDenied),
        ("23505", Conflict),
        ("23503", NotFound),
        ("23514", InvalidInput),
        ("22P02", InvalidInput),
        ("PGRST202", NotFound),
        ("PGRST301", PermissionDenied),
        ("08006", Unavailable),
        ("57014", Unavailable),
        ("40P01", Unavailable),
        ("40001", Unavailable),
        ("53300", Unavailable),
        ("XX999", TokenmeterError),
    ],
)
def test_from_api_code_unknown_message_falls_back_to_sqlstate(sqlstate, expected):
    error = from_api_code("some postgres message", sqlstate, None)
    assert type(error) is expected


def test_translate_api_error_keeps_code_detail_and_field():
    exc = APIError(
        {
            "message": "invalid_amount",
            "code": "22023",
            "hint": None,
            "details": "amount must be > 0",
        }
    )
    error = translate(exc)
    assert isinstance(error, InvalidInput) and error.code == "invalid_amount"
    assert error.detail == "amount must be > 0" and error.field == "amount"
    assert str(error) == "invalid_amount: amount must be > 0"


def test_translate_network_error_becomes_unavailable():
    error = translate(httpx.ConnectError("refused"))
    assert isinstance(error, Unavailable)


def test_errors_module_every_type_in_mappings_is_a_tokenmeter_error():
    for error_type in [*CODE_TO_ERROR.values(), *errors.SQLSTATE_TO_ERROR.values()]:
        assert issubclass(error_type, TokenmeterError)


def test_meter_classes_every_operation_is_implemented_sync_and_async():
    # An operation only _Operations defines would return a _Call object instead of a result.
    operations = {
        name
        for name, _ in inspect.getmembers(_Operations, inspect.isfunction)
        if not name.startswith("_")
    }
    for cls in (Meter, AsyncMeter):
        assert operations <= set(vars(cls)), f"{cls.__name__} lacks {operations - set(vars(cls))}"
    for name in operations | {"balance", "usage"}:
        assert inspect.iscoroutinefunction(getattr(AsyncMeter, name)), name
        assert not inspect.iscoroutinefunction(getattr(Meter, name)), name


# ── live: the stack's errors through Meter and AsyncMeter ─────────────────────────────────
@pytest.fixture()
def http_clients() -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for http in opened:
        if isinstance(http, httpx.Client):
            http.close()


@pytest.fixture()
async def ahttp_clients() -> AsyncIterator[list[httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []
    yield opened
    for http in opened:
        await http.aclose()


@pytest.fixture()
def sync_client(api_url: str, http_clients: list[Any]) -> Callable[[str], Client]:
    def build(key: str) -> Client:
        http = httpx.Client(timeout=30)
        http_clients.append(http)
        return create_client(
            api_url, key, ClientOptions(auto_refresh_token=False, httpx_client=http)
        )

    return build


@pytest.fixture()
def sign_up(
    sync_client: Callable[[str], Client], anon_key: str
) -> Callable[[], tuple[str, Client]]:
    """A real user signed up through the Auth API: (user id, a client signed in as them)."""

    def make() -> tuple[str, Client]:
        client = sync_client(anon_key)
        response = client.auth.sign_up({"email": random_email(), "password": PASSWORD})
        assert response.user is not None and response.session is not None
        return response.user.id, client

    return make


@pytest.fixture(params=["sync", "async"])
async def meter(
    request: pytest.FixtureRequest,
    api_url: str,
    service_key: str,
    sync_client: Callable[[str], Client],
    ahttp_clients: list[httpx.AsyncClient],
) -> Meter | AsyncMeter:
    """A service-role Meter or AsyncMeter (each test runs with both)."""
    if request.param == "sync":
        return Meter(sync_client(service_key))
    http = httpx.AsyncClient(timeout=30)
    ahttp_clients.append(http)
    client = await acreate_client(
        api_url, service_key, AsyncClientOptions(auto_refresh_token=False, httpx_client=http)
    )
    return AsyncMeter(client)


async def run(meter: Meter | AsyncMeter, method: str, **kwargs: Any) -> Any:
    result = getattr(meter, method)(**kwargs)
    return await result if inspect.isawaitable(result) else result


async def raises(
    error_type: type[TokenmeterError], meter: Meter | AsyncMeter, method: str, **kwargs: Any
) -> TokenmeterError:
    """Asserts the call raises exactly `error_type`, chained from the supabase-py APIError."""
    with pytest.raises(TokenmeterError) as info:
        await run(meter, method, **kwargs)
    assert type(info.value) is error_type, f"{type(info.value).__name__}: {info.value}"
    assert isinstance(info.value.__cause__, APIError)
    return info.value


def rid() -> str:
    return f"req-{uuid.uuid4()}"


async def test_meter_reserve_over_available_raises_insufficient_balance(meter, sign_up):
    user_id, _ = sign_up()
    await run(meter, "top_up", user_id=user_id, amount=Decimal("1.5"), reference=rid())
    error = await raises(
        InsufficientBalance,
        meter,
        "reserve",
        user_id=user_id,
        request_id=rid(),
        amount=Decimal("1.500000000001"),
    )
    assert error.code == "insufficient_balance"
    assert error.detail == "available 1.5 is less than the requested 1.500000000001"


async def test_meter_record_usage_unknown_model_raises_unknown_model(meter, sign_up):
    user_id, _ = sign_up()
    error = await raises(
        UnknownModel,
        meter,
        "record_usage",
        user_id=user_id,
        model=f"no-such-model-{uuid.uuid4().hex[:6]}",
        input_tokens=1,
        output_tokens=1,
        request_id=rid(),
    )
    assert error.code == "unknown_model" and "no price for model" in (error.detail or "")


async def test_meter_record_usage_missing_price_raises_price_missing(meter, sign_up):
    user_id, _ = sign_up()
    error = await raises(
        PriceMissing,
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-image-1",
        provider="openai",
        input_tokens=10,
        output_tokens=10,
        request_id=rid(),
    )
    assert error.code == "price_missing"


async def test_meter_estimate_cost_missing_price_raises_price_missing(meter):
    await raises(
        PriceMissing,
        meter,
        "estimate_cost",
        model="gpt-image-1",
        input_tokens=1,
        max_output_tokens=1,
    )


async def test_meter_record_usage_same_request_other_tokens_raises_idempotency_conflict(
    meter, sign_up
):
    user_id, _ = sign_up()
    request_id = rid()
    await run(
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-4o-mini",
        input_tokens=10,
        output_tokens=5,
        request_id=request_id,
    )
    error = await raises(
        IdempotencyConflict,
        meter,
        "record_usage",
        user_id=user_id,
        model="gpt-4o-mini",
        input_tokens=10,
        output_tokens=6,
        request_id=request_id,
    )
    assert error.code == "idempotency_conflict" and request_id in (error.detail or "")


async def test_meter_top_up_same_reference_other_amount_raises_idempotency_conflict(meter, sign_up):
    user_id, _ = sign_up()
    reference = rid()
    await run(meter, "top_up", user_id=user_id, amount=Decimal(5), reference=reference)
    await raises(
        IdempotencyConflict,
        meter,
        "top_up",
        user_id=user_id,
        amount=Decimal(6),
        reference=reference,
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": 10_000_001}, "output_tokens"),
        ({"cached_input_tokens": 11}, "cached_input_tokens"),
        ({"request_id": "   "}, "request_id"),
        ({"model": ""}, "model"),
        ({"status": "great"}, "status"),
        ({"latency_ms": -5}, "latency_ms"),
    ],
)
async def test_meter_record_usage_bad_field_raises_invalid_usage_naming_field(
    meter, sign_up, overrides, field
):
    user_id, _ = sign_up()
    kwargs = {
        "user_id": user_id,
        "model": "gpt-4o",
        "input_tokens": 10,
        "output_tokens": 10,
        "request_id": rid(),
        **overrides,
    }
    error = await raises(InvalidUsage, meter, "record_usage", **kwargs)
    assert error.code == "invalid_usage" and error.field == field
    assert (error.detail or "").startswith(field)


async def test_meter_top_up_thirteen_decimals_raises_invalid_input_on_amount(meter, sign_up):
    user_id, _ = sign_up()
    error = await raises(
        InvalidInput,
        meter,
        "top_up",
        user_id=user_id,
        amount=Decimal("0.0000000000001"),
        reference=rid(),
    )
    assert error.code == "invalid_amount" and error.field == "amount"


async def test_meter_reserve_bad_ttl_raises_invalid_input_on_ttl(meter, sign_up):
    user_id, _ = sign_up()
    error = await raises(
        InvalidInput,
        meter,
        "reserve",
        user_id=user_id,
        request_id=rid(),
        amount=Decimal(1),
        ttl_seconds=0,
    )
    assert error.code == "invalid_argument" and error.field == "ttl_seconds"


async def test_meter_check_balance_unknown_user_raises_not_found(meter):
    error = await raises(NotFound, meter, "check_balance", user_id=str(uuid.uuid4()))
    assert error.code == "user_not_found"


async def test_meter_settle_unknown_request_raises_not_found(meter):
    error = await raises(
        NotFound, meter, "settle", request_id=rid(), input_tokens=1, output_tokens=1
    )
    assert error.code == "reservation_not_found"


async def test_meter_release_unknown_request_raises_not_found(meter):
    error = await raises(NotFound, meter, "release", request_id=rid())
    assert error.code == "reservation_not_found"


async def test_meter_user_id_for_email_unknown_email_raises_not_found(meter):
    error = await raises(NotFound, meter, "user_id_for_email", email=random_email())
    assert error.code == "user_not_found"


async def test_meter_user_id_for_email_signed_up_user_returns_id(meter, sign_up):
    user_id, client = sign_up()
    email = client.auth.get_user().user.email  # type: ignore[union-attr]
    assert await run(meter, "user_id_for_email", email=email.upper()) == user_id


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("record_usage", {"model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}),
        ("top_up", {"amount": Decimal(100)}),
        ("check_balance", {}),
        ("reserve", {"amount": Decimal(1)}),
        ("audit", {}),
    ],
)
def test_meter_user_token_on_service_rpc_raises_permission_denied(sign_up, method, kwargs):
    user_id, client = sign_up()
    user_meter = Meter(client)  # the client carries the user's access token after sign-up
    if method in ("record_usage", "top_up", "check_balance", "reserve"):
        kwargs = {"user_id": user_id, **kwargs}
    if method in ("record_usage", "reserve"):
        kwargs["request_id"] = rid()
    if method == "top_up":
        kwargs["reference"] = rid()
    with pytest.raises(PermissionDenied) as info:
        getattr(user_meter, method)(**kwargs)
    assert isinstance(info.value.__cause__, APIError)
    assert info.value.__cause__.code == "42501"


async def test_async_meter_user_token_on_service_rpc_raises_permission_denied(
    api_url, anon_key, ahttp_clients
):
    http = httpx.AsyncClient(timeout=30)
    ahttp_clients.append(http)
    client = await acreate_client(
        api_url, anon_key, AsyncClientOptions(auto_refresh_token=False, httpx_client=http)
    )
    response = await client.auth.sign_up({"email": random_email(), "password": PASSWORD})
    assert response.user is not None and response.session is not None
    with pytest.raises(PermissionDenied):
        await AsyncMeter(client).top_up(
            user_id=response.user.id, amount=Decimal(100), reference=rid()
        )
    with pytest.raises(PermissionDenied):
        await AsyncMeter(client).record_usage(
            user_id=response.user.id,
            model="gpt-4o",
            input_tokens=1,
            output_tokens=1,
            request_id=rid(),
        )


def test_meter_anon_key_on_service_rpc_raises_permission_denied(sync_client, anon_key):
    with pytest.raises(PermissionDenied):
        Meter(sync_client(anon_key)).check_balance(user_id=str(uuid.uuid4()))


def test_meter_unreachable_api_raises_unavailable(http_clients, anon_key):
    http = httpx.Client(timeout=2)
    http_clients.append(http)
    client = create_client(
        "http://127.0.0.1:9", anon_key, ClientOptions(auto_refresh_token=False, httpx_client=http)
    )
    with pytest.raises(Unavailable) as info:
        Meter(client).estimate_cost(model="gpt-4o", input_tokens=1, max_output_tokens=1)
    assert isinstance(info.value.__cause__, httpx.HTTPError)
