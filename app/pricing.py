"""Pricing: the price list, price changes, aliases, history, LiteLLM import/export, re-pricing.

People talk about prices per 1M tokens ("$2.50 / 1M input"); the database keeps exact
per-token numerics (0.0000025). `to_per_token` / `per_million` convert between the two with
`Decimal` arithmetic only (a shift of the decimal point: never a float, never rounded).

The `Pricing` service is a thin, synchronous wrapper over the SQL functions (`set_model_price`,
`set_model_alias`, `price_for`, `price_history`, `import_model_prices`, `reprice_usage`,
`pricing_consolidation_report`): every write is one SQL call, one transaction, so the database
is the last guard. Inputs are validated here too, to give a clear message before a round trip.

LiteLLM's public catalog (`model_prices_and_context_window.json`) is read by `map_litellm`
into `set_model_price` argument objects and written back by `Pricing.export_litellm`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
)

from app.client import call, close_client, json_value, service_client
from app.client import rpc_params as _params
from app.config import Settings
from app.errors import InvalidInput
from supabase import Client

# ── Units ────────────────────────────────────────────────────────────────────────────────────
# Price units people use, as powers of ten of tokens: a price "per 1M" is shifted 6 places.
UNITS: dict[str, int] = {"token": 0, "1k": 3, "1m": 6}
MAX_SCALE = 12  # the database keeps per-token prices as numeric(20,12)
MAX_PER_TOKEN = Decimal(1000)  # model_pricing's range checks: 0 <= price < 1000 per token
CURRENCY = re.compile(r"^[A-Z]{3}$")
PRICING_TYPES = ("paid", "free", "deprecated", "missing")


def unit_exponent(unit: str) -> int:
    """Powers of ten of tokens a unit stands for; raises InvalidInput for an unknown unit."""
    exponent = UNITS.get(unit.strip().lower())
    if exponent is None:
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="unit",
            detail=f"unit must be one of token, 1K, 1M (got {unit!r})",
        )
    return exponent


def parse_amount(
    value: str | int | Decimal, *, field: str, allow_negative: bool = False
) -> Decimal:
    """A money amount from text, exactly; raises InvalidInput (invalid_amount) naming `field`."""
    if isinstance(value, float):  # a float has already lost the decimal the user typed
        raise InvalidInput(
            "invalid_amount",
            code="invalid_amount",
            field=field,
            detail=f"{field} must be given as text or Decimal, not float",
        )
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(
            "invalid_amount",
            code="invalid_amount",
            field=field,
            detail=f"{field} must be a number, got {value!r}",
        ) from None
    if not amount.is_finite():
        raise InvalidInput(
            "invalid_amount",
            code="invalid_amount",
            field=field,
            detail=f"{field} must be a finite number, got {value!r}",
        )
    if amount < 0 and not allow_negative:
        raise InvalidInput(
            "invalid_amount",
            code="invalid_amount",
            field=field,
            detail=f"{field} must be >= 0, got {value}",
        )
    return amount


def to_per_token(value: str | int | Decimal, *, unit: str = "1M", field: str = "price") -> Decimal:
    """A price per `unit` (token, 1K, 1M) as an exact price per token.

    2.50 per 1M → Decimal('0.0000025'). Raises InvalidInput (invalid_amount) for a negative or
    non-numeric value, or one that needs more than 12 decimals per token (the database scale).
    """
    amount = parse_amount(value, field=field)
    per_token = amount.scaleb(-unit_exponent(unit))
    if per_token != 0 and per_token.normalize().as_tuple().exponent < -MAX_SCALE:  # type: ignore[operator]
        raise InvalidInput(
            "invalid_amount",
            code="invalid_amount",
            field=field,
            detail=f"{field} {value} per {unit} is more precise than "
            f"{MAX_SCALE} decimals per token",
        )
    if per_token >= MAX_PER_TOKEN:
        raise InvalidInput(
            "invalid_amount",
            code="invalid_amount",
            field=field,
            detail=f"{field} {value} per {unit} is too large",
        )
    return plain(per_token)


def per_million(per_token: Decimal | None) -> Decimal | None:
    """A per-token price shown per 1M tokens (exact)."""
    return None if per_token is None else plain(per_token.scaleb(6))


def plain(value: Decimal) -> Decimal:
    """The same number without trailing zeros and without an exponent (0.0000025, not 2.5E-6)."""
    if value == 0:
        return Decimal(0)
    normalized = value.normalize()
    return Decimal(format(normalized, "f"))


def decimal_text(value: Decimal | None) -> str:
    """Exact decimal text for people and files ('0.0000025', '10')."""
    return "" if value is None else format(plain(value), "f")


def check_currency(currency: str) -> str:
    """An ISO 4217 code in capitals; raises InvalidInput (invalid_currency)."""
    code = currency.strip().upper()
    if not CURRENCY.match(code):
        raise InvalidInput(
            "invalid_currency",
            code="invalid_currency",
            field="currency",
            detail=f"currency must be a 3-letter ISO code like USD, got {currency!r}",
        )
    return code


def parse_time(value: str | datetime | None, *, field: str) -> datetime | None:
    """An ISO 8601 timestamp (a date means midnight UTC; no zone means UTC)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field=field,
            detail=f"{field} must be an ISO 8601 timestamp, got {value!r}",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ── Results ──────────────────────────────────────────────────────────────────────────────────
