"""The pgTAP suite (supabase/tests), run by pg_prove as `supabase test db` runs it: one pytest
case per file, so a failing file is named in the pytest summary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from app.stack.pgtap import pg_prove_env

TESTS = sorted((Path(__file__).resolve().parents[1] / "supabase" / "tests").glob("*.sql"))


@pytest.fixture(scope="session")
def pgtap_env(stack, admin_dsn: str) -> dict[str, str]:
    assert shutil.which("pg_prove"), "pg_prove missing: run scripts/setup.sh"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("create extension if not exists pgtap with schema extensions")
    return pg_prove_env(stack.paths.db_port)


def test_pgtap_suite_exists():
    assert TESTS, "supabase/tests holds no pgTAP files"


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_pgtap_file_passes(path: Path, pgtap_env: dict[str, str]):
    result = subprocess.run(
        ["pg_prove", "--verbose", "--failures", str(path)],
        env=pgtap_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
