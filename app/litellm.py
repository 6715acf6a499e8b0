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

from app.client import json_value
from app.errors import InvalidInput
from app.pricing import (
    MAX_PER_TOKEN,
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
    key: str
    reason: str


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
    chunk_size: int = 100,
) -> Iterator[ImportResult]:
    """Apply prices in chunks (one transaction each), yielding each chunk's result; for a
    progress bar. A failing chunk raises and leaves the earlier chunks applied."""
    for start in range(0, len(prices), chunk_size):
        yield import_prices(pricing, prices[start : start + chunk_size], source=source)


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