class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_float_money(cls, value: Any) -> Any:
        # JSON numbers would arrive as floats; their shortest repr is the decimal PostgreSQL
        # printed for every price we store (<= 17 significant digits), so go through str.
        return Decimal(repr(value)) if isinstance(value, float) else value

    @field_serializer("*", when_used="json")
    @classmethod
    def _exact_money(cls, value: Any) -> Any:
        # '0.000003', never '0.000003000000' or '5.000E-9'
        return decimal_text(value) if isinstance(value, Decimal) else value


class ModelPrice(_Result):
    """One price of a (provider, model): per-token prices, as `model_pricing` / `price_for`."""

    provider: str = Field(validation_alias=AliasChoices("provider", "provider_id"))
    model: str = Field(validation_alias=AliasChoices("model", "model_id"))
    price_per_input_token: Decimal | None = None
    price_per_output_token: Decimal | None = None
    price_per_cached_input_token: Decimal | None = None
    price_per_request: Decimal = Decimal(0)
    price_per_image: Decimal = Decimal(0)
    currency: str = "USD"
    pricing_type: str = "paid"
    pricing_source: str | None = None
    source_detail: str | None = None
    effective_from: datetime | None = None
    effective_until: datetime | None = None
    last_updated: datetime | None = None
    long_context_threshold: int | None = None
    price_per_input_token_above_threshold: Decimal | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "price_per_input_token_above_threshold", "input_per_token_above_threshold"
        ),
    )
    price_per_output_token_above_threshold: Decimal | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "price_per_output_token_above_threshold", "output_per_token_above_threshold"
        ),
    )
    version_id: str | int | None = None
    # set_model_price: False when the price in effect already had these values (no new version)
    created: bool | None = None
    # price_history: whether price_for would use this version now
    in_effect: bool | None = None

    @property
    def input_per_1m(self) -> Decimal | None:
        return per_million(self.price_per_input_token)

    @property
    def output_per_1m(self) -> Decimal | None:
        return per_million(self.price_per_output_token)

    @property
    def cached_input_per_1m(self) -> Decimal | None:
        return per_million(self.price_per_cached_input_token)


class ModelAlias(_Result):
    alias: str
    provider: str | None = None
    target_model: str | None = Field(
        default=None, validation_alias=AliasChoices("target_model", "model", "target")
    )
    target_provider: str | None = None


class PriceDiff(_Result):
    provider: str
    model: str
    field: str
    old: Any = None
    new: Any = None


class ImportResult(_Result):
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    diff: list[PriceDiff] = Field(default_factory=list)
    skipped: list[SkippedEntry] = Field(default_factory=list)
    dry_run: bool = False


class Adjustment(_Result):
    user_id: str
    delta: Decimal


class RepriceResult(_Result):
    records: int
    changed: int
    total_delta: Decimal
    adjustments: list[Adjustment] = Field(default_factory=list)
    audit_id: str | int | None = None
    dry_run: bool = False


class ReportCheck(_Result):
    name: str
    passed: bool
    # error: blocks the consolidation; warning: to review (e.g. a routed model whose price is
    # deliberately 'missing', which is refused at charge time rather than billed $0).
    severity: str = "error"
    count: int = 0
    items: list[Any] = Field(default_factory=list)


class ConsolidationReport(_Result):
    passed: bool
    checks: list[ReportCheck] = Field(default_factory=list)
    legacy_columns_present: bool | None = None
    pricing_tiers_present: bool | None = None

    @property
    def errors(self) -> list[ReportCheck]:
        """Failed checks that block: any failed check not marked as a warning."""
        return [c for c in self.checks if not c.passed and c.severity != "warning"]

    @property
    def warnings(self) -> list[ReportCheck]:
        return [c for c in self.checks if not c.passed and c.severity == "warning"]


class SkippedEntry(_Result):
    key: str
    reason: str


ImportResult.model_rebuild()

