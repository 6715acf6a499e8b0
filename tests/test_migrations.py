"""`db push` keeps the Supabase CLI's bookkeeping: each file atomic with its history row."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.migrations import MigrationError, Migrator, split_statements


@pytest.fixture()
def scratch_db(admin_dsn: str, stack) -> Iterator[str]:
    """An empty database owned by postgres, dropped afterwards; returns a postgres URL."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner postgres')
    yield f"postgresql://postgres:postgres@127.0.0.1:{stack.paths.db_port}/{name}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)')


def write(folder: Path, name: str, sql: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(sql)
    return path


def history(url: str) -> list[tuple[str, str, list[str]]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations "
            "order by version"
        ).fetchall()


def test_push_applies_files_in_version_order_with_cli_history(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "migrations"
    write(folder, "20250102000000_second.sql", "alter table t add column b text;")
    write(
        folder,
        "20250101000000_first.sql",
        "create table t (a int);\ncreate function f() returns int language sql as $$ select 1; $$;",
    )
    write(folder, "README.md", "not a migration")
    plan = Migrator(scratch_db, folder, []).push()
    assert [f.version for f in plan.pending] == ["20250101000000", "20250102000000"]
    assert history(scratch_db) == [
        (
            "20250101000000",
            "first",
            [
                "create table t (a int)",
                "create function f() returns int language sql as $$ select 1; $$",
            ],
        ),
        ("20250102000000", "second", ["alter table t add column b text"]),
    ]


def test_push_twice_is_a_no_op(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "m"
    write(folder, "1_a.sql", "create table t (a int);")
    migrator = Migrator(scratch_db, folder, [])
    migrator.push()
    again = migrator.push()
    assert again.pending == [] and again.seeds == []
    assert len(history(scratch_db)) == 1


def test_push_refuses_pending_file_older_than_newest_applied(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "m"
    write(folder, "20250105000000_new.sql", "create table new_t (a int);")
    Migrator(scratch_db, folder, []).push()
    write(folder, "20250101000000_old.sql", "create table old_t (a int);")
    with pytest.raises(MigrationError, match="20250101000000_old.sql.*--include-all"):
        Migrator(scratch_db, folder, []).push()
    assert [row[0] for row in history(scratch_db)] == ["20250105000000"]
    Migrator(scratch_db, folder, []).push(include_all=True)
    assert [row[0] for row in history(scratch_db)] == ["20250101000000", "20250105000000"]


def test_failing_migration_leaves_nothing_and_names_file_statement_line(scratch_db, tmp_path):
    folder = tmp_path / "m"
    write(folder, "1_ok.sql", "create table ok_t (a int);")
    write(
        folder,
        "2_bad.sql",
        "create table half_t (a int);\n\n-- comment\nselect * from\n  missing_table;\n",
    )
    with pytest.raises(MigrationError) as caught:
        Migrator(scratch_db, folder, []).push()
    message = str(caught.value)
    assert "2_bad.sql" in message and "statement 2" in message and "line 5" in message
    assert "missing_table" in message and "42P01" in message
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("select to_regclass('public.half_t')").fetchone() == (None,)
        assert conn.execute("select to_regclass('public.ok_t')").fetchone() != (None,)
    assert [row[0] for row in history(scratch_db)] == ["1"]


def test_seed_runs_once_per_content_and_is_tracked_by_sha256(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "m"
    write(folder, "1_t.sql", "create table t (a int);")
    seed = write(tmp_path, "seed.sql", "insert into t values (1);")
    Migrator(scratch_db, folder, [seed]).push(include_seed=True)
    Migrator(scratch_db, folder, [seed]).push(include_seed=True)
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("select count(*) from t").fetchone() == (1,)
        assert conn.execute("select path, hash from supabase_migrations.seed_files").fetchall() == [
            ("supabase/seed.sql", hashlib.sha256(seed.read_bytes()).hexdigest())
        ]
    seed.write_text("insert into t values (2);")
    Migrator(scratch_db, folder, [seed]).push(include_seed=True)
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("select count(*) from t").fetchone() == (2,)


def test_push_without_include_seed_does_not_seed(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "m"
    write(folder, "1_t.sql", "create table t (a int);")
    seed = write(tmp_path, "seed.sql", "insert into t values (1);")
    plan = Migrator(scratch_db, folder, [seed]).push()
    assert plan.seeds == []
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("select count(*) from t").fetchone() == (0,)


def test_history_written_by_supabase_cli_is_respected(scratch_db: str, tmp_path: Path):
    """A database the Supabase CLI pushed (its own DDL and rows) is up to date for us."""
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute(
            "create schema supabase_migrations; create table supabase_migrations.schema_migrations"
            " (version text not null primary key, statements text[], name text);"
            " insert into supabase_migrations.schema_migrations values ('1', '{}', 'a');"
        )
    folder = tmp_path / "m"
    write(folder, "1_a.sql", "this would fail if it ran;")
    write(folder, "2_b.sql", "create table b (x int);")
    plan = Migrator(scratch_db, folder, []).push()
    assert [f.version for f in plan.pending] == ["2"]


def test_dry_run_changes_nothing(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "m"
    write(folder, "1_t.sql", "create table t (a int);")
    plan = Migrator(scratch_db, folder, []).push(dry_run=True)
    assert [f.name for f in plan.pending] == ["t"]
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("select to_regclass('public.t')").fetchone() == (None,)


def test_migrations_run_as_postgres_who_is_not_superuser(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "m"
    write(
        folder,
        "1_bad.sql",
        "create function noop() returns event_trigger language plpgsql as "
        "$$ begin end $$;\ncreate event trigger t on ddl_command_end execute function noop();",
    )
    with pytest.raises(MigrationError, match="42501 permission denied to create event trigger"):
        Migrator(scratch_db, folder, []).push()


def test_split_statements_respects_dollar_quotes_strings_and_comments():
    sql = "select ';';\n/* ; */\ncreate function f() returns int language plpgsql as $body$\nbegin return 1; end $body$;"
    statements = split_statements(sql)
    assert [s.line for s in statements] == [1, 2]
    assert statements[1].sql.endswith("end $body$")


def test_cli_db_push_and_status_json_against_db_url(scratch_db: str, tmp_path: Path, monkeypatch):
    root = tmp_path / "proj"
    write(root / "supabase", "config.toml", "")
    write(root / "supabase" / "migrations", "20250101000000_init.sql", "create table t (a int);")
    monkeypatch.setenv("TOKENMETER_PROJECT_DIR", str(root))
    runner = CliRunner()
    pushed = runner.invoke(app, ["db", "push", "--db-url", scratch_db])
    assert pushed.exit_code == 0, pushed.output
    assert "20250101000000_init.sql" in pushed.output
    status = runner.invoke(app, ["db", "status", "--db-url", scratch_db, "--json"])
    assert status.exit_code == 0
    assert '"applied": true' in status.stdout
    bad = runner.invoke(app, ["db", "push", "--db-url", "postgresql://nobody:x@127.0.0.1:1/none"])
    assert bad.exit_code == 1 and "cannot connect" in bad.output


def test_push_up_to_version_stops_there_and_rejects_non_versions(scratch_db: str, tmp_path: Path):
    folder = tmp_path / "m"
    write(folder, "1_a.sql", "create table a (x int);")
    write(folder, "2_b.sql", "create table b (x int);")
    write(folder, "3_c.sql", "create table c (x int);")
    plan = Migrator(scratch_db, folder, []).push(up_to="2")
    assert [f.version for f in plan.pending] == ["1", "2"]
    assert [row[0] for row in history(scratch_db)] == ["1", "2"]
    with pytest.raises(MigrationError, match="--up-to must be a migration version"):
        Migrator(scratch_db, folder, []).push(up_to="latest")
    Migrator(scratch_db, folder, []).push()
    assert [row[0] for row in history(scratch_db)] == ["1", "2", "3"]
