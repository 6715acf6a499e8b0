"""`tokenmeter price …`: the price list (logic in app/pricing.py; import/export in
app/cli/price_io.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

import typer
from rich import box
from rich.table import Table

from app.cli import price_io
from app.cli.output import console, fail, handle_errors, print_json
from app.litellm import prices_csv
from app.pricing import (
    NEW_MODEL_PROVIDER,
    ModelPrice,
    Pricing,
    decimal_text,
    parse_time,
)

price_app = typer.Typer(
    no_args_is_help=True,
    help="Model prices: list, get, set, default, alias, history, import, export, reprice.",
)

PROVIDER_HELP = (
    "Provider id (openai, anthropic, google, …); default: the name's default provider "
    f"({NEW_MODEL_PROVIDER!r} for a new name)."
)
UNIT_HELP = "Unit of --input/--output/--cached-input: token, 1K or 1M (per 1M tokens by default)."


@contextlib.contextmanager
def _pricing() -> Iterator[Pricing]:
    """The Pricing service for one command: our errors become a message and an exit code, and
    its connections are closed afterwards."""
    with handle_errors():
        pricing = Pricing.from_env()
    try:
        with handle_errors():
            yield pricing
    finally:
        pricing.close()


def _price_table(
    prices: list[ModelPrice],
    title: str | None = None,
    *,
    history: bool = False,
    wide: bool = False,
    default_column: bool = False,
) -> Table:
    """Prices per 1M tokens. The default view (model, provider, in/out/cached) fits 80 columns:
    the numbers never wrap or shrink to "…", a long model name wraps instead. `wide` adds the
    rest (per request/image, type, currency, source, since); history shows from/until.
    A name's default provider is marked `*` where several providers price the name, or in a
    "default" column (`default_column`)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    if history:
        table.add_column("from", no_wrap=True)
        table.add_column("until", no_wrap=True)
    else:
        table.add_column("model", overflow="fold", ratio=1)
        table.add_column("provider", overflow="fold")
    for name in ("in/1M", "out/1M", "cached/1M"):
        table.add_column(name, justify="right", no_wrap=True)
    if wide or history:
        for name in ("per req", "per image"):
            table.add_column(name, justify="right", no_wrap=True)
        for name in ("type", "cur", "source", "since"):
            table.add_column(name, no_wrap=True)
    if default_column:
        table.add_column("default", no_wrap=True)
    shared = set() if default_column else _names_at_several_providers(prices)
    for p in prices:
        first = (
            [_when(p.effective_from), _when(p.effective_until)]
            if history
            else [p.model, f"{p.provider} *" if p.is_default and p.model in shared else p.provider]
        )
        row = [
            *first,
            decimal_text(p.input_per_1m),
            decimal_text(p.output_per_1m),
            decimal_text(p.cached_input_per_1m),
        ]
        if wide or history:
            row += [
                decimal_text(p.price_per_request),
                decimal_text(p.price_per_image),
                "retired" if p.pricing_type == "deprecated" else p.pricing_type,
                p.currency,
                p.pricing_source or "",
                p.effective_from.strftime("%Y-%m-%d") if p.effective_from else "",
            ]
        if default_column:
            row.append("yes" if p.is_default else "")
        table.add_row(*row)
    if shared and not history:
        table.caption = "* the default provider: a bare model name is charged there"
    return table


def _names_at_several_providers(prices: list[ModelPrice]) -> set[str]:
    seen: dict[str, int] = {}
    for p in prices:
        seen[p.model] = seen.get(p.model, 0) + 1
    return {name for name, count in seen.items() if count > 1}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "—"


