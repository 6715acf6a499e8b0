"""Resource embedding in /rest/v1 (`select=*,rel(*)`) with the unmodified supabase-py client.

Test-only tables are created once per session as `postgres`, with explicit GRANTs; the
relationships come from their foreign keys, as PostgREST detects them. The last tests embed
across tokenmeter's own tables.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from test_rest import _clients, _headers, ex, fails

from supabase import AsyncClient, Client

SCHEMA_SQL = """
create table public.emb_countries (id bigint primary key, name text not null);
create table public.emb_cities (
  id bigint primary key,
  country_id bigint references public.emb_countries (id),
  name text not null
);
create table public.emb_people (id bigint primary key, name text not null);
create table public.emb_teams (id bigint primary key, name text not null);
create table public.emb_memberships (
  person_id bigint references public.emb_people (id),
  team_id bigint references public.emb_teams (id),
  primary key (person_id, team_id)
);
create table public.emb_messages (
  id bigint primary key,
  sender_id bigint not null constraint emb_messages_sender_fkey references public.emb_people (id),
  receiver_id bigint not null
    constraint emb_messages_receiver_fkey references public.emb_people (id),
  body text not null
);
create table public.emb_passports (
  person_id bigint primary key references public.emb_people (id),
  number text not null
);
create table public.emb_hidden (id bigint primary key);
grant select on public.emb_countries, public.emb_cities, public.emb_people, public.emb_teams,
  public.emb_memberships, public.emb_messages, public.emb_passports
  to anon, authenticated, service_role;
grant insert on public.emb_cities to service_role;
grant select on public.emb_hidden to service_role;
"""

DATA_SQL = """
insert into public.emb_countries values (1, 'France'), (2, 'United Kingdom'), (3, 'Iceland');
insert into public.emb_cities values (10, 1, 'Paris'), (11, 1, 'Lyon'), (20, 2, 'London'),
  (21, 2, 'Manchester'), (22, 2, 'Bristol'), (30, null, 'Atlantis');
insert into public.emb_people values (1, 'ana'), (2, 'bo'), (3, 'cy');
insert into public.emb_teams values (1, 'red'), (2, 'blue');
insert into public.emb_memberships values (1, 1), (1, 2), (2, 2);
insert into public.emb_messages values (1, 1, 2, 'hi bo'), (2, 2, 1, 'hi ana'),
  (3, 1, 3, 'hi cy');
