"""usage_records' monthly partitions: list them, create those ahead, archive past months.

The SQL side is supabase/migrations/20261129210000…210200: `public.usage_records` is partitioned
by RANGE (created_at), one partition per calendar month (UTC) in the private schema, plus a
default partition that should stay empty. This module talks to the database directly
(psycopg, as the tables' owner, like `tokenmeter db push`): archiving detaches and drops tables,
which no API role may do.

Archive (`archive`): every whole month before `before` is written to ONE file (CSV, optionally
gzip), with a sidecar manifest `<file>.manifest.json` holding the file's sha256, its rows and the
sum of their costs per month. The file is read back and checked against the database (rows and
cost sums per month, sha256) before anything is dropped; the partitions are locked (SHARE: reads
and charging go on, their rows cannot change) from the export until the drop, in one
transaction, so what was verified is exactly what is dropped. A usage record being its charge's
ledger line (balance = ledger entries + usage costs), each archived month leaves one
`adjustment` ledger entry per user and currency carrying its charges, in the same transaction.

CSV, not Parquet: PostgreSQL's own COPY text of every value (numeric and timestamps exact, jsonb
as JSON), readable by any tool (`COPY ... FROM`, DuckDB, pandas), and no new dependency (pyarrow
is ~40 MB). `.csv.gz` compresses it with the standard library.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
LOCK_TIMEOUT = "10s"
# Exit codes, as the rest of the CLI: 1 refused or failed, 2 the database cannot be reached.
REFUSED = 1
UNAVAILABLE = 2


class PartitionError(RuntimeError):
    """A partition command was refused or failed; `exit_code` is the CLI's exit code.
    Nothing was dropped when this is raised."""

    def __init__(self, message: str, exit_code: int = REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Partition:
    name: str
    month: date | None  # None: the default partition
    range_start: datetime | None
    range_end: datetime | None
    is_default: bool
    records: int | None  # None: never analyzed (estimate unknown)
    records_exact: bool
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ensured:
    partition: str
    month: date
    created: bool
    moved: int  # rows moved in from the default partition

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MonthArchive:
    month: str  # YYYY-MM
    partition: str
    rows: int
    cost_sum: Decimal
    first_id: int | None
    last_id: int | None
    ledger_entries: int = 0  # adjustments carrying the month's charges (written on archive)


@dataclass
class ArchiveResult:
    before: str
    file: str
    manifest: str
    dry_run: bool
    months: list[MonthArchive] = field(default_factory=list)
    sha256: str | None = None
    bytes: int | None = None

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.months)

    @property
    def cost_sum(self) -> Decimal:
        return sum((m.cost_sum for m in self.months), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "file": self.file,
            "manifest": self.manifest,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "cost_sum": str(self.cost_sum),
            "sha256": self.sha256,
            "bytes": self.bytes,
            "months": [{**asdict(m), "cost_sum": str(m.cost_sum)} for m in self.months],
        }


# ── connection ───────────────────────────────────────────────────────────────────────────────
@contextmanager
def connect(dsn: str) -> Iterator[psycopg.Connection]:
    """A connection in UTC (archived timestamps read +00). Raises PartitionError (exit 2)."""
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, options="-c timezone=UTC")
    except psycopg.OperationalError as exc:
        raise PartitionError(
            f"cannot connect to the database: {str(exc).strip()}", UNAVAILABLE
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def is_partitioned(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "select c.relkind = 'p' from pg_class c where c.oid = to_regclass('public.usage_records')"
    ).fetchone()
    return bool(row and row[0])


def _require_partitioned(conn: psycopg.Connection) -> None:
    if not is_partitioned(conn):
        raise PartitionError(
            "public.usage_records is not partitioned on this database: apply the migrations "
            "first (`tokenmeter db push`)"
        )


# ── list / ensure ────────────────────────────────────────────────────────────────────────────
def list_partitions(conn: psycopg.Connection, *, exact: bool = False) -> list[Partition]:
    """Every partition, by month, the default one last. Raises PartitionError."""
    _require_partitioned(conn)
    rows = conn.execute(
        "select partition, month, range_start, range_end, is_default, records, records_exact,"
        " bytes from public.usage_partitions(%s)",
        (exact,),
    ).fetchall()
    conn.commit()
    return [Partition(*row) for row in rows]


def ensure(conn: psycopg.Connection, *, months_ahead: int = 3) -> list[Ensured]:
    """Create the partitions of this month and `months_ahead` more (and of any month with rows
    in the default partition, moving them in). Idempotent. Raises PartitionError."""
    _require_partitioned(conn)
    if not 0 <= months_ahead <= 60:
        raise PartitionError(f"--months-ahead must be between 0 and 60, got {months_ahead}")
    rows = conn.execute(
        "select partition, month, created, moved from public.ensure_usage_partitions(%s)",
        (months_ahead,),
    ).fetchall()
    conn.commit()
    return [Ensured(*row) for row in rows]


def ensure_if_installed(dsn: str, *, months_ahead: int = 3) -> list[Ensured] | None:
    """`ensure` on a database that has the partitioned table; None when it does not (yet).
    For `stack start`. Raises PartitionError."""
    with connect(dsn) as conn:
        if not is_partitioned(conn):
            return None
        try:
            return ensure(conn, months_ahead=months_ahead)
        except psycopg.Error as exc:
            raise PartitionError(f"ensure_usage_partitions failed: {exc}") from None


def default_partition_rows(dsn: str) -> int | None:
    """Rows in the default partition (each one an alert), None when usage_records is not
    partitioned there. Raises PartitionError."""
    with connect(dsn) as conn:
        if not is_partitioned(conn):
            return None
        row = conn.execute("select count(*) from private.usage_records_default").fetchone()
        return int(row[0]) if row else 0


# ── archive ─────────────────────────────────────────────────────────────────────────────────
def parse_month(value: str, *, today: date | None = None) -> date:
    """'YYYY-MM' → its first day; refuses a month after the current one (UTC), whose
    preceding months would include the current, still open month. Raises PartitionError."""
    match = MONTH_PATTERN.match(value.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise PartitionError(f"--before must be a month as YYYY-MM, got {value!r}")
    month = date(int(match.group(1)), int(match.group(2)), 1)
    current = (today or datetime.now(UTC).date()).replace(day=1)
    if month > current:
        raise PartitionError(
            f"--before {value} is after the current month ({current:%Y-%m}): only whole months "
            f"that have ended can be archived (at most --before {current:%Y-%m})"
        )
    return month


def manifest_path(file: Path) -> Path:
    return file.with_name(file.name + ".manifest.json")


def _check_target(file: Path) -> None:
    name = file.name.lower()
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        raise PartitionError(f"--to must name a .csv or .csv.gz file, got {file}")
    for path in (file, manifest_path(file)):
        if path.exists():
            raise PartitionError(f"{path} exists: archives are never overwritten")
    if not file.parent.is_dir():
        raise PartitionError(f"{file.parent} is not a directory")


def _columns(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "select a.attname from pg_attribute a where a.attrelid = 'public.usage_records'::regclass"
        " and a.attnum > 0 and not a.attisdropped order by a.attnum"
    ).fetchall()
    return [r[0] for r in rows]


def _month_stats(conn: psycopg.Connection, partition: str) -> tuple[int, Decimal, Any, Any]:
    row = conn.execute(
        sql.SQL("select count(*), coalesce(sum(cost), 0), min(id), max(id) from private.{}").format(
            sql.Identifier(partition)
        )
    ).fetchone()
    assert row is not None
    return int(row[0]), Decimal(row[1]), row[2], row[3]


def archive(
    dsn: str,
    *,
    before: str,
    to: Path,
    dry_run: bool = False,
    today: date | None = None,
    progress: Callable[[str, int, int], None] = lambda _month, _done, _total: None,
) -> ArchiveResult:
    """Archive every whole month before `before` (YYYY-MM) to `to` and drop its partition,
    only once the file reads back identical to the database. `progress(stage, rows_done,
    rows_total)` is called while exporting (stage: the month, YYYY-MM) and once before the
    written, closed file is verified (stage "verify"). Raises PartitionError: nothing is dropped
    then."""
    before_month = parse_month(before, today=today)
    _check_target(to)
    result = ArchiveResult(
        before=f"{before_month:%Y-%m}", file=str(to), manifest=str(manifest_path(to)),
        dry_run=dry_run,
    )  # fmt: skip
    cutoff = datetime(before_month.year, before_month.month, 1, tzinfo=UTC)
    with connect(dsn) as conn:
        _require_partitioned(conn)
        stray = conn.execute(
            "select count(*) from private.usage_records_default where created_at < %s", (cutoff,)
        ).fetchone()
        if stray and stray[0]:
            raise PartitionError(
                f"{stray[0]} usage rows created before {result.before} are in the default "
                "partition: run `tokenmeter usage partitions ensure` to move them into their "
                "months' partitions first"
            )
        partitions = [
            p
            for p in list_partitions(conn)
            if not p.is_default and p.range_end is not None and p.range_end <= cutoff
        ]
        if not partitions:
            return result
        conn.execute(sql.SQL("set lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        try:
            for p in partitions:
                if not dry_run:
                    # Reads and charging go on; the rows cannot change until we commit.
                    conn.execute(
                        sql.SQL("lock table private.{} in share mode").format(
                            sql.Identifier(p.name)
                        )
                    )
                rows, cost_sum, first_id, last_id = _month_stats(conn, p.name)
                assert p.month is not None
                result.months.append(
                    MonthArchive(f"{p.month:%Y-%m}", p.name, rows, cost_sum, first_id, last_id)
                )
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
            raise PartitionError(
                f"could not lock the partitions within {LOCK_TIMEOUT} (a long transaction holds "
                "them): retry later; nothing was written or dropped"
            ) from None
        if dry_run:
            conn.rollback()
            return result
        partial = to.with_name(to.name + ".partial")
        partial_manifest = manifest_path(to).with_name(manifest_path(to).name + ".partial")
        try:
            columns = _columns(conn)
            _export(conn, partial, columns, result, progress)
            progress("verify", result.rows, result.rows)
            result.sha256, result.bytes = _verify(partial, columns, result)
            _drop(conn, result)
            manifest = _manifest(result, columns, to)
            partial_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            _fsync(partial_manifest)
            os.replace(partial, to)
            os.replace(partial_manifest, manifest_path(to))
            _fsync_dir(to.parent)
        except BaseException:
            conn.rollback()
            partial.unlink(missing_ok=True)
            partial_manifest.unlink(missing_ok=True)
            raise
        try:
            conn.commit()
        except psycopg.Error as exc:
            raise PartitionError(
                f"{to} was written and verified, but dropping the partitions failed at commit "
                f"({exc}): they are still in the database"
            ) from None
    return result


def _open_for_write(path: Path, gz: bool) -> io.BufferedIOBase:
    raw = open(path, "xb")  # noqa: SIM115 - closed by the caller
    if gz:
        # mtime 0: the same rows always give the same bytes (and sha256).
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)  # type: ignore[return-value]
    return raw


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz") or path.name.lower().endswith(".gz.partial")


def _export(
    conn: psycopg.Connection,
    path: Path,
    columns: list[str],
    result: ArchiveResult,
    progress: Callable[[str, int, int], None],
) -> None:
    """Rows by month then id, as PostgreSQL's CSV (COPY), under one header line."""
    total = result.rows
    done = 0
    gz = _is_gz(path)
    out = _open_for_write(path, gz)
    raw = out.fileobj if gz else out  # type: ignore[attr-defined]
    try:
        out.write((",".join(columns) + "\n").encode())
        for month in result.months:
            query = sql.SQL(
                "copy (select {} from private.{} order by id) to stdout with (format csv)"
            )
            query = query.format(
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.Identifier(month.partition),
            )
            seen = 0
            with conn.cursor().copy(query) as copy:
                for chunk in copy:
                    data = bytes(chunk)
                    out.write(data)
                    # Newlines approximate rows (a quoted value may hold one); exact at the end.
                    seen = min(month.rows, seen + data.count(b"\n"))
                    progress(month.month, done + seen, total)
            done += month.rows
            progress(month.month, done, total)
        out.flush()
    finally:
        out.close()
        if gz:
            raw.close()
    _fsync(path)


