"""The first provider of a name becomes its default, decided once per INSERT statement
(20261130040003): one INSERT of many new names takes time in proportion to its rows. The row
trigger it replaces probed `models` with a plan cached while the table was small, so one INSERT
of 20,000 new names into a small, analysed catalog took ~25 s (100,000: minutes). The rules
themselves: supabase/tests/45-default-providers.sql and 91-default-first-provider-bulk.sql."""

from __future__ import annotations

import time
import uuid

import psycopg

NAMES = 20_000


def test_insert_many_new_model_names_into_small_catalog_is_linear_and_defaults_each(db_url: str):
    prefix = f"bulk-{uuid.uuid4().hex[:8]}-"
    with psycopg.connect(db_url, autocommit=True) as conn:
        # A small catalog with fresh statistics: what the seeded stack and a new project have.
        conn.execute("vacuum full analyze public.models")
    with psycopg.connect(db_url) as conn:
        started = time.monotonic()
        conn.execute(
            "insert into public.models (provider_id, model_id) "
            "select 'bulkco', %s || g from generate_series(1, %s) g",
            (prefix, NAMES),
        )
        elapsed = time.monotonic() - started
        defaults = conn.execute(
            "select count(*) filter (where is_default), count(*) from public.models "
            "where model_id like %s",
            (prefix + "%",),
        ).fetchone()
        conn.rollback()
    assert defaults == (NAMES, NAMES), "every new name has its only provider as default"
    # ~1 s here, ~25 s with the row trigger; the bound leaves room for a busy machine.
    assert elapsed < 8, f"{NAMES} new names took {elapsed:.1f} s"
