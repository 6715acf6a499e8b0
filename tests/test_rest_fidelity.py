"""PostgREST behaviours beyond reads and plain writes, each as PostgREST 12/13 answers it
(its Response.hs, MainTx.hs, Plan.hs, ApiRequest/Preferences.hs): PUT upserts, the Prefer
header (handling, max-affected, tx, Preference-Applied), function overloads and a single
unnamed parameter, counts on RPC, and the exposed schemas read from config.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from function_gateway import free_port

ROOT = Path(__file__).resolve().parents[1]

SCHEMA_SQL = """
create table if not exists public.fid_items (
  id int primary key, name text not null, qty int default 7
);
create table if not exists public.fid_pairs (
  a int, b int, note text, primary key (a, b)
);
grant select, insert, update, delete on public.fid_items, public.fid_pairs
  to anon, authenticated, service_role;
create or replace function public.fid_over(x int) returns text language sql
  as $$ select 'int' $$;
create or replace function public.fid_over(x text) returns text language sql
  as $$ select 'text' $$;
create or replace function public.fid_over(x int, y int) returns text language sql
  as $$ select 'two' $$;
create or replace function public.fid_body(json) returns json language sql
  as $$ select json_build_object('got', $1) $$;
create or replace function public.fid_text(text) returns text language sql
  as $$ select 'len ' || length($1) $$;
create or replace function public.fid_series(n int) returns setof int language sql
  as $$ select generate_series(1, n) $$;
