"""The schema cache: what /rest/v1 may expose, read from pg_catalog once and on `NOTIFY pgrst`.

Every name that arrives in a URL (table, column, function, argument) is checked against this
cache before any SQL is built, so unknown names get PostgREST's 404/400 without a round trip and
nothing from the URL is ever spliced into SQL unchecked. The cache is rebuilt when the bootstrap's
event trigger sends `NOTIFY pgrst, 'reload schema'` (any DDL), as PostgREST does on Supabase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from app.stack.gateway.errors import ApiError

log = logging.getLogger(__name__)


class CacheMiss(ApiError):
    """A name the schema cache does not know (404 PGRST205/PGRST202, 400 42703/PGRST204).

    Handlers retry once after refreshing the cache, so DDL committed a moment ago is seen."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): usable as SQL text, it comes from the catalog
    default: str | None  # pg_get_expr() of the DEFAULT, SQL text from the catalog
    generated: bool


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    is_view: bool
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    # Column sets of the primary key and UNIQUE constraints: an FK over one is one-to-one.
    unique_keys: tuple[frozenset[str], ...] = ()
    # Computed fields: functions of one parameter of this table's row type, selected,
    # filtered and ordered on like columns (PostgREST's computed fields).
    computed: dict[str, Function] = field(default_factory=dict)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: tuple[str, str]  # (schema, name) of the referencing table
    columns: tuple[str, ...]
    ftable: tuple[str, str]  # the referenced table
    fcolumns: tuple[str, ...]


@dataclass(frozen=True)
class Relationship:
    """A way to embed `target` in rows of `origin`, as PostgREST detects them from FKs.

    `columns` pairs (origin column, target column) for many-to-one, one-to-many and one-to-one;
    a many-to-many goes through `junction`, with (junction column, origin column) pairs in
    `junction_origin` and (junction column, target column) pairs in `junction_target`."""

    origin: tuple[str, str]
    target: tuple[str, str]
    cardinality: str  # "many-to-one", "one-to-many", "one-to-one", "many-to-many"
    constraint: str
    columns: tuple[tuple[str, str], ...] = ()
    junction: tuple[str, str] | None = None
    junction_constraints: tuple[str, str] = ("", "")
    junction_origin: tuple[tuple[str, str], ...] = ()
    junction_target: tuple[tuple[str, str], ...] = ()

    @property
    def to_one(self) -> bool:
        return self.cardinality in ("many-to-one", "one-to-one")

    @property
    def is_self(self) -> bool:
        return self.origin == self.target


@dataclass(frozen=True)
class Argument:
    name: str
    type: str
    has_default: bool


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    args: tuple[Argument, ...]
    return_type: str
    returns_set: bool
    returns_composite: bool  # a row type, RECORD or OUT/TABLE columns: rows become objects
    returns_void: bool
    volatility: str  # 'i', 's' or 'v'

    @property
    def required(self) -> frozenset[str]:
        return frozenset(a.name for a in self.args if not a.has_default)

    @property
    def arg_names(self) -> frozenset[str]:
        return frozenset(a.name for a in self.args)


@dataclass
class SchemaCache:
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)
    functions: dict[tuple[str, str], list[Function]] = field(default_factory=dict)
    # PostgREST's db-plan-enabled, from its in-database configuration: as on Supabase,
    # `alter role authenticator set pgrst.db_plan_enabled to 'true'; notify pgrst, 'reload
    # config';` turns on `Accept: application/vnd.pgrst.plan` (EXPLAIN). Off by default.
    plan_enabled: bool = False
    # PostgREST's db-aggregates-enabled (`select=amount.sum()`), off by default, set the same way.
    aggregates_enabled: bool = False
    # PostgREST's db-tx-end: commit | commit-allow-override | rollback | rollback-allow-override
    # (the -allow-override kinds honour `Prefer: tx=commit|rollback`).
    tx_end: str = "commit"
    # Embeddable relationships by origin table (relationships()).
    relationships: dict[tuple[str, str], list[Relationship]] = field(default_factory=dict)
    # ALTER ROLE … SET of the API roles (e.g. anon's statement_timeout), applied per request
    # after SET ROLE as PostgREST does: SET ROLE alone does not apply them.
    role_settings: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


