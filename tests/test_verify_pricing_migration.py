"""scripts/verify_pricing_migration.py as people run it (a subprocess), on scratch databases
pushed file by file with the real migrations, following docs/pricing.md ("Consolidation"):

  * legacy database: the legacy `models` and `pricing_tiers` tables of
    tests/fixtures/legacy_pricing_state.sql exist (with their rows) before the first migration,
    as in a real legacy database; then the baseline up to the consolidation tools (the catalog
    migration adds its columns and constraints to that `models`) + seed, then the rest of the
    fixture (the prices and usage that disagree with it): the script cannot check yet (exit 2);
    then 20251130000011 (the consolidation tools; the legacy storage is still there): the script
    fails (exit 1) naming every planted problem; after `select populate_model_pricing()` it
    passes; 20251130000012 drops the legacy columns and pricing_tiers; the script passes again;
    the later migrations still apply;
  * the same on a fresh database: the script passes at every step and 20251130000012 changes
    nothing;
  * the abort path through the real file: a legacy price that cannot be copied makes the push
    of 20251101000008 fail with consolidation_would_lose_prices naming the model, and nothing
    (not even populate's copy) is kept; once fixed, the push succeeds.
A warning is not called PASSED; unreachable/unauthorized -> 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from app.migrations import MigrationError, Migrator, migration_files, split_statements
from app.stack.postgres import BOOTSTRAP_SQL

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "verify_pricing_migration.py"
MIGRATIONS = ROOT / "supabase" / "migrations"
SEED = ROOT / "supabase" / "seed.sql"
LEGACY = ROOT / "tests" / "fixtures" / "legacy_pricing_state.sql"
BEFORE_TOOLS = "20251130000010"  # the last baseline migration before the consolidation tools
BEFORE_DROP = "20251130000011"  # 20251130000011_pricing_consolidation.sql: keeps the legacy storage
DROP = "20251130000012"  # 20251130000012_drop_legacy_pricing_storage.sql
LEGACY_COLUMNS = {"pricing_prompt", "pricing_completion", "pricing_image", "pricing_request"}

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


def legacy_storage(url: str) -> tuple[set[str], bool]:
    """The legacy price columns models still has, and whether pricing_tiers exists."""
    with psycopg.connect(url) as conn:
        columns = {
            row[0]
            for row in conn.execute(
                "select column_name::text from information_schema.columns "
                "where table_schema = 'public' and table_name = 'models' "
                "and column_name = any(%s)",
                (sorted(LEGACY_COLUMNS),),
            )
        }
        tiers = conn.execute("select to_regclass('public.pricing_tiers') is not null").fetchone()
    return columns, bool(tiers and tiers[0])


def public_columns(url: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select table_name::text, column_name::text, data_type::text "
            "from information_schema.columns where table_schema = 'public'"
        ).fetchall()
    return set(rows)


def applied_versions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select version from supabase_migrations.schema_migrations")
        return {row[0] for row in rows}


def populate(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select public.populate_model_pricing()").fetchone()
    assert row is not None
    return row[0]


def plant_legacy_catalog(url: str) -> None:
    """The fixture's legacy tables and their rows (`models` with the legacy price columns,
    `pricing_tiers`), on a database no migration has touched yet: its statements that write
    nothing else (the prices and usage come with the whole fixture, once the tables exist)."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for statement in split_statements(LEGACY.read_text()):
            code = "\n".join(
                line for line in statement.sql.splitlines() if not line.startswith("--")
            )
            if not re.search(r"public\.(model_pricing|usage_records)|auth\.users", code):
                conn.execute(statement.sql.encode())


def migrate_legacy_database(url: str, tmp_path: Path) -> None:
    """The legacy catalog where a real legacy database has it (before the first migration), the
    baseline up to the consolidation tools + seed, the rest of the legacy state, then the
    consolidation tools (20251130000011)."""
    plant_legacy_catalog(url)
    migrate(url, tmp_path, lambda v: v <= BEFORE_TOOLS, seed=True)
    run_sql_file(url, LEGACY)
    migrate(url, tmp_path, lambda v: v <= BEFORE_DROP, seed=False)