# What to do about each failed check of pricing_consolidation_report().
REMEDIES: dict[str, str] = {
    "legacy_price_not_in_model_pricing": "copy the legacy prices: run `select populate_model_pricing();` (as postgres or "
    "service_role), then check again",
    "legacy_price_differs": "models.pricing_* and model_pricing disagree for these models: decide which is right, "
    "then `tokenmeter price set MODEL --provider P --input X --output Y` (or fix the legacy "
    "columns and run `select populate_model_pricing();`)",
    "paid_model_priced_zero": "paid models priced at $0 would be charged nothing: set their real price with "
    "`tokenmeter price set MODEL --provider P --input X --output Y`, or mark them free",
    "active_model_without_price": "active models without a price cannot be charged: price them with `tokenmeter price "
    "set` (or import a price list with `tokenmeter price import`), or deactivate them",
    "pricing_tiers_not_empty": "pricing_tiers still holds rows: move them into model_pricing (long-context tiers via "
    "`tokenmeter price set ... --long-context-threshold`) and empty the table",
    "usage_without_price": "usage was recorded for models that have no price: add the prices, then re-price the "
    "period with `tokenmeter price reprice --since ISO --until ISO`",
}


# ── LiteLLM catalog mapping ──────────────────────────────────────────────────────────────────
# litellm_provider → our provider_id where they differ (the seed prices Gemini API models under
# 'google'). Everything else keeps LiteLLM's name.
LITELLM_PROVIDERS: dict[str, str] = {
    "gemini": "google",
    "text-completion-openai": "openai",
}
OUR_TO_LITELLM: dict[str, str] = {"google": "gemini"}
# Modes whose price is per token (plus optional per-image/per-request extras).
TOKEN_MODES = {"chat", "completion", "responses", "embedding", None}
IMAGE_MODES = {"image_generation"}
TIER_KEY = re.compile(r"^(input|output)_cost_per_token_above_(\d+)k_tokens$")


def load_litellm(text: str | bytes) -> dict[str, Any]:
    """Parse a LiteLLM catalog with every number as an exact Decimal (2.5e-06 stays exact)."""
    try:
        data = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="file",
            detail=f"not valid JSON: {exc}",
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="file",
            detail="a LiteLLM price file is a JSON object keyed by model name",
        )
    return data


def _litellm_model(key: str, litellm_provider: str, provider: str) -> str:
    # "openai/gpt-4o" → "gpt-4o"; "openrouter/anthropic/claude-3.5-sonnet" keeps
    # "anthropic/claude-3.5-sonnet" (OpenRouter's own model id).
    for prefix in (litellm_provider, provider):
        if key.startswith(prefix + "/"):
            return key[len(prefix) + 1 :]
    return key


def _number(entry: Mapping[str, Any], name: str) -> Decimal | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise ValueError(f"{name} is not a number")  # noqa: TRY004 (reported, not raised)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite number >= 0")
    return plain(amount)


def map_litellm_entry(
    key: str, entry: Mapping[str, Any], *, today: date | None = None
) -> dict[str, Any]:
    """One LiteLLM entry as `set_model_price` arguments; raises ValueError saying why not."""
    if not isinstance(entry, Mapping):
        raise ValueError("entry is not an object")  # noqa: TRY004
    litellm_provider = entry.get("litellm_provider")
    if not isinstance(litellm_provider, str) or not litellm_provider:
        raise ValueError("no litellm_provider")
    mode = entry.get("mode")
    if mode not in TOKEN_MODES | IMAGE_MODES:
        raise ValueError(f"mode {mode} is not priced per token or per image")
    provider = LITELLM_PROVIDERS.get(litellm_provider, litellm_provider)
    if provider.startswith("vertex_ai-"):  # vertex_ai-language-models, vertex_ai-image-models…
        provider = "vertex_ai"
    model = _litellm_model(key, litellm_provider, provider)
    input_cost = _number(entry, "input_cost_per_token")
    output_cost = _number(entry, "output_cost_per_token")
    per_image = _number(entry, "output_cost_per_image")
    if per_image is None:
        per_image = _number(entry, "input_cost_per_image")
    if mode in IMAGE_MODES and per_image is None:
        raise ValueError(
            "image model without a per-image price (per-pixel prices are not supported)"
        )
    if input_cost is None and per_image is None:
        raise ValueError("no input_cost_per_token")
    if output_cost is None and mode not in ("embedding", "image_generation") and per_image is None:
        raise ValueError("no output_cost_per_token")
    args: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "input_per_token": input_cost or Decimal(0),
        "output_per_token": output_cost or Decimal(0),
    }
    cached = _number(entry, "cache_read_input_token_cost")
    if cached is not None:
        args["cached_input_per_token"] = cached
    per_request = _number(entry, "input_cost_per_request")
    if per_request:
        args["per_request"] = per_request
    if per_image:
        args["per_image"] = per_image
    tiers: dict[int, dict[str, Decimal]] = {}
    for name in entry:
        if match := TIER_KEY.match(name):
            amount = _number(entry, name)
            if amount is not None:
                tiers.setdefault(int(match.group(2)) * 1000, {})[match.group(1)] = amount
    if tiers:
        # One long-context tier is modelled: the lowest threshold LiteLLM lists.
        threshold = min(tiers)
        args["long_context_threshold"] = threshold
        tier = tiers[threshold]
        args["input_per_token_above_threshold"] = tier.get("input", args["input_per_token"])
        args["output_per_token_above_threshold"] = tier.get("output", args["output_per_token"])
    deprecation = entry.get("deprecation_date")
    priced = [v for k, v in args.items() if isinstance(v, Decimal)]
    if isinstance(deprecation, str) and deprecation <= (today or date.today()).isoformat():
        args["pricing_type"] = "deprecated"
    elif priced and all(v == 0 for v in priced):
        args["pricing_type"] = "free"
    return args