create or replace function public.fid_one() returns int language sql as $$ select 1 $$;
create schema if not exists fid_other;
grant usage on schema fid_other to anon, authenticated, service_role;
create table if not exists fid_other.things (id int primary key);
grant select on fid_other.things to anon, authenticated, service_role;
notify pgrst, 'reload schema';
"""


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"apikey": key, "Authorization": f"Bearer {key}", **extra}


@pytest.fixture(scope="module")
def fid(db_url: str, api_url: str, service_key: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        resp = httpx.post(f"{api_url}/rest/v1/rpc/fid_one", headers=_headers(service_key))
        if resp.status_code == 200:
            return f"{api_url}/rest/v1"
        time.sleep(0.05)
    raise AssertionError("schema cache never picked up the test schema")


def _fresh_id() -> int:
    return uuid.uuid4().int % 1_000_000_000


def _row(db_url: str, item_id: int) -> tuple | None:
    with psycopg.connect(db_url) as conn:
        return conn.execute("select name, qty from fid_items where id = %s", (item_id,)).fetchone()


# ── PUT ────────────────────────────────────────────────────────────────────────────────────
def test_put_new_key_inserts_201_then_same_key_updates_200(fid, service_key, db_url):
    item = _fresh_id()
    want = _headers(service_key, Prefer="return=representation")
    first = httpx.put(f"{fid}/fid_items?id=eq.{item}", json={"id": item, "name": "a"}, headers=want)
    assert first.status_code == 201 and first.json() == [{"id": item, "name": "a", "qty": 7}]
    assert first.headers["preference-applied"] == "return=representation"
    again = httpx.put(
        f"{fid}/fid_items?id=eq.{item}", json={"id": item, "name": "b", "qty": 1}, headers=want
    )
    assert again.status_code == 200 and again.json() == [{"id": item, "name": "b", "qty": 1}]
    minimal = httpx.put(
        f"{fid}/fid_items?id=eq.{item}",
        json={"id": item, "name": "c"},
        headers=_headers(service_key),
    )
    assert minimal.status_code == 204 and minimal.content == b""
    assert _row(db_url, item) == ("c", 1)


def test_put_composite_key_needs_every_key_column(fid, service_key):
    a, b = _fresh_id(), _fresh_id()
    ok = httpx.put(
        f"{fid}/fid_pairs?a=eq.{a}&b=eq.{b}",
        json={"a": a, "b": b, "note": "x"},
        headers=_headers(service_key),
    )
    assert ok.status_code == 204
    half = httpx.put(
        f"{fid}/fid_pairs?a=eq.{a}", json={"a": a, "b": b}, headers=_headers(service_key)
    )
    assert half.status_code == 405 and half.json()["code"] == "PGRST105"


@pytest.mark.parametrize(
    "query",
    ["id=gt.{id}", "id=not.eq.{id}", "id=eq.{id}&name=eq.x", "or=(id.eq.{id})", ""],
)
def test_put_without_exact_key_filters_is_405_pgrst105(fid, service_key, db_url, query):
    item = _fresh_id()
    resp = httpx.put(
        f"{fid}/fid_items?{query.format(id=item)}",
        json={"id": item, "name": "x"},
        headers=_headers(service_key),
    )
    assert resp.status_code == 405 and resp.json()["code"] == "PGRST105"
    assert _row(db_url, item) is None


def test_put_payload_key_other_than_url_is_400_pgrst115_and_writes_nothing(
    fid, service_key, db_url
):
    item, other = _fresh_id(), _fresh_id()
    resp = httpx.put(
        f"{fid}/fid_items?id=eq.{item}",
        json={"id": other, "name": "x"},
        headers=_headers(service_key),
    )
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST115"
    assert _row(db_url, item) is None and _row(db_url, other) is None
    two = httpx.put(
        f"{fid}/fid_items?id=eq.{item}",
        json=[{"id": item, "name": "x"}, {"id": item, "name": "y"}],
        headers=_headers(service_key),
    )
    assert two.status_code in (400, 409) and _row(db_url, item) is None


def test_put_with_limit_is_400_pgrst114(fid, service_key):
    item = _fresh_id()
    resp = httpx.put(
        f"{fid}/fid_items?id=eq.{item}&limit=1",
        json={"id": item, "name": "x"},
        headers=_headers(service_key),
    )
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST114"


# ── Prefer ─────────────────────────────────────────────────────────────────────────────────
def _insert(db_url: str, *names: str) -> list[int]:
    ids = [_fresh_id() for _ in names]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for item, name in zip(ids, names, strict=True):
            conn.execute("insert into fid_items (id, name) values (%s, %s)", (item, name))
    return ids


def test_max_affected_strict_over_limit_is_400_pgrst124_and_deletes_nothing(
    fid, service_key, db_url
):
    tag = uuid.uuid4().hex
    ids = _insert(db_url, tag, tag, tag)
    strict = _headers(service_key, Prefer="handling=strict, max-affected=2")
    resp = httpx.delete(f"{fid}/fid_items?name=eq.{tag}", headers=strict)
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST124"
    assert resp.json()["details"] == "The query affects 3 rows"
    assert all(_row(db_url, i) is not None for i in ids)
    lenient = _headers(service_key, Prefer="max-affected=2")
    assert httpx.delete(f"{fid}/fid_items?name=eq.{tag}", headers=lenient).status_code == 204
    assert all(_row(db_url, i) is None for i in ids)


def test_max_affected_strict_within_limit_updates_and_says_so(fid, service_key, db_url):
    tag = uuid.uuid4().hex
    (item,) = _insert(db_url, tag)
    resp = httpx.patch(
        f"{fid}/fid_items?name=eq.{tag}",
        json={"qty": 99},
        headers=_headers(service_key, Prefer="handling=strict, max-affected=1"),
    )
    assert resp.status_code == 204
    assert resp.headers["preference-applied"] == "handling=strict, max-affected=1"
    assert _row(db_url, item) == (tag, 99)


def test_max_affected_strict_on_function_without_setof_is_400_pgrst128(fid, service_key):
    resp = httpx.post(
        f"{fid}/rpc/fid_one",
        headers=_headers(service_key, Prefer="handling=strict, max-affected=1"),
    )
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST128"
    rows = httpx.post(
        f"{fid}/rpc/fid_series",
        json={"n": 5},
        headers=_headers(service_key, Prefer="handling=strict, max-affected=3"),
    )
    assert rows.status_code == 400 and rows.json()["code"] == "PGRST124"


def test_unknown_preference_strict_is_400_pgrst122_lenient_ignored(fid, service_key):
    strict = httpx.get(
        f"{fid}/fid_items?limit=1", headers=_headers(service_key, Prefer="handling=strict, bogus=1")
    )
    assert strict.status_code == 400 and strict.json()["code"] == "PGRST122"
    assert strict.json()["details"] == "Invalid preferences: bogus=1"
    assert (
        httpx.get(
            f"{fid}/fid_items?limit=1", headers=_headers(service_key, Prefer="bogus=1")
        ).status_code
        == 200
    )


def test_first_preference_of_a_kind_wins_as_postgrest(fid, service_key, db_url):
    item = _fresh_id()
    resp = httpx.post(
        f"{fid}/fid_items",
        json={"id": item, "name": "first"},
        headers=_headers(service_key, Prefer="return=representation, return=minimal"),
    )
    assert resp.status_code == 201 and resp.json()[0]["name"] == "first"


def _tx_end(admin_dsn: str, value: str | None) -> None:
    action = f"set pgrst.db_tx_end to '{value}'" if value else "reset pgrst.db_tx_end"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"alter role authenticator {action}")
        conn.execute("notify pgrst, 'reload config'")


@pytest.fixture
def tx_override(admin_dsn: str, fid: str, service_key: str) -> Iterator[None]:
    _tx_end(admin_dsn, "commit-allow-override")
    try:
        # Wait for the reload: a tx=rollback insert is then answered but not kept.
        deadline = time.monotonic() + 10
        while True:
            item = _fresh_id()
            resp = httpx.post(
                f"{fid}/fid_items",
                json={"id": item, "name": "probe"},
                headers=_headers(service_key, Prefer="tx=rollback"),
            )
            if resp.headers.get("preference-applied") == "tx=rollback":
                break
            assert time.monotonic() < deadline, "db_tx_end never reloaded"
            time.sleep(0.05)
        yield
    finally:
        _tx_end(admin_dsn, None)
        # Wait for that reload too: the next test must see the default (commit) again.
        deadline = time.monotonic() + 10
        while (
            "preference-applied"
            in httpx.get(
                f"{fid}/fid_items?limit=1", headers=_headers(service_key, Prefer="tx=rollback")
            ).headers
        ):
            assert time.monotonic() < deadline, "db_tx_end never reset"
            time.sleep(0.05)


def test_tx_rollback_with_allow_override_answers_and_keeps_nothing(
    tx_override, fid, service_key, db_url
):
    item = _fresh_id()
    resp = httpx.post(
        f"{fid}/fid_items",
        json={"id": item, "name": "ghost"},
        headers=_headers(service_key, Prefer="return=representation, tx=rollback"),
    )
    assert resp.status_code == 201 and resp.json()[0]["name"] == "ghost"
    assert resp.headers["preference-applied"] == "return=representation, tx=rollback"
    assert _row(db_url, item) is None
    kept = httpx.post(
        f"{fid}/fid_items", json={"id": item, "name": "real"}, headers=_headers(service_key)
    )
    assert kept.status_code == 201 and _row(db_url, item) == ("real", 7)


def test_tx_rollback_without_override_is_ignored(fid, service_key, db_url):
    item = _fresh_id()
    resp = httpx.post(
        f"{fid}/fid_items",
        json={"id": item, "name": "kept"},
        headers=_headers(service_key, Prefer="tx=rollback"),
    )
    assert resp.status_code == 201 and "preference-applied" not in resp.headers
    assert _row(db_url, item) == ("kept", 7)


# ── functions ──────────────────────────────────────────────────────────────────────────────
def test_overloads_told_apart_by_argument_names(fid, service_key):
    resp = httpx.post(f"{fid}/rpc/fid_over", json={"x": 1, "y": 2}, headers=_headers(service_key))
    assert resp.status_code == 200 and resp.json() == "two"


def test_overloads_with_same_names_are_300_pgrst203(fid, service_key):
    resp = httpx.post(f"{fid}/rpc/fid_over", json={"x": 1}, headers=_headers(service_key))
    assert resp.status_code == 300 and resp.json()["code"] == "PGRST203"
    message = resp.json()["message"]
    assert "public.fid_over(x => integer)" in message and "public.fid_over(x => text)" in message


def test_single_unnamed_json_parameter_takes_the_whole_body(fid, service_key):
    body = [1, {"a": "b"}]
    resp = httpx.post(f"{fid}/rpc/fid_body", json=body, headers=_headers(service_key))
    assert resp.status_code == 200 and resp.json() == {"got": body}
    obj = httpx.post(f"{fid}/rpc/fid_body", json={"k": 1}, headers=_headers(service_key))
    assert obj.status_code == 200 and obj.json() == {"got": {"k": 1}}


def test_single_unnamed_text_parameter_takes_a_text_body(fid, service_key):
    resp = httpx.post(
        f"{fid}/rpc/fid_text",
        content="héllo".encode(),
        headers=_headers(service_key, **{"Content-Type": "text/plain"}),
    )
    assert resp.status_code == 200 and resp.json() == "len 5"
    as_json = httpx.post(f"{fid}/rpc/fid_text", json={"x": 1}, headers=_headers(service_key))
    assert as_json.status_code == 404 and as_json.json()["code"] == "PGRST202"


def test_count_exact_on_set_returning_function_sets_content_range_total(fid, service_key):
    resp = httpx.get(
        f"{fid}/rpc/fid_series",
        params={"n": "5", "limit": "2"},
        headers=_headers(service_key, Prefer="count=exact"),
    )
    assert resp.json() == [1, 2]
    assert resp.headers["content-range"] == "0-1/5" and resp.status_code == 206
    assert resp.headers["preference-applied"] == "count=exact"


def test_count_exact_through_supabase_py_rpc(fid, service):
    result = service.rpc("fid_series", {"n": 4}, count="exact").execute()
    assert result.data == [1, 2, 3, 4] and result.count == 4


# ── exposed schemas from config.toml ───────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def other_schema_gateway(fid: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second gateway over the same database, whose config.toml exposes `fid_other` first."""
    project = tmp_path_factory.mktemp("project")
    (project / "supabase").mkdir()
    config = (ROOT / "supabase" / "config.toml").read_text()
    config = config.replace('schemas = ["public"]', 'schemas = ["fid_other", "public"]', 1)
    assert "fid_other" in config
    (project / "supabase" / "config.toml").write_text(config)
    shutil.copytree(ROOT / "supabase" / "functions", project / "supabase" / "functions")
    port = free_port()
    env = dict(os.environ, TOKENMETER_PROJECT_DIR=str(project), TOKENMETER_API_PORT=str(port))
    log = open(project / "gateway.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app.stack.gateway"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (project / "gateway.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "second gateway never answered"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_schemas_come_from_config_toml_first_is_default(other_schema_gateway, fid, service_key):
    url = f"{other_schema_gateway}/rest/v1"
    default = httpx.get(f"{url}/things", headers=_headers(service_key))
    assert default.status_code == 200 and default.json() == []
    public = httpx.get(
        f"{url}/fid_items?limit=1", headers=_headers(service_key, **{"Accept-Profile": "public"})
    )
    assert public.status_code == 200
    # The stack's own gateway exposes only `public`, as its config.toml says.
    refused = httpx.get(
        f"{fid}/things", headers=_headers(service_key, **{"Accept-Profile": "fid_other"})
    )
    assert refused.status_code == 406 and refused.json()["code"] == "PGRST106"
    assert "fid_other" not in refused.json()["message"]


# ── max_rows ───────────────────────────────────────────────────────────────────────────────
def test_max_rows_from_config_caps_reads_but_counts_all(fid, service_key):
    # supabase/config.toml: [api] max_rows = 1000, as the Supabase CLI passes to PostgREST.
    resp = httpx.get(
        f"{fid}/rpc/fid_series",
        params={"n": "1500"},
        headers=_headers(service_key, Prefer="count=exact"),
    )
    assert len(resp.json()) == 1000 and resp.headers["content-range"] == "0-999/1500"
    asked = httpx.get(
        f"{fid}/rpc/fid_series",
        params={"n": "1500", "limit": "1200"},
        headers=_headers(service_key),
    )
    assert len(asked.json()) == 1000
    fewer = httpx.get(
        f"{fid}/rpc/fid_series", params={"n": "1500", "limit": "3"}, headers=_headers(service_key)
    )
    assert fewer.json() == [1, 2, 3]


# ── computed fields, stripped nulls, planned counts, media types ───────────────────────────
COMPUTED_SQL = """
create table if not exists public.fid_people (id int primary key, first text, last text);
grant select on public.fid_people to anon, authenticated, service_role;
create or replace function public.full_name(public.fid_people) returns text
  language sql stable as $$ select $1.first || ' ' || coalesce($1.last, '?') $$;
insert into public.fid_people values (1, 'Ada', 'Lovelace'), (2, 'Alan', null), (3, 'Grace', 'Hopper')
  on conflict do nothing;
notify pgrst, 'reload schema';
"""


@pytest.fixture(scope="module")
def people(fid: str, db_url: str, service_key: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(COMPUTED_SQL)
    deadline = time.monotonic() + 10
    while True:
        resp = httpx.get(
            f"{fid}/fid_people?select=full_name&id=eq.1", headers=_headers(service_key)
        )
        if resp.status_code == 200:
            return f"{fid}/fid_people"
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.05)


def test_computed_field_selected_filtered_and_ordered_like_a_column(people, service_key):
    resp = httpx.get(
        people,
        params={"select": "id,name:full_name", "full_name": "like.A*", "order": "full_name.desc"},
        headers=_headers(service_key),
    )
    assert resp.json() == [{"id": 2, "name": "Alan ?"}, {"id": 1, "name": "Ada Lovelace"}]
    star = httpx.get(people, params={"select": "*", "id": "eq.1"}, headers=_headers(service_key))
    assert "full_name" not in star.json()[0]  # as PostgREST: `*` is the table's own columns


def test_computed_field_through_supabase_py(people, service):
    rows = service.table("fid_people").select("id,full_name").eq("id", 3).execute().data
    assert rows == [{"id": 3, "full_name": "Grace Hopper"}]


def test_nulls_stripped_leaves_out_null_members(people, service_key):
    strip = _headers(service_key, Accept="application/vnd.pgrst.array+json;nulls=stripped")
    resp = httpx.get(people, params={"id": "eq.2"}, headers=strip)
    assert resp.json() == [{"id": 2, "first": "Alan"}]
    one = httpx.get(
        people,
        params={"id": "eq.2"},
        headers=_headers(service_key, Accept="application/vnd.pgrst.object+json;nulls=stripped"),
    )
    assert one.json() == {"id": 2, "first": "Alan"}
    # Only PostgREST's vendor types strip: plain JSON keeps the nulls.
    plain = httpx.get(
        people,
        params={"id": "eq.2"},
        headers=_headers(service_key, Accept="application/json;nulls=stripped"),
    )
    assert plain.json() == [{"id": 2, "first": "Alan", "last": None}]


def test_count_planned_answers_the_planner_estimate_with_206(fid, service_key, db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Statistics gathered on 5,000 rows, then half deleted: the planner still guesses
        # about 4,000 rows above 1,000 where 2,000 remain, so an estimate shows as one.
        conn.execute("drop table if exists public.fid_many")
        conn.execute("create table public.fid_many (n int) with (autovacuum_enabled = false)")
        conn.execute("grant select on public.fid_many to service_role")
        conn.execute("insert into public.fid_many select generate_series(1, 5000)")
        conn.execute("analyze public.fid_many")
        conn.execute("delete from public.fid_many where n % 2 = 0")
        conn.execute("notify pgrst, 'reload schema'")
    url = f"{fid}/fid_many"
    deadline = time.monotonic() + 10
    while httpx.get(url, params={"limit": "1"}, headers=_headers(service_key)).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    planned = httpx.get(
        url,
        params={"limit": "2", "n": "gt.1000"},
        headers=_headers(service_key, Prefer="count=planned"),
    )
    total = int(planned.headers["content-range"].split("/")[1])
    with psycopg.connect(db_url) as conn:
        plan = conn.execute("explain (format json) select 1 from fid_many where n > 1000")
        estimate = plan.fetchone()[0][0]["Plan"]["Plan Rows"]
    assert planned.status_code == 206 and total == estimate and total > 3000  # exact: 2,000
    # estimated: exact up to max_rows (1000), the planner's figure beyond it
    small = httpx.get(
        url,
        params={"limit": "2", "n": "lte.10"},
        headers=_headers(service_key, Prefer="count=estimated"),
    )
    assert small.headers["content-range"] == "0-1/5"
    large = httpx.get(
        url, params={"limit": "2"}, headers=_headers(service_key, Prefer="count=estimated")
    )
    assert int(large.headers["content-range"].split("/")[1]) >= 1001


def test_geojson_without_postgis_is_406_pgrst107(fid, service_key):
    resp = httpx.get(
        f"{fid}/fid_items", headers=_headers(service_key, Accept="application/geo+json")
    )
    assert resp.status_code == 406 and resp.json()["code"] == "PGRST107"


# ── aggregates ─────────────────────────────────────────────────────────────────────────────
def _aggregates(admin_dsn: str, enabled: bool) -> None:
    action = (
        "set pgrst.db_aggregates_enabled to 'true'"
        if enabled
        else "reset pgrst.db_aggregates_enabled"
    )
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"alter role authenticator {action}")
        conn.execute("notify pgrst, 'reload config'")


@pytest.fixture
def aggregates_on(admin_dsn: str, fid: str, service_key: str) -> Iterator[str]:
    url = f"{fid}/fid_items"
    probe = {"select": "count()", "id": "eq.-1"}
    _aggregates(admin_dsn, True)
    try:
        deadline = time.monotonic() + 10
        while httpx.get(url, params=probe, headers=_headers(service_key)).status_code != 200:
            assert time.monotonic() < deadline, "db_aggregates_enabled never reloaded"
            time.sleep(0.05)
        yield url
    finally:
        _aggregates(admin_dsn, False)
        deadline = time.monotonic() + 10
        while httpx.get(url, params=probe, headers=_headers(service_key)).status_code != 400:
            assert time.monotonic() < deadline, "db_aggregates_enabled never reset"
            time.sleep(0.05)


def test_aggregates_off_by_default_are_400_pgrst123(fid, service_key):
    resp = httpx.get(
        f"{fid}/fid_items", params={"select": "qty.sum()"}, headers=_headers(service_key)
    )
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST123"


def test_aggregates_group_by_the_other_columns(aggregates_on, service_key, db_url):
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i, (suffix, qty) in enumerate([("a", 1), ("a", 2), ("b", 5)]):
            conn.execute(
                "insert into fid_items (id, name, qty) values (%s, %s, %s)",
                (_fresh_id() + i, f"{tag}{suffix}", qty),
            )
    resp = httpx.get(
        aggregates_on,
        params={
            "select": "name,total:qty.sum(),qty.max(),count(),avg:qty::numeric.avg()::text",
            "name": f"like.{tag}*",
            "order": "name",
        },
        headers=_headers(service_key),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == [
        {"name": f"{tag}a", "total": 3, "max": 2, "count": 2, "avg": "1.5000000000000000"},
        {"name": f"{tag}b", "total": 5, "max": 5, "count": 1, "avg": "5.0000000000000000"},
    ]
    whole = httpx.get(
        aggregates_on,
        params={"select": "qty.sum()", "name": f"like.{tag}*"},
        headers=_headers(service_key),
    )
    assert whole.json() == [{"sum": 8}]


def test_missing_default_fills_absent_keys_with_column_defaults(fid, service_key, db_url):
    a, b = _fresh_id(), _fresh_id()
    rows = [{"id": a, "name": "a"}, {"id": b, "name": "b", "qty": 3}]
    resp = httpx.post(
        f"{fid}/fid_items", json=rows, headers=_headers(service_key, Prefer="missing=default")
    )
    assert resp.status_code == 201 and resp.headers["preference-applied"] == "missing=default"
    assert _row(db_url, a) == ("a", 7) and _row(db_url, b) == ("b", 3)
    # Without it, a key absent from one row of a bulk insert is NULL there, as PostgREST.
    c, d = _fresh_id(), _fresh_id()
    rows = [{"id": c, "name": "c"}, {"id": d, "name": "d", "qty": 3}]
    assert (
        httpx.post(f"{fid}/fid_items", json=rows, headers=_headers(service_key)).status_code == 201
    )
    assert _row(db_url, c) == ("c", None)
