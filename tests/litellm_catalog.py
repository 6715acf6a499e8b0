"""A generated LiteLLM catalog with the shapes of the published `model_prices_and_context_window.json`
(not a copy of it): used by the import tests and bench/price_import_bench.py.

Shapes, as LiteLLM writes them (checked against BerriAI/litellm's file):
  * the provider's own entry under the bare name (`gpt-4o`, litellm_provider openai), the same
    model again under a prefixed key of the same provider (`deepseek/deepseek-chat` beside
    `deepseek-chat`, `vertex_ai/gemini-…` beside `gemini-…`), and other providers' copies under
    their prefix (`azure/gpt-4o`, `openrouter/openai/gpt-4o`, `gemini/…` → provider google);
  * prices as floats, some with float noise (2.9999900000000002e-06: the float next to the
    decimal a person wrote, as LiteLLM's arithmetic leaves it), cache-read prices, long-context
    tiers (`…_above_200k_tokens`), deprecation dates;
  * every mode: chat, completion, responses, embedding, image_generation (per image and per
    pixel), rerank (per query), audio_transcription (per second), audio_speech (per
    character), realtime (audio tokens), moderation, image_edit, video_generation, search, ocr,
    entries without a mode, and `sample_spec`.

`expected` maps each key the import keeps to the per-token prices (as exact decimals) a person
wrote, so a round trip can be checked key by key.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

PER_TOKEN = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost")


@dataclass
class Catalog:
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    # key → {LiteLLM price field: the decimal a person wrote} for every key the import keeps
    expected: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    # (key, field) of the prices written with float noise
    noisy: set[tuple[str, str]] = field(default_factory=set)
    # model name → provider that must become its default (the unprefixed entry's)
    defaults: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.data)


def noisy_float(value: Decimal) -> float:
    """The float next to `value`'s float: its repr carries noise beyond 15 significant digits
    that rounds back to `value` at 12 decimal places."""
    return math.nextafter(float(value), math.inf)


def generate_catalog(entries: int = 3000, *, suffix: str = "", seed: int = 10) -> Catalog:
    """A catalog of `entries` entries (the last family may add a few more); names end with
    `-{suffix}` when given."""
    rng = random.Random(seed)
    catalog = Catalog()
    catalog.data["sample_spec"] = {
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion, image_generation, …",
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
    }
    tail = f"-{suffix}" if suffix else ""
    family = 0
    while len(catalog.data) < entries:
        family += 1
        for make in SHAPES:
            if len(catalog.data) >= entries:
                break
            make(catalog, rng, f"m{family}{tail}")
    return catalog


def _price(rng: random.Random) -> Decimal:
    # up to $99.99 per 1M tokens, at most 7 significant digits and 12 decimal places
    return Decimal(rng.randint(1, 9_999_999)).scaleb(-rng.choice((11, 12)))


def _add(
    catalog: Catalog,
    key: str,
    entry: dict[str, Any],
    prices: dict[str, Decimal],
    *,
    rng: random.Random,
    kept: bool = True,
) -> None:
    written = dict(entry)
    for name, value in prices.items():
        if name in PER_TOKEN and value and rng.random() < 0.05:
            written[name] = noisy_float(value)
            catalog.noisy.add((key, name))
        else:
            written[name] = float(value)
    catalog.data[key] = written
    if kept:
        catalog.expected[key] = {n: v for n, v in prices.items() if n in PER_TOKEN}


def _chat_prices(rng: random.Random, *, cached: bool = True) -> dict[str, Decimal]:
    prices = {"input_cost_per_token": _price(rng), "output_cost_per_token": _price(rng)}
    if cached:
        prices["cache_read_input_token_cost"] = _price(rng)
    return prices


def _openai_family(catalog: Catalog, rng: random.Random, name: str) -> None:
    """gpt-4o and its copies: azure/…, openrouter/openai/…, the default is openai."""
    model = f"gpt-{name}"
    _add(catalog, model, {"litellm_provider": "openai", "mode": "chat"}, _chat_prices(rng), rng=rng)
    catalog.defaults[model] = "openai"
    _add(
        catalog,
        f"azure/{model}",
        {"litellm_provider": "azure", "mode": "chat"},
        _chat_prices(rng),
        rng=rng,
    )
    _add(
        catalog,
        f"openrouter/openai/{model}",
        {"litellm_provider": "openrouter", "mode": "chat"},
        _chat_prices(rng, cached=False),
        rng=rng,
    )


def _deepseek_duplicate(catalog: Catalog, rng: random.Random, name: str) -> None:
    """deepseek/deepseek-chat beside deepseek-chat: one model; the unprefixed key is kept even
    when the prefixed one comes first."""
    model = f"deepseek-{name}"
    prices = _chat_prices(rng)
    entry = {"litellm_provider": "deepseek", "mode": "chat"}
    _add(catalog, f"deepseek/{model}", entry, prices, rng=rng, kept=False)
    _add(catalog, model, entry, prices, rng=rng)
    catalog.defaults[model] = "deepseek"


def _gemini_family(catalog: Catalog, rng: random.Random, name: str) -> None:
    """gemini-… at vertex_ai (unprefixed, the default) and gemini/… at google, with a 200k tier."""
    model = f"gemini-{name}"
    for key, provider in ((model, "vertex_ai-language-models"), (f"gemini/{model}", "gemini")):
        prices = _chat_prices(rng)
        prices["input_cost_per_token_above_200k_tokens"] = _price(rng)
        prices["output_cost_per_token_above_200k_tokens"] = _price(rng)
        _add(catalog, key, {"litellm_provider": provider, "mode": "chat"}, prices, rng=rng)
    catalog.defaults[model] = "vertex_ai"


def _claude(catalog: Catalog, rng: random.Random, name: str) -> None:
    model = f"claude-{name}"
    entry: dict[str, Any] = {"litellm_provider": "anthropic", "mode": "chat"}
    if rng.random() < 0.2:
        entry["deprecation_date"] = "2025-01-01"
    _add(catalog, model, entry, _chat_prices(rng), rng=rng)
    catalog.defaults[model] = "anthropic"
    _add(
        catalog,
        f"bedrock/anthropic.{model}-v1:0",
        {"litellm_provider": "bedrock", "mode": "chat"},
        _chat_prices(rng),
        rng=rng,
    )


def _other_token_modes(catalog: Catalog, rng: random.Random, name: str) -> None:
    for mode in ("completion", "responses", None):
        key = f"{mode or 'nomode'}-{name}"
        _add(
            catalog,
            key,
            {"litellm_provider": "openai", **({"mode": mode} if mode else {})},
            _chat_prices(rng, cached=False),
            rng=rng,
        )
    _add(
        catalog,
        f"text-embedding-{name}",
        {"litellm_provider": "openai", "mode": "embedding"},
        {"input_cost_per_token": _price(rng), "output_cost_per_token": Decimal(0)},
        rng=rng,
    )


def _images(catalog: Catalog, rng: random.Random, name: str) -> None:
    catalog.data[f"imagen-{name}"] = {
        "litellm_provider": "vertex_ai-image-models",
        "mode": "image_generation",
        "output_cost_per_image": 0.04,
    }
    catalog.expected[f"imagen-{name}"] = {}
    catalog.data[f"1024-x-1024/dall-e-{name}"] = {  # per pixel: skipped
        "litellm_provider": "openai",
        "mode": "image_generation",
        "input_cost_per_pixel": 3.81469e-08,
        "output_cost_per_pixel": 0.0,
    }


def _rerank(catalog: Catalog, rng: random.Random, name: str) -> None:
    key = f"cohere/rerank-{name}"
    catalog.data[key] = {
        "litellm_provider": "cohere",
        "mode": "rerank",
        "input_cost_per_query": 0.002,
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
    }
    catalog.expected[key] = {
        "input_cost_per_token": Decimal(0),
        "output_cost_per_token": Decimal(0),
    }


def _not_charged(catalog: Catalog, rng: random.Random, name: str) -> None:
    catalog.data[f"whisper-{name}"] = {
        "litellm_provider": "openai",
        "mode": "audio_transcription",
        "input_cost_per_second": 0.0001,
        "output_cost_per_second": 0.0001,
    }
    catalog.data[f"tts-{name}"] = {
        "litellm_provider": "openai",
        "mode": "audio_speech",
        "input_cost_per_character": 1.5e-05,
    }
    catalog.data[f"gpt-realtime-{name}"] = {
        "litellm_provider": "openai",
        "mode": "realtime",
        "input_cost_per_token": 4e-06,
        "output_cost_per_token": 1.6e-05,
        "input_cost_per_audio_token": 3.2e-05,
        "output_cost_per_audio_token": 6.4e-05,
    }
    catalog.data[f"omni-moderation-{name}"] = {
        "litellm_provider": "openai",
        "mode": "moderation",
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
    }
    catalog.data[f"gpt-image-edit-{name}"] = {
        "litellm_provider": "openai",
        "mode": "image_edit",
        "output_cost_per_image": 0.05,
    }
    catalog.data[f"sora-{name}"] = {
        "litellm_provider": "openai",
        "mode": "video_generation",
        "output_cost_per_video_per_second": 0.1,
    }
    catalog.data[f"perplexity/search-{name}"] = {
        "litellm_provider": "perplexity",
        "mode": "search",
        "input_cost_per_query": 0.005,
    }
    catalog.data[f"mistral/ocr-{name}"] = {
        "litellm_provider": "mistral",
        "mode": "ocr",
        "ocr_cost_per_page": 0.001,
    }


SHAPES = (
    _openai_family,
    _deepseek_duplicate,
    _gemini_family,
    _claude,
    _other_token_modes,
    _images,
    _rerank,
    _not_charged,
)