class LiteLLMMapping(BaseModel):
    model_config = ConfigDict(frozen=True)

    prices: list[dict[str, Any]]
    skipped: list[SkippedEntry]


def map_litellm(data: Mapping[str, Any], *, today: date | None = None) -> LiteLLMMapping:
    """Every priceable entry of a LiteLLM catalog as `set_model_price` argument objects.

    Skipped (and reported, never silently priced $0): `sample_spec`, modes not priced per token
    or per image (audio, rerank, moderation, …), entries without a token price, and a second key
    for the same (provider, model) — e.g. "openai/gpt-4o" after "gpt-4o".
    """
    prices: list[dict[str, Any]] = []
    skipped: list[SkippedEntry] = []
    seen: dict[tuple[str, str], str] = {}
    for key, entry in data.items():
        if key == "sample_spec":
            skipped.append(SkippedEntry(key=key, reason="documentation entry"))
            continue
        try:
            args = map_litellm_entry(key, entry, today=today)
        except ValueError as exc:
            skipped.append(SkippedEntry(key=key, reason=str(exc)))
            continue
        identity = (args["provider"], args["model"])
        if identity in seen:
            skipped.append(SkippedEntry(key=key, reason=f"same model as {seen[identity]!r}"))
            continue
        seen[identity] = key
        prices.append(args)
    return LiteLLMMapping(prices=prices, skipped=skipped)


def to_litellm(prices: Iterable[ModelPrice]) -> dict[str, dict[str, Any]]:
    """Current prices as a LiteLLM catalog (keys "provider/model"); numbers stay Decimal."""
    catalog: dict[str, dict[str, Any]] = {}
    for price in prices:
        if price.pricing_type == "missing" or price.price_per_input_token is None:
            continue
        image_only = (
            price.price_per_image
            and not price.price_per_input_token
            and not price.price_per_output_token
        )
        entry: dict[str, Any] = {
            "litellm_provider": OUR_TO_LITELLM.get(price.provider, price.provider),
            "mode": "image_generation" if image_only else "chat",
            "input_cost_per_token": plain(price.price_per_input_token),
            "output_cost_per_token": plain(price.price_per_output_token or Decimal(0)),
        }
        if price.price_per_cached_input_token is not None:
            entry["cache_read_input_token_cost"] = plain(price.price_per_cached_input_token)
        if price.price_per_request:
            entry["input_cost_per_request"] = plain(price.price_per_request)
        if price.price_per_image:
            entry["output_cost_per_image"] = plain(price.price_per_image)
        if price.long_context_threshold and price.long_context_threshold % 1000 == 0:
            k = price.long_context_threshold // 1000
            if price.price_per_input_token_above_threshold is not None:
                entry[f"input_cost_per_token_above_{k}k_tokens"] = plain(
                    price.price_per_input_token_above_threshold
                )
            if price.price_per_output_token_above_threshold is not None:
                entry[f"output_cost_per_token_above_{k}k_tokens"] = plain(
                    price.price_per_output_token_above_threshold
                )
        if price.pricing_type == "deprecated":
            entry["deprecation_date"] = (price.last_updated or datetime.now(UTC)).date().isoformat()
        catalog[f"{price.provider}/{price.model}"] = entry
    return catalog


_DECIMAL_MARK = "\u0000dec:"


