"""The source designs' own instructions, typed as written (issue 10 §6, §8):

* seed 000's CLI workflow (`burncloud price …` is `tokenmeter price …`) through the real CLI on
  the test stack, and its twelve default prices in the catalog with their date and source;
* seed 001's deployment paths: `db push` WITHOUT the seed, and the migration files pasted into
  the SQL editor one after the other (run as `postgres`, nothing tracked), each give a database
  that charges gpt-4o; re-running the price-list migration changes nothing;
* seed 001's documented price change, the per-1K UPDATE in the SQL editor, as written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner, Result

from app.cli import app
from app.migrations import Migrator, migration_files, split_statements
from app.stack.postgres import BOOTSTRAP_SQL

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "supabase" / "migrations"
PRICE_LIST = MIGRATIONS / "20251018000002_seed_model_pricing.sql"
runner = CliRunner()

# Seed 000's "Insert default pricing data" (per 1M tokens there), as (provider, model): input,
# output per 1M, and whether the provider has retired the model since.
SEED_000 = {
    ("openai", "gpt-4"): ("30", "60", False),
    ("openai", "gpt-4-turbo"): ("10", "30", False),
    ("openai", "gpt-4o"): ("2.5", "10", False),
    ("openai", "gpt-4o-mini"): ("0.15", "0.6", False),
    ("openai", "gpt-3.5-turbo"): ("0.5", "1.5", False),
    ("anthropic", "claude-3-opus"): ("15", "75", True),
    ("anthropic", "claude-3-sonnet"): ("3", "15", True),
    ("anthropic", "claude-3-haiku"): ("0.25", "1.25", False),
    ("anthropic", "claude-3-5-sonnet"): ("3", "15", True),
    ("google", "gemini-1.5-pro"): ("3.5", "10.5", True),
    ("google", "gemini-1.5-flash"): ("0.075", "0.3", True),
    ("google", "gemini-pro"): ("0.5", "1.5", True),
}

SEED_001_UPDATE = """UPDATE model_pricing
SET
  input_price_per_1k_tokens = 0.003,
  output_price_per_1k_tokens = 0.012
WHERE model_id = 'gpt-4o' AND provider_id = 'openai';"""


def tokenmeter(command: str) -> Result:
    """One command line as a person types it (`tokenmeter …`), at an 80-column terminal."""
    args = command.split()
    assert args[0] == "tokenmeter"
    return runner.invoke(app, args[1:], env={"COLUMNS": "80"})


# ── seed 000: the CLI workflow ─────────────────────────────────────────────────────────────
def test_seed_000_cli_workflow_typed_as_written_succeeds(stack, service):
    listed = tokenmeter("tokenmeter price list")
    assert listed.exit_code == 0, listed.output
    for _, name in SEED_000:
        assert f" {name} " in listed.stdout, name

    made = tokenmeter("tokenmeter price set my-model --input 10.0 --output 20.0")
    assert made.exit_code == 0, made.output
    aliased = tokenmeter("tokenmeter price set gpt-4-32k --alias gpt-4")
    assert aliased.exit_code == 0, aliased.output
    got = tokenmeter("tokenmeter price get gpt-4")
    assert got.exit_code == 0, got.output
    assert "30" in got.stdout and "60" in got.stdout

    # my-model: the documented default provider, per 1M tokens as seed 000 means, its default.
    [mine] = json.loads(tokenmeter("tokenmeter price get my-model --json").stdout)
    assert mine["provider"] == "custom" and mine["is_default"] is True
    assert (mine["price_per_input_token"], mine["price_per_output_token"]) == ("0.00001", "0.00002")
    # gpt-4-32k costs what gpt-4 costs, charged by its own name.
    cost = service.rpc(
        "estimate_cost", {"model": "gpt-4-32k", "input_tokens": 1000, "max_output_tokens": 1000}
    ).execute()
    assert cost.data["cost"] == "0.09" and cost.data["model"] == "gpt-4"
    charged = service.rpc(
        "estimate_cost", {"model": "my-model", "input_tokens": 1000, "max_output_tokens": 1000}
    ).execute()
    assert charged.data["cost"] == "0.03"


def test_seed_000_default_prices_are_in_the_catalog_with_date_and_source(db):
    rows = {
        (r[0], r[1]): r[2:]
        for r in db.execute(
            "select provider_id, model_id, price_per_input_token * 1000000,"
            " price_per_output_token * 1000000, pricing_type, source_detail,"
            " last_updated::date::text from public.model_pricing"
        )
    }
    for key, (input_1m, output_1m, retired) in SEED_000.items():
        got_in, got_out, pricing_type, source, updated = rows[key]
        assert (got_in, got_out) == (Decimal(input_1m), Decimal(output_1m)), key
        assert pricing_type == ("deprecated" if retired else "paid"), key
        if key[1] not in ("gpt-4o", "gpt-4o-mini"):  # today's list prices these two the same
            assert "seed 000" in source and updated == "2025-02-15", key


def test_seed_000_retired_model_is_still_charged_for_late_usage(service, sign_up):
    user_id = sign_up()
    result = service.rpc(
        "record_usage",
        {
            "user_id": user_id,
            "model": "claude-3-opus",
            "input_tokens": 1000,
            "output_tokens": 1000,
            "request_id": f"req-{uuid.uuid4()}",
        },
    ).execute()
    assert (result.data["provider"], result.data["cost"]) == ("anthropic", "0.09")


# ── seed 001: deployment without the seed ─────────────────────────────────────────────────
@pytest.fixture()
def scratch(admin_dsn: str, stack) -> Iterator[str]:
    """A new database bootstrapped like the stack's (roles, auth schema); a postgres URL."""
    name = f"scratch_seed_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}" owner postgres')
    with psycopg.connect(make_conninfo(admin_dsn, dbname=name), autocommit=True) as conn:
        conn.execute(BOOTSTRAP_SQL.read_text().encode())
    yield f"postgresql://postgres:postgres@127.0.0.1:{stack.paths.db_port}/{name}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)')


