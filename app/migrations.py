"""`db push | reset | status`: apply supabase/migrations exactly as the Supabase CLI does.

Bookkeeping is the CLI's own (supabase-database.md §5): `supabase_migrations.schema_migrations
(version, statements, name)` and `supabase_migrations.seed_files (path, hash)`. Each file runs in
ONE transaction together with its history row, after `RESET ALL`, so a database pushed by either
tool is up to date for the other. Statements are split where the CLI splits them and stored one
per array element exactly as it stores them (see `split_statements`), so both tools record the
same history for a file (tests/test_supabase_cli.py pushes with the real CLI and compares).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pglast import parser as pg_parser

from app.stack.paths import StackPaths

FILE_NAME = re.compile(r"^([0-9]+)_(.*)\.sql$")

HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key,
  statements text[],
  name text
);
create table if not exists supabase_migrations.seed_files (
  path text not null primary key,
  hash text not null
);
"""


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file, statement and line."""


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    path: Path

    @property
    def statements(self) -> list[Statement]:
        return split_statements(self.path.read_text())


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # 1-based line in the file where the statement starts


@dataclass
class PushPlan:
    pending: list[MigrationFile] = field(default_factory=list)
    seeds: list[Path] = field(default_factory=list)


# Go's strings.TrimSpace (the CLI trims each statement with it) strips Unicode White_Space;
# Python's str.strip() also strips the ASCII separators \x1c-\x1f, which Go keeps.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
)


def split_statements(text: str) -> list[Statement]:
    """Split SQL into statements the way the Supabase CLI records them.

    The CLI cuts a file at every `;` outside quotes, dollar quotes, comments, parentheses and
    `BEGIN ATOMIC … END` bodies; each piece keeps the comments before it and is trimmed of
    white space and semicolons; pieces left empty are dropped. So a file of comments only, or
    comments after the last `;`, is one statement of comment text (the server runs it as an
    empty query). Tokens come from PostgreSQL's own scanner (libpg_query through pglast), so
    `E'\\''` escapes and the like are read as the server reads them.
    """
    try:
        tokens = pg_parser.scan(text)
    except pg_parser.ParseError as exc:
        raise MigrationError(f"cannot split SQL: {exc}") from None
    statements: list[Statement] = []
    start = 0
    parens = 0
    # Open BEGIN ATOMIC bodies, plus CASE expressions inside them: both end with END.
    blocks = 0
    previous = ""
    for token in tokens:
        name = token.name
        if name == "ASCII_40":
            parens += 1
        elif name == "ASCII_41":
            parens = max(parens - 1, 0)
        elif name == "ATOMIC" and previous == "BEGIN_P":
            blocks += 1
        elif name == "CASE" and blocks:
            blocks += 1
        elif name == "END_P" and blocks:
            blocks -= 1
        elif name == "ASCII_59" and not parens and not blocks:
            _add_statement(statements, text, start, token.start)
            start = token.end + 1
        if name not in ("SQL_COMMENT", "C_COMMENT"):
            previous = name
    _add_statement(statements, text, start, len(text))
    return statements


def _add_statement(statements: list[Statement], text: str, start: int, end: int) -> None:
    # The CLI trims trailing semicolons first, then white space.
    chunk = text[start:end]
    sql = chunk.rstrip(";").strip(_GO_SPACE)
    if sql:
        offset = start + chunk.index(sql)
        statements.append(Statement(sql, text[:offset].count("\n") + 1))


def migration_files(folder: Path) -> list[MigrationFile]:
    """Migration files in version order; names that do not match the CLI's pattern are skipped."""
    files = []
    for path in folder.glob("*.sql"):
        if match := FILE_NAME.match(path.name):
            files.append(MigrationFile(match.group(1), match.group(2), path))
    return sorted(files, key=lambda f: int(f.version))


