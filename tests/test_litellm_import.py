"""LiteLLM's price catalog in and out: the mapper (exact Decimals, provider prefixes, cache and
long-context prices, images, skipped entries) and `import_model_prices` through supabase-py
and `tokenmeter price import` (dry-run diff, apply, re-import = unchanged, export round trip).

The sample (tests/fixtures/litellm_sample.json) holds real catalog entries; integration tests
rename its models with a random suffix so each test owns its rows and never re-prices the seed.
tests/litellm_catalog.py generates catalogs of any size with the published file's shapes
(float noise, prefixed and unprefixed keys of one model, every mode) for the float-noise, mode,
default-provider and 3,000-entry round-trip tests.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from litellm_catalog import generate_catalog
from typer.testing import CliRunner

from app.cli import app
from app.errors import InvalidInput
from app.litellm import (
    ImportResult,
    dumps_exact,
    import_chunks,
    load_litellm,
    map_litellm,
    map_litellm_entry,
    merge_results,
    prices_from_file,
    to_litellm,
)
from app.pricing import Pricing, decimal_text
from supabase import Client

SAMPLE = Path(__file__).parent / "fixtures" / "litellm_sample.json"
TODAY = date(2026, 6, 1)
WIDE = {"COLUMNS": "200"}


def sample() -> dict[str, Any]:
    return load_litellm(SAMPLE.read_text())


def by_model(prices: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["provider"], p["model"]): p for p in prices}


# ── The mapper (no database) ────────────────────────────────────────────────────────────────
def test_map_litellm_sample_floats_stay_exact_decimals():
    prices = by_model(map_litellm(sample(), today=TODAY).prices)
    gpt = prices[("openai", "gpt-4o")]
    # the float 2.5e-06 stands for the decimal its repr shows: exactly 0.0000025
    assert gpt["input_per_token"] == Decimal("0.0000025")
    assert str(gpt["input_per_token"]) == "0.0000025"
    assert gpt["output_per_token"] == Decimal("0.00001")
    assert gpt["cached_input_per_token"] == Decimal("0.00000125")
    assert all(isinstance(v, (str, int, Decimal)) for p in prices.values() for v in p.values())


def test_map_litellm_provider_prefixed_keys_map_to_provider_and_model():
    prices = by_model(map_litellm(sample(), today=TODAY).prices)
    assert ("anthropic", "claude-sonnet-4-5") in prices
    assert ("google", "gemini-2.5-pro") in prices  # litellm_provider gemini → google
    assert ("deepseek", "deepseek-chat") in prices
    assert ("vertex_ai", "imagen-3.0-generate-002") in prices  # vertex_ai-image-models
    assert ("openai", "text-embedding-3-small") in prices


def test_map_litellm_above_200k_tier_becomes_long_context_threshold():
    prices = by_model(map_litellm(sample(), today=TODAY).prices)
    claude = prices[("anthropic", "claude-sonnet-4-5")]
    assert claude["long_context_threshold"] == 200000
    assert claude["input_per_token_above_threshold"] == Decimal("0.000006")
    assert claude["output_per_token_above_threshold"] == Decimal("0.0000225")
    assert claude["cached_input_per_token"] == Decimal("0.0000003")
    assert "long_context_threshold" not in prices[("openai", "gpt-4o")]


def test_map_litellm_image_model_priced_per_image():
    prices = by_model(map_litellm(sample(), today=TODAY).prices)
    imagen = prices[("vertex_ai", "imagen-3.0-generate-002")]
    assert imagen["per_image"] == Decimal("0.04")
    assert imagen["input_per_token"] == 0 and imagen["output_per_token"] == 0
    assert imagen.get("pricing_type", "paid") == "paid"


def test_map_litellm_past_deprecation_date_marks_deprecated():
    prices = by_model(map_litellm(sample(), today=TODAY).prices)
    assert prices[("anthropic", "claude-3-opus-20240229")]["pricing_type"] == "deprecated"
    earlier = by_model(map_litellm(sample(), today=date(2025, 1, 1)).prices)
    assert "pricing_type" not in earlier[("anthropic", "claude-3-opus-20240229")]


@pytest.mark.parametrize(
    ("zone", "days_after_utc_today"),
    [("Etc/GMT-14", 1), ("Etc/GMT+12", 0)],  # UTC+14: a day after UTC's; UTC-12: a day before
)
def test_map_litellm_deprecation_date_is_compared_with_utc_today_whatever_the_time_zone(
    zone: str, days_after_utc_today: int, monkeypatch: pytest.MonkeyPatch
):
    """Without `today`, "past its deprecation date" is judged on the UTC date, as everything
    else in the catalog: the machine's time zone gave another day for up to 14 hours of each
    day. At any instant one of the two zones has another date than UTC (UTC+14 from 10:00 UTC,
    UTC-12 before 12:00 UTC), and each case's answer holds only on the UTC date."""
    for _ in range(2):  # again if the UTC date changed meanwhile
        utc_today = datetime.now(UTC).date()
        deprecation = (utc_today + timedelta(days_after_utc_today)).isoformat()
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            mapped = map_litellm_entry(
                "gpt-4o", dict(sample()["gpt-4o"], deprecation_date=deprecation)
            )
        finally:
            monkeypatch.undo()
            time.tzset()
        if datetime.now(UTC).date() == utc_today:
            break
    deprecated = mapped.get("pricing_type") == "deprecated"
    assert deprecated is (days_after_utc_today == 0)


