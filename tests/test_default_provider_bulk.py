"""The first provider of a name becomes its default, decided once per INSERT statement
(20261130040003): one INSERT of many new names reads `models` in proportion to its rows. The row
trigger it replaces probed `models` with a plan cached while the table was small (a sequential
scan per inserted row), so one INSERT of 20,000 new names into a small, analysed catalog read
~200 million rows and took ~25 s (100,000: minutes). The test counts the rows read, which the
clock of a shared machine cannot blur (timings: bench/model_insert_bench.py). The rules
themselves: supabase/tests/45-default-providers.sql and 91-default-first-provider-bulk.sql."""

from __future__ import annotations

import uuid

import psycopg

NAMES = 20_000


def test_insert_many_new_model_names_into_small_catalog_is_linear_and_defaults_each(db_url: str):
    prefix = f"bulk-{uuid.uuid4().hex[:8]}-"
    with psycopg.connect(db_url, autocommit=True) as conn:
        # A small catalog with fresh statistics: what the seeded stack and a new project have.
        conn.execute("vacuum full analyze public.models")
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into public.models (provider_id, model_id) "
            "select 'bulkco', %s || g from generate_series(1, %s) g",
            (prefix, NAMES),
        )
        # This transaction's own reads of the table (pg_stat_xact_*: not yet flushed, not shared).
        rows_read = conn.execute(
            "select seq_tup_read + coalesce(idx_tup_fetch, 0) from pg_stat_xact_user_tables "
            "where schemaname = 'public' and relname = 'models'"
        ).fetchone()[0]
        defaults = conn.execute(
            "select count(*) filter (where is_default), count(*) from public.models "
            "where model_id like %s",
            (prefix + "%",),
        ).fetchone()
        conn.rollback()
    assert defaults == (NAMES, NAMES), "every new name has its only provider as default"
    # Linear: a few reads per new row (the new rows, the defaults' update); the row trigger read
    # the whole growing table for each row, ~NAMES² / 2.
    assert rows_read <= 10 * NAMES, f"{NAMES} new names read {rows_read} rows of models"