def dumps_exact(data: Any) -> str:
    """JSON with every Decimal written as a plain JSON number, digit for digit."""

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return _DECIMAL_MARK + decimal_text(value)
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        raise TypeError(f"cannot serialise {type(value).__name__}")

    text = json.dumps(data, indent=2, default=default, ensure_ascii=False)
    return re.sub(r'"\\u0000dec:([-0-9.]+)"', r"\1", text)


# ── Files: LiteLLM JSON, our argument arrays, our CSV ────────────────────────────────────────
CSV_COLUMNS = (
    "provider",
    "model",
    "input_per_1m",
    "output_per_1m",
    "cached_input_per_1m",
    "per_request",
    "per_image",
    "currency",
    "pricing_type",
    "long_context_threshold",
    "input_above_threshold_per_1m",
    "output_above_threshold_per_1m",
)


def prices_from_file(path: Path) -> LiteLLMMapping:
    """Read a price file: a LiteLLM catalog (JSON object), a JSON array of `set_model_price`
    argument objects, or the CSV `price export --format csv` writes (prices per 1M).
    Raises InvalidInput when the file cannot be read or has no valid shape."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="file",
            detail=f"cannot read {path}: {exc.strerror or exc}",
        ) from None
    if path.suffix.lower() == ".csv":
        return LiteLLMMapping(prices=_csv_prices(raw), skipped=[])
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="file",
            detail=f"{path.name} is not valid JSON: {exc}",
        ) from None
    if isinstance(data, list):
        return LiteLLMMapping(
            prices=[_checked_args(item, i) for i, item in enumerate(data)], skipped=[]
        )
    if isinstance(data, dict):
        return map_litellm(data)
    raise InvalidInput(
        "invalid_argument",
        code="invalid_argument",
        field="file",
        detail=f"{path.name}: expected a LiteLLM catalog (object) or an array",
    )


def _checked_args(item: Any, index: int) -> dict[str, Any]:
    if not isinstance(item, dict) or not item.get("provider") or not item.get("model"):
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="file",
            detail=f"entry {index}: needs at least provider and model",
        )
    return item


def _csv_prices(raw: bytes) -> list[dict[str, Any]]:
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(
            "invalid_argument",
            code="invalid_argument",
            field="file",
            detail=f"not a valid CSV file: {exc}",
        ) from None
    prices = []
    for line, row in enumerate(rows, start=2):
        try:
            if not row.get("provider") or not row.get("model"):
                raise InvalidInput(
                    "invalid_argument",
                    code="invalid_argument",
                    detail="provider and model are required",
                )
            args: dict[str, Any] = {
                "provider": row["provider"],
                "model": row["model"],
                "input_per_token": to_per_token(row.get("input_per_1m") or "0", field="input"),
                "output_per_token": to_per_token(row.get("output_per_1m") or "0", field="output"),
            }
            if row.get("cached_input_per_1m"):
                args["cached_input_per_token"] = to_per_token(
                    row["cached_input_per_1m"], field="cached_input"
                )
            for name in ("per_request", "per_image"):
                if row.get(name):
                    args[name] = parse_amount(row[name], field=name)
            if row.get("currency"):
                args["currency"] = check_currency(row["currency"])
            if row.get("pricing_type"):
                args["pricing_type"] = row["pricing_type"]
            if row.get("long_context_threshold"):
                try:
                    args["long_context_threshold"] = int(row["long_context_threshold"])
                except ValueError:
                    raise InvalidInput(
                        "invalid_argument",
                        code="invalid_argument",
                        detail="long_context_threshold must be an integer",
                    ) from None
                for column, name in (
                    ("input_above_threshold_per_1m", "input_per_token_above_threshold"),
                    ("output_above_threshold_per_1m", "output_per_token_above_threshold"),
                ):
                    args[name] = to_per_token(row.get(column) or "0", field=column)
        except InvalidInput as exc:
            raise InvalidInput(
                "invalid_argument",
                code="invalid_argument",
                field="file",
                detail=f"line {line}: {exc.detail or exc.message}",
            ) from None
        prices.append(args)
    return prices


def prices_csv(prices: Iterable[ModelPrice]) -> str:
    """Prices as CSV, per 1M tokens (the format `price import` reads back)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in prices:
        writer.writerow(
            [
                p.provider,
                p.model,
                decimal_text(p.input_per_1m),
                decimal_text(p.output_per_1m),
                decimal_text(p.cached_input_per_1m),
                decimal_text(p.price_per_request),
                decimal_text(p.price_per_image),
                p.currency,
                p.pricing_type,
                p.long_context_threshold or "",
                decimal_text(per_million(p.price_per_input_token_above_threshold)),
                decimal_text(per_million(p.price_per_output_token_above_threshold)),
            ]
        )
    return out.getvalue()


