"""Default providers (issue 10 §4) where only real clients and connections show it: two
first providers of one new name priced concurrently, and set_default_provider over the REST API
for each role (the SQL rules themselves: supabase/tests/45-default-providers.sql)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import psycopg
import pytest

from app.errors import PermissionDenied, UnknownModel
from app.pricing import Pricing
from supabase import Client

PRICE = "select public.set_model_price(%s, %s, 0.000001, 0.000002)"


def test_first_providers_priced_concurrently_leave_exactly_one_default(db_url: str, db):
    name = f"race-{uuid.uuid4().hex[:8]}"
    first = psycopg.connect(db_url)
    second = psycopg.connect(db_url)
    try:
        first.execute(PRICE, ("race-a", name))  # holds the name's lock until it commits
        done = threading.Event()

        def price_second() -> None:
            second.execute(PRICE, ("race-b", name))
            second.commit()
            done.set()

        worker = threading.Thread(target=price_second)
        worker.start()
        assert not done.wait(0.5), "the second first-provider must wait for the first"
        first.commit()
        worker.join(10)
        assert done.is_set()
    finally:
        first.close()
        second.close()
    rows = db.execute(
        "select provider_id, is_default from public.models where model_id = %s order by 1",
        (name,),
    ).fetchall()
    assert rows == [("race-a", True), ("race-b", False)]


def test_set_default_provider_over_rest_service_role_only(
    pricing: Pricing, new_client: Callable[[str], Client], anon_key: str, signed_up_user
):
    name = f"rest-{uuid.uuid4().hex[:8]}"
    for provider in ("rest-a", "rest-b"):
        pricing.set(model=name, provider=provider, input="1", output="2")
    made = pricing.set_default(model=name, provider="rest-b")
    assert (made.provider, made.previous_provider, made.changed) == ("rest-b", "rest-a", True)
    assert pricing.get(model=name).provider == "rest-b"
    with pytest.raises(UnknownModel):
        pricing.set_default(model=name, provider="rest-c")

    _, user = signed_up_user()
    for client in (new_client(anon_key), user):
        with pytest.raises(PermissionDenied):
            Pricing(client).set_default(model=name, provider="rest-a")
        # everyone reads the default with the catalog, and bare names resolve to it
        assert Pricing(client).default_providers(model=name) == {name: "rest-b"}
        assert Pricing(client).get(model=name).provider == "rest-b"
    assert pricing.default_providers(model=name) == {name: "rest-b"}
