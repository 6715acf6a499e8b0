"""scripts/verify_pricing_migration.py as people run it (a subprocess), on scratch databases.

Two legacy flows, following the consolidation plan and tests/fixtures/legacy_pricing_state.sql:
  * billing core, the legacy state, the catalog migration — everything before the
    consolidation migration, which is where `pricing_consolidation_report()` and
    `populate_model_pricing()` are defined, so the script cannot check yet (exit 2); after the
    consolidation migration it passes;
  * a migrated database put back in the legacy state: the script fails (exit 1) naming every
    planted problem and what to do; after `select populate_model_pricing()` it passes; after
    re-running the (re-runnable) consolidation migration it passes again.
A fresh database passes (its one warning is not called PASSED); unreachable/unauthorized → 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from app.migrations import Migrator, migration_files, split_statements
from app.stack.postgres import BOOTSTRAP_SQL

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "verify_pricing_migration.py"
MIGRATIONS = ROOT / "supabase" / "migrations"
SEED = ROOT / "supabase" / "seed.sql"
LEGACY = ROOT / "tests" / "fixtures" / "legacy_pricing_state.sql"
CONSOLIDATION = "20251101000002"

LEGACY_ERRORS = {
    "legacy_price_not_in_model_pricing",
    "legacy_price_differs",
    "paid_model_priced_zero",
    "pricing_tiers_not_empty",
    "usage_without_price",
}


@pytest.fixture()
def scratch(admin_dsn: str, stack) -> Iterator[str]:
    """A new database bootstrapped like the stack's (roles, auth schema); a postgres URL."""
    name = f"scratch_pricing_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner postgres')
    with psycopg.connect(make_conninfo(admin_dsn, dbname=name), autocommit=True) as conn:
        conn.execute(BOOTSTRAP_SQL.read_text().encode())
    yield f"postgresql://postgres:postgres@127.0.0.1:{stack.paths.db_port}/{name}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)')


def migrate(url: str, tmp_path: Path, keep: Callable[[str], bool], seed: bool) -> None:
    """Apply the migrations whose version `keep` accepts (a folder of links to them)."""
    folder = tmp_path / f"migrations-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    for file in migration_files(MIGRATIONS):
        if keep(file.version):
            (folder / file.path.name).symlink_to(file.path)
    Migrator(url, folder, [SEED] if seed else []).push(include_seed=seed)


def run_sql_file(url: str, path: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for statement in split_statements(path.read_text()):
            conn.execute(statement.sql.encode())


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def verify_json(url: str) -> tuple[int, dict]:
    result = verify("--db-url", url, "--json")
    return result.returncode, json.loads(result.stdout)


def test_verify_before_consolidation_cannot_check_then_consolidation_passes(
    scratch: str, tmp_path: Path
):
    # Billing core + seed, the legacy state, then the catalog migration: not consolidated yet.
    migrate(scratch, tmp_path, lambda v: v < "20251101", seed=True)
    run_sql_file(scratch, LEGACY)
    migrate(scratch, tmp_path, lambda v: v < CONSOLIDATION, seed=False)

    missing = verify("--db-url", scratch)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "pricing_consolidation_report() does not exist" in missing.stderr
    assert "PASSED" not in missing.stdout

    # The consolidation migration copies the legacy prices and drops the legacy storage.
    migrate(scratch, tmp_path, lambda v: v <= CONSOLIDATION, seed=False)
    code, report = verify_json(scratch)
    assert code == 0 and report["passed"] is True, report
    assert report["legacy_columns_present"] is False
    with psycopg.connect(scratch) as conn:
        row = conn.execute(
            "select price_per_input_token, price_per_image, price_per_request from "
            "public.model_pricing where provider_id = 'legacyco' and model_id = "
            "'legacy-vision-1'"
        ).fetchone()
    assert row is not None and [str(v.normalize()) for v in row] == ["0.000003", "0.01", "0.001"]


def test_verify_legacy_state_fails_names_problems_then_passes_after_populate(
    scratch: str, tmp_path: Path
):
    # A migrated database put back in the legacy state (columns, tiers, drift, usage).
    migrate(scratch, tmp_path, lambda v: True, seed=True)
    run_sql_file(scratch, LEGACY)

    failed = verify("--db-url", scratch)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    for name in LEGACY_ERRORS:
        assert name in failed.stdout
    for model in (
        "legacyco/legacy-chat-1",
        "legacyco/legacy-vision-1",
        "legacyco/legacy-drift-1",
        "legacyco/legacy-zero-1",
    ):
        assert model in failed.stdout
    assert "legacyco/legacy-retired-1" not in failed.stdout
    assert "select populate_model_pricing();" in failed.stdout
    assert "FAILED" in failed.stdout and "PASSED" not in failed.stdout
    code, report = verify_json(scratch)
    assert code == 1 and report["passed"] is False
    assert set(report["failed"]) == LEGACY_ERRORS
    assert set(report["todo"]) == LEGACY_ERRORS

    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("select public.populate_model_pricing()")
    fixed = verify("--db-url", scratch)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "FAILED" not in fixed.stdout

    # Re-running the consolidation migration (re-runnable) drops the legacy storage again.
    run_sql_file(
        scratch, next(f.path for f in migration_files(MIGRATIONS) if f.version == CONSOLIDATION)
    )
    code, report = verify_json(scratch)
    assert code == 0 and report["passed"] is True, report
    assert report["legacy_columns_present"] is False and report["pricing_tiers_present"] is False


def test_verify_fresh_database_passes(scratch: str, tmp_path: Path):
    migrate(scratch, tmp_path, lambda v: True, seed=True)
    result = verify("--db-url", scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout
    code, report = verify_json(scratch)
    assert code == 0 and report["failed"] == []


def test_verify_warning_is_not_reported_as_passed_and_strict_fails(scratch: str, tmp_path: Path):
    migrate(scratch, tmp_path, lambda v: True, seed=True)
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute(
            "insert into public.models (provider_id, model_id) values ('warnco', 'unpriced-1')"
        )
    result = verify("--db-url", scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "active_model_without_price" in result.stdout and "warnco/unpriced-1" in result.stdout
    assert "PASSED" not in result.stdout and "WARNING" in result.stdout
    strict = verify("--db-url", scratch, "--strict")
    assert strict.returncode == 1 and "FAILED" in strict.stdout


def test_verify_via_service_key_on_the_stack_checks_through_the_api(stack):
    result = verify("--json")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {c["name"] for c in report["checks"]} >= {
        "legacy_price_not_in_model_pricing",
        "legacy_price_differs",
        "paid_model_priced_zero",
        "active_model_without_price",
        "pricing_tiers_not_empty",
        "usage_without_price",
    }


def test_verify_unreachable_database_exits_2(stack):
    result = verify("--db-url", "postgresql://postgres:postgres@127.0.0.1:9/postgres")
    assert result.returncode == 2
    assert "cannot connect" in result.stderr and "PASSED" not in result.stdout
    code, body = verify_json("postgresql://postgres:postgres@127.0.0.1:9/postgres")
    assert code == 2 and body["passed"] is None


def test_verify_unreachable_api_exits_2(stack):
    env = {**os.environ, "SUPABASE_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "could not check" in result.stderr


def test_verify_not_authorized_exits_2(stack, api_url: str, anon_key: str):
    env = {**os.environ, "SUPABASE_URL": api_url, "SUPABASE_SERVICE_ROLE_KEY": anon_key}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "could not check" in result.stderr
