"""`tokenmeter price …` against the local stack: every command with good and bad input.

Bad input (negative or non-numeric price, unknown currency, alias loop, unknown model, bad
period) must exit non-zero with ONE line on stderr, no traceback, and write nothing; an
unreachable API exits 2. Each test prices its own random provider/model.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from conftest import random_email
from typer.testing import CliRunner, Result

from app.cli import app
from app.meter import Meter
from app.pricing import Pricing, per_million, to_per_token
from supabase import Client

WIDE = {"COLUMNS": "200"}
runner = CliRunner()


def price(*args: str) -> Result:
    return runner.invoke(app, ["price", *args], env=WIDE)


def assert_refused(result: Result, *needles: str) -> None:
    """Exit 1, one clear line on stderr, never a traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def model(stack) -> tuple[str, str]:
    """A random (provider, model) nobody else prices (on the running test stack)."""
    tag = uuid.uuid4().hex[:8]
    return f"prov-{tag}", f"model-{tag}"


def versions(pricing: Pricing, provider: str, name: str) -> int:
    return len(
        pricing.client.table("model_pricing")
        .select("model_id")
        .eq("provider_id", provider)
        .eq("model_id", name)
        .execute()
        .data
    )


# ── units (no database) ─────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "value, unit, expected",
    [
        ("2.50", "1M", "0.0000025"),
        ("0.025", "1M", "0.000000025"),
        ("15", "1K", "0.015"),
        ("0.0000025", "token", "0.0000025"),
        ("1e1", "1m", "0.00001"),
        ("0", "1M", "0"),
    ],
)
def test_to_per_token_units_convert_exactly(value: str, unit: str, expected: str):
    assert to_per_token(value, unit=unit) == Decimal(expected)
    assert per_million(to_per_token(value, unit=unit)) == to_per_token(value, unit=unit) * 10**6


@pytest.mark.parametrize(
    "value, unit, needle",
    [
        ("-1", "1M", ">= 0"),
        ("abc", "1M", "must be a number"),
        ("NaN", "1M", "finite"),
        ("0.0000001", "1M", "12 decimals"),
        ("1", "1G", "unit must be"),
        ("2e9", "token", "too large"),
    ],
)
def test_to_per_token_bad_value_raises_invalid_input(value: str, unit: str, needle: str):
    from app.errors import InvalidInput

    with pytest.raises(InvalidInput, match=needle):
        to_per_token(value, unit=unit)


# ── list / get ──────────────────────────────────────────────────────────────────────────────
def test_price_list_table_shows_per_million_prices(stack):
    result = price("list", "--provider", "openai")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if " gpt-5-mini " in line)
    assert "0.25" in row and "0.025" in row and "2" in row  # per 1M: in / cached / out


