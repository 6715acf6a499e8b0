"""supabase-js (under Deno) works against the local stack: tests/js/smoke.test.ts.

Sign-up, sign-in and refresh go to the Auth API; select and rpc need a table and a function,
which this wrapper creates (test-only, with explicit grants and RLS) and drops afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import deno
import httpx
import psycopg
import pytest

JS_TESTS = Path(__file__).with_name("js")


@pytest.fixture()
def smoke_objects(
    db: psycopg.Connection, api_url: str, service_key: str
) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    table, function = f"js_smoke_notes_{suffix}", f"js_smoke_add_{suffix}"
    db.execute(f"""
        create table public.{table} (
          id bigint generated always as identity primary key,
          owner_id uuid not null default auth.uid(),
          body text not null
        )""")
    db.execute(f"alter table public.{table} enable row level security")
    db.execute(f"""create policy "Users read their own notes" on public.{table}
                   for select to authenticated using (owner_id = (select auth.uid()))""")
    db.execute(f"""create policy "Users add their own notes" on public.{table}
                   for insert to authenticated with check (owner_id = (select auth.uid()))""")
    db.execute(f"grant select, insert on public.{table} to authenticated")
    db.execute(f"""create function public.{function}(a integer, b integer) returns integer
                   language sql immutable as $$ select a + b $$""")
    db.execute(f"revoke execute on function public.{function}(integer, integer) from public")
    db.execute(
        f"grant execute on function public.{function}(integer, integer) to anon, authenticated"
    )
    _wait_until_exposed(api_url, service_key, table)
    try:
        yield table, function
    finally:
        db.execute(f"drop table public.{table}")
        db.execute(f"drop function public.{function}(integer, integer)")


def _wait_until_exposed(api_url: str, service_key: str, table: str) -> None:
    """The REST layer reloads its schema cache on NOTIFY; wait until it knows the table.

    service_role has no grant on it (only RLS is bypassed), so "known" means "not 404"."""
    headers = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            httpx.get(f"{api_url}/rest/v1/{table}?select=id&limit=1", headers=headers).status_code
            != 404
        ):
            return
        time.sleep(0.1)
    pytest.fail(f"/rest/v1/{table} did not appear within 10 s")


def test_supabase_js_smoke_suite_passes(
    smoke_objects: tuple[str, str], api_url: str, anon_key: str
):
    table, function = smoke_objects
    env = dict(
        os.environ,
        SUPABASE_URL=api_url,
        SUPABASE_ANON_KEY=anon_key,
        SMOKE_TABLE=table,
        SMOKE_RPC=function,
        NO_COLOR="1",
    )
    result = subprocess.run(
        [str(deno.find_deno_bin()), "test", "--allow-all", str(JS_TESTS)],
        env=env,
        cwd=JS_TESTS.parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed | 0 failed" in result.stdout, result.stdout
