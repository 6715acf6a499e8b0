#!/usr/bin/env python3
"""Verify that model_pricing is the single source of truth for prices (consolidation plan).

Runs `public.pricing_consolidation_report()` and says what to do about each failed check:

    python scripts/verify_pricing_migration.py                 # supabase-py, service role key
    python scripts/verify_pricing_migration.py --db-url URL    # PostgreSQL directly (psycopg)
    python scripts/verify_pricing_migration.py --json          # for machines

Without --db-url the project's settings are used (SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY
from the environment, .env, or the local stack). The database decides every check (one SQL
function, runnable from the SQL editor too); this script only renders it.

Exit codes:
  0  no check with severity "error" failed. Warnings (e.g. an active model whose price is
     deliberately 'missing' and is refused at charge time) are printed, and the verdict then
     says so instead of a clean PASSED; --strict makes warnings fail too.
  1  a check failed: the problems are listed with what to do. Nothing is ever reported PASSED
     after a failure.
  2  could not check: database or API unreachable, not authorized, or the report function is
     missing (apply the migrations first).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from app.pricing import REMEDIES, ConsolidationReport, ReportCheck

EXIT_PASSED, EXIT_FAILED, EXIT_UNCHECKED = 0, 1, 2
MAX_ITEMS_SHOWN = 10


class CannotCheck(Exception):
    """The report could not be produced; the message says why and what to do."""


def report_via_api() -> ConsolidationReport:
    """The report through supabase-py with the service role key."""
    from app.config import ConfigError
    from app.errors import TokenmeterError
    from app.pricing import Pricing

    try:
        with Pricing.from_env() as pricing:
            return pricing.report()
    except ConfigError as exc:
        raise CannotCheck(str(exc)) from exc
    except TokenmeterError as exc:
        hint = ""
        if exc.code in ("not_found", "PGRST202") or "pricing_consolidation_report" in str(exc):
            hint = " (is the migration 20251130000011 applied? `tokenmeter db push`)"
        elif exc.code in ("forbidden", "permission_denied"):
            hint = " (use the service role key: SUPABASE_SERVICE_ROLE_KEY)"
        raise CannotCheck(f"{exc.code}: {exc.detail or exc.message}{hint}") from exc


def report_via_sql(db_url: str) -> ConsolidationReport:
    """The report through a direct PostgreSQL connection (numbers parsed as Decimal)."""
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.types.json import set_json_loads

    try:
        with psycopg.connect(db_url, connect_timeout=5, autocommit=True) as conn:
            set_json_loads(lambda text: json.loads(text, parse_float=Decimal), conn)
            row = conn.execute("select public.pricing_consolidation_report()").fetchone()
    except pg_errors.UndefinedFunction as exc:
        raise CannotCheck(
            "public.pricing_consolidation_report() does not exist: apply the "
            "migrations first (`tokenmeter db push --db-url URL`)"
        ) from exc
    except pg_errors.InsufficientPrivilege as exc:
        raise CannotCheck(
            f"not authorized: {exc.diag.message_detail or exc} (connect as "
            "postgres or a role granted service_role)"
        ) from exc
    except psycopg.OperationalError as exc:
        raise CannotCheck("cannot connect to the database: " + " ".join(str(exc).split())) from exc
    except psycopg.Error as exc:
        raise CannotCheck(f"the report failed: {exc.diag.sqlstate or ''} {exc}".strip()) from exc
    if row is None or not isinstance(row[0], dict):
        raise CannotCheck("pricing_consolidation_report() returned no report")
    return ConsolidationReport.model_validate(row[0])


def describe(item: Any) -> str:
    """One problem for people: 'provider/model' plus what differs."""
    if not isinstance(item, dict):
        return str(item)
    name = "/".join(str(item[k]) for k in ("provider", "model") if item.get(k) is not None)
    rest = {k: v for k, v in item.items() if k not in ("provider", "model")}
    if "field" in rest:
        return f"{name}: {rest['field']} legacy {rest.get('old')} ≠ model_pricing {rest.get('new')}"
    details = ", ".join(f"{k}={v}" for k, v in rest.items() if not isinstance(v, dict))
    return f"{name} ({details})" if details and name else (name or details)


def render(console: Console, report: ConsolidationReport, strict: bool) -> int:
    table = Table("check", "result", "count", "problems", title="pricing consolidation")
    for check in report.checks:
        if check.passed:
            result = "[green]ok[/]"
        elif check.severity == "warning" and not strict:
            result = "[yellow]WARNING[/]"
        else:
            result = "[bold red]FAILED[/]"
        shown = [describe(i) for i in check.items[:MAX_ITEMS_SHOWN]]
        if len(check.items) > MAX_ITEMS_SHOWN or check.count > len(check.items):
            shown.append(f"… {check.count - len(shown)} more")
        table.add_row(check.name, result, str(check.count), "\n".join(shown))
    console.print(table)
    failed = failed_checks(report, strict)
    warnings = [c for c in report.warnings if c not in failed]
    for check in failed + warnings:
        label = "to do" if check in failed else "to review"
        remedy = REMEDIES.get(check.name, "fix the listed models")
        console.print(f"{label} — {check.name}: {remedy}", highlight=False)
    if failed:
        console.print(
            f"[bold red]FAILED[/]: {len(failed)} check(s) failed: "
            f"{', '.join(c.name for c in failed)}",
            highlight=False,
        )
        return EXIT_FAILED
    if warnings:
        console.print(
            f"[yellow]NO ERRORS, {len(warnings)} WARNING(S)[/] to review: "
            f"{', '.join(c.name for c in warnings)} (--strict makes warnings fail)",
            highlight=False,
        )
        return EXIT_PASSED
    console.print(
        "[bold green]PASSED[/]: model_pricing is the single source of truth", highlight=False
    )
    return EXIT_PASSED


def failed_checks(report: ConsolidationReport, strict: bool) -> list[ReportCheck]:
    failed = report.errors + (report.warnings if strict else [])
    # The database's own verdict counts too: it never reads PASSED when it said otherwise.
    if not report.passed and not failed:
        failed = [c for c in report.checks if not c.passed] or [
            ReportCheck(name="report", passed=False, count=0, items=["report.passed is false"])
        ]
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", help="connect to PostgreSQL directly instead of the API")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--strict", action="store_true", help="warnings fail too")
    args = parser.parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    try:
        report = report_via_sql(args.db_url) if args.db_url else report_via_api()
    except CannotCheck as exc:
        if args.json:
            sys.stdout.write(json.dumps({"passed": None, "error": str(exc)}) + "\n")
        err.print(f"[bold red]could not check:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_UNCHECKED
    if args.json:
        failed = failed_checks(report, args.strict)
        out = report.model_dump(mode="json")
        out["passed"] = not failed
        out["failed"] = [c.name for c in failed]
        out["warnings"] = [c.name for c in report.warnings]
        out["todo"] = {c.name: REMEDIES.get(c.name, "fix the listed models") for c in failed}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return EXIT_FAILED if failed else EXIT_PASSED
    return render(console, report, args.strict)


if __name__ == "__main__":
    sys.exit(main())