def test_price_list_json_and_csv_keep_exact_per_token_values(stack):
    as_json = price("list", "--provider", "openai", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    rows = {r["model"]: r for r in json.loads(as_json.stdout)}
    assert rows["gpt-5-nano"]["price_per_cached_input_token"] == "0.000000005"
    as_csv = price("list", "--provider", "openai", "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    by_model = {r["model"]: r for r in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert by_model["gpt-5"]["input_per_1m"] == "1.25"
    assert by_model["gpt-5"]["output_per_1m"] == "10"


def test_price_list_bad_format_exits_1(stack):
    assert_refused(price("list", "--format", "xml"), "--format")


def test_price_get_known_model_shows_its_price(stack):
    result = price("get", "claude-sonnet-4", "--json")
    assert result.exit_code == 0, result.output
    [body] = json.loads(result.stdout)
    assert body["provider"] == "anthropic" and body["price_per_input_token"] == "0.000003"
    assert body["is_default"] is True
    one = json.loads(price("get", "claude-sonnet-4", "--provider", "anthropic", "--json").stdout)
    assert one["provider"] == "anthropic" and one["price_per_input_token"] == "0.000003"


def narrow(*args: str) -> Result:
    return runner.invoke(app, ["price", *args], env={"COLUMNS": "80"})


def test_price_list_at_80_columns_shows_every_price_whole(stack):
    result = narrow("list")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    header = next(line for line in result.stdout.splitlines() if "provider" in line).split()
    assert header == ["model", "provider", "in/1M", "out/1M", "cached/1M"]
    row = next(line for line in result.stdout.splitlines() if " gpt-5-mini " in line)
    assert row.split() == ["gpt-5-mini", "openai", "0.25", "2", "0.025"]
    # a model name longer than its column wraps (how, depends on the other names listed)
    assert "meta-llama/" in result.stdout


def test_price_list_at_80_columns_long_names_wrap_and_prices_stay_whole(model):
    provider, name = model
    long_provider = f"vertex_ai-language-models-{provider}"
    long_name = f"{name}-with-a-very-long-fine-tuned-suffix-ft-0123456789abcdef"
    made = price(
        "set",
        long_name,
        "--provider",
        long_provider,
        "--input",
        "1234.5678",
        "--output",
        "98765.4321",
        "--cached-input",
        "0.000123",
    )
    assert made.exit_code == 0, made.output
    result = narrow("list", "--provider", long_provider)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    words = result.stdout.split()
    assert {"1234.5678", "98765.4321", "0.000123"} <= set(words)


def test_price_list_wide_adds_the_other_columns(stack):
    result = price("list", "--provider", "google", "--wide")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "provider" in line).split()
    assert header[5:] == ["per", "req", "per", "image", "type", "cur", "source", "since"]
    retired = next(line for line in result.stdout.splitlines() if " gemini-pro " in line)
    # gemini-pro has no cache price (blank): count from the right
    assert retired.split()[-6:] == ["0", "0", "retired", "USD", "manual", "1970-01-01"]


def test_price_get_name_at_several_providers_lists_each_with_the_default(pricing: Pricing, model):
    provider, name = model
    other = f"{provider}-b"
    for who, value in ((provider, "1"), (other, "2")):
        assert (
            price("set", name, "--provider", who, "--input", value, "--output", value).exit_code
            == 0
        )
    listed = json.loads(price("get", name, "--json").stdout)
    assert [(p["provider"], p["is_default"]) for p in listed] == [(provider, True), (other, False)]
    table = narrow("get", name)
    assert table.exit_code == 0, table.output
    lines = {line.split()[1]: line.split() for line in table.stdout.splitlines() if name in line}
    assert lines[provider][-1] == "yes" and lines[other][-1] == "2"
    marked = narrow("list", "--provider", provider)
    assert f"{provider} *" not in marked.stdout  # one provider in this view: nothing to mark
    both = [line for line in narrow("list").stdout.splitlines() if f" {name} " in f" {line} "]
    assert len(both) == 2 and f"{provider} *" in both[0] and "*" not in both[1]


def test_price_default_moves_the_default_and_bare_names_follow(pricing: Pricing, model):
    provider, name = model
    other = f"{provider}-b"
    for who, value in ((provider, "1"), (other, "2")):
        assert (
            price("set", name, "--provider", who, "--input", value, "--output", value).exit_code
            == 0
        )
    shown = price("default", name)
    assert shown.exit_code == 0 and f"default provider {provider}" in shown.stdout
    moved = price("default", name, "--provider", other)
    assert moved.exit_code == 0, moved.output
    assert f"default provider is now {other} (was {provider})" in moved.stdout
    assert pricing.get(model=name).provider == other
    # price set without --provider now prices the default
    assert price("set", name, "--input", "3", "--output", "3").exit_code == 0
    assert pricing.get(model=name, provider=other).price_per_input_token == Decimal("0.000003")
    assert pricing.get(model=name, provider=provider).price_per_input_token == Decimal("0.000001")
    again = json.loads(price("default", name, "--provider", other, "--json").stdout)
    assert again == {"model": name, "provider": other, "previous_provider": other, "changed": False}


def test_price_default_unpriced_provider_exits_1_and_changes_nothing(pricing: Pricing, model):
    provider, name = model
    assert (
        price("set", name, "--provider", provider, "--input", "1", "--output", "1").exit_code == 0
    )
    assert_refused(price("default", name, "--provider", "nobody"), "unknown_model")
    assert pricing.default_providers(model=name) == {name: provider}
    assert_refused(price("default", f"no-such-{name}"), "no_default")


def test_price_set_without_provider_at_several_providers_without_default_exits_1(
    pricing: Pricing, model, db
):
    provider, name = model
    for who in (provider, f"{provider}-b"):
        assert price("set", name, "--provider", who, "--input", "1", "--output", "1").exit_code == 0
    db.execute("update public.models set is_default = false where model_id = %s", (name,))
    assert_refused(price("set", name, "--input", "5", "--output", "5"), "ambiguous_model", provider)
    assert_refused(price("get", f"{name}-2025-01-01"), "ambiguous_model", f"{provider}-b")


def test_price_get_unknown_model_exits_1(stack):
    assert_refused(price("get", f"no-such-model-{uuid.uuid4().hex[:6]}"), "unknown_model")


# ── set ─────────────────────────────────────────────────────────────────────────────────────
def test_price_set_per_million_stores_exact_per_token(pricing: Pricing, model):
    provider, name = model
    result = price(
        "set",
        name,
        "--provider",
        provider,
        "--input",
        "2.50",
        "--output",
        "10",
        "--cached-input",
        "1.25",
        "--json",
    )
    assert result.exit_code == 0, result.output
    got = pricing.get(model=name, provider=provider)
    assert got.price_per_input_token == Decimal("0.0000025")
    assert got.price_per_output_token == Decimal("0.00001")
    assert got.price_per_cached_input_token == Decimal("0.00000125")
    assert got.currency == "USD" and got.pricing_source == "manual"
    shown = price("get", name, "--provider", provider)
    assert "2.5" in shown.stdout and "1.25" in shown.stdout and "10" in shown.stdout


@pytest.mark.parametrize(
    "unit, value, per_token",
    [
        ("token", "0.000004", "0.000004"),
        ("1K", "0.004", "0.000004"),
        ("1M", "4", "0.000004"),
    ],
)
def test_price_set_units_are_equivalent(pricing: Pricing, model, unit, value, per_token):
    provider, name = model
    result = price(
        "set", name, "--provider", provider, "--input", value, "--output", value, "--unit", unit
    )
    assert result.exit_code == 0, result.output
    assert pricing.get(model=name, provider=provider).price_per_input_token == Decimal(per_token)


def test_price_set_without_cached_price_keeps_it_and_reset_clears_it(pricing: Pricing, model):
    provider, name = model
    assert (
        price(
            "set",
            name,
            "--provider",
            provider,
            "--input",
            "2",
            "--output",
            "8",
            "--cached-input",
            "0.5",
            "--per-request",
            "0.001",
        ).exit_code
        == 0
    )
    assert (
        price("set", name, "--provider", provider, "--input", "3", "--output", "9").exit_code == 0
    )
    kept = pricing.get(model=name, provider=provider)
    assert kept.price_per_input_token == Decimal("0.000003")
    assert kept.price_per_cached_input_token == Decimal("0.0000005")
    assert kept.price_per_request == Decimal("0.001")
    assert (
        price(
            "set", name, "--provider", provider, "--input", "3", "--output", "9", "--reset"
        ).exit_code
        == 0
    )
    reset = pricing.get(model=name, provider=provider)
    assert reset.price_per_cached_input_token is None and reset.price_per_request == 0


def test_price_set_free_model_does_not_keep_paid_extras(pricing: Pricing, model):
    provider, name = model
    assert (
        price(
            "set",
            name,
            "--provider",
            provider,
            "--input",
            "2",
            "--output",
            "8",
            "--cached-input",
            "0.5",
        ).exit_code
        == 0
    )
    result = price(
        "set", name, "--provider", provider, "--input", "0", "--output", "0", "--type", "free"
    )
    assert result.exit_code == 0, result.output
    free = pricing.get(model=name, provider=provider)
    assert free.pricing_type == "free" and free.price_per_cached_input_token is None


def test_price_list_shows_the_version_in_effect_not_a_future_one(model):
    provider, name = model
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    assert (
        price("set", name, "--provider", provider, "--input", "1", "--output", "2").exit_code == 0
    )
    assert (
        price(
            "set",
            name,
            "--provider",
            provider,
            "--input",
            "5",
            "--output",
            "6",
            "--effective-from",
            future,
        ).exit_code
        == 0
    )
    listed = price("list", "--provider", provider, "--format", "json")
    [row] = json.loads(listed.stdout)
    assert row["price_per_input_token"] == "0.000001"
    at = price("get", name, "--provider", provider, "--at", future, "--json")
    assert json.loads(at.stdout)["price_per_input_token"] == "0.000005"


def test_price_set_without_provider_uses_the_models_provider(pricing: Pricing, model):
    provider, name = model
    assert (
        price("set", name, "--provider", provider, "--input", "1", "--output", "2").exit_code == 0
    )
    result = price("set", name, "--input", "3", "--output", "4", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["provider"] == provider
    assert pricing.get(model=name).price_per_input_token == Decimal("0.000003")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--input", "-1", "--output", "2"], "invalid_amount"),
        (["--input", "abc", "--output", "2"], "invalid_amount"),
        (["--input", "1", "--output", "2", "--cached-input", "-0.5"], "invalid_amount"),
        (["--input", "1", "--output", "2", "--currency", "XYZ"], "invalid_currency"),
        (["--input", "1", "--output", "2", "--currency", "dollars"], "invalid_currency"),
        (["--input", "1", "--output", "2", "--unit", "1G"], "unit"),
        (["--input", "1", "--output", "2", "--effective-from", "yesterday"], "effective_from"),
        (["--input", "1"], "--output"),
        (["--input", "1", "--output", "2", "--alias", "gpt-5"], "--alias"),
    ],
)
def test_price_set_bad_input_exits_1_and_writes_nothing(pricing: Pricing, model, args, needle):
    provider, name = model
    assert (
        price("set", name, "--provider", provider, "--input", "1", "--output", "2").exit_code == 0
    )
    before = pricing.history(model=name, provider=provider)
    assert_refused(price("set", name, "--provider", provider, *args), needle)
    assert pricing.history(model=name, provider=provider) == before


