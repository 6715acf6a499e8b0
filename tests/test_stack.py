"""The local stack behaves like a Supabase database and its CLI is honest about its state."""

from __future__ import annotations

import json
import time

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.stack.manager import Stack


def test_stack_start_when_running_is_idempotent_and_fast(stack: Stack):
    began = time.monotonic()
    created = stack.start()
    assert created is False
    assert time.monotonic() - began < 2.0
    assert httpx.get(f"{stack.paths.api_url}/health").json() == {"status": "ok"}


def test_stack_status_json_lists_urls_and_keys(stack: Stack):
    result = CliRunner().invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["api_url"] == stack.paths.api_url
    assert status["db_url"].endswith(f":{stack.paths.db_port}/postgres")
    for key in ("anon_key", "service_role_key", "jwt_secret"):
        assert status[key]
    assert status["postgres_running"] and status["gateway_running"]
    env_file = stack.paths.env_file.read_text()
    assert f"SUPABASE_SERVICE_ROLE_KEY={status['service_role_key']}" in env_file


def test_stack_without_postgres_binaries_says_how_to_install(monkeypatch):
    monkeypatch.setenv("TOKENMETER_PG_BINDIR", "/nonexistent")
    result = CliRunner().invoke(app, ["stack", "start"])
    assert result.exit_code == 2
    assert "apt-get install postgresql" in result.output
    assert "Traceback" not in result.output


def test_postgres_role_is_not_superuser_and_roles_match_supabase(admin_dsn: str):
    with psycopg.connect(admin_dsn) as conn:
        roles = dict(
            conn.execute(
                "select rolname, array[rolsuper, rolcanlogin, rolinherit, rolbypassrls] from pg_roles "
                "where rolname in ('postgres','anon','authenticated','service_role','authenticator')"
            ).fetchall()
        )
        members = conn.execute(
            "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.roleid "
            "join pg_roles u on u.oid = m.member where u.rolname = 'authenticator' order by 1"
        ).fetchall()
    assert roles["postgres"] == [False, True, True, True]
    assert roles["anon"] == [False, False, True, False]
    assert roles["service_role"] == [False, False, True, True]
    assert roles["authenticator"] == [False, True, False, False]
    assert [m[0] for m in members] == ["anon", "authenticated", "service_role"]


def test_table_without_grants_is_not_exposed_to_api_roles(db: psycopg.Connection):
    """No default privileges: a migration that forgets GRANT fails locally as on Supabase."""
    db.execute("create table if not exists public.forgot_grants (id int)")
    for role in ("anon", "authenticated", "service_role"):
        with db.transaction():
            db.execute(f"set local role {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with db.transaction():
                    db.execute("select * from public.forgot_grants")


def test_auth_helpers_read_request_claims(db: psycopg.Connection):
    claims = {
        "sub": "7d3f0a53-6a43-4f5e-9d5b-1d9c1c0a6a11",
        "role": "authenticated",
        "email": "a@example.com",
    }
    with db.transaction():
        db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        row = db.execute("select auth.uid()::text, auth.role(), auth.email(), auth.jwt()->>'sub'")
        assert row.fetchone() == (claims["sub"], "authenticated", "a@example.com", claims["sub"])


def test_extensions_live_in_extensions_schema(db: psycopg.Connection):
    rows = db.execute(
        "select extname, extnamespace::regnamespace::text from pg_extension "
        "where extname in ('pgcrypto', 'uuid-ossp') order by 1"
    ).fetchall()
    assert rows == [("pgcrypto", "extensions"), ("uuid-ossp", "extensions")]
    assert db.execute("select extensions.uuid_generate_v4() is not null").fetchone() == (True,)