class Migrator:
    def __init__(self, dsn: str, migrations_dir: Path, seed_paths: list[Path]) -> None:
        self.dsn = dsn
        self.migrations_dir = migrations_dir
        self.seed_paths = seed_paths

    @classmethod
    def local(cls, paths: StackPaths | None = None, db_url: str | None = None) -> Migrator:
        paths = paths or StackPaths.from_env()
        seed = paths.root / "supabase" / "seed.sql"
        return cls(db_url or paths.db_url(), paths.migrations_dir, [seed] if seed.is_file() else [])

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.dsn, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise MigrationError(f"cannot connect to the database: {exc}".strip()) from None

    def applied_versions(self, conn: psycopg.Connection) -> dict[str, str | None]:
        exists = conn.execute(
            "select to_regclass('supabase_migrations.schema_migrations') is not null"
        ).fetchone()
        if not exists or not exists[0]:
            return {}
        rows = conn.execute("select version, name from supabase_migrations.schema_migrations")
        return {version: name for version, name in rows.fetchall()}

    def status(self) -> list[dict[str, object]]:
        """Every migration known locally or remotely, with whether it is applied."""
        with self._connect() as conn:
            applied = self.applied_versions(conn)
        local = {f.version: f for f in migration_files(self.migrations_dir)}
        rows = []
        for version in sorted(set(applied) | set(local), key=int):
            file = local.get(version)
            rows.append(
                {
                    "version": version,
                    "name": file.name if file else applied.get(version),
                    "local": file is not None,
                    "applied": version in applied,
                }
            )
        return rows

    def plan(
        self,
        conn: psycopg.Connection,
        include_all: bool,
        include_seed: bool,
        up_to: str | None = None,
    ) -> PushPlan:
        applied = self.applied_versions(conn)
        files = migration_files(self.migrations_dir)
        if up_to is not None:
            if not up_to.isdigit():
                raise MigrationError(f"--up-to must be a migration version (digits), got {up_to!r}")
            # Our extension of the CLI's push: stop at a version, e.g. to run the pricing
            # verification script before the migration that drops the legacy columns.
            files = [f for f in files if int(f.version) <= int(up_to)]
        pending = [f for f in files if f.version not in applied]
        newest = max((int(v) for v in applied), default=None)
        out_of_order = [f for f in pending if newest is not None and int(f.version) < newest]
        if out_of_order and not include_all:
            names = ", ".join(f.path.name for f in out_of_order)
            raise MigrationError(
                f"found local migration files to be inserted before the last migration on the "
                f"remote database ({newest}): {names}. Rerun with --include-all to apply them."
            )
        seeds = self._pending_seeds(conn) if include_seed else []
        return PushPlan(pending, seeds)

    def _pending_seeds(self, conn: psycopg.Connection) -> list[Path]:
        known: dict[str, str] = {}
        exists = conn.execute("select to_regclass('supabase_migrations.seed_files') is not null")
        row = exists.fetchone()
        if row and row[0]:
            known = dict(conn.execute("select path, hash from supabase_migrations.seed_files"))
        return [p for p in self.seed_paths if known.get(self._seed_key(p)) != _sha256(p)]

    def _seed_key(self, path: Path) -> str:
        # The CLI records seed paths relative to the project root, e.g. `supabase/seed.sql`.
        return str(Path("supabase") / path.name)

    def push(
        self,
        include_all: bool = False,
        include_seed: bool = False,
        dry_run: bool = False,
        progress: Callable[[str], None] = lambda _msg: None,
        up_to: str | None = None,
    ) -> PushPlan:
        """Apply pending migrations (and seeds when asked), those up to version `up_to` when
        given. Returns what was (or would be) done."""
        with self._connect() as conn:
            conn.autocommit = True
            plan = self.plan(conn, include_all, include_seed, up_to)
            if dry_run:
                return plan
            if plan.pending or plan.seeds:
                conn.execute(HISTORY_DDL)
            for file in plan.pending:
                progress(f"applying {file.path.name}")
                self._apply(conn, file)
            for seed in plan.seeds:
                progress(f"seeding {seed.name}")
                self._apply_seed(conn, seed)
        return plan

    def _apply(self, conn: psycopg.Connection, file: MigrationFile) -> None:
        statements = file.statements
        with conn.transaction():
            conn.execute("RESET ALL")
            for index, statement in enumerate(statements, start=1):
                self._run(conn, file.path, index, statement)
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements) "
                "values (%s, %s, %s)",
                (file.version, file.name, [s.sql for s in statements]),
            )

    def _apply_seed(self, conn: psycopg.Connection, seed: Path) -> None:
        with conn.transaction():
            for index, statement in enumerate(split_statements(seed.read_text()), start=1):
                self._run(conn, seed, index, statement)
            conn.execute(
                "insert into supabase_migrations.seed_files (path, hash) values (%s, %s) "
                "on conflict (path) do update set hash = excluded.hash",
                (self._seed_key(seed), _sha256(seed)),
            )

    @staticmethod
    def _run(conn: psycopg.Connection, path: Path, index: int, statement: Statement) -> None:
        try:
            # No parameters: psycopg uses the simple protocol, so `%` and `$1` in the SQL are
            # left alone, exactly as psql would send them.
            conn.execute(statement.sql.encode("utf-8"))
        except psycopg.Error as exc:
            diag = exc.diag
            where = f"{path.name}, statement {index} (line {statement.line})"
            position = diag.statement_position
            if position:
                offset = int(position) - 1
                where = (
                    f"{path.name}, statement {index} (line "
                    f"{statement.line + statement.sql[:offset].count(chr(10))})"
                )
            first_line = statement.sql.splitlines()[0][:120]
            detail = f"\n  detail: {diag.message_detail}" if diag.message_detail else ""
            raise MigrationError(
                f"{where}: {diag.sqlstate or ''} {diag.message_primary or exc}{detail}\n"
                f"  statement: {first_line}\n  the migration was rolled back; nothing was applied"
            ) from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