def test_price_set_unknown_currency_for_new_model_writes_nothing(pricing: Pricing, model):
    provider, name = model
    assert_refused(
        price(
            "set",
            name,
            "--provider",
            provider,
            "--input",
            "1",
            "--output",
            "2",
            "--currency",
            "XYZ",
        ),
        "invalid_currency",
    )
    assert versions(pricing, provider, name) == 0


def test_price_set_new_model_without_provider_prices_it_at_custom_as_its_default(
    pricing: Pricing, model
):
    _, name = model
    result = price("set", name, "--input", "1", "--output", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["provider"] == "custom"
    assert pricing.default_providers(model=name) == {name: "custom"}
    assert pricing.get(model=name).price_per_output_token == Decimal("0.000002")


# ── aliases ─────────────────────────────────────────────────────────────────────────────────
def test_price_set_alias_makes_alias_cost_the_target(pricing: Pricing, model):
    provider, name = model
    assert (
        price("set", name, "--provider", provider, "--input", "5", "--output", "6").exit_code == 0
    )
    alias = f"{name}-latest"
    result = price("set", alias, "--alias", name, "--alias-provider", provider)
    assert result.exit_code == 0, result.output
    assert f"{alias} is now an alias of {name}" in result.stdout
    got = pricing.get(model=alias, provider=provider)
    assert (got.model, got.price_per_input_token) == (name, Decimal("0.000005"))
    removed = price("unalias", alias)
    assert removed.exit_code == 0 and "removed" in removed.stdout
    assert_refused(price("get", alias, "--provider", provider), "unknown_model")


def test_price_set_alias_loop_exits_1_and_writes_nothing(pricing: Pricing, model):
    provider, name = model
    assert (
        price("set", name, "--provider", provider, "--input", "5", "--output", "6").exit_code == 0
    )
    first, second = f"{name}-a", f"{name}-b"
    assert price("set", first, "--alias", name, "--alias-provider", provider).exit_code == 0
    assert price("set", second, "--alias", first, "--alias-provider", provider).exit_code == 0
    assert_refused(price("set", first, "--alias", second), "alias_loop")
    assert pricing.get(model=first, provider=provider).model == name  # unchanged
    assert_refused(price("set", first, "--alias", first), "alias_loop")


def test_price_set_alias_to_unknown_model_exits_1_and_writes_nothing(service: Client, model):
    _, name = model
    assert_refused(price("set", f"{name}-x", "--alias", f"missing-{name}"), "unknown_model")
    rows = service.table("model_aliases").select("alias").eq("alias", f"{name}-x").execute()
    assert rows.data == []


# ── history ─────────────────────────────────────────────────────────────────────────────────
def test_price_history_lists_versions_newest_first(model):
    provider, name = model
    earlier = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    assert (
        price(
            "set",
            name,
            "--provider",
            provider,
            "--input",
            "1",
            "--output",
            "2",
            "--effective-from",
            earlier,
        ).exit_code
        == 0
    )
    assert (
        price("set", name, "--provider", provider, "--input", "3", "--output", "4").exit_code == 0
    )
    result = price("history", name, "--provider", provider, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["price_per_input_token"] for r in rows] == ["0.000003", "0.000001"]
    assert rows[0]["effective_until"] is None and rows[1]["effective_until"] is not None
    table = price("history", name, "--provider", provider)
    assert table.exit_code == 0 and "price history" in table.stdout


def test_price_history_unknown_model_exits_1(model):
    provider, name = model
    assert_refused(price("history", name), "unknown_model")
    assert_refused(price("history", name, "--provider", provider), "unknown_model")


def test_price_history_of_alias_shows_the_targets_versions(model):
    provider, name = model
    assert (
        price("set", name, "--provider", provider, "--input", "1", "--output", "2").exit_code == 0
    )
    assert (
        price("set", f"{name}-alias", "--alias", name, "--alias-provider", provider).exit_code == 0
    )
    result = price("history", f"{name}-alias", "--json")
    assert result.exit_code == 0, result.output
    assert [r["model"] for r in json.loads(result.stdout)] == [name]


# ── export ──────────────────────────────────────────────────────────────────────────────────
def test_price_export_csv_has_per_million_columns(model):
    provider, name = model
    assert (
        price("set", name, "--provider", provider, "--input", "0.15", "--output", "0.6").exit_code
        == 0
    )
    result = price("export", "--format", "csv", "--provider", provider)
    assert result.exit_code == 0, result.output
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert (row["model"], row["input_per_1m"], row["output_per_1m"]) == (name, "0.15", "0.6")


def test_price_export_bad_format_exits_1(stack):
    assert_refused(price("export", "--format", "yaml"), "--format")


# ── reprice ─────────────────────────────────────────────────────────────────────────────────
@pytest.fixture()
def user_with_usage(service: Client, pricing: Pricing, model) -> tuple[str, str, str, datetime]:
    """A user who used the random model 1 hour ago at $1/$2 per 1M (priced 3 hours ago)."""
    provider, name = model
    now = datetime.now(UTC)
    pricing.set(
        model=name,
        provider=provider,
        input="1",
        output="2",
        effective_from=now - timedelta(hours=3),
    )
    user = service.auth.admin.create_user({"email": random_email(), "email_confirm": True}).user
    assert user is not None
    meter = Meter(service)
    meter.top_up(user_id=user.id, amount=Decimal(10), reference=f"test-{uuid.uuid4().hex}")
    meter.record_usage(
        user_id=user.id,
        model=name,
        provider=provider,
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        request_id=f"req-{uuid.uuid4().hex}",
        occurred_at=now - timedelta(hours=1),
    )
    return user.id, provider, name, now


def test_price_reprice_backdated_price_changes_cost_and_balance(
    pricing: Pricing, user_with_usage, service
):
    user_id, provider, name, now = user_with_usage
    # The price was really $1.50/$2.50 from 2 hours ago: a backdated version.
    pricing.set(
        model=name,
        provider=provider,
        input="1.50",
        output="2.50",
        effective_from=now - timedelta(hours=2),
    )
    since, until = (now - timedelta(hours=4)).isoformat(), datetime.now(UTC).isoformat()
    balance = Meter(service).balance(user_id=user_id).balance

    dry = price(
        "reprice",
        "--since",
        since,
        "--until",
        until,
        "--model",
        name,
        "--provider",
        provider,
        "--dry-run",
        "--json",
    )
    assert dry.exit_code == 0, dry.output
    preview = json.loads(dry.stdout)
    assert (preview["records"], preview["changed"]) == (1, 1)
    assert Decimal(preview["total_delta"]) == Decimal(1)  # +0.50 input, +0.50 output
    assert Meter(service).balance(user_id=user_id).balance == balance

    done = price(
        "reprice", "--since", since, "--until", until, "--model", name, "--provider", provider
    )
    assert done.exit_code == 0, done.output
    assert "changed 1" in done.stdout
    assert Meter(service).balance(user_id=user_id).balance == balance - Decimal(1)

    again = price(
        "reprice",
        "--since",
        since,
        "--until",
        until,
        "--model",
        name,
        "--provider",
        provider,
        "--json",
    )
    assert json.loads(again.stdout)["changed"] == 0


@pytest.mark.parametrize(
    "since, until, needle",
    [
        ("2026-01-02", "2026-01-01", "until"),
        ("not-a-date", "2026-01-01", "since"),
    ],
)
def test_price_reprice_bad_period_exits_1(stack, since: str, until: str, needle: str):
    assert_refused(price("reprice", "--since", since, "--until", until, "--dry-run"), needle)


# ── unreachable / not configured ────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["get", "gpt-5"],
        ["history", "gpt-5"],
        ["set", "gpt-5", "--provider", "openai", "--input", "1", "--output", "2"],
    ],
)
def test_price_commands_api_unreachable_exit_2(stack, args: list[str]):
    result = runner.invoke(
        app, ["price", *args], env={**WIDE, "SUPABASE_URL": "http://127.0.0.1:9"}
    )
    assert result.exit_code == 2, result.output
    assert "unavailable" in result.stderr and "Traceback" not in result.output


def test_price_set_api_unreachable_writes_nothing_and_bad_input_fails_first(stack):
    # Local validation answers before any network call: exit 1, not 2.
    result = runner.invoke(
        app,
        ["price", "set", "gpt-5", "--provider", "openai", "--input", "-1", "--output", "2"],
        env={**WIDE, "SUPABASE_URL": "http://127.0.0.1:9"},
    )
    assert_refused(result, "invalid_amount")