def _verify(path: Path, columns: list[str], result: ArchiveResult) -> tuple[str, int]:
    """Read the file back: its rows and cost sums per month must equal the database's.
    Returns (sha256, size). Raises PartitionError."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    size = path.stat().st_size
    expected = {m.month: m for m in result.months}
    counts: dict[str, int] = {m: 0 for m in expected}
    sums: dict[str, Decimal] = {m: Decimal(0) for m in expected}
    cost_at, created_at = columns.index("cost"), columns.index("created_at")
    opener = gzip.open if _is_gz(path) else open
    with opener(path, "rt", encoding="utf-8", newline="") as text:  # type: ignore[operator]
        reader = csv.reader(text)
        header = next(reader, None)
        if header != columns:
            raise PartitionError(f"verification failed: {path} has another header; nothing dropped")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(columns):
                raise PartitionError(
                    f"verification failed: line {line} of {path} has {len(row)} fields, not "
                    f"{len(columns)}; nothing was dropped"
                )
            month = row[created_at][:7]
            if month not in counts:
                raise PartitionError(
                    f"verification failed: line {line} of {path} was created in {month}, not an "
                    "archived month; nothing was dropped"
                )
            counts[month] += 1
            sums[month] += Decimal(row[cost_at])
    for month, expect in expected.items():
        if counts[month] != expect.rows or sums[month] != expect.cost_sum:
            raise PartitionError(
                f"verification failed for {month}: the file has {counts[month]} rows costing "
                f"{sums[month]}, the database {expect.rows} costing {expect.cost_sum}; nothing "
                "was dropped"
            )
    return digest.hexdigest(), size


def _manifest(result: ArchiveResult, columns: list[str], to: Path) -> dict[str, Any]:
    return {
        "file": to.name,
        "format": "csv.gz" if _is_gz(to) else "csv",
        "sha256": result.sha256,
        "bytes": result.bytes,
        "rows": result.rows,
        # A checksum, not an amount: costs of every currency added up.
        "cost_sum": str(result.cost_sum),
        "columns": columns,
        "table": "public.usage_records",
        "partitioned_on": "created_at (UTC months)",
        "archived_at": datetime.now(UTC).isoformat(),
        "months": [
            {
                "month": m.month,
                "partition": f"private.{m.partition}",
                "rows": m.rows,
                "cost_sum": str(m.cost_sum),
                "first_id": m.first_id,
                "last_id": m.last_id,
                "ledger_adjustments": m.ledger_entries,
            }
            for m in result.months
        ],
    }


def _drop(conn: psycopg.Connection, result: ArchiveResult) -> None:
    """Carry the archived charges into the ledger, free the rows' request ids, then detach and
    drop their partitions (in the caller's transaction). Raises PartitionError when
    usage_records stays locked."""
    try:
        for m in result.months:
            name = sql.Identifier(m.partition)
            # A usage record is its charge's ledger line (balance = ledger + usage, 20261129200001):
            # the month's charges leave with their rows, so one adjustment per user and currency
            # takes their place and balance_audit() stays empty.
            cur = conn.execute(
                sql.SQL(
                    "insert into public.ledger_entries (user_id, kind, amount, currency, reference,"
                    " description)"
                    " select u.user_id, 'adjustment', -sum(coalesce(u.original_cost, u.cost)),"
                    " u.currency, format('usage-archive:%%s:%%s:%%s', %(month)s::text, u.user_id,"
                    " u.currency), format('usage of %%s archived to %%s (%%s records)',"
                    " %(month)s::text, %(file)s::text, count(*))"
                    " from private.{} u group by u.user_id, u.currency"
                    " having sum(coalesce(u.original_cost, u.cost)) <> 0"
                ).format(name),
                {"month": m.month, "file": Path(result.file).name},
            )
            m.ledger_entries = cur.rowcount
            conn.execute(
                sql.SQL(
                    "delete from private.usage_request_ids r using private.{} u"
                    " where r.request_id = u.request_id"
                ).format(name)
            )
            # ACCESS EXCLUSIVE on usage_records until commit: charging waits for a moment.
            conn.execute(
                sql.SQL("alter table public.usage_records detach partition private.{}").format(name)
            )
            conn.execute(sql.SQL("drop table private.{}").format(name))
    except psycopg.errors.LockNotAvailable:
        raise PartitionError(
            f"could not lock usage_records within {LOCK_TIMEOUT} to detach the partitions: "
            "retry later; nothing was dropped"
        ) from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:
        pass  # some filesystems cannot sync a directory; the files themselves are synced
