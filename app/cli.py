"""The `tokenmeter` command: thin — parse, call the service, render, map errors to exit codes.

Exit codes: 0 success, 1 the operation failed (bad input, refused, not found), 2 could not
reach or use the backend (stack down, not configured).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

import typer
from rich.table import Table

from app import billing_cli, litellm_cli
from app.litellm import prices_csv
from app.output import console, fail, handle_errors, print_json
from app.pricing import (
    ModelPrice,
    Pricing,
    decimal_text,
    parse_time,
)
from app.stack.manager import Stack, StackError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Pricing, balances and usage metering for LLM APIs.",
)
stack_app = typer.Typer(
    no_args_is_help=True, help="The local Supabase-compatible stack (no Docker)."
)
app.add_typer(stack_app, name="stack")
db_app = typer.Typer(
    no_args_is_help=True, help="Migrations, seeds and database tests (Supabase CLI compatible)."
)
app.add_typer(db_app, name="db")
app.add_typer(billing_cli.balance_app, name="balance")
app.add_typer(billing_cli.usage_app, name="usage")
app.command("demo")(billing_cli.demo)


@stack_app.command("start")
def stack_start() -> None:
    """Start PostgreSQL and the API gateway (idempotent); apply migrations to a new database."""
    from app.migrations import MigrationError, Migrator

    stack = Stack()
    try:
        with console.status("starting stack") as status:
            created = stack.start(progress=lambda msg: status.update(msg))
            if created:
                status.update("applying migrations and seed")
                Migrator.local(stack.paths).push(include_seed=True)
    except (StackError, MigrationError) as exc:
        fail(str(exc), 2)
    _render_status(stack, as_json=False)


@stack_app.command("stop")
def stack_stop() -> None:
    """Stop the API gateway and PostgreSQL (data is kept)."""
    try:
        Stack().stop()
    except StackError as exc:
        fail(str(exc), 2)
    console.print("stack stopped")


@stack_app.command("status")
def stack_status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show URLs, keys and which parts are running."""
    try:
        _render_status(Stack(), as_json=as_json)
    except StackError as exc:
        fail(str(exc), 2)


@stack_app.command("logs")
def stack_logs(lines: int = typer.Option(50, "--lines", "-n", help="Lines per log.")) -> None:
    """Print the end of each part's log."""
    stack = Stack()
    for name, tail in stack.logs(lines).items():
        console.rule(name)
        for line in tail:
            console.print(line, highlight=False, markup=False)


DB_URL_HELP = "Target any PostgreSQL (e.g. a hosted project); default: the local stack."


@db_app.command("push")
def db_push(
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    include_seed: bool = typer.Option(
        False, "--include-seed", help="Also run seed.sql if new or changed."
    ),
    include_all: bool = typer.Option(
        False, "--include-all", help="Apply pending files older than the newest applied one."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be applied; change nothing."
    ),
    up_to: str | None = typer.Option(
        None, "--up-to", help="Apply pending migrations up to this version only (tokenmeter's own)."
    ),
) -> None:
    """Apply pending migrations, each file in one transaction with its history row."""
    from app.migrations import MigrationError, Migrator

    try:
        with console.status("pushing migrations") as status:
            plan = Migrator.local(db_url=db_url).push(
                include_all=include_all,
                include_seed=include_seed,
                dry_run=dry_run,
                progress=lambda msg: status.update(msg),
                up_to=up_to,
            )
    except MigrationError as exc:
        fail(str(exc))
    verb = "would apply" if dry_run else "applied"
    if not plan.pending and not plan.seeds:
        console.print("Remote database is up to date.")
    for file in plan.pending:
        console.print(f"{verb} migration {file.path.name}")
    for seed in plan.seeds:
        console.print(f"{verb} seed {seed.name}")


@db_app.command("reset")
def db_reset() -> None:
    """Local only: recreate the database, bootstrap it, apply all migrations, then seed.sql."""
    from app.migrations import MigrationError, Migrator

    stack = Stack()
    try:
        with console.status("resetting local database") as status:
            stack.reset_database(progress=lambda msg: status.update(msg))
            Migrator.local(stack.paths).push(
                include_seed=True, progress=lambda msg: status.update(msg)
            )
    except (StackError, MigrationError) as exc:
        fail(str(exc), 2 if isinstance(exc, StackError) else 1)
    console.print("Finished db reset.")


