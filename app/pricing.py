"""Pricing: the price list, price changes, aliases, history, re-pricing.

People talk about prices per 1M tokens ("$2.50 / 1M input"); the database keeps exact
per-token numerics (0.0000025). `to_per_token` / `per_million` convert between the two with
`Decimal` arithmetic only (a shift of the decimal point: never a float, never rounded).

The `Pricing` service is a thin, synchronous wrapper over the SQL functions (`set_model_price`,
`set_model_alias`, `price_for`, `price_history`, `import_model_prices`, `reprice_usage`,
`pricing_consolidation_report`): every write is one SQL call, one transaction, so the database
is the last guard. Inputs are validated here too, to give a clear message before a round trip.

LiteLLM's public catalog, price files and the import live in `app.litellm`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
)

from app.client import call, close_client, service_client
from app.client import rpc_params as _params
from app.config import Settings
from app.errors import InvalidInput, UnknownModel
from supabase import Client

if TYPE_CHECKING:
    from app.litellm import ImportResult

# ── Units ────────────────────────────────────────────────────────────────────────────────────
# Price units people use, as powers of ten of tokens: a price "per 1M" is shifted 6 places.
UNITS: dict[str, int] = {"token": 0, "1k": 3, "1m": 6}
MAX_SCALE = 12  # the database keeps per-token prices as numeric(20,12)
MAX_PER_TOKEN = Decimal(1000)  # model_pricing's range checks: 0 <= price < 1000 per token
CURRENCY = re.compile(r"^[A-Z]{3}$")
PRICING_TYPES = ("paid", "free", "deprecated", "missing")
# The provider a NEW model name is priced at when `price set` is given no provider (seed 000's
# workflow has no providers): it then becomes the name's default provider (docs/pricing.md).
NEW_MODEL_PROVIDER = "custom"
PAGE = 1000  # PostgREST's max_rows: lists are read in pages, so no deployment truncates them


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
    # list / get: whether this provider is the default of the model name (models.is_default),
    # the one a bare name is charged at when several providers price it
    is_default: bool | None = None

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


class DefaultProvider(_Result):
    """set_default_provider(): the name's default provider, and the one it replaced."""

    model: str
    provider: str
    previous_provider: str | None = None
    changed: bool = False


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
    def list_prices(
        self, *, provider: str | None = None, model: str | None = None
    ) -> list[ModelPrice]:
        """Current prices, by provider then model, each marked with whether it is its name's
        default provider (read in pages: any catalog size)."""
        now = datetime.now(UTC).isoformat()
        current: dict[tuple[str, str], ModelPrice] = {}
        for row in self._pages(
            "model_pricing",
            PRICE_COLUMNS,
            filters={"provider_id": provider, "model_id": model},
            before=now,
        ):
            price = ModelPrice.model_validate(row)
            # model_pricing holds every version; the current one is the newest that has begun.
            current.setdefault((price.provider, price.model), price)
        defaults = self.default_providers(model=model)
        return [
            p.model_copy(update={"is_default": defaults.get(p.model) == p.provider})
            for p in current.values()
        ]

    def default_providers(self, *, model: str | None = None) -> dict[str, str]:
        """Model name → its default provider (names without one are absent)."""
        return {
            row["model_id"]: row["provider_id"]
            for row in self._pages(
                "models",
                "provider_id,model_id",
                filters={"model_id": model, "is_default": True},
            )
        }

    def _pages(
        self,
        table: str,
        columns: str,
        *,
        filters: Mapping[str, Any],
        before: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        start = 0
        while True:

            def run(start: int = start) -> Any:
                query = self.client.table(table).select(columns)
                for column, value in filters.items():
                    if value is not None:
                        query = query.eq(column, value)
                if before is not None:
                    query = query.lte("effective_from", before)
                query = query.order("provider_id").order("model_id")
                if before is not None:
                    query = query.order("effective_from", desc=True)
                return query.range(start, start + PAGE - 1).execute()

            rows = call(run).data or []
            yield from rows
            if len(rows) < PAGE:
                return
            start += PAGE

    def get(
        self, *, model: str, provider: str | None = None, at: datetime | None = None
    ) -> ModelPrice:
        """The price `price_for` charges (aliases resolved; a bare name priced at several
        providers: its default provider). Raises UnknownModel, InvalidInput (ambiguous_model:
        the name has no default provider; pass provider)."""
        # provider is sent even when null: price_for(provider, model, at) has no default for it.
        data = self._rpc(
            "price_for", {"provider": provider, **_params(model=model, at=at)}, select=PRICE_COLUMNS
        )
        if isinstance(data, list):
            data = data[0]
        return ModelPrice.model_validate(data)

    def get_all(self, *, model: str, at: datetime | None = None) -> list[ModelPrice]:
        """Every provider's price of the model NAME in effect at `at` (default now), the default
        provider marked and first. A name no provider prices as such (an alias, a dated or
        prefixed name) gives the one price `price_for` resolves it to. Raises UnknownModel,
        InvalidInput (ambiguous_model, for such a name whose target has no default)."""
        when = (at or datetime.now(UTC)).isoformat()
        current: dict[str, ModelPrice] = {}
        for row in self._pages(
            "model_pricing", PRICE_COLUMNS, filters={"model_id": model}, before=when
        ):
            current.setdefault(row["provider_id"], ModelPrice.model_validate(row))
        default = self.default_providers(model=model).get(model)
        prices = [
            p.model_copy(update={"is_default": p.provider == default})
            for p in sorted(current.values(), key=lambda p: (p.provider != default, p.provider))
        ]
        if prices:
            return prices
        resolved = self.get(model=model, at=at)
        return [resolved.model_copy(update={"is_default": True})]

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
        per-image prices are plain amounts. With `keep` (default), what is not given — cached input, per-request and per-image
        prices, the long-context tier, the currency — is kept from the version in effect, so
        changing the input price never silently drops a cache discount; keep=False resets them.
        Without provider: the name's default provider, the provider an alias or dated name
        resolves to, or NEW_MODEL_PROVIDER for a new name (which makes it the name's default).
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
        """The provider `set` prices `model` at when none is given: the name's default provider;
        for an alias or a dated/prefixed name, the provider it resolves to; for a new name,
        NEW_MODEL_PROVIDER. Raises InvalidInput (ambiguous_model) for a name priced at several
        providers without a default: pass provider."""
        default = self.default_providers(model=model).get(model)
        if default is not None:
            return default
        try:
            return self.get(model=model).provider
        except UnknownModel:
            return NEW_MODEL_PROVIDER

    def set_default(self, *, model: str, provider: str) -> DefaultProvider:
        """Make `provider` the default provider of the model name `model` (what a bare name is
        charged at when several providers price it). Raises UnknownModel (no price for that
        provider and model), InvalidInput (blank names)."""
        data = self._rpc("set_default_provider", _params(model=model, provider=provider))
        return DefaultProvider.model_validate(data)

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
        from app.litellm import import_prices

        return import_prices(self, prices, source=source, dry_run=dry_run)

    def import_chunks(
        self, prices: Sequence[Mapping[str, Any]], *, source: str = "import", chunk_size: int = 100
    ) -> Iterator[ImportResult]:
        """Apply prices in chunks (one transaction each), yielding each chunk's result; for a
        progress bar. A failing chunk raises and leaves the earlier chunks applied."""
        from app.litellm import import_chunks

        return import_chunks(self, prices, source=source, chunk_size=chunk_size)

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
        from app.litellm import to_litellm

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


__all__ = [
    "REMEDIES",
    "ConsolidationReport",
    "DefaultProvider",
    "ModelAlias",
    "ModelPrice",
    "NEW_MODEL_PROVIDER",
    "Pricing",
    "ReportCheck",
    "RepriceResult",
    "decimal_text",
    "parse_amount",
    "parse_time",
    "per_million",
    "to_per_token",
]