def test_map_litellm_sample_spec_non_chat_and_duplicates_are_skipped_and_reported():
    mapping = map_litellm(sample(), today=TODAY)
    skipped = {s.key: s for s in mapping.skipped}
    assert set(skipped) == {"sample_spec", "whisper-1", "openai/gpt-4o"}
    assert skipped["whisper-1"].reason == "not_charged_yet"
    assert skipped["whisper-1"].mode == "audio_transcription"
    assert "per second" in skipped["whisper-1"].detail
    assert skipped["openai/gpt-4o"].reason == "duplicate"
    assert "gpt-4o" in skipped["openai/gpt-4o"].detail
    assert len(mapping.prices) == 7


@pytest.mark.parametrize(
    "entry, reason",
    [
        ({"litellm_provider": "cohere", "mode": "rerank", "input_cost_per_token": 0.0}, "rerank"),
        ({"litellm_provider": "openai", "mode": "audio_speech"}, "per character"),
        ({"litellm_provider": "openai", "mode": "realtime"}, "realtime audio tokens"),
        (
            {"litellm_provider": "openai", "mode": "chat", "output_cost_per_token": 1e-6},
            "input_cost_per_token",
        ),
        (
            {"mode": "chat", "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6},
            "litellm_provider",
        ),
        (
            {
                "litellm_provider": "openai",
                "mode": "chat",
                "input_cost_per_token": "abc",
                "output_cost_per_token": 1e-6,
            },
            "input_cost_per_token",
        ),
        (
            {
                "litellm_provider": "openai",
                "mode": "chat",
                "input_cost_per_token": -1,
                "output_cost_per_token": 1e-6,
            },
            "input_cost_per_token",
        ),
        (
            {
                "litellm_provider": "openai",
                "mode": "image_generation",
                "input_cost_per_pixel": 3.81469e-08,
                "output_cost_per_pixel": 0.0,
            },
            "per-image",
        ),
    ],
)
def test_map_litellm_entry_unpriceable_raises_value_error_naming_reason(entry, reason):
    with pytest.raises(ValueError, match=reason):
        map_litellm_entry("x", load_litellm(json.dumps(entry)))


def test_load_litellm_not_json_or_not_object_raises_invalid_input():
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_litellm("{not json")
    with pytest.raises(InvalidInput, match="keyed by model"):
        load_litellm("[1, 2]")


def test_export_to_litellm_round_trips_exactly_through_the_mapper():
    from app.pricing import ModelPrice

    prices = [
        ModelPrice.model_validate(
            {
                "provider_id": "google",
                "model_id": "gemini-2.5-pro",
                "price_per_input_token": "0.00000125",
                "price_per_output_token": "0.00001",
                "price_per_cached_input_token": "0.0000003125",
                "long_context_threshold": 200000,
                "price_per_input_token_above_threshold": "0.0000025",
                "price_per_output_token_above_threshold": "0.000015",
                "price_per_request": "0",
                "price_per_image": "0",
            }
        )
    ]
    text = dumps_exact(to_litellm(prices))
    assert '"input_cost_per_token": 0.00000125' in text  # a JSON number, digit for digit
    back = by_model(map_litellm(load_litellm(text)).prices)[("google", "gemini-2.5-pro")]
    assert back["cached_input_per_token"] == Decimal("0.0000003125")
    assert back["long_context_threshold"] == 200000
    assert back["output_per_token_above_threshold"] == Decimal("0.000015")


# ── Against the stack ───────────────────────────────────────────────────────────────────────
@pytest.fixture()
def own_sample(tmp_path: Path) -> Callable[..., tuple[Path, str]]:
    """The sample with every model renamed '<name>-<suffix>' (keys keep their prefixes)."""

    def make(edit: Callable[[dict[str, Any]], None] | None = None) -> tuple[Path, str]:
        suffix = uuid.uuid4().hex[:8]
        data = json.loads(SAMPLE.read_text())
        renamed = {
            key if key == "sample_spec" else f"{key}-{suffix}": value for key, value in data.items()
        }
        if edit:
            edit(renamed)
        path = tmp_path / f"litellm-{suffix}.json"
        path.write_text(json.dumps(renamed, indent=2))
        return path, suffix

    return make


def stored(pricing: Pricing, suffix: str) -> dict[tuple[str, str], Any]:
    return {(p.provider, p.model): p for p in pricing.list_prices() if p.model.endswith(suffix)}


def test_import_dry_run_shows_diff_and_writes_nothing(pricing: Pricing, own_sample):
    path, suffix = own_sample()
    mapping = prices_from_file(path)
    result = pricing.import_prices(mapping.prices, dry_run=True)
    assert (result.added, result.changed, result.unchanged) == (7, 0, 0)
    # new models are listed once each, not field by field
    assert result.diff == []
    assert ("openai", f"gpt-4o-{suffix}") in {(m.provider, m.model) for m in result.added_models}
    assert stored(pricing, suffix) == {}


def test_import_apply_then_reimport_is_unchanged(pricing: Pricing, own_sample):
    path, suffix = own_sample()
    mapping = prices_from_file(path)
    applied = merge_results(pricing.import_chunks(mapping.prices, chunk_size=3))
    assert (applied.added, applied.changed, applied.unchanged) == (7, 0, 0)
    rows = stored(pricing, suffix)
    assert len(rows) == 7
    claude = rows[("anthropic", f"claude-sonnet-4-5-{suffix}")]
    assert claude.price_per_input_token == Decimal("0.000003")
    assert claude.long_context_threshold == 200000
    assert claude.price_per_output_token_above_threshold == Decimal("0.0000225")
    assert claude.pricing_source == "import"
    assert rows[("vertex_ai", f"imagen-3.0-generate-002-{suffix}")].price_per_image == Decimal(
        "0.04"
    )
    assert rows[("anthropic", f"claude-3-opus-20240229-{suffix}")].pricing_type == "deprecated"
    again = pricing.import_prices(mapping.prices, dry_run=False)
    assert (again.added, again.changed, again.unchanged) == (0, 0, 7)
    assert again.diff == []


def test_import_changed_price_reports_old_and_new(pricing: Pricing, own_sample):
    path, suffix = own_sample()
    pricing.import_prices(prices_from_file(path).prices)

    def cheaper(data: dict[str, Any]) -> None:
        data[f"deepseek/deepseek-chat-{suffix}"]["input_cost_per_token"] = Decimal("2.8e-07")

    data = json.loads(path.read_text(), parse_float=Decimal)
    cheaper(data)
    path.write_text(dumps_exact(data))
    result = pricing.import_prices(prices_from_file(path).prices, dry_run=True)
    assert (result.added, result.changed, result.unchanged) == (0, 1, 6)
    [diff] = result.diff
    assert (diff.provider, diff.model, diff.field) == (
        "deepseek",
        f"deepseek-chat-{suffix}",
        "input_per_token",
    )
    assert Decimal(str(diff.old)) == Decimal("0.00000027")
    assert Decimal(str(diff.new)) == Decimal("0.00000028")


def test_import_bad_entry_raises_invalid_input_and_writes_nothing(pricing: Pricing, own_sample):
    path, suffix = own_sample()
    prices = prices_from_file(path).prices
    prices[-1] = {**prices[-1], "input_per_token": Decimal("-0.000001")}
    with pytest.raises(InvalidInput):
        pricing.import_prices(prices)
    assert stored(pricing, suffix) == {}


def test_cli_import_dry_run_then_apply_then_reimport_unchanged(pricing: Pricing, own_sample):
    path, suffix = own_sample()
    runner = CliRunner()
    dry = runner.invoke(app, ["price", "import", str(path), "--dry-run"], env=WIDE)
    assert dry.exit_code == 0, dry.output
    assert "7 prices compared: 7 new, 0 changed, 0 unchanged" in dry.stdout
    assert "skipped 3: documentation 1, duplicate 1, not_charged_yet 1" in dry.stdout
    assert "7 new models (--verbose lists them)" in dry.stdout
    assert f"claude-sonnet-4-5-{suffix}" not in dry.stdout  # one line each only with --verbose
    assert "dry run: nothing applied" in dry.stdout
    assert stored(pricing, suffix) == {}

    applied = runner.invoke(app, ["price", "import", str(path), "--yes"], env=WIDE)
    assert applied.exit_code == 0, applied.output
    assert "applied: 7 added, 0 changed, 0 unchanged" in applied.stdout
    assert len(stored(pricing, suffix)) == 7

    assert "applied" not in applied.stderr  # the progress bar is on stderr, transient

    again = runner.invoke(app, ["price", "import", str(path), "--json"])
    assert again.exit_code == 0, again.output
    body = json.loads(again.stdout)
    assert (body["added"], body["changed"], body["unchanged"]) == (0, 0, 7)


def test_cli_import_json_apply_prints_one_json_document(pricing: Pricing, own_sample):
    path, suffix = own_sample()
    result = CliRunner().invoke(
        app, ["price", "import", str(path), "--yes", "--json", "--chunk-size", "2"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["added"], body["changed"], body["unchanged"]) == (7, 0, 0)
    assert {s["key"] for s in body["skipped"]} == {
        "sample_spec",
        f"whisper-1-{suffix}",
        f"openai/gpt-4o-{suffix}",
    }
    assert len(stored(pricing, suffix)) == 7


def test_cli_import_bad_file_exits_1_with_one_line_and_writes_nothing(
    tmp_path: Path, pricing: Pricing
):
    runner = CliRunner()
    broken = tmp_path / "broken.json"
    broken.write_text('{"gpt-4o": {"input_cost_per_token": 2.5e-06,')
    result = runner.invoke(app, ["price", "import", str(broken), "--yes"])
    assert result.exit_code == 1
    assert "not valid JSON" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output

    missing = runner.invoke(app, ["price", "import", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "cannot read" in missing.stderr

    suffix = uuid.uuid4().hex[:8]
    negative = tmp_path / "negative.json"
    negative.write_text(
        json.dumps(
            {
                f"ok-{suffix}": {
                    "litellm_provider": "openai",
                    "mode": "chat",
                    "input_cost_per_token": 1e-06,
                    "output_cost_per_token": 2e-06,
                },
                f"bad-{suffix}": {
                    "litellm_provider": "openai",
                    "mode": "chat",
                    "input_cost_per_token": 1e-06,
                    "output_cost_per_token": 2000,
                },
            }
        )
    )
    refused = runner.invoke(app, ["price", "import", str(negative), "--yes"])
    assert refused.exit_code == 1, refused.output
    assert "invalid_amount" in refused.stderr
    assert stored(pricing, suffix) == {}

    nothing = tmp_path / "nothing.json"
    nothing.write_text(
        json.dumps({"whisper-1": {"litellm_provider": "openai", "mode": "audio_transcription"}})
    )
    empty = runner.invoke(app, ["price", "import", str(nothing)])
    assert empty.exit_code == 1 and "no priceable entries" in empty.stderr


def test_cli_export_json_is_litellm_format_and_reimports_unchanged(
    pricing: Pricing, own_sample, tmp_path: Path
):
    path, suffix = own_sample()
    pricing.import_prices(prices_from_file(path).prices)
    runner = CliRunner()
    exported = runner.invoke(app, ["price", "export", "--provider", "deepseek"])
    assert exported.exit_code == 0, exported.output
    catalog = json.loads(exported.stdout, parse_float=Decimal)
    entry = catalog[f"deepseek/deepseek-chat-{suffix}"]
    assert entry["litellm_provider"] == "deepseek" and entry["mode"] == "chat"
    assert entry["input_cost_per_token"] == Decimal("0.00000027")
    assert entry["cache_read_input_token_cost"] == Decimal("0.00000007")
    out = tmp_path / "export.json"
    out.write_text(exported.stdout)
    back = pricing.import_prices(prices_from_file(out).prices, dry_run=True)
    assert back.added == 0 and back.changed == 0 and back.unchanged == len(catalog)


def test_cli_import_without_yes_and_no_terminal_applies_after_the_diff(
    pricing: Pricing, own_sample
):
    path, suffix = own_sample()
    result = CliRunner().invoke(app, ["price", "import", str(path)], env=WIDE)  # stdin: no TTY
    assert result.exit_code == 0, result.output
    assert "7 new" in result.stdout and "applied: 7 added" in result.stdout
    assert len(stored(pricing, suffix)) == 7


def test_cli_export_csv_reimports_unchanged(pricing: Pricing, own_sample, tmp_path: Path):
    path, suffix = own_sample()
    pricing.import_prices(prices_from_file(path).prices)
    exported = CliRunner().invoke(
        app, ["price", "export", "--format", "csv", "--provider", "anthropic"]
    )
    assert exported.exit_code == 0, exported.output
    mine = [
        line for line in exported.stdout.splitlines()[1:] if line.split(",")[1].endswith(suffix)
    ]
    out = tmp_path / "prices.csv"
    out.write_text(exported.stdout.splitlines()[0] + "\n" + "\n".join(mine) + "\n")
    back = pricing.import_prices(prices_from_file(out).prices, dry_run=True)
    assert (back.added, back.changed, back.unchanged) == (0, 0, 2), back.diff


# ── Float noise, modes, duplicates (issue 10 §1, §5) ────────────────────────────────────────
def test_map_litellm_float_noise_rounded_to_scale_and_reported():
    catalog = load_litellm(
        '{"databricks/claude-x": {"litellm_provider": "databricks", "mode": "chat",'
        ' "input_cost_per_token": 2.9999900000000002e-06,'
        ' "output_cost_per_token": 1.5000020000000002e-05}}'
    )
    mapping = map_litellm(catalog)
    [price] = mapping.prices
    # the decimal a person wrote, at the database's scale: never a refusal of the file
    assert price["input_per_token"] == Decimal("0.00000299999")
    assert price["output_per_token"] == Decimal("0.00001500002")
    assert [(r.field, r.value, r.stored) for r in mapping.rounded] == [
        ("input_cost_per_token", Decimal("0.0000029999900000000002"), Decimal("0.00000299999")),
        ("output_cost_per_token", Decimal("0.000015000020000000002"), Decimal("0.00001500002")),
    ]
    # each change is within the float's own error (15 significant digits)
    assert all(r.change <= r.value * Decimal("1e-15") for r in mapping.rounded)
    assert mapping.rounded[0].change == Decimal("2E-22")


def test_map_litellm_price_needing_more_than_12_decimals_is_skipped_not_rounded():
    catalog = load_litellm(
        '{"thirds": {"litellm_provider": "openai", "mode": "chat",'
        ' "input_cost_per_token": 3.3333333333333335e-05, "output_cost_per_token": 1e-05}}'
    )
    mapping = map_litellm(catalog)
    assert mapping.prices == [] and mapping.rounded == []
    [skipped] = mapping.skipped
    assert skipped.reason == "too_precise" and "0.000033333333333333335" in skipped.detail


def test_map_litellm_rerank_per_query_price_becomes_per_request():
    catalog = load_litellm(
        '{"cohere/rerank-v3.5": {"litellm_provider": "cohere", "mode": "rerank",'
        ' "input_cost_per_query": 0.002, "input_cost_per_token": 0.0,'
        ' "output_cost_per_token": 0.0}}'
    )
    [price] = map_litellm(catalog).prices
    assert price["per_request"] == Decimal("0.002")
    assert price["input_per_token"] == 0 and price.get("pricing_type", "paid") == "paid"


def test_map_litellm_unprefixed_key_wins_over_prefixed_duplicate_and_is_default():
    entry = {"litellm_provider": "deepseek", "mode": "chat", "input_cost_per_token": 2.8e-07}
    catalog = {
        "deepseek/deepseek-chat": {**entry, "output_cost_per_token": 1e-06},
        "deepseek-chat": {**entry, "output_cost_per_token": 4.2e-07},
        "azure/deepseek-chat": {**entry, "litellm_provider": "azure", "output_cost_per_token": 0},
    }
    mapping = map_litellm(catalog)
    kept = {p["litellm_key"]: p for p in mapping.prices}
    assert set(kept) == {"deepseek-chat", "azure/deepseek-chat"}
    assert kept["deepseek-chat"]["output_per_token"] == Decimal("0.00000042")
    assert kept["deepseek-chat"]["is_default"] is True
    assert "is_default" not in kept["azure/deepseek-chat"]
    [skipped] = mapping.skipped
    assert skipped.key == "deepseek/deepseek-chat" and skipped.reason == "duplicate"
    assert "'deepseek-chat'" in skipped.detail


def test_map_generated_catalog_every_kept_key_has_the_decimals_a_person_wrote():
    catalog = generate_catalog(3000, suffix="map")
    mapping = map_litellm(catalog.data)
    by_key = {p["litellm_key"]: p for p in mapping.prices}
    assert set(by_key) == set(catalog.expected)
    args = {
        "input_cost_per_token": "input_per_token",
        "output_cost_per_token": "output_per_token",
        "cache_read_input_token_cost": "cached_input_per_token",
    }
    for key, prices in catalog.expected.items():
        for name, value in prices.items():
            assert by_key[key][args[name]] == value, (key, name)
    kept_noise = {(k, f) for k, f in catalog.noisy if k in catalog.expected}
    assert kept_noise and {(r.key, r.field) for r in mapping.rounded} == kept_noise
    modes = ImportResult(skipped=mapping.skipped).skipped_by("mode")
    for mode in ("audio_transcription", "audio_speech", "realtime", "image_generation"):
        assert modes[mode] > 0
    assert "rerank" not in modes  # priced per request


# ── The generated 3,000-entry catalog against the stack ─────────────────────────────────────
@pytest.fixture()
def suffix(service: Client) -> Iterator[str]:
    """A random suffix for generated model names. Their catalog rows (and so their prices) are
    deleted afterwards: thousands of generated prices would change what the shared stack's price
    list looks like to the other tests."""
    suffix = uuid.uuid4().hex[:8]
    yield suffix
    service.table("models").delete().like("model_id", f"%{suffix}%").execute()


def test_import_generated_catalog_then_export_gives_back_every_price_under_its_key(
    pricing: Pricing, tmp_path: Path, suffix: str
):
    catalog = generate_catalog(3000, suffix=suffix)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog.data))
    runner = CliRunner()
    applied = runner.invoke(app, ["price", "import", str(path), "--yes", "--json"])
    assert applied.exit_code == 0, applied.output
    body = json.loads(applied.stdout)
    assert body["added"] == len(catalog.expected) and body["changed"] == 0
    assert len(body["rounded"]) > 0

    exported = runner.invoke(app, ["price", "export"])
    assert exported.exit_code == 0, exported.output
    back = json.loads(exported.stdout, parse_float=Decimal)
    mine = {key for key in back if key.endswith(suffix) or f"-{suffix}-" in key}
    assert mine == set(catalog.expected)  # same keys, prefixed ones included
    for key, prices in catalog.expected.items():
        for name, value in prices.items():
            assert back[key][name] == value, (key, name, back[key][name], value)

    again = runner.invoke(app, ["price", "import", str(path), "--json"])
    assert again.exit_code == 0, again.output
    body = json.loads(again.stdout)
    assert (body["added"], body["changed"], body["keys_changed"]) == (0, 0, 0)
    assert body["defaults_changed"] == []


def test_import_unprefixed_entry_becomes_the_default_and_bare_name_charges_it(
    pricing: Pricing, tmp_path: Path
):
    suffix = uuid.uuid4().hex[:8]
    model = f"gpt-def-{suffix}"
    entry = {"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}
    path = tmp_path / "defaults.json"
    # azure's copy comes first, so without the import's choice it would be the default
    path.write_text(
        json.dumps(
            {
                f"azure/{model}": {**entry, "litellm_provider": "azure"},
                model: {**entry, "litellm_provider": "openai", "input_cost_per_token": 5e-07},
            }
        )
    )
    preview = merge_results(
        import_chunks(pricing, prices_from_file(path).prices, dry_run=True), dry_run=True
    )
    assert [(d.model, d.old, d.new) for d in preview.defaults_changed] == [(model, None, "openai")]
    merge_results(import_chunks(pricing, prices_from_file(path).prices))
    charged = pricing.get(model=model)
    assert (charged.provider, charged.price_per_input_token) == ("openai", Decimal("0.0000005"))


def test_import_chunked_error_names_the_entry_by_its_index_in_the_file(
    pricing: Pricing, own_sample
):
    path, suffix = own_sample()
    prices = prices_from_file(path).prices
    prices[5] = {**prices[5], "currency": "XYZ"}  # a format Python accepts, the database refuses
    with pytest.raises(InvalidInput) as refused:
        list(import_chunks(pricing, prices, chunk_size=2, dry_run=True))
    assert refused.value.code == "invalid_currency"
    assert (refused.value.detail or "").startswith("prices[5]")


def test_import_two_versions_of_one_model_in_one_call_compare_in_order(pricing: Pricing):
    model = f"versions-{uuid.uuid4().hex[:8]}"
    first = {
        "provider": "testco",
        "model": model,
        "input_per_token": "0.000001",
        "output_per_token": "0.000002",
        "effective_from": "2020-01-01T00:00:00+00:00",
    }
    same_later = {**first, "effective_from": "2021-01-01T00:00:00+00:00"}
    dearer = {**first, "input_per_token": "0.000003", "effective_from": "2022-01-01T00:00:00+00:00"}
    result = pricing.import_prices([first, same_later, dearer], dry_run=True)
    # the 2021 entry has the prices in effect then (the 2020 entry's): no new version
    assert (result.added, result.changed, result.unchanged) == (1, 1, 1)
    [diff] = result.diff
    assert (diff.field, diff.old, diff.new) == ("input_per_token", "0.000001", "0.000003")
    with pytest.raises(InvalidInput, match=r"prices\[1\].*prices\[0\]"):
        pricing.import_prices([first, first], dry_run=True)


def test_cli_import_summary_counts_rounded_skipped_by_mode_and_shows_changes_per_1m(
    pricing: Pricing, tmp_path: Path, suffix: str
):
    catalog = generate_catalog(100, suffix=suffix)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog.data))
    runner = CliRunner()
    assert runner.invoke(app, ["price", "import", str(path), "--yes"]).exit_code == 0
    key = f"gpt-m1-{suffix}"
    catalog.data[key]["input_cost_per_token"] = 1.234567e-06
    path.write_text(json.dumps(catalog.data))
    dry = runner.invoke(app, ["price", "import", str(path), "--dry-run"], env=WIDE)
    assert dry.exit_code == 0, dry.output
    assert "0 new, 1 changed" in dry.stdout
    assert "by mode: " in dry.stdout and "audio_transcription" in dry.stdout
    assert "not_charged_yet" in dry.stdout and "duplicate" in dry.stdout
    old = catalog.expected[key]["input_cost_per_token"].scaleb(6)
    changed = next(line for line in dry.stdout.splitlines() if key in line)
    assert decimal_text(old) in changed and "1.234567" in changed  # per 1M tokens
    verbose = runner.invoke(app, ["price", "import", str(path), "--dry-run", "-v"], env=WIDE)
    assert f"skipped whisper-m1-{suffix}: audio_transcription" in verbose.stdout