_TABLES_SQL = """
select c.oid, n.nspname, c.relname, c.relkind in ('v', 'm') as is_view
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'v', 'm', 'f', 'p')
"""

_COLUMNS_SQL = """
select a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
       pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> ''
from pg_attribute a
join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'v', 'm', 'f', 'p')
  and a.attnum > 0 and not a.attisdropped
order by a.attrelid, a.attnum
"""

_PKEYS_SQL = """
select con.conrelid, con.contype = 'p', array_agg(a.attname order by k.ord)
from pg_constraint con
join pg_namespace n on n.oid = con.connamespace
cross join lateral unnest(con.conkey) with ordinality k(attnum, ord)
join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
where con.contype in ('p', 'u') and n.nspname = any(%(schemas)s)
group by con.oid, con.conrelid, con.contype
"""

# Foreign keys between tables of the exposed schemas (both ends exposed, as PostgREST).
_FKEYS_SQL = """
select con.conname, n.nspname, c.relname,
       array(select a.attname from unnest(con.conkey) with ordinality k(attnum, ord)
             join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
             order by k.ord),
       fn.nspname, fc.relname,
       array(select a.attname from unnest(con.confkey) with ordinality k(attnum, ord)
             join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum
             order by k.ord)
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_class fc on fc.oid = con.confrelid
join pg_namespace fn on fn.oid = fc.relnamespace
where con.contype = 'f' and n.nspname = any(%(schemas)s) and fn.nspname = any(%(schemas)s)
order by con.conname
"""

# Input arguments only (modes i, b, v); OUT/TABLE columns make the result composite.
_FUNCTIONS_SQL = """
select n.nspname, p.proname,
       coalesce(array(
         select coalesce(p.proargnames[i], '')
         from generate_series(1, coalesce(array_length(p.proallargtypes, 1), p.pronargs)) i
         where coalesce(p.proargmodes[i], 'i') in ('i', 'b', 'v')
         order by i), '{}'),
       coalesce(array(
         select format_type(p.proargtypes[i], null)
         from generate_series(0, p.pronargs - 1) i order by i), '{}'),
       p.pronargdefaults, format_type(p.prorettype, null), p.proretset,
       (rt.typtype = 'c' or p.prorettype = 'record'::regtype) as composite,
       p.prorettype = 'void'::regtype, p.provolatile,
       case when p.pronargs = 1
            then (select c.oid from pg_class c where c.reltype = p.proargtypes[0]) end
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type rt on rt.oid = p.prorettype
where n.nspname = any(%(schemas)s) and p.prokind = 'f'
"""


# Only settings a plain role may change at run time (context 'user'), so none can fail.
_ROLE_SETTINGS_SQL = """
select r.rolname, split_part(c, '=', 1), substr(c, strpos(c, '=') + 1)
from pg_db_role_setting s
join pg_roles r on r.oid = s.setrole
cross join lateral unnest(s.setconfig) c
where r.rolname in ('anon', 'authenticated', 'service_role')
  and s.setdatabase in (0, (select oid from pg_database where datname = current_database()))
  and split_part(c, '=', 1) in (select name from pg_settings where context = 'user')
order by r.rolname, s.setdatabase
"""


# The connecting role's own `pgrst.*` settings (PostgREST's in-database configuration), the
# database-specific ones last so that they win, as PostgREST reads its config.
_PGRST_SETTINGS_SQL = """
select split_part(c, '=', 1), substr(c, strpos(c, '=') + 1)
from pg_db_role_setting s
join pg_roles r on r.oid = s.setrole
cross join lateral unnest(s.setconfig) c
where r.rolname = current_user and split_part(c, '=', 1) like 'pgrst.%%'
  and s.setdatabase in (0, (select oid from pg_database where datname = current_database()))
order by s.setdatabase
"""


def _flag(settings: dict[str, str], name: str) -> bool:
    return settings.get(name, "").strip().lower() in ("true", "on", "1")


