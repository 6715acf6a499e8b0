"""Run the pgTAP suite (supabase/tests) against the local stack, as `supabase test db` does:
pgtap is created in schema `extensions` (by the superuser, since pgtap is not a trusted
extension), then `pg_prove` runs every file as `postgres`, in alphabetical order."""

from __future__ import annotations

import os
import shutil
import subprocess

import psycopg

from app.stack.manager import Stack

INSTALL_HINT = (
    "pg_prove / pgTAP not found. Install them: "
    "sudo apt-get install postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl"
)


class PgTapError(RuntimeError):
    """pgTAP could not be run (missing tools, stack down)."""


def pg_prove_env(db_port: int) -> dict[str, str]:
    """The environment pg_prove (psql) runs in: the local stack's database, as `postgres`."""
    return dict(
        os.environ,
        PGHOST="127.0.0.1",
        PGPORT=str(db_port),
        PGUSER="postgres",
        PGPASSWORD="postgres",
        PGDATABASE="postgres",
    )


def run_pgtap(stack: Stack) -> int:
    """Run every test file; returns pg_prove's exit code (0 = all passed)."""
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        raise PgTapError(INSTALL_HINT)
    tests = stack.paths.root / "supabase" / "tests"
    try:
        with psycopg.connect(stack.cluster.superuser_dsn(), autocommit=True) as conn:
            conn.execute("create extension if not exists pgtap with schema extensions")
    except psycopg.OperationalError as exc:
        raise PgTapError(
            f"cannot reach the local database (is the stack running?): {exc}"
        ) from None
    except psycopg.Error as exc:
        raise PgTapError(f"cannot create extension pgtap: {exc}. {INSTALL_HINT}") from None
    env = pg_prove_env(stack.paths.db_port)
    files = sorted(str(p) for p in tests.glob("*.sql"))
    if not files:
        raise PgTapError(f"no pgTAP test files in {tests}")
    return subprocess.run([pg_prove, "--failures", *files], env=env).returncode