def paste(conn: psycopg.Connection, path: Path) -> None:
    """One file run in the SQL editor: its statements in one transaction, as postgres."""
    with conn.transaction():
        for statement in split_statements(path.read_text()):
            conn.execute(statement.sql.encode())


def charge_gpt_4o(conn: psycopg.Connection) -> dict:
    user_id = str(uuid.uuid4())
    conn.execute("insert into auth.users (id, email) values (%s, %s)", (user_id, f"{user_id}@t"))
    conn.execute("select public.top_up(%s, 1, 'seed-test')", (user_id,))
    row = conn.execute(
        "select public.record_usage(%s, 'gpt-4o', 1000, 1000, 'seed-test-usage')", (user_id,)
    ).fetchone()
    assert row is not None
    return row[0]


def price_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "select provider_id, model_id, effective_from, price_per_input_token,"
        " price_per_output_token from public.model_pricing order by 1, 2, 3"
    ).fetchall()


def test_db_push_without_seed_gives_a_chargeable_catalog(scratch: str):
    Migrator(scratch, MIGRATIONS, []).push()
    with psycopg.connect(scratch, autocommit=True) as conn:
        usage = charge_gpt_4o(conn)
        assert (usage["provider"], usage["cost"]) == ("openai", "0.0125")
        count = conn.execute("select count(*) from public.model_pricing").fetchone()
        assert count is not None and count[0] == 32  # today's 22 + seed 000's 10 new names


def test_migrations_pasted_in_sql_editor_charge_and_rerun_changes_nothing(scratch: str):
    with psycopg.connect(scratch, autocommit=True) as conn:
        for file in migration_files(MIGRATIONS):
            paste(conn, file.path)
        usage = charge_gpt_4o(conn)
        assert (usage["provider"], usage["cost"]) == ("openai", "0.0125")
        before = price_rows(conn)
        paste(conn, PRICE_LIST)  # "safe to re-run"
        assert price_rows(conn) == before


# ── seed 001: the documented price change ──────────────────────────────────────────────────
def test_seed_001_per_1k_update_as_written_adds_an_audited_version(db_url: str):
    # As the SQL editor runs it (postgres), in a transaction rolled back so the shared test
    # stack keeps its gpt-4o price; inside it now() is the statement's time.
    with psycopg.connect(db_url) as conn:
        old = conn.execute(
            "select id, price_per_input_token, effective_from from public.model_pricing"
            " where provider_id = 'openai' and model_id = 'gpt-4o'"
        ).fetchall()
        conn.execute(SEED_001_UPDATE)
        versions = conn.execute(
            "select id, price_per_input_token, price_per_output_token,"
            " input_price_per_1k_tokens, output_price_per_1k_tokens, effective_from = now()"
            " from public.model_pricing where provider_id = 'openai' and model_id = 'gpt-4o'"
            " order by effective_from"
        ).fetchall()
        # the old version is untouched (usage charged at it keeps its price) …
        assert [(v[0], v[1]) for v in versions[:-1]] == [(o[0], o[1]) for o in old]
        # … and the new one, effective now, holds the per-token truth of the per-1K prices
        new = versions[-1]
        assert new[1:] == (
            Decimal("0.000003"),
            Decimal("0.000012"),
            Decimal("0.003"),
            Decimal("0.012"),
            True,
        )
        charged = conn.execute(
            "select (public.price_for('openai', 'gpt-4o')).price_per_input_token"
        ).fetchone()
        assert charged == (Decimal("0.000003"),)
        audit = conn.execute(
            "select action, actor_role, new ->> 'price_per_output_token' from public.price_audit"
            " where provider_id = 'openai' and model_id = 'gpt-4o' and changed_at = now()"
        ).fetchall()
        assert audit == [("insert", "postgres", "0.000012000000")]
        disagree = conn.execute(
            "select count(*) from public.model_pricing"
            " where input_price_per_1k_tokens is distinct from price_per_input_token * 1000"
            " or output_price_per_1k_tokens is distinct from price_per_output_token * 1000"
        ).fetchone()
        assert disagree == (0,)
        conn.rollback()