async def load(
    conn: psycopg.AsyncConnection[Any], schemas: tuple[str, ...] = ("public",)
) -> SchemaCache:
    """Read the exposed schemas' tables, views, columns, keys and functions from pg_catalog."""
    # format_type() qualifies names not on the search_path; use the one requests run with.
    params = {"schemas": list(schemas)}
    async with conn.transaction():
        await conn.execute("set local search_path = public, extensions")
        rels = await (await conn.execute(_TABLES_SQL, params)).fetchall()
        cols = await (await conn.execute(_COLUMNS_SQL, params)).fetchall()
        pkeys = await (await conn.execute(_PKEYS_SQL, params)).fetchall()
        fkeys = await (await conn.execute(_FKEYS_SQL, params)).fetchall()
        funcs = await (await conn.execute(_FUNCTIONS_SQL, params)).fetchall()
        role_rows = await (await conn.execute(_ROLE_SETTINGS_SQL)).fetchall()
        pgrst_rows = await (await conn.execute(_PGRST_SETTINGS_SQL)).fetchall()
    columns: dict[int, dict[str, Column]] = {}
    for relid, name, typ, default, generated in cols:
        columns.setdefault(relid, {})[name] = Column(name, typ, default, generated)
    keys = {relid: tuple(names) for relid, primary, names in pkeys if primary}
    uniques: dict[int, list[frozenset[str]]] = {}
    for relid, _primary, names in pkeys:
        uniques.setdefault(relid, []).append(frozenset(names))
    cache = SchemaCache()
    for relid, schema, name, is_view in rels:
        cache.tables[(schema, name)] = Table(
            schema,
            name,
            is_view,
            columns.get(relid, {}),
            keys.get(relid, ()),
            tuple(uniques.get(relid, ())),
        )
    foreign = [
        ForeignKey(con, (sch, tbl), tuple(cols), (fsch, ftbl), tuple(fcols))
        for con, sch, tbl, cols, fsch, ftbl, fcols in fkeys
    ]
    cache.relationships = relationships(cache.tables, foreign)
    by_oid = {relid: (schema, name) for relid, schema, name, _ in rels}
    for (
        schema,
        name,
        names,
        types,
        ndefaults,
        rettype,
        retset,
        composite,
        void,
        vol,
        row_of,
    ) in funcs:
        if len(names) != len(types) or (any(n == "" for n in names) and len(types) != 1):
            # Unnamed parameters cannot be called with named JSON arguments; a single one
            # (json, jsonb, text, xml, bytea) takes the whole body, as PostgREST allows.
            continue
        first_default = len(types) - ndefaults
        args = tuple(
            Argument(n, t, i >= first_default) for i, (n, t) in enumerate(zip(names, types))
        )
        fn = Function(schema, name, args, rettype, retset, composite, void, vol)
        cache.functions.setdefault((schema, name), []).append(fn)
        table = cache.tables.get(by_oid.get(row_of, ("", "")))
        if table is not None and not retset and not composite and not void:
            table.computed[name] = fn
    by_role: dict[str, dict[str, str]] = {}
    for role, key, value in role_rows:
        by_role.setdefault(role, {})[key] = value  # database-specific rows come last and win
    cache.role_settings = {role: tuple(kv.items()) for role, kv in by_role.items()}
    pgrst = dict(pgrst_rows)
    cache.plan_enabled = _flag(pgrst, "pgrst.db_plan_enabled")
    cache.aggregates_enabled = _flag(pgrst, "pgrst.db_aggregates_enabled")
    cache.tx_end = pgrst.get("pgrst.db_tx_end", "commit").strip().lower()
    return cache