insert into public.emb_passports values (1, 'P-1');
"""


@pytest.fixture(scope="session")
def embed_schema(db_url: str, api_url: str, service_key: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        conn.execute(DATA_SQL)
    # The gateway reloads its cache on NOTIFY; wait until it knows the last relationship.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        resp = httpx.get(
            f"{api_url}/rest/v1/emb_people",
            params={"select": "id,emb_passports(number)"},
            headers=_headers(service_key),
        )
        if resp.status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("schema cache never picked up the embedding schema")


@pytest.fixture(params=["sync", "async"])
async def client(
    request: pytest.FixtureRequest, embed_schema: None, api_url: str, service_key: str
) -> AsyncIterator[Client | AsyncClient]:
    async for made in _clients(request.param, api_url, service_key):
        yield made


def _get(api_url: str, key: str, table: str, **params: str) -> httpx.Response:
    return httpx.get(f"{api_url}/rest/v1/{table}", params=params, headers=_headers(key))


# ── cardinalities ─────────────────────────────────────────────────────────────────────────
async def test_embed_many_to_one_returns_object_or_null(client):
    res = await ex(
        client.table("emb_cities")
        .select("name,emb_countries(name)")
        .in_("id", [10, 30])
        .order("id")
    )
    assert res.data == [
        {"name": "Paris", "emb_countries": {"name": "France"}},
        {"name": "Atlantis", "emb_countries": None},
    ]


async def test_embed_one_to_many_returns_array_empty_when_none(client):
    res = await ex(client.table("emb_countries").select("name,emb_cities(name)").order("id"))
    got = {r["name"]: sorted(c["name"] for c in r["emb_cities"]) for r in res.data}
    assert got == {
        "France": ["Lyon", "Paris"],
        "United Kingdom": ["Bristol", "London", "Manchester"],
        "Iceland": [],
    }


async def test_embed_many_to_many_through_join_table(client):
    res = await ex(client.table("emb_people").select("name,emb_teams(name)").order("id"))
    got = {r["name"]: sorted(t["name"] for t in r["emb_teams"]) for r in res.data}
    assert got == {"ana": ["blue", "red"], "bo": ["blue"], "cy": []}
    back = await ex(client.table("emb_teams").select("name,emb_people(name)").eq("id", 2))
    assert sorted(p["name"] for p in back.data[0]["emb_people"]) == ["ana", "bo"]


async def test_embed_one_to_one_returns_object_both_ways(client):
    res = await ex(client.table("emb_people").select("name,emb_passports(number)").order("id"))
    assert [r["emb_passports"] for r in res.data] == [{"number": "P-1"}, None, None]
    back = await ex(client.table("emb_passports").select("number,emb_people(name)"))
    assert back.data == [{"number": "P-1", "emb_people": {"name": "ana"}}]


async def test_embed_nested_three_levels(client):
    res = await ex(
        client.table("emb_cities").select("name,emb_countries(name,emb_cities(name))").eq("id", 20)
    )
    country = res.data[0]["emb_countries"]
    assert country["name"] == "United Kingdom"
    assert sorted(c["name"] for c in country["emb_cities"]) == ["Bristol", "London", "Manchester"]


# ── modifiers ─────────────────────────────────────────────────────────────────────────────
async def test_embed_inner_drops_parents_without_match(client):
    res = await ex(client.table("emb_countries").select("name,emb_cities!inner(name)").order("id"))
    assert [r["name"] for r in res.data] == ["France", "United Kingdom"]
    counted = await ex(
        client.table("emb_countries").select("name,emb_cities!inner(name)", count="exact")
    )
    assert counted.count == 2


async def test_embed_filter_on_referenced_table_filters_children_only(client):
    res = await ex(
        client.table("emb_countries")
        .select("name,emb_cities(name)")
        .eq("emb_cities.name", "Paris")
        .order("id")
    )
    assert [(r["name"], r["emb_cities"]) for r in res.data] == [
        ("France", [{"name": "Paris"}]),
        ("United Kingdom", []),
        ("Iceland", []),
    ]


async def test_embed_or_on_referenced_table_with_inner_filters_parents(client):
    # supabase-py's own integration test, on these tables.
    res = await ex(
        client.table("emb_countries")
        .select("name,emb_cities!inner(name)")
        .or_("country_id.eq.2,name.eq.Atlantis", reference_table="emb_cities")
    )
    assert len(res.data) == 1 and res.data[0]["name"] == "United Kingdom"
    assert sorted(c["name"] for c in res.data[0]["emb_cities"]) == [
        "Bristol",
        "London",
        "Manchester",
    ]


async def test_embed_order_and_limit_on_referenced_table(client):
    res = await ex(
        client.table("emb_countries")
        .select("name,emb_cities(name)")
        .eq("id", 2)
        .order("name", desc=True, foreign_table="emb_cities")
        .limit(2, foreign_table="emb_cities")
    )
    assert res.data[0]["emb_cities"] == [{"name": "Manchester"}, {"name": "London"}]


async def test_embed_alias_names_the_key_and_its_filters(client):
    res = await ex(
        client.table("emb_countries")
        .select("name,towns:emb_cities(city:name)")
        .eq("towns.name", "Lyon")
        .eq("id", 1)
    )
    assert res.data == [{"name": "France", "towns": [{"city": "Lyon"}]}]


async def test_embed_spread_to_one_lifts_columns_into_parent(client):
    res = await ex(
        client.table("emb_cities").select("name,...emb_countries(country:name)").eq("id", 11)
    )
    assert res.data == [{"name": "Lyon", "country": "France"}]


def test_embed_order_by_to_one_column_sorts_parents(api_url, service_key, embed_schema):
    resp = _get(
        api_url,
        service_key,
        "emb_cities",
        select="name,emb_countries(name)",
        id="in.(10,20,11)",
        order="emb_countries(name).desc,name",
    )
    assert [r["name"] for r in resp.json()] == ["London", "Lyon", "Paris"]


def test_embed_order_by_to_many_is_refused_pgrst118(api_url, service_key, embed_schema):
    resp = _get(
        api_url,
        service_key,
        "emb_countries",
        select="name,emb_cities(name)",
        order="emb_cities(name)",
    )
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST118"


def test_embed_null_filter_keeps_parents_with_or_without_children(
    api_url, service_key, embed_schema
):
    resp = _get(
        api_url,
        service_key,
        "emb_countries",
        select="name,emb_cities(name)",
        **{"emb_cities.name": "eq.Paris", "emb_cities": "not.is.null"},
    )
    assert [r["name"] for r in resp.json()] == ["France"]


# ── hints and errors ──────────────────────────────────────────────────────────────────────
async def test_embed_two_foreign_keys_to_same_table_is_ambiguous_pgrst201(client):
    err = await fails(client.table("emb_people").select("name,emb_messages(body)"))
    assert err.code == "PGRST201"
    assert err.message == (
        "Could not embed because more than one relationship was found for 'emb_people' and "
        "'emb_messages'"
    )
    assert err.hint == (
        "Try changing 'emb_messages' to one of the following: "
        "'emb_messages!emb_messages_receiver_fkey', 'emb_messages!emb_messages_sender_fkey'. "
        "Find the desired relationship in the 'details' key."
    )
    assert {
        "cardinality": "one-to-many",
        "embedding": "emb_people with emb_messages",
        "relationship": "emb_messages_sender_fkey using emb_people(id) and emb_messages(sender_id)",
    } in err.details  # type: ignore[operator]


def test_embed_ambiguity_answers_http_300(api_url, service_key, embed_schema):
    resp = _get(api_url, service_key, "emb_people", select="name,emb_messages(body)")
    assert resp.status_code == 300


async def test_embed_hint_by_constraint_or_column_disambiguates(client):
    sent = await ex(
        client.table("emb_people")
        .select("name,sent:emb_messages!emb_messages_sender_fkey(body)")
        .eq("id", 1)
    )
    assert sorted(m["body"] for m in sent.data[0]["sent"]) == ["hi bo", "hi cy"]
    received = await ex(
        client.table("emb_people").select("name,emb_messages!receiver_id(body)").eq("id", 1)
    )
    assert received.data[0]["emb_messages"] == [{"body": "hi ana"}]
    to = await ex(
        client.table("emb_messages")
        .select("body,from:emb_people!sender_id(name),to:emb_people!receiver_id(name)")
        .eq("id", 3)
    )
    assert to.data == [{"body": "hi cy", "from": {"name": "ana"}, "to": {"name": "cy"}}]


async def test_embed_without_foreign_key_raises_pgrst200(client):
    err = await fails(client.table("emb_countries").select("name,emb_hidden(id)"))
    assert err.code == "PGRST200"
    assert err.message == (
        "Could not find a relationship between 'emb_countries' and 'emb_hidden' in the schema cache"
    )
    assert err.details == (
        "Searched for a foreign key relationship between 'emb_countries' and 'emb_hidden' in the "
        "schema 'public', but no matches were found."
    )


async def test_embed_misspelt_table_hints_the_close_name(client):
    err = await fails(client.table("emb_countries").select("name,emb_citie(name)"))
    assert err.code == "PGRST200"
    assert err.hint == "Perhaps you meant 'emb_cities' instead of 'emb_citie'."


async def test_embed_filter_on_table_not_in_select_raises_pgrst108(client):
    err = await fails(client.table("emb_countries").select("name").eq("emb_cities.name", "x"))
    assert err.code == "PGRST108"
    assert err.hint == "Verify that 'emb_cities' is included in the 'select' query parameter."


async def test_embed_in_insert_representation_returns_related_row(client, db_url):
    city_id = uuid.uuid4().int % 1_000_000 + 1_000
    res = await ex(
        client.table("emb_cities")
        .insert({"id": city_id, "country_id": 3, "name": "Reykjavik"})
        .select("name,emb_countries(name)")
    )
    assert res.data == [{"name": "Reykjavik", "emb_countries": {"name": "Iceland"}}]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("delete from public.emb_cities where id = %s", (city_id,))


def test_embed_deep_nesting_is_refused_before_any_work(api_url, service_key, embed_schema):
    select = "name," + "emb_cities(" * 40 + "name" + ")" * 40
    resp = _get(api_url, service_key, "emb_countries", select=select)
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST100"


def test_embed_injection_in_names_is_a_missing_relationship(api_url, service_key, embed_schema):
    resp = _get(
        api_url, service_key, "emb_countries", select='name,"emb_cities; drop table x"(name)'
    )
    assert resp.status_code == 400 and resp.json()["code"] == "PGRST200"


# ── tokenmeter's own tables ───────────────────────────────────────────────────────────────
async def test_usage_records_with_model_pricing_has_no_relationship(client):
    # usage_records keeps the prices it was charged (price_per_* columns) and has no foreign key
    # to model_pricing, whose rows are versions over time: PostgREST answers PGRST200 too.
    err = await fails(client.table("usage_records").select("*,model_pricing(*)"))
    assert err.code == "PGRST200"


async def test_models_embed_their_price_versions(client):
    res = await ex(
        client.table("models")
        .select("provider_id,model_id,model_pricing(price_per_input_token,effective_from)")
        .eq("provider_id", "openai")
        .eq("model_id", "gpt-5")
    )
    assert len(res.data) == 1 and len(res.data[0]["model_pricing"]) >= 1
    back = await ex(
        client.table("model_pricing")
        .select("price_per_input_token,models(display_name,is_active)")
        .eq("provider_id", "openai")
        .eq("model_id", "gpt-5")
        .limit(1)
    )
    assert set(back.data[0]["models"]) == {"display_name", "is_active"}


async def test_anon_embeds_price_list_under_rls(embed_schema, api_url, anon_key):
    async for anon in _clients("sync", api_url, anon_key):
        res = await ex(anon.table("models").select("model_id,model_pricing(currency)").limit(3))
        assert res.data and all(isinstance(r["model_pricing"], list) for r in res.data)


def test_embed_hundreds_of_to_one_embeds_plan_quickly(api_url, service_key, embed_schema):
    # Unfenced, PostgreSQL pulled every LATERAL into one join tree: 280 of these took 8.6 s to
    # plan and hit the statement timeout. A URL of 7.5 KB holds 500.
    select = "id," + ",".join("emb_countries(id)" for _ in range(400))
    started = time.monotonic()
    resp = httpx.get(
        f"{api_url}/rest/v1/emb_cities?select={select}&id=eq.10",
        headers=_headers(service_key),
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert resp.status_code == 200 and resp.json()[0]["emb_countries"] == {"id": 1}
    assert elapsed < 3, f"{elapsed:.1f} s"
