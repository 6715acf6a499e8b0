"""usage_records partitioned by month (issue 12 §2): request ids unique across partitions, the
default partition's alert and repair, `tokenmeter usage partitions …` and `usage archive`.

Rows "a month apart" are written directly as postgres with an explicit created_at: the charging
functions always stamp now(). Archive tests use months of 2001-2003, which no other test
creates, so `--before` takes exactly their partitions.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from app import partitions
from app.cli import app
from app.meter import Meter
from app.stack.manager import Stack

INSERT_ROW = (
    "insert into public.usage_records (user_id, request_id, provider_id, model_id, input_tokens,"
    " output_tokens, price_per_input_token, price_per_output_token, price_per_cached_input_token,"
    " price_per_request, cost, occurred_at, created_at)"
    " values (%s, %s, 'openai', 'gpt-4o-mini', %s, 100, 0.00000015, 0.0000006, 0.000000075, 0,"
    " %s, %s, %s)"
)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def scalar(db: psycopg.Connection, query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def last_month_at() -> datetime:
    first = datetime.now(UTC).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return (first - timedelta(days=1)).replace(day=10)


def ensure_partition(db: psycopg.Connection, month: date) -> None:
    db.execute("select private.create_usage_partition(%s)", (month,))


def insert_row(db: psycopg.Connection, user_id: str, request_id: str, at: datetime,
               cost: str = "0.00021", input_tokens: int = 1000) -> None:  # fmt: skip
    """A usage row as record_usage would have written it at `at`, charged: the balance moves
    with it (balance = ledger + usage costs, so balance_audit() stays empty)."""
    db.execute(INSERT_ROW, (user_id, request_id, input_tokens, Decimal(cost), at, at))
    charge(db, user_id, cost)


def charge(db: psycopg.Connection, user_id: str, cost: str) -> None:
    db.execute(
        "update public.user_balances set balance = balance - %s where user_id = %s",
        (Decimal(cost), user_id),
    )


def forget_user(db: psycopg.Connection, user_id: str) -> None:
    """Deletes the user with their usage and ledger (the auth.users trigger)."""
    db.execute("delete from auth.users where id = %s", (user_id,))


def make_user(db: psycopg.Connection) -> str:
    user_id = str(uuid.uuid4())
    db.execute(
        "insert into auth.users (id, email) values (%s, %s)",
        (user_id, f"partitions-{user_id[:8]}@example.test"),
    )
    db.execute("select public.top_up(%s, 10, %s)", (user_id, f"fund-{user_id}"))
    return user_id


@pytest.fixture()
def service_meter(service: Any) -> Meter:
    return Meter(service)


# ── request ids unique across partitions ─────────────────────────────────────────────────────
def test_record_usage_request_id_of_last_month_replays_without_second_row(
    db: psycopg.Connection, service_meter: Meter
) -> None:
    user_id = make_user(db)
    at = last_month_at()
    ensure_partition(db, at.date())
    request_id = f"month-apart-{uuid.uuid4()}"
    insert_row(db, user_id, request_id, at)

    result = service_meter.record_usage(
        user_id=user_id, model="gpt-4o-mini", input_tokens=1000, output_tokens=100,
        request_id=request_id, occurred_at=at,
    )  # fmt: skip

    assert result.replayed
    assert scalar(db, "select count(*) from public.usage_records where request_id = %s",
                  request_id) == 1  # fmt: skip
    # Charged once, last month; balance_audit() agrees.
    assert scalar(db, "select balance from public.user_balances where user_id = %s",
                  user_id) == Decimal("9.99979")  # fmt: skip
    assert (
        scalar(db, "select count(*) from public.balance_audit() where user_id = %s", user_id) == 0
    )


def test_record_usage_retry_while_last_months_original_uncommitted_waits_then_replays(
    db_url: str, db: psycopg.Connection
) -> None:
    """The race the claim exists for: the original (stamped a month earlier) is not committed
    when the retry arrives, so the retry cannot see it; UNIQUE (request_id, created_at) alone
    would let it insert a second row this month."""
    user_id = make_user(db)
    at = last_month_at()
    ensure_partition(db, at.date())
    request_id = f"race-{uuid.uuid4()}"
    results: list[Any] = []
    with psycopg.connect(db_url) as original:
        insert_row(original, user_id, request_id, at)  # open transaction

        def retry() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                results.append(scalar(
                    conn,
                    "select public.record_usage(user_id => %s, model => 'gpt-4o-mini',"
                    " input_tokens => 1000, output_tokens => 100, request_id => %s,"
                    " occurred_at => %s)",
                    user_id, request_id, at,
                ))  # fmt: skip

        thread = threading.Thread(target=retry)
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive(), "the retry must wait for the uncommitted original"
        original.commit()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert results and results[0]["replayed"] is True
    assert scalar(db, "select count(*) from public.usage_records where request_id = %s",
                  request_id) == 1  # fmt: skip


def test_record_usage_concurrent_retries_same_month_one_row_one_charge(
    db_url: str, db: psycopg.Connection
) -> None:
    user_id = make_user(db)
    request_id = f"burst-{uuid.uuid4()}"
    barrier = threading.Barrier(8, timeout=30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                barrier.wait()
                conn.execute(
                    "select public.record_usage(user_id => %s, model => 'gpt-4o-mini',"
                    " input_tokens => 1000, output_tokens => 100, request_id => %s,"
                    " occurred_at => '2026-01-02T03:04:05Z')",
                    (user_id, request_id),
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert scalar(db, "select count(*) from public.usage_records where request_id = %s",
                  request_id) == 1  # fmt: skip
    assert scalar(db, "select balance from public.user_balances where user_id = %s",
                  user_id) == Decimal("9.99979")  # fmt: skip


# ── default partition, ensure, stack start ──────────────────────────────────────────────────
def test_partitions_row_outside_partitions_is_kept_warned_then_moved_by_ensure(
    db: psycopg.Connection,
) -> None:
    user_id = make_user(db)
    request_id = f"far-{uuid.uuid4()}"
    # The alert's day is the insert's now(): read in its transaction, so that a run crossing
    # midnight UTC looks for the key the insert made.
    with db.transaction(), db.cursor() as cur:
        notices: list[str] = []
        db.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        cur.execute(INSERT_ROW, (user_id, request_id, 1, Decimal("0.5"),
                                 datetime(2046, 7, 9, tzinfo=UTC), datetime(2046, 7, 9, tzinfo=UTC)))  # fmt: skip
        day = scalar(db, "select to_char(now() at time zone 'UTC', 'YYYY-MM-DD')")
    charge(db, user_id, "0.5")
    assert "usage_outside_partitions" in notices
    # The alert reaches the outbox once a day (the webhook worker delivers it).
    assert scalar(db, "select count(*) from public.alert_outbox where kind ="
                  " 'usage_outside_partitions' and dedupe_key = %s",
                  f"usage_outside_partitions:{day}") == 1  # fmt: skip
    assert scalar(db, "select tableoid::regclass::text from public.usage_records"
                  " where request_id = %s", request_id) == "private.usage_records_default"  # fmt: skip

    listed = cli("usage", "partitions", "list")
    assert listed.exit_code == 0, listed.output
    assert "1 usage rows are in the default partition" in listed.output
    status = cli("db", "status")
    assert status.exit_code == 0, status.output
    assert "default partition" in status.output

    ensured = cli("usage", "partitions", "ensure", "--json")
    assert ensured.exit_code == 0, ensured.output
    rows = {r["partition"]: r for r in json.loads(ensured.stdout)}
    assert rows["usage_records_2046_07"]["created"] is True
    assert rows["usage_records_2046_07"]["moved"] == 1
    assert scalar(db, "select tableoid::regclass::text from public.usage_records"
                  " where request_id = %s", request_id) == "private.usage_records_2046_07"  # fmt: skip
    assert "default partition" not in cli("usage", "partitions", "list").output


def test_partitions_ensure_months_ahead_out_of_range_exits_1() -> None:
    result = cli("usage", "partitions", "ensure", "--months-ahead", "61")
    assert result.exit_code == 1
    assert "between 0 and 60" in result.output


def test_stack_start_on_existing_database_creates_missing_partitions(
    stack: Stack, db: psycopg.Connection
) -> None:
    today = datetime.now(UTC).date()
    index = today.year * 12 + today.month - 1 + 3  # 3 months ahead, the last one ensured
    month = date(index // 12, index % 12 + 1, 1)
    name = f"usage_records_{month:%Y_%m}"
    if scalar(db, "select to_regclass(%s) is not null", f"private.{name}"):
        assert scalar(db, f"select count(*) from private.{name}") == 0
        db.execute(f"alter table public.usage_records detach partition private.{name}")
        db.execute(f"drop table private.{name}")
    Stack(stack.paths).start()
    assert scalar(db, "select to_regclass(%s) is not null", f"private.{name}")


# ── archive ─────────────────────────────────────────────────────────────────────────────────
@pytest.fixture()
def archive_months(db: psycopg.Connection) -> Iterator[dict[str, Any]]:
    """Rows in 2001-01 (3) and 2001-02 (2), including awkward metadata, in their partitions."""
    user_id = make_user(db)
    for month in (date(2001, 1, 1), date(2001, 2, 1)):
        ensure_partition(db, month)
    ids = [f"arch-{uuid.uuid4()}" for _ in range(5)]
    stamps = [datetime(2001, 1, 3, tzinfo=UTC), datetime(2001, 1, 31, 23, 59, 59, tzinfo=UTC),
              datetime(2001, 1, 15, tzinfo=UTC), datetime(2001, 2, 1, tzinfo=UTC),
              datetime(2001, 2, 28, 12, tzinfo=UTC)]  # fmt: skip
    costs = ["0.000000000001", "123.456789012345", "0", "1", "999999999.999999999999"]
    for request_id, at, cost in zip(ids, stamps, costs, strict=True):
        insert_row(db, user_id, request_id, at, cost)
    # Metadata that CSV must quote: a comma, quotes and a newline.
    db.execute(
        "insert into public.usage_records (user_id, request_id, provider_id, model_id,"
        " input_tokens, output_tokens, price_per_input_token, price_per_output_token,"
        " price_per_cached_input_token, price_per_request, cost, created_at, metadata)"
        " values (%s, %s, 'openai', 'gpt-4o-mini', 1, 1, 0, 0, 0, 0, 2, %s, %s)",
        (user_id, ids[0] + "-meta", stamps[0], json.dumps({"note": 'comma, "quote"\nnew line'})),
    )
    charge(db, user_id, "2")
    yield {"user_id": user_id, "request_ids": [*ids, ids[0] + "-meta"]}
    forget_user(db, user_id)
    for month in ("2001_01", "2001_02"):
        if scalar(db, "select to_regclass(%s) is not null", f"private.usage_records_{month}"):
            db.execute(
                f"alter table public.usage_records detach partition private.usage_records_{month}"
            )
            db.execute(f"drop table private.usage_records_{month}")


def test_usage_archive_months_before_writes_verified_file_then_drops_partitions(
    db: psycopg.Connection, archive_months: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "usage-2001.csv.gz"
    result = cli("usage", "archive", "--before", "2001-03", "--to", str(target), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [m["month"] for m in summary["months"]] == ["2001-01", "2001-02"]
    assert [m["rows"] for m in summary["months"]] == [4, 2]
    assert Decimal(summary["cost_sum"]) == Decimal("1000000126.456789012345")

    manifest = json.loads((tmp_path / "usage-2001.csv.gz.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert manifest["rows"] == 6
    with gzip.open(target, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    by_id = {r["request_id"]: r for r in rows}
    meta = by_id[archive_months["request_ids"][-1]]["metadata"]
    assert json.loads(meta) == {"note": 'comma, "quote"\nnew line'}
    assert by_id[archive_months["request_ids"][4]]["cost"] == "999999999.999999999999"  # exact
    for month in ("2001_01", "2001_02"):
        assert not scalar(
            db, "select to_regclass(%s) is not null", f"private.usage_records_{month}"
        )
    ids = archive_months["request_ids"]
    assert (
        scalar(db, "select count(*) from public.usage_records where request_id = any(%s)", ids) == 0
    )
    assert scalar(db, "select count(*) from private.usage_request_ids where request_id = any(%s)",
                  ids) == 0  # fmt: skip
    # The charges left with the rows: one adjustment per month carries them, the balance stays.
    user_id = archive_months["user_id"]
    adjustments = db.execute(
        "select reference, amount from public.ledger_entries where user_id = %s"
        " and kind = 'adjustment' order by reference",
        (user_id,),
    ).fetchall()
    assert adjustments == [
        (f"usage-archive:2001-01:{user_id}:USD", Decimal("-125.456789012346")),
        (f"usage-archive:2001-02:{user_id}:USD", Decimal("-1000000000.999999999999")),
    ]
    assert [m["ledger_adjustments"] for m in manifest["months"]] == [1, 1]
    assert (
        scalar(db, "select count(*) from public.balance_audit() where user_id = %s", user_id) == 0
    )


def test_usage_archive_file_that_does_not_verify_drops_nothing(
    db: psycopg.Connection, archive_months: dict[str, Any], tmp_path: Path
) -> None:
    """A file that differs from the database (a bad disk, a full one) is never trusted."""
    target = tmp_path / "usage-2001.csv"
    partial = tmp_path / "usage-2001.csv.partial"

    def corrupt(stage: str, done: int, total: int) -> None:
        # Once the file is written and closed, one cost changes on "disk".
        if stage == "verify":
            data = partial.read_bytes().replace(b"123.456789012345", b"123.456789012346")
            partial.write_bytes(data)

    with pytest.raises(partitions.PartitionError, match="verification failed for 2001-01"):
        partitions.archive(Stack().paths.db_url(), before="2001-03", to=target, progress=corrupt)
    assert not target.exists() and not partial.exists()
    assert not (tmp_path / "usage-2001.csv.manifest.json").exists()
    assert scalar(db, "select count(*) from public.usage_records where request_id = any(%s)",
                  archive_months["request_ids"]) == 6  # fmt: skip


def test_usage_archive_dry_run_writes_and_drops_nothing(
    db: psycopg.Connection, archive_months: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "dry.csv"
    result = cli("usage", "archive", "--before", "2001-02", "--to", str(target), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2001-01" in result.output and "2001-02" not in result.output
    assert "nothing written, nothing dropped" in result.output
    assert list(tmp_path.iterdir()) == []
    assert scalar(db, "select count(*) from private.usage_records_2001_01") == 4


@pytest.mark.parametrize(
    ("before", "name", "message"),
    [
        ("2999-01", "x.csv", "after the current month"),
        ("2001-13", "x.csv", "YYYY-MM"),
        ("January", "x.csv", "YYYY-MM"),
        ("2001-03", "x.parquet", ".csv or .csv.gz"),
    ],
)
def test_usage_archive_bad_arguments_exit_1_and_write_nothing(
    before: str, name: str, message: str, tmp_path: Path
) -> None:
    result = cli("usage", "archive", "--before", before, "--to", str(tmp_path / name))
    assert result.exit_code == 1
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_usage_archive_next_month_refused_current_month_allowed(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    # The CLI's current month is UTC's (not the machine's time zone), taken when it runs: both
    # calls again if a month ended meanwhile.
    for _ in range(2):
        month = datetime.now(UTC).date().replace(day=1)
        following = (month + timedelta(days=32)).replace(day=1)
        refused = cli(
            "usage", "archive", "--before", f"{following:%Y-%m}", "--to", str(tmp_path / "a.csv")
        )
        allowed = cli("usage", "archive", "--before", f"{month:%Y-%m}", "--to",
                      str(tmp_path / "a.csv"), "--dry-run")  # fmt: skip
        if datetime.now(UTC).date().replace(day=1) == month:
            break
    assert refused.exit_code == 1
    assert "after the current month" in refused.output
    assert allowed.exit_code == 0, allowed.output


def test_usage_archive_existing_file_exit_1_untouched(tmp_path: Path) -> None:
    target = tmp_path / "taken.csv"
    target.write_text("mine")
    result = cli("usage", "archive", "--before", "2001-03", "--to", str(target))
    assert result.exit_code == 1
    assert "exists" in result.output
    assert target.read_text() == "mine"


def test_usage_archive_rows_of_those_months_in_default_partition_refused(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    user_id = make_user(db)
    request_id = f"stray-{uuid.uuid4()}"
    insert_row(db, user_id, request_id, datetime(2003, 5, 5, tzinfo=UTC))  # no 2003-05 partition
    try:
        result = cli("usage", "archive", "--before", "2003-06", "--to", str(tmp_path / "s.csv"))
        assert result.exit_code == 1
        assert "default partition" in result.output and "ensure" in result.output
        assert list(tmp_path.iterdir()) == []
    finally:
        forget_user(db, user_id)


def test_usage_archive_unreachable_database_exits_2(tmp_path: Path) -> None:
    result = cli("usage", "archive", "--before", "2001-03", "--to", str(tmp_path / "u.csv"),
                 "--db-url", "postgresql://postgres:postgres@127.0.0.1:1/postgres")  # fmt: skip
    assert result.exit_code == 2
    assert "cannot connect" in result.output
