"""`tokenmeter price import` and `price export`: the LiteLLM catalog and price files in and out.

The import compares first (a dry run, in chunks, with a progress bar), prints a summary — new,
changed, unchanged, skipped by reason and by mode, float noise rounded — then the CHANGED prices
(old → new, per 1M tokens as people read them); new models one line each only with --verbose.
Then it applies in chunks. --json prints the result for scripts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress
from rich.table import Table

from app.cli.output import console, err_console, fail, handle_errors, print_json
from app.litellm import (
    ImportResult,
    PriceDiff,
    catalog_keys,
    dumps_exact,
    import_chunks,
    merge_results,
    prices_csv,
    prices_from_file,
    to_litellm,
)
from app.pricing import Pricing, decimal_text, per_million

# Diff fields shown per 1M tokens, with the short names people use.
TOKEN_FIELDS = {
    "input_per_token": "input",
    "output_per_token": "output",
    "cached_input_per_token": "cached",
    "input_per_token_above_threshold": "input above threshold",
    "output_per_token_above_threshold": "output above threshold",
}


def price_import(
    file: str = typer.Argument(
        ...,
        help="LiteLLM model_prices_and_context_window.json, a JSON array of set_model_price arguments, or a CSV from `price export --format csv`.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Apply without asking (on a terminal)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the differences; change nothing."),
    source: str = typer.Option(
        "import", "--source", help="pricing_source recorded on changed prices."
    ),
    chunk_size: int = typer.Option(
        500, "--chunk-size", min=1, max=2000, help="Prices per request (and transaction)."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also list new models, skipped keys and new defaults."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Import prices: the database compares every entry first (a dry run) and a summary and the
    changed prices are shown; then the prices are applied in chunks. --dry-run stops after the
    comparison. On a terminal you are asked to confirm unless --yes; without a terminal
    (scripts, CI) the import applies after printing the diff, like `db push`. Bad entries:
    nothing is applied, exit 1. Float noise in a LiteLLM catalog is rounded away and reported."""
    with handle_errors():
        mapping = prices_from_file(Path(file))
    if not mapping.prices:
        fail(f"{file}: no priceable entries ({len(mapping.skipped)} skipped)")
    with handle_errors():
        pricing = Pricing.from_env()
    try:
        with handle_errors():
            preview = merge_results(
                _with_progress(
                    "comparing prices",
                    len(mapping.prices),
                    import_chunks(
                        pricing,
                        mapping.prices,
                        source=source,
                        chunk_size=chunk_size,
                        dry_run=True,
                    ),
                ),
                mapping.skipped,
                rounded=mapping.rounded,
                dry_run=True,
            )
            if as_json and (dry_run or preview.pending == 0):
                print_json(preview)
                return
            if not as_json:
                render_import(preview, mapping.prices, verbose=verbose)
            if dry_run or preview.pending == 0:
                if not as_json:
                    console.print(
                        "dry run: nothing applied" if dry_run else "prices are up to date"
                    )
                return
            if (
                not yes
                and sys.stdin.isatty()
                and not typer.confirm(f"apply {preview.pending} changes?")
            ):
                fail("import cancelled; nothing applied")
            done = merge_results(
                _with_progress(
                    "importing prices",
                    len(mapping.prices),
                    import_chunks(pricing, mapping.prices, source=source, chunk_size=chunk_size),
                ),
                mapping.skipped,
                rounded=mapping.rounded,
            )
    finally:
        pricing.close()
    if as_json:
        print_json(done)
    else:
        console.print(
            f"applied: {done.added} added, {done.changed} changed, {done.unchanged} unchanged"
            + (
                f", {len(done.defaults_changed)} default providers set"
                if done.defaults_changed
                else ""
            ),
            highlight=False,
        )


def _with_progress(
    label: str, total: int, results: Iterable[ImportResult]
) -> Iterable[ImportResult]:
    # On stderr, so `--json` output stays one JSON document.
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        for result in results:
            progress.advance(task, result.added + result.changed + result.unchanged)
            yield result


