"""The real Supabase CLI (pinned in scripts/setup.sh, installed into .tools/) and tokenmeter agree.

Both directions run on freshly bootstrapped databases of their own in the test stack's cluster
(bootstrap.sql, as `tokenmeter stack start` / `db reset` prepare `postgres`): the CLI pushes and
tokenmeter finds nothing to do, the pgTAP suite passes there and `supabase db lint` finds
nothing; tokenmeter pushes and the CLI lists every migration in sync. The statements each tool
records in supabase_migrations.schema_migrations are compared file by file, for the project's
migrations and for files made to hit the splitter's edge cases. The CLI's `--db-url` commands
need no Docker. docs/compatibility.md records what matches and what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.migrations import Migrator, migration_files
from app.stack.pgtap import pg_prove_env
from app.stack.postgres import BOOTSTRAP_SQL

ROOT = Path(__file__).resolve().parents[1]
SUPABASE_CLI = ROOT / ".tools" / "node_modules" / ".bin" / "supabase"
CLI_VERSION = "2.117.0"  # scripts/setup.sh installs this one
MIGRATIONS = ROOT / "supabase" / "migrations"
SEED = ROOT / "supabase" / "seed.sql"
PGTAP_TESTS = sorted((ROOT / "supabase" / "tests").glob("*.sql"))

# Files whose splitting the two tools could disagree on: comments alone, around and after
# statements, empty statements, quotes holding `;`, dollar quotes, a BEGIN ATOMIC body, a rule
# with several actions in parentheses, files with no statement. Left out, as the CLI cannot
# push them (it cuts the statement short and the server refuses the rest; docs/compatibility.md):
# a CASE … END inside a BEGIN ATOMIC body, a `;` after a nested `( … )` inside parentheses.
EDGE_CASE_FILES = {
    "20250101000001_comment_only.sql": "-- nothing to run here\n-- a second line\n",
    "20250101000002_trailing_comment.sql": "create table edge_a (x int); -- after the last one\n",
    "20250101000003_empty_statements.sql": "select 1;;\n ; select 2;\n",
    "20250101000004_block_comment_tail.sql": "select 1;\n/* a closing remark; */\n",
    "20250101000005_leading_comments.sql": (
        "-- header\n\n/* block */ create table edge_b (x int);\n-- middle\nselect 1 ;  "
    ),
    "20250101000006_no_semicolon.sql": "select 1",
    "20250101000007_quotes.sql": "select 'it''s; fine', \"a;b\" from (select 1 as \"a;b\") s;",
    "20250101000008_dollar_quotes.sql": (
        "create function edge_f() returns text language plpgsql as $body$\n"
        "begin\n  return $x$ ; $x$; -- ;\nend\n$body$;\nselect edge_f();\n"
    ),
    "20250101000009_begin_atomic.sql": (
        "create function edge_g(v int) returns int language sql\n"
        "begin atomic\n  select v + 1;\nend;\n"
        "select edge_g(1);\n"
    ),
    "20250101000010_rule.sql": (
        "create table edge_log (x int);\n"
        "create rule edge_r as on insert to edge_a do also "
        "(delete from edge_log; insert into edge_log select 1);\n"
    ),
    "20250101000011_empty.sql": "",
    "20250101000012_blank.sql": "\n  \n\t\n",
}


def run_cli(args: list[str], workdir: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, without a terminal: no telemetry, its state in a scratch HOME,
    prompts answered yes."""
    assert SUPABASE_CLI.exists(), f"{SUPABASE_CLI} missing: run scripts/setup.sh"
    env = dict(os.environ, HOME=str(home), SUPABASE_TELEMETRY_DISABLED="1", DO_NOT_TRACK="1")
    return subprocess.run(
        [str(SUPABASE_CLI), *args, "--workdir", str(workdir), "--yes"],
        # Also the working directory: the CLI writes its version-check file under ./supabase/.temp
        # whatever --workdir says.
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def cli_url(url: str) -> str:
    # The CLI asks for TLS first and stops when the server has none (the local stack has none).
    return f"{url}?sslmode=disable"


def history(url: str) -> dict[str, tuple[str, list[str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations"
        ).fetchall()
    return {version: (name, statements) for version, name, statements in rows}


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("supabase-home")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's supabase/ folder for the CLI's --workdir: it writes its own
    state (supabase/.temp) there, not in the repository."""
    root = tmp_path_factory.mktemp("cli-project")
    (root / "supabase").mkdir()
    shutil.copy(ROOT / "supabase" / "config.toml", root / "supabase" / "config.toml")
    shutil.copy(SEED, root / "supabase" / "seed.sql")
    shutil.copytree(MIGRATIONS, root / "supabase" / "migrations")
    return root


@pytest.fixture(scope="module")
def new_database(stack) -> Iterator[Callable[[bool], str]]:
    """Makes empty databases owned by postgres, bootstrapped like the stack's own when asked
    (roles, auth, extensions); returns a postgres URL. All are dropped at the end."""
    made: list[str] = []

    def make(bootstrap: bool) -> str:
        name = f"cli_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(stack.cluster.superuser_dsn(), autocommit=True) as conn:
            conn.execute(f'create database "{name}" owner postgres')
        made.append(name)
        if bootstrap:
            with psycopg.connect(stack.cluster.superuser_dsn(name), autocommit=True) as conn:
                conn.execute(BOOTSTRAP_SQL.read_text())
        return f"postgresql://postgres:postgres@127.0.0.1:{stack.paths.db_port}/{name}"

    yield make
    with psycopg.connect(stack.cluster.superuser_dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def cli_pushed(new_database, project: Path, cli_home: Path) -> str:
    """A fresh database the CLI pushed every migration and the seed to."""
    url = new_database(True)
    pushed = run_cli(
        ["db", "push", "--db-url", cli_url(url), "--include-seed", "--output-format", "json"],
        project,
        cli_home,
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    result = json.loads(pushed.stdout)
    assert result["migrations"] == [f.path.name for f in migration_files(MIGRATIONS)]
    return url


@pytest.fixture(scope="module")
def tokenmeter_pushed(new_database) -> str:
    """A fresh database `tokenmeter db push --include-seed` applied everything to."""
    url = new_database(True)
    pushed = CliRunner().invoke(app, ["db", "push", "--db-url", url, "--include-seed"])
    assert pushed.exit_code == 0, pushed.output
    return url


def test_cli_version_is_the_pinned_one(project: Path, cli_home: Path):
    answered = run_cli(["--version"], project, cli_home)
    assert answered.returncode == 0 and answered.stdout.strip() == CLI_VERSION


def test_cli_push_then_tokenmeter_push_finds_the_database_up_to_date(cli_pushed: str):
    runner = CliRunner()
    again = runner.invoke(app, ["db", "push", "--db-url", cli_pushed, "--include-seed"])
    assert again.exit_code == 0, again.output
    assert "up to date" in again.output
    status = runner.invoke(app, ["db", "status", "--db-url", cli_pushed, "--json"])
    assert status.exit_code == 0, status.output
    rows = json.loads(status.stdout)
    assert [row["version"] for row in rows] == [f.version for f in migration_files(MIGRATIONS)]
    assert all(row["local"] and row["applied"] for row in rows)
    with psycopg.connect(cli_pushed) as conn:
        seeds = conn.execute("select path, hash from supabase_migrations.seed_files").fetchall()
    assert seeds == [("supabase/seed.sql", hashlib.sha256(SEED.read_bytes()).hexdigest())]


def test_cli_pushed_database_passes_the_pgtap_suite(cli_pushed: str, stack):
    name = cli_pushed.rsplit("/", 1)[1]
    with psycopg.connect(stack.cluster.superuser_dsn(name), autocommit=True) as conn:
        conn.execute("create extension if not exists pgtap with schema extensions")
    env = dict(pg_prove_env(stack.paths.db_port), PGDATABASE=name)
    result = subprocess.run(
        ["pg_prove", "--failures", *map(str, PGTAP_TESTS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert f"Files={len(PGTAP_TESTS)}," in result.stdout


def test_db_lint_finds_no_error_and_no_warning_in_public_and_private(
    cli_pushed: str, stack, project: Path, cli_home: Path
):
    """`supabase db lint` (plpgsql_check) over every PL/pgSQL function the migrations leave.

    The CLI runs `create extension if not exists plpgsql_check` as postgres, inside a
    transaction it rolls back. On Supabase postgres may create it (supautils lets it); here,
    as on a plain server, only a superuser may, so the superuser creates it for the run (in
    `extensions`, on postgres's search_path) and drops it after."""
    name = cli_pushed.rsplit("/", 1)[1]
    with psycopg.connect(stack.cluster.superuser_dsn(name), autocommit=True) as conn:
        conn.execute("create extension if not exists plpgsql_check with schema extensions")
    try:
        linted = run_cli(
            [
                "db",
                "lint",
                "--db-url",
                cli_url(cli_pushed),
                "--schema",
                "public,private",
                "--level",
                "warning",
                "--fail-on",
                "warning",
                "--output-format",
                "json",
            ],
            project,
            cli_home,
        )
    finally:
        with psycopg.connect(stack.cluster.superuser_dsn(name), autocommit=True) as conn:
            conn.execute("drop extension if exists plpgsql_check")
    assert "Linting schema: public" in linted.stderr and "Linting schema: private" in linted.stderr
    issues = json.loads(linted.stdout).get("results", []) if linted.stdout.strip() else []
    assert issues == [], json.dumps(issues, indent=2)
    assert linted.returncode == 0, linted.stderr


def test_tokenmeter_push_then_cli_lists_every_migration_in_sync(
    tokenmeter_pushed: str, project: Path, cli_home: Path
):
    listed = run_cli(
        ["migration", "list", "--db-url", cli_url(tokenmeter_pushed), "--output-format", "json"],
        project,
        cli_home,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout)["migrations"]
    versions = [f.version for f in migration_files(MIGRATIONS)]
    assert [(row["local"], row["remote"]) for row in rows] == [(v, v) for v in versions]
    dry = run_cli(
        ["db", "push", "--db-url", cli_url(tokenmeter_pushed), "--include-seed", "--dry-run"],
        project,
        cli_home,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Remote database is up to date." in dry.stdout + dry.stderr


def test_both_tools_record_the_same_statements_for_every_project_migration(
    cli_pushed: str, tokenmeter_pushed: str
):
    by_cli, by_tokenmeter = history(cli_pushed), history(tokenmeter_pushed)
    assert sorted(by_cli) == [f.version for f in migration_files(MIGRATIONS)]
    differing = [v for v in sorted(by_cli) if by_cli[v] != by_tokenmeter.get(v)]
    assert differing == []


def test_both_tools_record_the_same_statements_for_splitter_edge_cases(
    new_database, tmp_path: Path, cli_home: Path
):
    project = tmp_path / "edge"
    folder = project / "supabase" / "migrations"
    folder.mkdir(parents=True)
    (project / "supabase" / "config.toml").write_text('project_id = "edge"\n')
    for name, sql in EDGE_CASE_FILES.items():
        (folder / name).write_text(sql)
    by_cli_url, by_tokenmeter_url = new_database(False), new_database(False)
    pushed = run_cli(["db", "push", "--db-url", cli_url(by_cli_url)], project, cli_home)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    Migrator(by_tokenmeter_url, folder, []).push()
    by_cli, by_tokenmeter = history(by_cli_url), history(by_tokenmeter_url)
    assert len(by_cli) == len(EDGE_CASE_FILES)
    for version in sorted(by_cli):
        assert by_tokenmeter[version] == by_cli[version], version
    # What the CLI records for the cases the issue found differing.
    assert by_cli["20250101000001"][1] == ["-- nothing to run here\n-- a second line"]
    assert by_cli["20250101000002"][1] == [
        "create table edge_a (x int)",
        "-- after the last one",
    ]