def relationships(
    tables: dict[tuple[str, str], Table], fks: list[ForeignKey]
) -> dict[tuple[str, str], list[Relationship]]:
    """Every embeddable relationship, by origin, as PostgREST derives them from FKs: each FK
    is a many-to-one from its table and a one-to-many back (one-to-one both ways when the FK
    columns are the table's primary key or a UNIQUE constraint), and a table whose primary
    key holds the columns of two FKs joins their targets many-to-many."""
    out: dict[tuple[str, str], list[Relationship]] = {}

    def add(rel: Relationship) -> None:
        out.setdefault(rel.origin, []).append(rel)

    by_table: dict[tuple[str, str], list[ForeignKey]] = {}
    for fk in fks:
        if fk.table not in tables or fk.ftable not in tables:
            continue
        by_table.setdefault(fk.table, []).append(fk)
        one = frozenset(fk.columns) in tables[fk.table].unique_keys
        pairs = tuple(zip(fk.columns, fk.fcolumns))
        add(
            Relationship(
                fk.table, fk.ftable, "one-to-one" if one else "many-to-one", fk.name, pairs
            )
        )
        add(
            Relationship(
                fk.ftable,
                fk.table,
                "one-to-one" if one else "one-to-many",
                fk.name,
                tuple((b, a) for a, b in pairs),
            )
        )
    for junction, jfks in by_table.items():
        pk = frozenset(tables[junction].primary_key)
        for fk1 in jfks:
            for fk2 in jfks:
                if fk1 is fk2 or not frozenset(fk1.columns + fk2.columns) <= pk:
                    continue
                add(
                    Relationship(
                        fk1.ftable,
                        fk2.ftable,
                        "many-to-many",
                        junction[1],
                        junction=junction,
                        junction_constraints=(fk1.name, fk2.name),
                        junction_origin=tuple(zip(fk1.columns, fk1.fcolumns)),
                        junction_target=tuple(zip(fk2.columns, fk2.fcolumns)),
                    )
                )
    return out


class SchemaCacheHolder:
    """The current cache, plus the LISTEN task that reloads it on `NOTIFY pgrst`."""

    def __init__(
        self, pool: AsyncConnectionPool, listen_dsn: str, schemas: tuple[str, ...] = ("public",)
    ) -> None:
        self.pool = pool
        self.schemas = schemas
        self.listen_dsn = listen_dsn
        self.cache = SchemaCache()
        self.generation = 0
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_forced = 0.0

    def on_reload(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    async def reload(self) -> None:
        """Load a fresh cache and swap it in (callers keep the old one until it is ready)."""
        async with self.pool.connection() as conn:
            cache = await load(conn, self.schemas)
        self.cache = cache
        self.generation += 1
        for callback in self._listeners:
            callback()

    async def settled(self) -> SchemaCache:
        """The cache once any reload already announced by NOTIFY has finished.

        Handlers call this before answering "not found", so a request made right after a
        migration committed sees the migration even if the reload is still running.
        """
        if self._dirty.is_set() or not self._idle.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wait_clean(), timeout=5)
        return self.cache

    async def refresh_after_miss(self) -> SchemaCache:
        """The cache after a name was not found: wait for a pending reload, or force one.

        NOTIFY may reach us a moment after the migration's COMMIT, so a miss right after DDL
        reloads at once. Forced reloads are at most one per second, so unknown names cannot
        be used to hammer the catalog; within that second a miss waits briefly for the NOTIFY
        of DDL that has just committed instead (a rate limit must not hide a real change)."""
        if not self._dirty.is_set() and self._idle.is_set():
            now = time.monotonic()
            if now - self._last_forced < 1.0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), timeout=0.25)
                return await self.settled()
            self._last_forced = now
            self._dirty.set()
            await asyncio.sleep(0)
        return await self.settled()

    async def _wait_clean(self) -> None:
        while self._dirty.is_set() or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self.reload()
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._reloader())]
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _listen(self) -> None:
        # A dedicated autocommit connection: LISTEN must not sit inside a pooled transaction.
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.listen_dsn, autocommit=True
                ) as conn:
                    await conn.execute("listen pgrst")
                    self._dirty.set()  # anything may have changed while we were not listening
                    async for notify in conn.notifies():
                        if notify.payload in ("", "reload schema", "reload config"):
                            self._dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep listening whatever happened
                log.exception("schema cache listener failed; reconnecting")
                await asyncio.sleep(1)

    async def _reloader(self) -> None:
        while True:
            await self._dirty.wait()
            self._idle.clear()
            self._dirty.clear()  # notifications arriving during the load trigger another one
            try:
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("schema cache reload failed")
                await asyncio.sleep(1)
            finally:
                self._idle.set()