def render_import(
    result: ImportResult, prices: Sequence[Mapping[str, Any]], *, verbose: bool = False
) -> None:
    """The summary, the changed prices (per 1M tokens), and with verbose the new models one line
    each, the skipped keys and the new default providers."""
    out = console.print
    total = result.added + result.changed + result.unchanged
    out(
        f"{total} prices compared: {result.added} new, {result.changed} changed, "
        f"{result.unchanged} unchanged",
        highlight=False,
    )
    if result.skipped:
        out(
            f"skipped {len(result.skipped)}: {_counts(result.skipped_by('reason'))}",
            highlight=False,
        )
        out(f"  by mode: {_counts(result.skipped_by('mode'))}", highlight=False)
    if result.rounded:
        top = result.largest_rounding
        assert top is not None
        out(
            f"rounded {len(result.rounded)} prices given as floats to 12 decimal places; "
            f"largest change {decimal_text(top.change)} ({top.key} {top.field}: "
            f"{decimal_text(top.value)} → {decimal_text(top.stored)})",
            highlight=False,
            markup=False,
        )
    if result.defaults_changed:
        moved = [d for d in result.defaults_changed if d.old is not None]
        out(
            f"default providers: {len(result.defaults_changed) - len(moved)} names get one, "
            f"{len(moved)} change",
            highlight=False,
        )
        for d in moved if not verbose else result.defaults_changed:
            out(f"  default for {d.model}: {d.old or '—'} → {d.new}", highlight=False, markup=False)
    if result.diff:
        table = Table(
            "provider", "model", "price", "old", "new", title="changed prices (per 1M tokens)"
        )
        for (provider, model), fields in _by_model(result.diff).items():
            for i, d in enumerate(fields):
                table.add_row(
                    provider if i == 0 else "",
                    model if i == 0 else "",
                    TOKEN_FIELDS.get(d.field, d.field),
                    _shown(d.field, d.old),
                    _shown(d.field, d.new),
                )
        out(table)
    if result.added_models:
        if verbose:
            table = Table(
                "provider",
                "model",
                "input",
                "output",
                "cached",
                "other",
                title="new models (per 1M tokens)",
            )
            by_key = {(p["provider"], p["model"]): p for p in prices}
            for m in result.added_models:
                entry = by_key.get((m.provider, m.model), {})
                table.add_row(
                    m.provider,
                    m.model,
                    _shown("input_per_token", entry.get("input_per_token")),
                    _shown("output_per_token", entry.get("output_per_token")),
                    _shown("cached_input_per_token", entry.get("cached_input_per_token")),
                    _extras(entry),
                )
            out(table)
        else:
            out(f"{len(result.added_models)} new models (--verbose lists them)", highlight=False)
    if verbose:
        for skipped in result.skipped:
            out(f"  skipped {skipped.key}: {skipped.detail}", highlight=False, markup=False)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def _by_model(diff: Iterable[PriceDiff]) -> dict[tuple[str, str], list[PriceDiff]]:
    grouped: dict[tuple[str, str], list[PriceDiff]] = {}
    for d in diff:
        grouped.setdefault((d.provider, d.model), []).append(d)
    return grouped


def _shown(field: str, value: Any) -> str:
    """A diff value as people read it: token prices per 1M, other amounts as they are."""
    if value is None or value == "":
        return "—"
    if field in TOKEN_FIELDS:
        return decimal_text(per_million(Decimal(str(value))))
    return decimal_text(value) if isinstance(value, Decimal) else str(value)


def _extras(entry: Mapping[str, Any]) -> str:
    parts = []
    if entry.get("per_request"):
        parts.append(f"{decimal_text(Decimal(str(entry['per_request'])))}/request")
    if entry.get("per_image"):
        parts.append(f"{decimal_text(Decimal(str(entry['per_image'])))}/image")
    if entry.get("long_context_threshold"):
        parts.append(f"tier above {entry['long_context_threshold']} tokens")
    if entry.get("pricing_type") not in (None, "paid"):
        parts.append(str(entry["pricing_type"]))
    return ", ".join(parts)


def price_export(
    fmt: str = typer.Option("json", "--format", help="json (LiteLLM catalog) or csv (per 1M)."),
    provider: str | None = typer.Option(None, "--provider", help="Only this provider."),
) -> None:
    """The price list as a LiteLLM-compatible catalog (exact numbers; a price imported from a
    catalog keeps its key) or CSV; to stdout."""
    if fmt not in ("json", "csv"):
        fail(f"--format must be json or csv, got {fmt!r}")
    with handle_errors():
        pricing = Pricing.from_env()
    try:
        with handle_errors():
            prices = pricing.list_prices(provider=provider)
            keys = catalog_keys(pricing, provider=provider) if fmt == "json" else {}
    finally:
        pricing.close()
    typer.echo(
        dumps_exact(to_litellm(prices, keys)) if fmt == "json" else prices_csv(prices),
        nl=fmt == "json",
    )
