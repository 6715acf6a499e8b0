"""LiteLLM's public price catalog and our price files, in and out of the price list.

`map_litellm` reads LiteLLM's `model_prices_and_context_window.json` into `set_model_price`
argument objects (skipped entries reported with a reason, never priced $0); `to_litellm` writes
the current prices back as a catalog. `prices_from_file` also reads a JSON array of argument
objects and the CSV `price export --format csv` writes. `import_prices` sends the arguments to
the SQL function `import_model_prices` (one transaction per call).
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
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from app.client import call, json_value
from app.errors import InvalidInput
from app.pricing import (
    MAX_PER_TOKEN,
    MAX_SCALE,
    ModelPrice,
    _Result,
    check_currency,
    decimal_text,
    parse_amount,
    per_million,
    plain,
    to_per_token,
)

if TYPE_CHECKING:
    from app.pricing import Pricing


# ── Import results ───────────────────────────────────────────────────────────────────────────
class SkippedEntry(_Result):
    """A catalog key that was not imported. `reason` is a short category (for the summary:
    duplicate, not_charged_yet, no_price, invalid, too_precise, documentation); `detail` says
    exactly why; `mode` is the entry's LiteLLM mode."""

    key: str
    reason: str
    detail: str = ""
    mode: str | None = None


class Rounding(_Result):
    """A price given as a binary float, stored as the decimal it stands for.

    `value` is the shortest decimal that round-trips the float (what a person wrote, plus any
    noise the float carries); `stored` is that decimal at the database's scale (12 places)."""

    key: str
    field: str
    value: Decimal
    stored: Decimal

    @property
    def change(self) -> Decimal:
        return abs(self.stored - self.value)


class PriceDiff(_Result):
    provider: str
    model: str
    field: str
    old: Any = None
    new: Any = None


class DefaultChange(_Result):
    model: str
    old: str | None = None
    new: str


class ModelKey(_Result):
    provider: str
    model: str


class ImportResult(_Result):
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    # entries whose catalog key (models.metadata.litellm_key) is new or different
    keys_changed: int = 0
    # per field, changed entries only (a new model's prices are the entry itself)
    diff: list[PriceDiff] = Field(default_factory=list)
    added_models: list[ModelKey] = Field(default_factory=list)
    defaults_changed: list[DefaultChange] = Field(default_factory=list)
    skipped: list[SkippedEntry] = Field(default_factory=list)
    rounded: list[Rounding] = Field(default_factory=list)
    dry_run: bool = False

    @property
    def pending(self) -> int:
        """Entries a real run would write: new and changed prices, new defaults and keys."""
        return self.added + self.changed + len(self.defaults_changed) + self.keys_changed

    def skipped_by(self, attribute: str) -> dict[str, int]:
        """How many entries were skipped per reason or per mode, most first."""
        counts: dict[str, int] = {}
        for entry in self.skipped:
            name = str(getattr(entry, attribute) or "none")
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def largest_rounding(self) -> Rounding | None:
        return max(self.rounded, key=lambda r: r.change, default=None)


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
# Priced per query: LiteLLM's input_cost_per_query becomes a per-request price.
QUERY_MODES = {"rerank"}
# What the catalog cannot charge yet, and why (reported, never priced $0).
NOT_CHARGED: dict[str, str] = {
    "audio_transcription": "priced per second of audio (or per audio token)",
    "audio_speech": "text-to-speech, priced per character (or per audio token)",
    "realtime": "realtime audio tokens are priced apart from text tokens",
}
TIER_KEY = re.compile(r"^(input|output)_cost_per_token_above_(\d+)k_tokens$")
SCALE = Decimal(1).scaleb(-MAX_SCALE)
# A double carries 15 significant decimal digits (DBL_DIG); what lies beyond them is the float's
# own error. Rounding to the database's scale may move a price by at most this much, relatively.
FLOAT_ERROR = Decimal("1e-15")