PER_TOKEN_ARGS = (
    "input_per_token",
    "output_per_token",
    "cached_input_per_token",
    "input_per_token_above_threshold",
    "output_per_token_above_threshold",
)
AMOUNT_ARGS = ("per_request", "per_image")


def check_import(prices: Sequence[Mapping[str, Any]]) -> None:
    """Validate every import entry before anything is sent: the database compares a dry run
    without validating, and chunks commit one by one, so a bad entry must fail up front.
    Raises InvalidInput whose detail names the entry (prices[i])."""
    for index, entry in enumerate(prices):
        try:
            if (
                not isinstance(entry, Mapping)
                or not entry.get("provider")
                or not entry.get("model")
            ):
                raise InvalidInput(
                    "invalid_argument", code="invalid_argument", detail="needs provider and model"
                )
            for name in PER_TOKEN_ARGS + AMOUNT_ARGS:
                value = entry.get(name)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
                    raise InvalidInput(
                        "invalid_amount",
                        code="invalid_amount",
                        field=name,
                        detail=f"{name} must be a number, got {value!r}",
                    )
                amount = parse_amount(value, field=name)
                if amount >= MAX_PER_TOKEN:
                    raise InvalidInput(
                        "invalid_amount",
                        code="invalid_amount",
                        field=name,
                        detail=f"{name} must be less than 1000, got {value}",
                    )
            if entry.get("currency") is not None:
                check_currency(str(entry["currency"]))
        except InvalidInput as exc:
            raise InvalidInput(
                exc.message,
                code=exc.code,
                field=exc.field,
                detail=f"prices[{index}] ({_entry_name(entry)}): {exc.detail or exc.message}",
            ) from None