def test_legacy_database_script_fails_populate_fixes_drop_migration_passes(
    scratch: str, tmp_path: Path
):
    # The legacy catalog, the baseline up to the consolidation tools + seed, the rest of the
    # legacy state: no report function yet.
    plant_legacy_catalog(scratch)
    with psycopg.connect(scratch) as conn:
        assert conn.execute("select count(*) from public.models").fetchone() == (6,)
    migrate(scratch, tmp_path, lambda v: v <= BEFORE_TOOLS, seed=True)
    assert legacy_storage(scratch) == (LEGACY_COLUMNS, True)
    run_sql_file(scratch, LEGACY)
    missing = verify("--db-url", scratch)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "pricing_consolidation_report() does not exist" in missing.stderr
    assert "PASSED" not in missing.stdout

    # Up to 20251130000011: the functions and views exist, the legacy storage is untouched.
    migrate(scratch, tmp_path, lambda v: v <= BEFORE_DROP, seed=False)
    assert legacy_storage(scratch) == (LEGACY_COLUMNS, True)
    assert DROP not in applied_versions(scratch)

    # 1. The script fails and names every planted problem and what to do.
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
    assert report["legacy_columns_present"] is True and report["pricing_tiers_present"] is True

    # 2. populate_model_pricing() fixes them (4 rows, see the fixture), idempotently.
    assert populate(scratch) == 4
    assert populate(scratch) == 0

    # 3. The script passes; the legacy storage is still there.
    fixed = verify("--db-url", scratch)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "FAILED" not in fixed.stdout
    code, report = verify_json(scratch)
    assert code == 0 and report["passed"] is True, report
    assert report["legacy_columns_present"] is True
    with psycopg.connect(scratch) as conn:
        row = conn.execute(
            "select price_per_input_token, price_per_image, price_per_request from "
            "public.model_pricing where provider_id = 'legacyco' and model_id = "
            "'legacy-vision-1'"
        ).fetchone()
    assert row is not None and [str(v.normalize()) for v in row] == ["0.000003", "0.01", "0.001"]

    # 4. The drop migration drops the legacy columns and pricing_tiers.
    migrate(scratch, tmp_path, lambda v: v <= DROP, seed=False)
    assert DROP in applied_versions(scratch)
    assert legacy_storage(scratch) == (set(), False)

    # 5. The script passes again.
    code, report = verify_json(scratch)
    assert code == 0 and report["passed"] is True, report
    assert report["legacy_columns_present"] is False and report["pricing_tiers_present"] is False

    # The later migrations apply on top, and the script still passes.
    migrate(scratch, tmp_path, lambda v: True, seed=False)
    assert applied_versions(scratch) == {f.version for f in migration_files(MIGRATIONS)}
    final = verify("--db-url", scratch)
    assert final.returncode == 0, final.stdout + final.stderr


def test_fresh_database_script_passes_before_and_after_the_drop_migration(
    scratch: str, tmp_path: Path
):
    migrate(scratch, tmp_path, lambda v: v <= BEFORE_TOOLS, seed=True)
    migrate(scratch, tmp_path, lambda v: v <= BEFORE_DROP, seed=False)
    assert legacy_storage(scratch) == (set(), False)

    first = verify("--db-url", scratch)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "FAILED" not in first.stdout
    code, report = verify_json(scratch)
    assert code == 0 and report["failed"] == [] and report["legacy_columns_present"] is False

    assert populate(scratch) == 0
    code, report = verify_json(scratch)
    assert code == 0 and report["failed"] == []

    before = public_columns(scratch)
    migrate(scratch, tmp_path, lambda v: v <= DROP, seed=False)
    assert DROP in applied_versions(scratch)
    assert public_columns(scratch) == before, "the drop migration is a no-op on a fresh database"
    again = verify("--db-url", scratch)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "FAILED" not in again.stdout

    migrate(scratch, tmp_path, lambda v: True, seed=False)
    code, report = verify_json(scratch)
    assert code == 0 and report["failed"] == []


def test_drop_migration_aborts_naming_the_model_and_drops_nothing(scratch: str, tmp_path: Path):
    migrate_legacy_database(scratch, tmp_path)
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute(
            "insert into public.models (provider_id, model_id, pricing_prompt, "
            "pricing_completion) values ('legacyco', 'legacy-broken-1', -0.000001, 0.000002)"
        )
        prices_before = conn.execute("select count(*) from public.model_pricing").fetchone()

    # The push runs populate itself, then the DO block aborts: the negative price cannot be
    # copied, so dropping the columns would lose it.
    with pytest.raises(MigrationError) as failure:
        migrate(scratch, tmp_path, lambda v: v <= DROP, seed=False)
    message = str(failure.value)
    assert "20251130000012_drop_legacy_pricing_storage.sql" in message
    assert "consolidation_would_lose_prices" in message
    assert "legacyco/legacy-broken-1" in message

    # Nothing was dropped or kept: not the storage, not populate's copies, not the history row.
    assert legacy_storage(scratch) == (LEGACY_COLUMNS, True)
    assert DROP not in applied_versions(scratch)
    with psycopg.connect(scratch) as conn:
        prices_after = conn.execute("select count(*) from public.model_pricing").fetchone()
        tiers = conn.execute("select count(*) from public.pricing_tiers").fetchone()
    assert prices_after == prices_before and tiers == (1,)
    failed = verify("--db-url", scratch)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "legacyco/legacy-broken-1" in failed.stdout

    # Fixed, the same push copies everything and drops the legacy storage.
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute(
            "update public.models set pricing_prompt = 0.000001 "
            "where provider_id = 'legacyco' and model_id = 'legacy-broken-1'"
        )
    migrate(scratch, tmp_path, lambda v: v <= DROP, seed=False)
    assert legacy_storage(scratch) == (set(), False)
    code, report = verify_json(scratch)
    assert code == 0 and report["passed"] is True, report


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


def test_rollback_sql_in_the_docs_is_the_one_pgtap_runs():
    """docs/pricing.md promises its rollback SQL is tested verbatim by 40-pricing-rollback.sql."""
    root = Path(__file__).resolve().parent.parent
    docs = (root / "docs" / "pricing.md").read_text()
    rollback_section = docs[docs.index("## Rollback") :]
    documented = rollback_section.split("```sql\n", 1)[1].split("```", 1)[0]
    pgtap = (root / "supabase" / "tests" / "40-pricing-rollback.sql").read_text()
    tested = pgtap.split("-- rollback:begin\n", 1)[1].split("-- rollback:end", 1)[0]
    assert documented.strip() and documented.strip() == tested.strip()