@price_app.command("list")
def price_list(
    provider: str | None = typer.Option(None, "--provider", help="Only this provider."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
    wide: bool = typer.Option(
        False,
        "--wide",
        help="Also per-request/per-image prices, type, currency, source and since (the table "
        "then needs about 150 columns).",
    ),
) -> None:
    """Current prices; the table shows them per 1M tokens (fits 80 columns; more with --wide),
    json/csv keep exact values. `*` marks a name's default provider."""

    if fmt not in ("table", "json", "csv"):
        fail(f"--format must be table, json or csv, got {fmt!r}")
    with _pricing() as pricing:
        prices = pricing.list_prices(provider=provider)
    if fmt == "json":
        print_json(prices)
    elif fmt == "csv":
        typer.echo(prices_csv(prices), nl=False)
    else:
        # By name, so the providers of one name (and its default, `*`) sit together.
        by_name = sorted(prices, key=lambda p: (p.model, p.provider))
        console.print(
            _price_table(by_name, title="prices (USD per 1M tokens unless noted)", wide=wide)
        )


@price_app.command("get")
def price_get(
    model: str = typer.Argument(..., help="Model id or alias."),
    provider: str | None = typer.Option(
        None, "--provider", help="Only this provider's price (default: every provider's)."
    ),
    at: str | None = typer.Option(None, "--at", help="Price in effect at this ISO timestamp."),
    wide: bool = typer.Option(False, "--wide", help="Every column (see `price list --wide`)."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Machine-readable: a list (one per provider), an object with --provider.",
    ),
) -> None:
    """A model's price at every provider that prices the name, its default provider (where a
    bare name is charged) marked; an alias or dated name shows the price it resolves to."""

    when = parse_time(at, field="at")
    with _pricing() as pricing:
        prices = (
            [pricing.get(model=model, provider=provider, at=when)]
            if provider
            else pricing.get_all(model=model, at=when)
        )
    if as_json:
        print_json(prices[0] if provider else prices)
        return
    resolved = prices[0]
    title = (
        f"{model} is charged as {resolved.provider}/{resolved.model}"
        if resolved.model != model
        else None
    )
    console.print(_price_table(prices, title=title, wide=wide, default_column=not provider))


@price_app.command("default")
def price_default(
    model: str = typer.Argument(..., help="Model name (as priced, e.g. gpt-4o)."),
    provider: str | None = typer.Option(
        None, "--provider", help="Make this provider the default; without it, show the default."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The provider a bare model name is charged at when several providers price it (the first
    one priced, the catalog's unprefixed entry on import, or the one set here)."""

    with _pricing() as pricing:
        if provider is None:
            current = pricing.default_providers(model=model).get(model)
            if current is None:
                fail(f"no_default: model {model} has no default provider; set one with --provider")
            if as_json:
                print_json({"model": model, "provider": current})
            else:
                console.print(f"{model}: default provider {current}", highlight=False)
            return
        made = pricing.set_default(model=model, provider=provider)
    if as_json:
        print_json(made)
    elif made.changed:
        was = f" (was {made.previous_provider})" if made.previous_provider else ""
        console.print(f"{model}: default provider is now {provider}{was}", highlight=False)
    else:
        console.print(f"{model}: default provider already {provider}", highlight=False)


@price_app.command("set")
def price_set(
    model: str = typer.Argument(..., help="Model id to price (or to make an alias)."),
    input_price: str | None = typer.Option(None, "--input", help="Input price per --unit."),
    output_price: str | None = typer.Option(None, "--output", help="Output price per --unit."),
    cached_input: str | None = typer.Option(
        None, "--cached-input", help="Cached input (cache read) price per --unit."
    ),
    unit: str = typer.Option("1M", "--unit", help=UNIT_HELP),
    per_request: str | None = typer.Option(None, "--per-request", help="Price per request."),
    per_image: str | None = typer.Option(None, "--per-image", help="Price per image."),
    currency: str | None = typer.Option(None, "--currency", help="ISO currency (default USD)."),
    effective_from: str | None = typer.Option(
        None, "--effective-from", help="ISO timestamp the price starts (default now)."
    ),
    provider: str | None = typer.Option(None, "--provider", help=PROVIDER_HELP),
    pricing_type: str | None = typer.Option(
        None, "--type", help="paid, free, deprecated or missing."
    ),
    long_context_threshold: int | None = typer.Option(
        None, "--long-context-threshold", help="Prompt tokens above which the tier prices apply."
    ),
    input_above: str | None = typer.Option(
        None, "--input-above", help="Input price above the threshold, per --unit."
    ),
    output_above: str | None = typer.Option(
        None, "--output-above", help="Output price above the threshold, per --unit."
    ),
    reset: bool = typer.Option(
        False,
        "--reset",
        help="Do not keep cached/per-request/per-image/tier prices and currency from the current version.",
    ),
    alias: str | None = typer.Option(
        None, "--alias", help="Make MODEL an alias of this model instead."
    ),
    target_provider: str | None = typer.Option(
        None, "--alias-provider", help="Provider of the --alias target."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Set a model's price (a new version from --effective-from), or with --alias make MODEL cost what another model costs.

    Prices not given (cached input, per request/image, long-context tier, currency) are kept
    from the version in effect unless --reset."""
    if alias is not None:
        if input_price is not None or output_price is not None or cached_input is not None:
            fail("--alias cannot be combined with prices: an alias costs what its target costs")
        with _pricing() as pricing:
            made = pricing.alias(
                alias=model, target=alias, target_provider=target_provider, provider=provider
            )
        if as_json:
            print_json(made)
        else:
            console.print(f"{model} is now an alias of {alias}", highlight=False)
        return
    if input_price is None or output_price is None:
        fail("give --input and --output (prices per 1M tokens by default), or --alias MODEL")
    with _pricing() as pricing:
        price = pricing.set(
            model=model,
            input=input_price,
            output=output_price,
            cached_input=cached_input,
            unit=unit,
            per_request=per_request,
            per_image=per_image,
            currency=currency,
            effective_from=effective_from,
            provider=provider,
            pricing_type=pricing_type,
            long_context_threshold=long_context_threshold,
            input_above_threshold=input_above,
            output_above_threshold=output_above,
            keep=not reset,
        )
    if as_json:
        print_json(price)
    else:
        console.print(_price_table([price], title="price set"))


@price_app.command("unalias")
def price_unalias(
    alias: str = typer.Argument(..., help="The alias to remove."),
    provider: str | None = typer.Option(None, "--provider", help="Provider of the alias."),
) -> None:
    """Remove an alias (the model then has no price unless it has its own)."""

    with _pricing() as pricing:
        removed = pricing.remove_alias(alias=alias, provider=provider)
    console.print(
        f"alias {alias} removed" if removed else f"no alias {alias}; nothing removed",
        highlight=False,
    )


@price_app.command("history")
def price_history(
    model: str = typer.Argument(..., help="Model id."),
    provider: str | None = typer.Option(None, "--provider", help=PROVIDER_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every price version of a model, newest first."""

    with _pricing() as pricing:
        versions = pricing.history(model=model, provider=provider)
    if not versions:
        fail(f"unknown_model: no price versions for {provider}/{model}")
    if as_json:
        print_json(versions)
    else:
        console.print(_price_table(versions, title=f"{model}: price history", history=True))


price_app.command("import")(price_io.price_import)
price_app.command("export")(price_io.price_export)


@price_app.command("reprice")
def price_reprice(
    since: str = typer.Option(..., "--since", help="ISO timestamp, inclusive."),
    until: str = typer.Option(..., "--until", help="ISO timestamp, exclusive."),
    model: str | None = typer.Option(None, "--model", help="Only this model."),
    provider: str | None = typer.Option(None, "--provider", help="Only this provider."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Compute the differences; change nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Re-price usage in a period at the prices effective then; balances get the difference."""

    with _pricing() as pricing:
        result = pricing.reprice(
            since=since, until=until, model=model, provider=provider, dry_run=dry_run
        )
    if as_json:
        print_json(result)
        return
    verb = "would change" if dry_run else "changed"
    console.print(
        f"{result.records} usage records, {verb} {result.changed}, total "
        f"{decimal_text(result.total_delta)}",
        highlight=False,
    )
    if result.adjustments:
        table = Table("user", "delta")
        for adj in result.adjustments:
            table.add_row(adj.user_id, decimal_text(adj.delta))
        console.print(table)
    if result.audit_id is not None and not dry_run:
        console.print(f"audit id {result.audit_id}", highlight=False)
