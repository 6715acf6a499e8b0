"""The 0.1.0 baseline is the pre-release history folded, nothing more (issue 12 §1).

One scratch database is built from the migration history as it was before the fold (git
revision PRE_FOLD, read with `git archive`, never checked out), one from the baseline files in
supabase/migrations up to LAST_BASELINE (later migrations, added after the release, are not part
of the comparison), both with the project's own runner (`tokenmeter db push`'s Migrator). Then:

  * `pg_dump --schema-only` of both is identical, normalised only for what differs between any
    two dumps (pg_dump's random `\\restrict` key and its version banner): tables, columns in
    order, constraints, indexes, triggers, policies, grants, comments, views and function
    bodies byte for byte;
  * the rows the migrations insert are identical (the default price list, the catalog rows the
    price triggers create, billing_settings), every column except those filled from now() or
    gen_random_uuid(), and every sequence's position;
  * the comparison itself sees a changed function body, grant and seeded price (a test changes
    each on the baseline database and expects a difference).
"""

from __future__ import annotations

import difflib
import io
import re
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from app.migrations import Migrator, migration_files
from app.stack.postgres import BOOTSTRAP_SQL, find_binaries

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "supabase" / "migrations"
# The history before the fold: main at the commit before the baseline replaced it.
PRE_FOLD = "b0ff719e2b1c4fea87696d83b18c23780043a43f"
# The last migration of the 0.1.0 baseline (CHANGELOG.md); newer files are post-release changes.
LAST_BASELINE = "20251130000012"
# Lines of a pg_dump that differ between two dumps of the same schema.
DUMP_NOISE = re.compile(r"^(\\restrict |\\unrestrict |-- Dumped (from|by) )")


def old_history(folder: Path) -> Path:
    """supabase/migrations as of PRE_FOLD, extracted into `folder`."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", PRE_FOLD, "supabase/migrations"],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        pytest.fail(
            f"cannot read the pre-fold migration history at git revision {PRE_FOLD}: "
            f"{stderr.decode(errors='replace').strip() or exc}. The fold test needs the "
            "repository's history (a shallow clone lacks it: `git fetch --unshallow`).",
            pytrace=False,
        )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "supabase" / "migrations"


def baseline(folder: Path) -> Path:
    """The baseline files (versions up to LAST_BASELINE), linked into `folder`."""
    folder.mkdir()
    for file in migration_files(MIGRATIONS):
        if int(file.version) <= int(LAST_BASELINE):
            (folder / file.path.name).symlink_to(file.path)
    return folder


def create_database(admin_dsn: str) -> str:
    """A new database bootstrapped like the stack's (roles, auth schema); its name."""
    name = f"scratch_fold_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner postgres')
    with psycopg.connect(make_conninfo(admin_dsn, dbname=name), autocommit=True) as conn:
        conn.execute(BOOTSTRAP_SQL.read_text().encode())
    return name


def schema_dump(admin_dsn: str, name: str) -> str:
    result = subprocess.run(
        [
            find_binaries().tool("pg_dump"),
            "--schema-only",
            "--no-password",
            "-d",
            make_conninfo(admin_dsn, dbname=name),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return "".join(
        line for line in result.stdout.splitlines(keepends=True) if not DUMP_NOISE.match(line)
    )


def table_rows(admin_dsn: str, name: str) -> dict[str, object]:
    """Every row of every table in public and private, minus the columns that take a new value
    on each run (defaults now() / gen_random_uuid()), in a stable order; and each sequence's
    position."""
    with psycopg.connect(make_conninfo(admin_dsn, dbname=name)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n "
                "on n.oid = c.relnamespace where n.nspname in ('public', 'private') "
                "and c.relkind in ('r', 'p') order by 1"
            )
        ]
        rows: dict[str, object] = {}
        for table in tables:
            volatile = [
                row[0]
                for row in conn.execute(
                    "select a.attname::text from pg_attribute a join pg_attrdef d "
                    "on d.adrelid = a.attrelid and d.adnum = a.attnum where a.attrelid = %s::regclass "
                    "and pg_get_expr(d.adbin, d.adrelid) in ('now()', 'gen_random_uuid()')",
                    (table,),
                )
            ]
            found = conn.execute(
                f"select coalesce(jsonb_agg(r.row order by r.row::text), '[]') from "
                f"(select to_jsonb(t) - %s::text[] as row from {table} t) r",
                (volatile,),
            ).fetchone()
            rows[table] = found[0] if found else None
        for sequence, last_value, is_called in conn.execute(
            "select s.schemaname || '.' || s.sequencename, s.last_value, s.last_value is not null "
            "from pg_sequences s where s.schemaname in ('public', 'private') order by 1"
        ):
            rows[f"sequence {sequence}"] = (last_value, is_called)
    return rows


def unified(old: str, new: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), "pre-fold history", "baseline", lineterm="", n=2
    )
    return "\n".join(list(lines)[:200])


@pytest.fixture(scope="module")
def folded(admin_dsn: str, stack, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(database built from the pre-fold history, database built from the baseline)."""
    work = tmp_path_factory.mktemp("fold")
    names = []
    try:
        for folder in (old_history(work / "old"), baseline(work / "baseline")):
            name = create_database(admin_dsn)
            names.append(name)
            url = f"postgresql://postgres:postgres@127.0.0.1:{stack.paths.db_port}/{name}"
            Migrator(url, folder, []).push()
        yield names[0], names[1]
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            for name in names:
                conn.execute(f'drop database "{name}" with (force)')


def test_baseline_fold_schema_dump_is_identical_to_the_pre_fold_history(folded, admin_dsn: str):
    old, new = (schema_dump(admin_dsn, name) for name in folded)
    assert "CREATE FUNCTION public.record_usage(" in old, "the dump holds the schema"
    assert old == new, "the baseline's schema differs from the history's:\n" + unified(old, new)


def test_baseline_fold_seeded_rows_are_identical_to_the_pre_fold_history(folded, admin_dsn: str):
    old, new = (table_rows(admin_dsn, name) for name in folded)
    assert len(old["public.model_pricing"]) >= 30, "the default price list is compared"
    assert old["public.models"] and old["public.billing_settings"]
    assert old == new


def test_baseline_fold_comparison_sees_a_changed_body_grant_or_price(folded, admin_dsn: str):
    # On a copy of the baseline database: a test that cannot fail proves nothing.
    _, new = folded
    before_schema = schema_dump(admin_dsn, new)
    before_rows = table_rows(admin_dsn, new)
    copy = f"{new}_changed"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{copy}" template "{new}" owner postgres')
    try:
        dsn = make_conninfo(admin_dsn, dbname=copy)
        with psycopg.connect(dsn, autocommit=True) as conn:
            source = conn.execute(
                "select pg_get_functiondef('public.balance_audit()'::regprocedure)"
            ).fetchone()
            assert source is not None
            conn.execute(source[0].replace("order by 1", "order by 1 ").encode())
        assert schema_dump(admin_dsn, copy) != before_schema, "a function body changed"

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(source[0].encode())
            assert schema_dump(admin_dsn, copy) == before_schema, "restored"
            conn.execute("grant execute on function public.balance_audit() to authenticated")
        assert schema_dump(admin_dsn, copy) != before_schema, "a grant changed"

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "alter table public.model_pricing disable trigger user; "
                "update public.model_pricing set price_per_output_token = 0.00001000001, "
                "output_price_per_1k_tokens = 0.01000001 "
                "where provider_id = 'openai' and model_id = 'gpt-4o'"
            )
        assert table_rows(admin_dsn, copy) != before_rows, "a seeded price changed"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'drop database "{copy}" with (force)')