def _entry_name(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return f"{entry.get('provider')}/{entry.get('model')}"
    return "?"


# ── The service ──────────────────────────────────────────────────────────────────────────────
# model_pricing read with money as text, so no float ever touches a price.
PRICE_COLUMNS = (
    "provider_id,model_id,price_per_input_token::text,price_per_output_token::text,"
    "price_per_cached_input_token::text,price_per_request::text,price_per_image::text,"
    "currency,pricing_type,pricing_source,source_detail,last_updated,effective_from,"
    "long_context_threshold,price_per_input_token_above_threshold::text,"
    "price_per_output_token_above_threshold::text"
)


class Pricing:
    """The price list over supabase-py (service role). Every method raises `app.errors` types:
    InvalidInput (bad amount, currency, alias loop, …: nothing written), UnknownModel,
    PermissionDenied, Unavailable."""

    def __init__(self, client: Client, *, owns_client: bool = False) -> None:
        self.client = client
        self._owns_client = owns_client

    @classmethod
    def from_env(cls) -> Pricing:
        """A Pricing service using SUPABASE_URL and the service role key (raises ConfigError).
        Call close() (or use it as a context manager) to release its connections."""
        return cls(service_client(Settings.load()), owns_client=True)

    def close(self) -> None:
        """Close the HTTP connections of a client this service created."""
        if self._owns_client:
            close_client(self.client)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rpc(self, name: str, params: dict[str, Any], select: str | None = None) -> Any:
        def run() -> Any:
            builder = self.client.rpc(name, params)
            if select:
                builder = builder.select(select)
            return builder.execute()

        return call(run).data

    # reads
    def list_prices(self, *, provider: str | None = None) -> list[ModelPrice]:
        """Current prices, by provider then model."""
        now = datetime.now(UTC).isoformat()

        def run() -> Any:
            # model_pricing holds every version; the current one is the newest that has begun.
            query = (
                self.client.table("model_pricing").select(PRICE_COLUMNS).lte("effective_from", now)
            )
            if provider:
                query = query.eq("provider_id", provider)
            return (
                query.order("provider_id")
                .order("model_id")
                .order("effective_from", desc=True)
                .execute()
            )

        current: dict[tuple[str, str], ModelPrice] = {}
        for row in call(run).data:
            price = ModelPrice.model_validate(row)
            current.setdefault((price.provider, price.model), price)
        return list(current.values())

    def get(
        self, *, model: str, provider: str | None = None, at: datetime | None = None
    ) -> ModelPrice:
        """The price `price_for` charges (aliases resolved). Raises UnknownModel, InvalidInput
        (ambiguous_model: pass provider)."""
        # provider is sent even when null: price_for(provider, model, at) has no default for it.
        data = self._rpc(
            "price_for", {"provider": provider, **_params(model=model, at=at)}, select=PRICE_COLUMNS
        )
        if isinstance(data, list):
            data = data[0]
        return ModelPrice.model_validate(data)

    def history(self, *, model: str, provider: str | None = None) -> list[ModelPrice]:
        """Every price version of a model, newest first (empty for an unknown exact key).
        Without provider, the model is resolved as price_for does (aliases, prefixes)."""
        if provider is None:
            resolved = self.get(model=model)
            provider, model = resolved.provider, resolved.model
        data = self._rpc("price_history", _params(provider=provider, model=model))
        if isinstance(data, dict):
            data = data.get("versions") or data.get("history") or [data]
        return [
            ModelPrice.model_validate({"provider": provider, "model": model, **row})
            for row in data or []
        ]

    # writes
    def set(
        self,
        *,
        model: str,
        input: str | Decimal,
        output: str | Decimal,
        cached_input: str | Decimal | None = None,
        unit: str = "1M",
        per_request: str | Decimal | None = None,
        per_image: str | Decimal | None = None,
        currency: str | None = None,
        effective_from: str | datetime | None = None,
        provider: str | None = None,
        pricing_type: str | None = None,
        pricing_source: str | None = "manual",
        long_context_threshold: int | None = None,
        input_above_threshold: str | Decimal | None = None,
        output_above_threshold: str | Decimal | None = None,
        keep: bool = True,
    ) -> ModelPrice:
        """Set a model's price; token prices are per `unit` (token, 1K, 1M), per-request and
        per-image prices are plain amounts. Without provider, the model's current provider.
        With `keep` (default), what is not given — cached input, per-request and per-image
        prices, the long-context tier, the currency — is kept from the version in effect, so
        changing the input price never silently drops a cache discount; keep=False resets them.
        Raises InvalidInput (invalid_amount, invalid_currency, …) before writing anything."""
        args: dict[str, Any] = {
            "input_per_token": to_per_token(input, unit=unit, field="input"),
            "output_per_token": to_per_token(output, unit=unit, field="output"),
        }
        if cached_input is not None:
            args["cached_input_per_token"] = to_per_token(
                cached_input, unit=unit, field="cached_input"
            )
        if per_request is not None:
            args["per_request"] = parse_amount(per_request, field="per_request")
        if per_image is not None:
            args["per_image"] = parse_amount(per_image, field="per_image")
        if long_context_threshold is not None:
            if long_context_threshold <= 0:
                raise InvalidInput(
                    "invalid_argument",
                    code="invalid_argument",
                    field="long_context_threshold",
                    detail="long_context_threshold must be a positive token count",
                )
            args["long_context_threshold"] = long_context_threshold
        if input_above_threshold is not None:
            args["input_per_token_above_threshold"] = to_per_token(
                input_above_threshold, unit=unit, field="input_above_threshold"
            )
        if output_above_threshold is not None:
            args["output_per_token_above_threshold"] = to_per_token(
                output_above_threshold, unit=unit, field="output_above_threshold"
            )
        if pricing_type is not None and pricing_type not in PRICING_TYPES:
            raise InvalidInput(
                "invalid_argument",
                code="invalid_argument",
                field="pricing_type",
                detail=f"pricing_type must be one of {', '.join(PRICING_TYPES)}",
            )
        checked_currency = check_currency(currency) if currency is not None else None
        start = parse_time(effective_from, field="effective_from")
        provider = provider or self._provider_of(model)
        if keep and pricing_type != "free":  # a free model has every price 0: nothing to keep
            current = next(
                (v for v in self.history(model=model, provider=provider) if v.in_effect), None
            )
            if current is not None:
                args = {**_kept(current), **args}
                checked_currency = checked_currency or current.currency
        data = self._rpc(
            "set_model_price",
            _params(
                provider=provider,
                model=model,
                **args,
                currency=checked_currency,
                effective_from=start,
                pricing_type=pricing_type,
                pricing_source=pricing_source,
            ),
        )
        return ModelPrice.model_validate(data)

    def _provider_of(self, model: str) -> str:
        """The provider of an existing model. Raises UnknownModel for a new one and
        InvalidInput (ambiguous_model) for one priced at several providers: pass provider."""
        return self.get(model=model).provider

    def alias(
        self,
        *,
        alias: str,
        target: str,
        target_provider: str | None = None,
        provider: str | None = None,
    ) -> ModelAlias:
        """Make `alias` cost what `target` costs. Raises UnknownModel (no such target),
        InvalidInput (alias_loop)."""
        data = self._rpc(
            "set_model_alias",
            _params(
                alias=alias, target_model=target, target_provider=target_provider, provider=provider
            ),
        )
        if not isinstance(data, dict):
            data = {}
        return ModelAlias.model_validate(
            {
                "alias": alias,
                "target_model": target,
                "target_provider": target_provider,
                "provider": provider,
                **data,
            }
        )

    def remove_alias(self, *, alias: str, provider: str | None = None) -> bool:
        """Remove an alias; False when there was none (idempotent)."""
        data = self._rpc("remove_model_alias", _params(alias=alias, provider=provider))
        return bool(data.get("removed")) if isinstance(data, dict) else bool(data)

    def import_prices(
        self, prices: Sequence[Mapping[str, Any]], *, source: str = "import", dry_run: bool = False
    ) -> ImportResult:
        """Apply (or with dry_run, only compare) a list of `set_model_price` argument objects in
        ONE transaction. Raises InvalidInput naming the bad entry; then nothing was written."""
        check_import(prices)
        data = self._rpc(
            "import_model_prices",
            {"prices": json_value(list(prices)), "source": source, "dry_run": dry_run},
        )
        return ImportResult.model_validate({**data, "dry_run": dry_run})

    def import_chunks(
        self, prices: Sequence[Mapping[str, Any]], *, source: str = "import", chunk_size: int = 100
    ) -> Iterator[ImportResult]:
        """Apply prices in chunks (one transaction each), yielding each chunk's result; for a
        progress bar. A failing chunk raises and leaves the earlier chunks applied."""
        for start in range(0, len(prices), chunk_size):
            yield self.import_prices(prices[start : start + chunk_size], source=source)

    def reprice(
        self,
        *,
        since: str | datetime,
        until: str | datetime,
        model: str | None = None,
        provider: str | None = None,
        dry_run: bool = False,
    ) -> RepriceResult:
        """Recompute the cost of usage in [since, until) at the prices effective then, adjusting
        balances by the difference (audited). Raises InvalidInput for a bad period."""
        start = parse_time(since, field="since")
        end = parse_time(until, field="until")
        if start is not None and end is not None and start >= end:
            raise InvalidInput(
                "invalid_argument",
                code="invalid_argument",
                field="until",
                detail="until must be after since",
            )
        data = self._rpc(
            "reprice_usage",
            _params(since=start, until=end, model=model, provider=provider, dry_run=dry_run),
        )
        return RepriceResult.model_validate({**data, "dry_run": dry_run})

    def report(self) -> ConsolidationReport:
        """pricing_consolidation_report(): is model_pricing the single source of truth?"""
        return ConsolidationReport.model_validate(self._rpc("pricing_consolidation_report", {}))

    def export_litellm(self, *, provider: str | None = None) -> dict[str, dict[str, Any]]:
        """The current price list as a LiteLLM catalog."""
        return to_litellm(self.list_prices(provider=provider))


def _kept(current: ModelPrice) -> dict[str, Any]:
    """set_model_price arguments carried over from the version in effect."""
    kept: dict[str, Any] = {}
    if current.price_per_cached_input_token is not None:
        kept["cached_input_per_token"] = current.price_per_cached_input_token
    if current.price_per_request:
        kept["per_request"] = current.price_per_request
    if current.price_per_image:
        kept["per_image"] = current.price_per_image
    if current.long_context_threshold is not None:
        kept["long_context_threshold"] = current.long_context_threshold
        kept["input_per_token_above_threshold"] = current.price_per_input_token_above_threshold
        kept["output_per_token_above_threshold"] = current.price_per_output_token_above_threshold
    return kept


def merge_results(
    results: Iterable[ImportResult], skipped: Sequence[SkippedEntry] = (), *, dry_run: bool = False
) -> ImportResult:
    """The sum of chunk results."""
    added = changed = unchanged = 0
    diff: list[PriceDiff] = []
    for result in results:
        added += result.added
        changed += result.changed
        unchanged += result.unchanged
        diff.extend(result.diff)
    return ImportResult(
        added=added,
        changed=changed,
        unchanged=unchanged,
        diff=diff,
        skipped=list(skipped),
        dry_run=dry_run,
    )


__all__ = [
    "REMEDIES",
    "ConsolidationReport",
    "ImportResult",
    "LiteLLMMapping",
    "ModelAlias",
    "ModelPrice",
    "PriceDiff",
    "Pricing",
    "ReportCheck",
    "RepriceResult",
    "SkippedEntry",
    "check_import",
    "decimal_text",
    "dumps_exact",
    "load_litellm",
    "map_litellm",
    "map_litellm_entry",
    "merge_results",
    "parse_amount",
    "parse_time",
    "per_million",
    "prices_csv",
    "prices_from_file",
    "to_litellm",
    "to_per_token",
]