class Skip(ValueError):
    """An entry that is not imported: `reason` is the summary category, the message the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def load_litellm(text: str | bytes) -> dict[str, Any]:
    """Parse a LiteLLM catalog. Numbers stay as JSON gives them (floats): the catalog is
    written by Python's json from floats, and `map_litellm` turns each into its decimal."""
    try:
        data = json.loads(text)
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


def catalog_decimal(value: Any, name: str) -> tuple[Decimal, Decimal | None]:
    """A catalog number as (stored decimal, the decimal it was rounded from or None).

    A float means the decimal a person wrote: the shortest decimal that round-trips it (its
    repr). That decimal is rounded to the database's scale when it has more places, if the
    change stays within the float's own error (15 significant digits); otherwise the price
    cannot be stored as given and Skip (too_precise) is raised. Decimal and int are exact."""
    if isinstance(value, bool) or not isinstance(value, (float, int, Decimal, str)):
        raise Skip("invalid", f"{name} is not a number")
    try:
        if isinstance(value, float):
            amount = Decimal(repr(value))
        else:
            amount = Decimal(str(value).strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise Skip("invalid", f"{name} is not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise Skip("invalid", f"{name} must be a finite number >= 0")
    if amount == 0 or amount.normalize().as_tuple().exponent >= -MAX_SCALE:  # type: ignore[operator]
        return plain(amount), None
    stored = amount.quantize(SCALE)
    if abs(stored - amount) > amount * FLOAT_ERROR:
        raise Skip(
            "too_precise",
            f"{name} {decimal_text(amount)} needs more than {MAX_SCALE} decimal places "
            "(more than float noise would be lost)",
        )
    return plain(stored), plain(amount)


def _number(
    entry: Mapping[str, Any], name: str, key: str = "", rounded: list[Rounding] | None = None
) -> Decimal | None:
    value = entry.get(name)
    if value is None:
        return None
    amount, original = catalog_decimal(value, name)
    if original is not None and rounded is not None:
        rounded.append(Rounding(key=key, field=name, value=original, stored=amount))
    return amount


def map_litellm_entry(
    key: str,
    entry: Mapping[str, Any],
    *,
    today: date | None = None,
    rounded: list[Rounding] | None = None,
) -> dict[str, Any]:
    """One LiteLLM entry as `set_model_price` arguments (plus `litellm_key`, and `is_default`
    for an unprefixed key: LiteLLM resolves the bare name to it). Float noise is rounded away
    and appended to `rounded`. Raises Skip (a ValueError) saying why the entry is not imported."""
    if not isinstance(entry, Mapping):
        raise Skip("invalid", "entry is not an object")
    litellm_provider = entry.get("litellm_provider")
    if not isinstance(litellm_provider, str) or not litellm_provider:
        raise Skip("invalid", "no litellm_provider")
    mode = entry.get("mode")
    if mode in NOT_CHARGED:
        raise Skip("not_charged_yet", f"{mode}: {NOT_CHARGED[mode]}; not charged yet")
    if mode not in TOKEN_MODES | IMAGE_MODES | QUERY_MODES:
        raise Skip("not_charged_yet", f"mode {mode}: not priced per token, image or request")
    provider = LITELLM_PROVIDERS.get(litellm_provider, litellm_provider)
    if provider.startswith("vertex_ai-"):  # vertex_ai-language-models, vertex_ai-image-models…
        provider = "vertex_ai"
    model = _litellm_model(key, litellm_provider, provider)
    found: list[Rounding] = []

    def number(name: str) -> Decimal | None:
        return _number(entry, name, key, found)

    input_cost = number("input_cost_per_token")
    output_cost = number("output_cost_per_token")
    per_image = number("output_cost_per_image")
    if per_image is None:
        per_image = number("input_cost_per_image")
    per_request = number("input_cost_per_request")
    if mode in QUERY_MODES:
        per_request = number("input_cost_per_query")
        if not per_request and not input_cost and not output_cost:
            raise Skip("no_price", f"{mode} without a per-query or per-token price")
        input_cost = input_cost or Decimal(0)
        output_cost = output_cost or Decimal(0)
    if mode in IMAGE_MODES and per_image is None:
        raise Skip(
            "not_charged_yet",
            "image model without a per-image price (per-pixel prices are not supported)",
        )
    if input_cost is None and per_image is None:
        raise Skip("no_price", "no input_cost_per_token")
    if output_cost is None and mode not in ("embedding", "image_generation") and per_image is None:
        raise Skip("no_price", "no output_cost_per_token")
    args: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "input_per_token": input_cost or Decimal(0),
        "output_per_token": output_cost or Decimal(0),
    }
    cached = number("cache_read_input_token_cost")
    if cached is not None:
        args["cached_input_per_token"] = cached
    if per_request:
        args["per_request"] = per_request
    if per_image:
        args["per_image"] = per_image
    tiers: dict[int, dict[str, Decimal]] = {}
    for name in entry:
        if match := TIER_KEY.match(name):
            amount = number(name)
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
    if (
        isinstance(deprecation, str)
        and deprecation <= (today or datetime.now(UTC).date()).isoformat()
    ):
        args["pricing_type"] = "deprecated"
    elif priced and all(v == 0 for v in priced):
        args["pricing_type"] = "free"
    args["litellm_key"] = key
    if model == key:
        args["is_default"] = True
    if rounded is not None:
        rounded.extend(found)
    return args


class LiteLLMMapping(BaseModel):
    model_config = ConfigDict(frozen=True)

    prices: list[dict[str, Any]]
    skipped: list[SkippedEntry]
    rounded: list[Rounding] = Field(default_factory=list)


def map_litellm(data: Mapping[str, Any], *, today: date | None = None) -> LiteLLMMapping:
    """Every priceable entry of a LiteLLM catalog as `set_model_price` argument objects.

    Skipped (and reported, never silently priced $0): `sample_spec`, modes the catalog cannot
    charge yet (audio per second, TTS per character, realtime audio tokens, …), entries without a
    price, prices that need more than 12 decimals beyond float noise, and a second key for the
    same (provider, model) — "openai/gpt-4o" beside "gpt-4o": the unprefixed key is kept, as
    LiteLLM resolves the bare name to it. Float noise rounded away is listed in `rounded`.
    """
    kept: dict[tuple[str, str], tuple[dict[str, Any], list[Rounding]]] = {}
    skipped: list[SkippedEntry] = []
    for key, entry in data.items():
        mode = entry.get("mode") if isinstance(entry, Mapping) else None
        mode = mode if isinstance(mode, str) or mode is None else str(mode)
        if key == "sample_spec":
            skipped.append(
                SkippedEntry(key=key, reason="documentation", detail="documentation entry")
            )
            continue
        found: list[Rounding] = []
        try:
            args = map_litellm_entry(key, entry, today=today, rounded=found)
        except Skip as exc:
            skipped.append(SkippedEntry(key=key, reason=exc.reason, detail=str(exc), mode=mode))
            continue
        identity = (args["provider"], args["model"])
        if identity in kept:
            first = kept[identity][0]
            if args.get("is_default") and not first.get("is_default"):
                # The unprefixed key wins; the prefixed one it replaces is reported.
                kept[identity] = (args, found)
                args, key = first, first["litellm_key"]
            skipped.append(
                SkippedEntry(
                    key=key,
                    reason="duplicate",
                    detail=f"same model as {kept[identity][0]['litellm_key']!r}",
                    mode=mode,
                )
            )
            continue
        kept[identity] = (args, found)
    return LiteLLMMapping(
        prices=[args for args, _ in kept.values()],
        skipped=skipped,
        rounded=[r for _, found in kept.values() for r in found],
    )


def to_litellm(
    prices: Iterable[ModelPrice], keys: Mapping[tuple[str, str], str] | None = None
) -> dict[str, dict[str, Any]]:
    """Current prices as a LiteLLM catalog; numbers stay Decimal. A price imported from a
    catalog keeps its key (`keys`: (provider, model) → key); any other is "provider/model"."""
    catalog: dict[str, dict[str, Any]] = {}
    for price in prices:
        if price.pricing_type == "missing" or price.price_per_input_token is None:
            continue
        image_only = (
            price.price_per_image
            and not price.price_per_input_token
            and not price.price_per_output_token
        )
        litellm_provider = OUR_TO_LITELLM.get(price.provider, price.provider)
        entry: dict[str, Any] = {
            "litellm_provider": litellm_provider,
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
        key = (keys or {}).get((price.provider, price.model))
        catalog[key or f"{litellm_provider}/{price.model}"] = entry
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


# ── Import through the database ──────────────────────────────────────────────────────────────
def import_prices(
    pricing: Pricing,
    prices: Sequence[Mapping[str, Any]],
    *,
    source: str = "import",
    dry_run: bool = False,
) -> ImportResult:
    """Apply (or with dry_run, only compare) a list of `set_model_price` argument objects in
    ONE transaction. Raises InvalidInput naming the bad entry; then nothing was written."""
    check_import(prices)
    data = pricing._rpc(
        "import_model_prices",
        {"prices": json_value(list(prices)), "source": source, "dry_run": dry_run},
    )
    return ImportResult.model_validate({**data, "dry_run": dry_run})


def import_chunks(
    pricing: Pricing,
    prices: Sequence[Mapping[str, Any]],
    *,
    source: str = "import",
    chunk_size: int = 500,
    dry_run: bool = False,
) -> Iterator[ImportResult]:
    """Compare (dry_run) or apply prices in chunks, one request and one transaction each,
    yielding each chunk's result; for a progress bar, and to keep every request well inside the
    API's statement timeout and body limit. Every entry is checked before the first request.
    A failing chunk raises InvalidInput naming the entry by its index in `prices`; the earlier
    chunks of a real run stay applied."""
    check_import(prices)
    for start in range(0, len(prices), chunk_size):
        try:
            yield import_prices(
                pricing, prices[start : start + chunk_size], source=source, dry_run=dry_run
            )
        except InvalidInput as exc:
            detail = ENTRY_INDEX.sub(
                lambda m: f"prices[{int(m.group(1)) + start}]", exc.detail or "", count=1
            )
            raise InvalidInput(exc.message, code=exc.code, field=exc.field, detail=detail) from None


ENTRY_INDEX = re.compile(r"^prices\[(\d+)\]")


def catalog_keys(pricing: Pricing, *, provider: str | None = None) -> dict[tuple[str, str], str]:
    """(provider, model) → the LiteLLM key its price was imported from (models.metadata)."""
    keys: dict[tuple[str, str], str] = {}
    page = 1000  # PostgREST's max_rows: read in pages, so no deployment truncates the list
    start = 0
    while True:

        def run(start: int = start) -> Any:
            query = pricing.client.table("models").select("provider_id,model_id,metadata")
            if provider:
                query = query.eq("provider_id", provider)
            return (
                query.order("provider_id")
                .order("model_id")
                .range(start, start + page - 1)
                .execute()
            )

        rows = call(run).data or []
        for row in rows:
            key = (row.get("metadata") or {}).get("litellm_key")
            if isinstance(key, str) and key:
                keys[(row["provider_id"], row["model_id"])] = key
        if len(rows) < page:
            return keys
        start += page


def merge_results(
    results: Iterable[ImportResult],
    skipped: Sequence[SkippedEntry] = (),
    *,
    rounded: Sequence[Rounding] = (),
    dry_run: bool = False,
) -> ImportResult:
    """The sum of chunk results, with what the mapping skipped and rounded."""
    added = changed = unchanged = keys_changed = 0
    diff: list[PriceDiff] = []
    added_models: list[ModelKey] = []
    defaults: list[DefaultChange] = []
    for result in results:
        added += result.added
        changed += result.changed
        unchanged += result.unchanged
        keys_changed += result.keys_changed
        diff.extend(result.diff)
        added_models.extend(result.added_models)
        defaults.extend(result.defaults_changed)
    return ImportResult(
        added=added,
        changed=changed,
        unchanged=unchanged,
        keys_changed=keys_changed,
        diff=diff,
        added_models=added_models,
        defaults_changed=defaults,
        skipped=list(skipped),
        rounded=list(rounded),
        dry_run=dry_run,
    )