@db_app.command("status")
def db_status(
    db_url: str | None = typer.Option(None, "--db-url", help=DB_URL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Applied and pending migrations."""
    from app.migrations import MigrationError, Migrator

    try:
        rows = Migrator.local(db_url=db_url).status()
    except MigrationError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(rows)
        return
    table = Table("version", "name", "local", "applied")
    for row in rows:
        table.add_row(
            str(row["version"]),
            str(row["name"]),
            "yes" if row["local"] else "[red]missing[/]",
            "[green]applied[/]" if row["applied"] else "[yellow]pending[/]",
        )
    console.print(table)


@db_app.command("test")
def db_test() -> None:
    """Run the pgTAP suite in supabase/tests with pg_prove, as `supabase test db` does."""
    from app.stack.pgtap import PgTapError, run_pgtap

    try:
        code = run_pgtap(Stack())
    except PgTapError as exc:
        fail(str(exc), 2)
    raise typer.Exit(code)


# ── price: the price list (logic in app/pricing.py) ───────────────────────────────────────────
price_app = typer.Typer(
    no_args_is_help=True, help="Model prices: list, set, alias, history, import, export, reprice."
)
app.add_typer(price_app, name="price")

PROVIDER_HELP = "Provider id (openai, anthropic, google, …); default: the model's only provider."
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
    prices: list[ModelPrice], title: str | None = None, history: bool = False
) -> Table:
    table = Table(title=title)
    for name in ["from", "until"] if history else ["provider", "model"]:
        table.add_column(name, no_wrap=True)
    for name in ("in/1M", "cached/1M", "out/1M", "per req", "type", "cur"):
        table.add_column(name, justify="right" if "/" in name or name == "per req" else "left")
    for p in prices:
        first = (
            [_when(p.effective_from), _when(p.effective_until)]
            if history
            else [p.provider, p.model]
        )
        table.add_row(
            *first,
            decimal_text(p.input_per_1m),
            decimal_text(p.cached_input_per_1m),
            decimal_text(p.output_per_1m),
            decimal_text(p.price_per_request),
            p.pricing_type,
            p.currency,
        )
    return table


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "—"


@price_app.command("list")
def price_list(
    provider: str | None = typer.Option(None, "--provider", help="Only this provider."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Current prices; the table shows them per 1M tokens, json/csv keep exact values."""

    if fmt not in ("table", "json", "csv"):
        fail(f"--format must be table, json or csv, got {fmt!r}")
    with _pricing() as pricing:
        prices = pricing.list_prices(provider=provider)
    if fmt == "json":
        print_json(prices)
    elif fmt == "csv":
        typer.echo(prices_csv(prices), nl=False)
    else:
        console.print(_price_table(prices, title="prices (USD per 1M tokens unless noted)"))


@price_app.command("get")
def price_get(
    model: str = typer.Argument(..., help="Model id or alias."),
    provider: str | None = typer.Option(None, "--provider", help=PROVIDER_HELP),
    at: str | None = typer.Option(None, "--at", help="Price in effect at this ISO timestamp."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The price a model is charged at (aliases resolved)."""

    with _pricing() as pricing:
        price = pricing.get(model=model, provider=provider, at=parse_time(at, field="at"))
    if as_json:
        print_json(price)
    else:
        console.print(_price_table([price]))


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


price_app.command("import")(litellm_cli.price_import)
price_app.command("export")(litellm_cli.price_export)


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


def _render_status(stack: Stack, as_json: bool) -> None:
    status = stack.status()
    if as_json:
        print_json(status.as_dict())
        return
    for key, value in status.as_dict().items():
        if isinstance(value, bool):
            shown = "[green]running[/]" if value else "[red]stopped[/]"
            console.print(f"{key:<18} {shown}")
        else:
            # Keys are printed whole (no wrapping or ellipsis) so they can be copied.
            console.print(f"{key:<18} {value}", highlight=False, soft_wrap=True, markup=False)


def main() -> None:
    app()
