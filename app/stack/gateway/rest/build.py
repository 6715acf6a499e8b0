"""SQL for each kind of /rest/v1 request, built from parsed parts checked against the cache.

Names from the URL reach SQL only after the schema cache confirmed them, and always through
psycopg.sql.Identifier; values are always bound parameters. Filter values are sent as text of
type `unknown`, so PostgreSQL infers each one's type from the column it is compared with, as
PostgREST does. The JSON response is built by PostgreSQL (`json_agg`) and returned as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from app.stack.gateway.errors import ApiError
from app.stack.gateway.rest import embed as relations
from app.stack.gateway.rest.parse import (
    COMPARISON_OPS,
    FTS_OPS,
    IS_VALUES,
    OTHER_BINARY_OPS,
    Embed,
    Field,
    Filter,
    Logic,
    OrderTerm,
    SelectItem,
    json_index,
)
from app.stack.gateway.rest.schema_cache import CacheMiss, Function, SchemaCache, Table


@dataclass
class Source:
    """What rows come from: a table, or a function call wrapped as a sub-select."""

    from_clause: sql.Composable
    qualifier: sql.Composable
    table: Table | None  # None: columns unknown (function results), PostgreSQL checks them
    from_params: list[Any] = field(default_factory=list)
    # Embeds planned for this source by response key: `rel=not.is.null`, `order=rel(col)`.
    embeds: dict[str, _Planned] = field(default_factory=dict)
    # The whole row as a value (the table's name or alias), for computed fields; None where
    # rows are not of the table's type (a mutation's CTE).
    row_ref: sql.Composable | None = None

    def check_column(self, name: str) -> None:
        """Raises CacheMiss (an ApiError) 400 42703 for a column the cache does not know."""
        if self.table is not None and name not in self.table.columns:
            if self.row_ref is not None and name in self.table.computed:
                return
            raise CacheMiss(400, "42703", f"column {self.table.name}.{name} does not exist")

    def column(self, name: str) -> sql.Composable:
        """A column, or a computed field called with the row (after check_column)."""
        if self.table is not None and name not in self.table.columns:
            fn = self.table.computed[name]
            return sql.SQL("{}({})").format(sql.Identifier(fn.schema, fn.name), self.row_ref)
        return sql.SQL("{}.{}").format(self.qualifier, sql.Identifier(name))


@dataclass
class ReadShape:
    """Everything that shapes the rows read back: select list, filters, order, page."""

    select: tuple[SelectItem | Embed, ...]
    filters: list[Filter | Logic]
    order: tuple[OrderTerm, ...] = ()
    limit: int | None = None
    offset: int | None = None
    # Filters, order and page of embedded resources, by path of response keys.
    embedded: dict[tuple[str, ...], ReadShape] = field(default_factory=dict)
    cache: SchemaCache | None = None  # relationships, needed only when embedding
    csv: bool = False  # `Accept: text/csv`: the body is CSV text (csv_body)
    strip_nulls: bool = False  # `…+json;nulls=stripped`: members that are null are left out


def table_source(table: Table) -> Source:
    ident = sql.Identifier(table.schema, table.name)
    return Source(ident, ident, table, row_ref=sql.Identifier(table.name))


# ── expressions ───────────────────────────────────────────────────────────────────────────
def field_sql(src: Source, fld: Field, params: list[Any]) -> sql.Composable:
    src.check_column(fld.name)
    expr: sql.Composable = src.column(fld.name)
    for arrow, key in fld.path:
        index = json_index(key)
        if index is not None:
            expr = sql.SQL("({} {} {})").format(expr, sql.SQL(arrow), sql.SQL(str(index)))
        else:
            params.append(key)
            expr = sql.SQL("({} {} %s::text)").format(expr, sql.SQL(arrow))
    return expr


def _column_type(src: Source, fld: Field) -> str | None:
    if src.table is None or fld.path:
        return None
    if fld.name not in src.table.columns:
        return src.table.computed[fld.name].return_type
    return src.table.columns[fld.name].type


def filter_sql(src: Source, flt: Filter | Logic, params: list[Any]) -> sql.Composable:
    """One WHERE condition. Raises CacheMiss 42703 for unknown columns."""
    if isinstance(flt, Logic):
        parts = [filter_sql(src, child, params) for child in flt.children]
        joined = (
            sql.SQL(f" {flt.conj} ").join(parts)
            if parts
            else sql.SQL("true" if flt.conj == "and" else "false")
        )
        cond = sql.SQL("({})").format(joined)
        return sql.SQL("not {}").format(cond) if flt.negate else cond
    name = flt.field.name
    if (
        not flt.field.path
        and name in src.embeds
        and (src.table is None or name not in src.table.columns)
    ):
        # `rel=is.null` / `rel=not.is.null`: rows with or without a match in the embed.
        if flt.op != "is" or flt.value not in ("null", "not_null"):
            raise ApiError(
                400,
                "PGRST120",
                f"Bad operator on the '{name}' embedded resource",
                "Only is null or not is null filters are allowed on embedded resources",
            )
        cond = sql.SQL("{}.pgrst_json is {}").format(
            sql.Identifier(src.embeds[name].alias), sql.SQL(IS_VALUES[str(flt.value)])
        )
        return sql.SQL("not ({})").format(cond) if flt.negate else cond
    col = field_sql(src, flt.field, params)
    op = flt.op
    if op == "in":
        assert isinstance(flt.value, tuple)
        if not flt.value:
            cond = sql.SQL("false")
        else:
            params.extend(flt.value)
            cond = sql.SQL("{} in ({})").format(
                col, sql.SQL(", ").join(sql.SQL("%s") for _ in flt.value)
            )
    elif op == "is":
        cond = sql.SQL("{} is {}").format(col, sql.SQL(IS_VALUES[str(flt.value)]))
    elif op in FTS_OPS:
        if _column_type(src, flt.field) not in (None, "tsvector"):
            col = (
                sql.SQL("to_tsvector({})").format(col)
                if flt.config is None
                else sql.SQL("to_tsvector(%s::regconfig, {})").format(col)
            )
            if flt.config is not None:
                params.append(flt.config)
        if flt.config is None:
            query = sql.SQL("{}(%s)").format(sql.SQL(FTS_OPS[op]))
        else:
            params.append(flt.config)
            query = sql.SQL("{}(%s::regconfig, %s)").format(sql.SQL(FTS_OPS[op]))
        params.append(flt.value)
        cond = sql.SQL("{} @@ {}").format(col, query)
    else:
        value = str(flt.value)
        if op in ("like", "ilike"):
            value = value.replace("*", "%")
        params.append(value)
        operator = COMPARISON_OPS.get(op) or OTHER_BINARY_OPS[op]
        if flt.modifier:
            cond = sql.SQL("{} {} {}(%s)").format(col, sql.SQL(operator), sql.SQL(flt.modifier))
        else:
            cond = sql.SQL("{} {} %s").format(col, sql.SQL(operator))
    return sql.SQL("not ({})").format(cond) if flt.negate else cond


def where_sql(src: Source, filters: list[Filter | Logic], params: list[Any]) -> sql.Composable:
    if not filters:
        return sql.SQL("")
    return sql.SQL(" where ") + sql.SQL(" and ").join(filter_sql(src, f, params) for f in filters)


def _column_item(src: Source, item: SelectItem, params: list[Any]) -> sql.Composable:
    if item.aggregate is not None:
        return _aggregate_item(src, item, params)
    if item.field is None:
        return sql.SQL("{}.*").format(src.qualifier)
    expr = field_sql(src, item.field, params)
    if item.cast:
        expr = sql.SQL("cast({} as {})").format(expr, sql.SQL(item.cast))  # regex-checked
    return sql.SQL("{} as {}").format(expr, sql.Identifier(_item_name(item)))


def _aggregate_item(src: Source, item: SelectItem, params: list[Any]) -> sql.Composable:
    """`col.sum()` → `sum(col) as "sum"`, as PostgREST names an aggregate after its function
    (casts are regex-checked type names; the function comes from parse.AGGREGATES)."""
    if item.field is None:
        expr: sql.Composable = sql.SQL("count(*)")
    else:
        arg = field_sql(src, item.field, params)
        if item.input_cast:
            arg = sql.SQL("cast({} as {})").format(arg, sql.SQL(item.input_cast))
        expr = sql.SQL("{}({})").format(sql.SQL(str(item.aggregate)), arg)
    if item.cast:
        expr = sql.SQL("cast({} as {})").format(expr, sql.SQL(item.cast))
    return sql.SQL("{} as {}").format(expr, sql.Identifier(item.alias or str(item.aggregate)))


def has_aggregates(shape: ReadShape) -> bool:
    return any(isinstance(i, SelectItem) and i.aggregate for i in shape.select)


def group_sql(shape: ReadShape) -> sql.Composable:
    """GROUP BY every selected column that is not an aggregate (by position), as PostgREST
    groups an aggregate's rows. Raises ApiError PGRST100 for what the local stack does not
    group: `*` or embedded resources next to an aggregate."""
    if not has_aggregates(shape):
        return sql.SQL("")
    positions = []
    for position, item in enumerate(shape.select, start=1):
        if not isinstance(item, SelectItem) or (item.field is None and not item.aggregate):
            raise ApiError(
                400,
                "PGRST100",
                "failed to parse select parameter",
                "aggregates next to `*` or embedded resources are not supported by the local stack",
            )
        if not item.aggregate:
            positions.append(str(position))
    return sql.SQL(" group by " + ", ".join(positions)) if positions else sql.SQL("")


def _item_name(item: SelectItem) -> str:
    assert item.field is not None
    return item.alias or (item.field.path[-1][1] if item.field.path else item.field.name)


# ── resource embedding ────────────────────────────────────────────────────────────────────
# As PostgREST builds it: each embedded resource is a LATERAL subquery joined to its parent's
# FROM (LEFT JOIN, or INNER JOIN for `!inner`). A to-one embed's subquery yields its row as
# JSON (row_to_json) plus the whole target row for `order=rel(col)`; a to-many embed's
# aggregates its rows (json_agg, `[]` when none). Names reach SQL only through the schema
# cache and sql.Identifier, values only as parameters.
@dataclass
class _Planned:
    """An embed joined to its parent: the LATERAL's alias and what it is."""

    alias: str
    to_one: bool
    origin: str
    target: str


@dataclass
class Selection:
    """A target list with the LATERAL joins it needs, each with its parameters (in the order
    they appear in the SQL text: target list first, joins after the FROM item)."""

    target: sql.Composable
    target_params: list[Any]
    joins: sql.Composable
    join_params: list[Any]


# Beyond this many embeds in one statement, each to-one LATERAL gets an `OFFSET 0` fence.
# PostgreSQL pulls simple LATERAL subqueries up into the parent's join tree, and planning
# that tree grows about quadratically: 100 many-to-one embeds (a 1.5 KB URL) took 1.9 s to
# plan, 280 hit the statement timeout after 8.6 s, holding a connection the whole time. Fenced,
# each is planned on its own: 5 ms for 100, 27 ms for 300. Up to 8 (join_collapse_limit's
# default) the SQL keeps PostgREST's shape and the planner its freedom.
_UNFENCED_EMBEDS = 8


class _Aliases:
    def __init__(self) -> None:
        self.count = 0
        self.fence = False

    def next(self, name: str) -> tuple[str, str]:
        """(LATERAL alias, table alias) unique within one statement."""
        self.count += 1
        return f"pgrst_{self.count}", f"{name}_{self.count}"


def plan_select(
    src: Source,
    shape: ReadShape,
    aliases: _Aliases | None = None,
    path: tuple[str, ...] = (),
) -> Selection:
    """The target list and LATERAL joins for `shape.select` read from `src`.

    Raises CacheMiss 42703 for unknown columns, ApiError PGRST200/201 for relationships, 400
    PGRST108 for `rel.col=` parameters naming no embedded resource."""
    if aliases is None:
        aliases = _Aliases()
        aliases.fence = _count_embeds(shape.select) > _UNFENCED_EMBEDS
    targets: list[sql.Composable] = []
    target_params: list[Any] = []
    joins: list[sql.Composable] = []
    join_params: list[Any] = []
    for item in shape.select:
        if isinstance(item, SelectItem):
            targets.append(_column_item(src, item, target_params))
            continue
        planned, join, params, names = _plan_embed(src, item, shape, aliases, path)
        src.embeds[item.key] = planned
        joins.append(join)
        join_params += params
        lateral = sql.Identifier(planned.alias)
        if names is None:
            value = (
                sql.SQL("{}.pgrst_json").format(lateral)
                if planned.to_one
                else sql.SQL("coalesce({}.pgrst_json, '[]')").format(lateral)
            )
            targets.append(sql.SQL("{} as {}").format(value, sql.Identifier(item.key)))
        else:  # a spread: the embed's columns become the parent's
            targets += [
                sql.SQL("{}.{} as {}").format(lateral, sql.Identifier(n), sql.Identifier(n))
                for n in names
            ]
    if not path:
        _check_embedded_paths(shape)
    return Selection(
        sql.SQL(", ").join(targets) if shape.select else sql.SQL(""),
        target_params,
        sql.SQL("").join(joins),
        join_params,
    )


def _count_embeds(items: tuple[SelectItem | Embed, ...]) -> int:
    """Embeds at every level (iterative: the parser bounds depth, this need not recurse)."""
    count, stack = 0, [items]
    while stack:
        for item in stack.pop():
            if isinstance(item, Embed):
                count += 1
                stack.append(item.select)
    return count


def _check_embedded_paths(shape: ReadShape) -> None:
    """Every `rel.…=` parameter must name an embed of the select (raises 400 PGRST108)."""
    known: set[tuple[str, ...]] = set()

    def walk(items: tuple[SelectItem | Embed, ...], prefix: tuple[str, ...]) -> None:
        for item in items:
            if isinstance(item, Embed):
                known.add((*prefix, item.key))
                walk(item.select, (*prefix, item.key))

    walk(shape.select, ())
    for path in shape.embedded:
        if path not in known:
            raise ApiError(
                400,
                "PGRST108",
                f"'{path[-1]}' is not an embedded resource in this request",
                None,
                f"Verify that '{path[-1]}' is included in the 'select' query parameter.",
            )


def _plan_embed(
    src: Source, item: Embed, shape: ReadShape, aliases: _Aliases, path: tuple[str, ...]
) -> tuple[_Planned, sql.Composable, list[Any], list[str] | None]:
    """(what it is, the LATERAL join, its parameters, spread column names or None)."""
    origin = src.table
    if origin is None or shape.cache is None:
        name = origin.name if origin else "the function result"
        raise ApiError(
            400,
            "PGRST200",
            f"Could not find a relationship between '{name}' and '{item.name}' in the schema cache",
            "Embedding is available on tables and views, not on function results, locally",
        )
    rel = relations.find(shape.cache, origin, item)
    target = shape.cache.tables[rel.target]
    lateral, table_alias = aliases.next(target.name)
    child_path = (*path, item.key)
    sub = shape.embedded.get(child_path) or ReadShape((), [])
    child_shape = ReadShape(
        item.select, sub.filters, sub.order, sub.limit, sub.offset, shape.embedded, shape.cache
    )
    t_ident = sql.Identifier(table_alias)
    child = Source(
        sql.SQL("{} as {}").format(sql.Identifier(target.schema, target.name), t_ident),
        t_ident,
        target,
        row_ref=t_ident,
    )
    selection = plan_select(child, child_shape, aliases, child_path)
    # How target rows join the parent row.
    from_clause: sql.Composable = child.from_clause
    if rel.cardinality == "many-to-many" and rel.junction is not None:
        junction = shape.cache.tables[rel.junction]
        _, j_alias = aliases.next(junction.name)
        j_ident = sql.Identifier(j_alias)
        from_clause = sql.SQL("{} join {} as {} on {}").format(
            from_clause,
            sql.Identifier(junction.schema, junction.name),
            j_ident,
            _equal_all(j_ident, t_ident, rel.junction_target),
        )
        join_cond = _equal_all(j_ident, src.qualifier, rel.junction_origin)
    else:
        # `target.col = parent.col`, PostgREST's order (EXPLAIN output reads the same).
        join_cond = _equal_all(t_ident, src.qualifier, tuple((b, a) for a, b in rel.columns))
    where_params: list[Any] = []
    conds = [join_cond] + [filter_sql(child, f, where_params) for f in child_shape.filters]
    order_params: list[Any] = []
    order = order_sql(child, child_shape.order, order_params)
    fence = rel.to_one and aliases.fence and not child_shape.offset
    body = sql.SQL("{}{} where {}{}{}{}").format(
        from_clause,
        selection.joins,
        sql.SQL(" and ").join(conds),
        order,
        page_sql(child_shape),
        sql.SQL(" offset 0") if fence else sql.SQL(""),
    )
    params = selection.join_params + where_params + order_params
    to_one = rel.to_one
    names = _output_names(target, item.select) if item.spread else None
    target_list = selection.target if item.select else sql.SQL("")
    if to_one:
        if names is None:
            value = sql.SQL("(select row_to_json(pgrst_e) from (select {}) pgrst_e) as pgrst_json")
            value = value.format(target_list)
        else:
            value = sql.SQL("{}, 1 as pgrst_json").format(target_list)
        query = sql.SQL("select {}, {} as pgrst_row from {}").format(value, t_ident, body)
        params = selection.target_params + params
    else:
        if names is None:
            aggregate: sql.Composable = sql.SQL("json_agg(pgrst_e) as pgrst_json")
        else:
            aggregate = sql.SQL(", ").join(
                [
                    sql.SQL("coalesce(json_agg(pgrst_e.{0}), '[]') as {0}").format(
                        sql.Identifier(n)
                    )
                    for n in names
                ]
                + [sql.SQL("1 as pgrst_json")]
            )
        query = sql.SQL("select {} from (select {} from {}) pgrst_e{}").format(
            aggregate,
            target_list,
            body,
            sql.SQL(" having count(*) > 0") if item.inner else sql.SQL(""),
        )
        params = selection.target_params + params
    join = sql.SQL(" {} join lateral ({}) as {} on true").format(
        sql.SQL("inner" if item.inner else "left"), query, sql.Identifier(lateral)
    )
    planned = _Planned(lateral, to_one, origin.name, item.name)
    return planned, join, params, names


def _equal_all(
    left: sql.Composable, right: sql.Composable, pairs: tuple[tuple[str, str], ...]
) -> sql.Composable:
    return sql.SQL(" and ").join(
        sql.SQL("{}.{} = {}.{}").format(left, sql.Identifier(a), right, sql.Identifier(b))
        for a, b in pairs
    )


def _output_names(table: Table, items: tuple[SelectItem | Embed, ...]) -> list[str]:
    """The keys a spread embed contributes to its parent's row."""
    names: list[str] = []
    for item in items:
        if isinstance(item, Embed):
            names.append(item.key)
        elif item.field is None:
            names += list(table.columns)
        else:
            names.append(_item_name(item))
    return names


def _related_order(src: Source, term: OrderTerm) -> sql.Composable:
    """`order=rel(col)`: a column of a to-one embed. Raises ApiError PGRST108/PGRST118."""
    assert term.relation is not None
    planned = src.embeds.get(term.relation)
    if planned is None:
        raise ApiError(
            400,
            "PGRST108",
            f"'{term.relation}' is not an embedded resource in this request",
            None,
            f"Verify that '{term.relation}' is included in the 'select' query parameter.",
        )
    if not planned.to_one:
        raise ApiError(
            400,
            "PGRST118",
            f"A related order on '{planned.target}' is not possible",
            f"'{planned.origin}' and '{planned.target}' do not form a many-to-one or one-to-one "
            "relationship",
        )
    if term.field.path:
        raise ApiError(400, "PGRST100", "failed to parse order (JSON path in a related order)")
    return sql.SQL("({}.pgrst_row).{}").format(
        sql.Identifier(planned.alias), sql.Identifier(term.field.name)
    )


def order_sql(src: Source, terms: tuple[OrderTerm, ...], params: list[Any]) -> sql.Composable:
    if not terms:
        return sql.SQL("")
    parts = []
    for term in terms:
        if term.relation is not None:
            expr = _related_order(src, term)
        else:
            expr = field_sql(src, term.field, params)
        part = expr + sql.SQL(" desc" if term.desc else " asc")
        if term.nulls:
            part += sql.SQL(f" nulls {term.nulls}")
        parts.append(part)
    return sql.SQL(" order by ") + sql.SQL(", ").join(parts)


def page_sql(shape: ReadShape) -> sql.Composable:
    text = ""
    if shape.limit is not None:
        text += f" limit {int(shape.limit)}"
    if shape.offset:
        text += f" offset {int(shape.offset)}"
    return sql.SQL(text)


# ── statements ────────────────────────────────────────────────────────────────────────────
def body_expr(single: bool, rows: str = "_t", strip_nulls: bool = False) -> sql.Composable:
    """The response body column: a JSON array, or the lone object for `.single()`; with
    `strip_nulls`, null object members at every depth are left out (json_strip_nulls)."""
    agg = f"json_strip_nulls(json_agg({rows}))" if strip_nulls else f"json_agg({rows})"
    if single:
        return sql.SQL(f"coalesce(({agg}->0)::text, 'null')")
    return sql.SQL(f"coalesce({agg}, '[]')::text")


def csv_body(rows: str) -> sql.Composable:
    """PostgREST's CSV: a header of the first row's keys, then each row's composite text
    without its parentheses (PostgreSQL quotes values holding commas, quotes or line breaks).
    `rows` names a CTE of the rows, read twice."""
    return sql.SQL(
        "(select coalesce(string_agg(a.k, ','), '') from (select json_object_keys(r)::text as k "
        "from (select row_to_json(hh) as r from {0} as hh limit 1) s) a) || chr(10) || "
        "coalesce(string_agg(substring(_t::text, 2, length(_t::text) - 2), chr(10)), '')"
    ).format(sql.Identifier(rows))


def estimate(src: Source, shape: ReadShape) -> tuple[sql.Composable, list[Any]]:
    """EXPLAIN of the rows a read counts (`Prefer: count=planned|estimated`): the planner's
    estimate is in its JSON plan's "Plan Rows", as PostgREST reads it."""
    selection = plan_select(src, shape)  # `!inner` embeds decide which rows count
    where_params: list[Any] = []
    where = where_sql(src, shape.filters, where_params)
    query = sql.SQL("explain (format json) select 1 from {}{}{}").format(
        src.from_clause, selection.joins, where
    )
    return query, list(src.from_params) + selection.join_params + where_params


def read(
    src: Source,
    shape: ReadShape,
    *,
    count: bool,
    single: bool,
    scalar: bool = False,
    count_limit: int | None = None,
) -> tuple[sql.Composable, list[Any]]:
    """SELECT answering one row: (body text, rows in page, total or null).

    `count_limit`: count at most this many rows (`count=estimated` counts exactly only up to
    max_rows, then asks the planner). Raises CacheMiss 42703 for unknown columns."""
    if scalar:
        selection = Selection(sql.SQL("{}.*").format(src.qualifier), [], sql.SQL(""), [])
    else:
        selection = plan_select(src, shape)
    if not shape.select and not scalar:
        selection.target = sql.SQL("{}.*").format(src.qualifier)
    where_params: list[Any] = []
    where = where_sql(src, shape.filters, where_params)
    order_params: list[Any] = []
    order = order_sql(src, shape.order, order_params)
    # Parameters in the order their placeholders appear in the text.
    from_params = list(src.from_params) + selection.join_params
    params = selection.target_params + from_params + where_params + order_params
    inner = sql.SQL("select {} from {}{}{}{}{}{}").format(
        selection.target,
        src.from_clause,
        selection.joins,
        where,
        group_sql(shape),
        order,
        page_sql(shape),
    )
    rows = "_t.pgrst_scalar" if scalar else "_t"
    total: sql.Composable = sql.SQL("null::bigint")
    if count:
        # The joins stay: `!inner` embeds and `rel=not.is.null` decide which rows count.
        total = sql.SQL("(select count(*) from {}{}{})").format(
            src.from_clause, selection.joins, where
        )
        if count_limit is not None:
            total = sql.SQL("(select count(*) from (select 1 from {}{}{} limit {}) _c)").format(
                src.from_clause, selection.joins, where, sql.Literal(int(count_limit))
            )
    count_params = from_params + where_params if count else []
    if shape.csv and not single:
        # The rows are a CTE read twice (header and lines); the count comes after it.
        query = sql.SQL("with pgrst_rows as ({}) select {}, count(*), {} from pgrst_rows _t")
        return query.format(inner, csv_body("pgrst_rows"), total), params + count_params
    query = sql.SQL("select {}, count(*), {} from ({}) _t").format(
        body_expr(single, rows, shape.strip_nulls), total, inner
    )
    # The count's placeholders come before the page's in the text.
    return query, count_params + params


# Upserts count the rows they insert in a transaction-local setting, as PostgREST does (a
# view has no xmax to tell an inserted row from an updated one): the status is 201 when at
# least one row was inserted, 200 when every row updated an existing one.
_INSERTED_SETTING = "nullif(current_setting('pgrst.inserted', true), '')::int"
_COUNT_OFFERED = sql.SQL(
    f"set_config('pgrst.inserted', (coalesce({_INSERTED_SETTING}, 0) + 1)::text, true) <> '0'"
)
_COUNT_UPDATED = sql.SQL(
    f"set_config('pgrst.inserted', (coalesce({_INSERTED_SETTING}, 0) - 1)::text, true) <> '-1'"
)
INSERTED_SQL = sql.SQL(f"coalesce({_INSERTED_SETTING}, 0)")


def _payload_columns(table: Table, names: list[str]) -> None:
    for name in names:
        if name not in table.columns:
            raise CacheMiss(
                400,
                "PGRST204",
                f"Could not find the '{name}' column of '{table.name}' in the schema cache",
            )


def returning(minimal: bool) -> sql.Composable:
    # `returning 1` needs no SELECT privilege or SELECT policy, as PostgREST's return=minimal.
    return sql.SQL(" returning 1") if minimal else sql.SQL(" returning {}.*")


def wrap_mutation(
    table: Table,
    mutation: sql.Composable,
    params: list[Any],
    shape: ReadShape,
    *,
    minimal: bool,
    single: bool,
    count: bool,
    track_inserted: bool = False,
) -> tuple[sql.Composable, list[Any]]:
    """Run `mutation` in a CTE and answer (body, rows, total, inserted) like `read`.

    `inserted` is the number of rows an upsert built by `insert(merge=True)` inserted rather
    than updated, else null."""
    # The fourth column: rows an upsert inserted (INSERTED_SQL), read once the CTE has run.
    inserted = INSERTED_SQL if track_inserted else sql.SQL("null::int")
    if minimal:
        query = sql.SQL(
            "with pgrst_source as ({}) select null::text, count(*), {}, {} from pgrst_source"
        ).format(mutation, sql.SQL("count(*)") if count else sql.SQL("null::bigint"), inserted)
        return query, params
    src = Source(sql.Identifier("pgrst_source"), sql.Identifier("pgrst_source"), table)
    selection = plan_select(src, shape)
    target = selection.target if shape.select else sql.SQL("pgrst_source.*")
    if shape.csv and not single:
        query = sql.SQL(
            "with pgrst_source as ({}), pgrst_rows as (select {} from pgrst_source{}) "
            "select {}, count(*), {}, {} from pgrst_rows _t"
        ).format(
            mutation,
            target,
            selection.joins,
            csv_body("pgrst_rows"),
            sql.SQL("count(*)") if count else sql.SQL("null::bigint"),
            inserted,
        )
        return query, params + selection.target_params + selection.join_params
    query = sql.SQL(
        "with pgrst_source as ({}) select {}, count(*), {}, {} "
        "from (select {} from pgrst_source{}) _t"
    ).format(
        mutation,
        body_expr(single, strip_nulls=shape.strip_nulls),
        sql.SQL("count(*)") if count else sql.SQL("null::bigint"),
        inserted,
        target,
        selection.joins,
    )
    return query, params + selection.target_params + selection.join_params


def insert(
    table: Table,
    body: str,
    columns: list[str],
    *,
    missing_default: list[str] | None,
    conflict: tuple[str, ...] | None,
    merge: bool,
    minimal: bool,
    keep_only: list[Filter | Logic] | None = None,
) -> tuple[sql.Composable, list[Any]]:
    """INSERT … SELECT from the JSON array `body` (bound once).

    `missing_default`: columns some rows lack, which then take the column's DEFAULT expression.
    `keep_only`: filters each payload row must pass to be written (a PUT's key in the URL).
    Raises CacheMiss PGRST204 for unknown columns."""
    _payload_columns(table, columns)
    ident = sql.Identifier(table.schema, table.name)
    params: list[Any] = []
    if missing_default:
        exprs = []
        for name in columns:
            col = sql.SQL("_p.{}").format(sql.Identifier(name))
            if name in missing_default:
                default = table.columns[name].default
                # The DEFAULT text comes from pg_catalog (pg_get_expr), never from the request.
                params.append(name)
                col = sql.SQL("case when _r.j::jsonb ? %s then {} else {} end").format(
                    col, sql.SQL(default) if default else sql.SQL("null")
                )
            exprs.append(col)
        params.append(body)
        source = sql.SQL(
            "select {} from json_array_elements(%s::json) _r(j), "
            "lateral json_populate_record(null::{}, _r.j) _p"
        ).format(sql.SQL(", ").join(exprs), ident)
    else:
        params.append(body)
        source = sql.SQL("select {} from json_populate_recordset(null::{}, %s::json) _p").format(
            sql.SQL(", ").join(sql.SQL("_p.{}").format(sql.Identifier(c)) for c in columns)
            if columns
            else sql.SQL("1"),
            ident,
        )
    if columns:
        stmt = sql.SQL("insert into {} ({}) {}").format(
            ident, sql.SQL(", ").join(map(sql.Identifier, columns)), source
        )
    else:
        # Objects without keys (`{}`, `[{}, {}]`): one row of defaults each; `[]`: none.
        stmt = sql.SQL("insert into {} select from json_array_elements(%s::json)").format(ident)
        params = [body]
    conditions: list[sql.Composable] = []
    if conflict and merge:
        # The WHERE clauses count inserted rows (INSERTED_SQL): +1 per row offered, -1 per
        # row that updated instead; both are always true.
        conditions.append(_COUNT_OFFERED)
    if keep_only and columns:
        payload_rows = Source(sql.Identifier("_p"), sql.Identifier("_p"), table)
        conditions += [filter_sql(payload_rows, f, params) for f in keep_only]
    elif keep_only:
        conditions.append(sql.SQL("false"))  # rows without columns cannot carry the key
    if conditions:
        stmt += sql.SQL(" where ") + sql.SQL(" and ").join(conditions)
    if conflict:
        _payload_columns(table, list(conflict))
        target = sql.SQL(", ").join(map(sql.Identifier, conflict))
        if merge and columns:
            # Every payload column is set, the conflict key too, as PostgREST does: a payload
            # of only the key is then a no-op UPDATE that returns the row, not a DO NOTHING
            # that returns none.
            stmt += sql.SQL(" on conflict ({}) do update set {} where {}").format(
                target,
                sql.SQL(", ").join(
                    sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in columns
                ),
                _COUNT_UPDATED,
            )
        else:
            stmt += sql.SQL(" on conflict ({}) do nothing").format(target)
    if not minimal:
        return stmt + sql.SQL(" returning {}.*").format(ident), params
    return stmt + returning(True), params


def update(
    table: Table, body: str, columns: list[str], filters: list[Filter | Logic], *, minimal: bool
) -> tuple[sql.Composable, list[Any]]:
    """UPDATE … SET from the JSON object `body`. Raises CacheMiss 42703 for unknown columns."""
    _payload_columns(table, columns)
    src = table_source(table)
    params: list[Any] = [body]
    assignments = sql.SQL(", ").join(
        sql.SQL("{0} = pgrst_body.{0}").format(sql.Identifier(c)) for c in columns
    )
    where = where_sql(src, filters, params)
    stmt = sql.SQL(
        "update {} set {} from json_populate_record(null::{}, %s::json) pgrst_body{}"
    ).format(src.from_clause, assignments, src.from_clause, where)
    if minimal:
        return stmt + returning(True), params
    return stmt + sql.SQL(" returning {}.*").format(src.qualifier), params


def delete(
    table: Table, filters: list[Filter | Logic], *, minimal: bool
) -> tuple[sql.Composable, list[Any]]:
    """DELETE with the request's filters. Raises CacheMiss 42703 for unknown columns."""
    src = table_source(table)
    params: list[Any] = []
    stmt = sql.SQL("delete from {}{}").format(src.from_clause, where_sql(src, filters, params))
    if minimal:
        return stmt + returning(True), params
    return stmt + sql.SQL(" returning {}.*").format(src.qualifier), params


BodyArgument = tuple[str, Any] | None  # (type, value): the body as a lone unnamed argument


def _call_args(
    fn: Function, args: dict[str, Any], body: str, body_arg: BodyArgument
) -> tuple[sql.Composable, sql.Composable, list[Any]]:
    """(arguments, extra FROM items, parameters) of a call to `fn`.

    Named arguments are read from the JSON object `body` through json_to_record with the
    catalog's types, as PostgREST does, so every value is one bound parameter whatever its
    type. A function of one unnamed parameter gets the body itself (`body_arg`)."""
    if body_arg is not None:
        arg_type, value = body_arg  # the type is the catalog's format_type, never the request's
        return sql.SQL("%s::{}").format(sql.SQL(arg_type)), sql.SQL(""), [value]
    call_args = [a for a in fn.args if a.name in args]
    if not call_args:
        return sql.SQL(""), sql.SQL(""), []
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(a.name), sql.SQL(a.type)) for a in call_args
    )
    named = sql.SQL(", ").join(
        sql.SQL("{0} := _a.{0}").format(sql.Identifier(a.name)) for a in call_args
    )
    return named, sql.SQL("json_to_record(%s::json) as _a({})").format(columns), [body]


def call_scalar(
    fn: Function, args: dict[str, Any], body: str, body_arg: BodyArgument = None
) -> tuple[sql.Composable, list]:
    """A non-set, non-composite function: its value as JSON text (or nothing for VOID)."""
    call, from_items, params = _call_args(fn, args, body, body_arg)
    name = sql.Identifier(fn.schema, fn.name)
    query = sql.SQL("select coalesce(to_json({}({}))::text, 'null'), 1, null::bigint").format(
        name, call
    )
    if from_items.as_string(None):
        query += sql.SQL(" from {}").format(from_items)
    return query, params


def function_source(
    fn: Function, args: dict[str, Any], body: str, body_arg: BodyArgument = None
) -> Source:
    """Rows of a set-returning or composite function, as a sub-select named pgrst_src."""
    call, from_items, params = _call_args(fn, args, body, body_arg)
    alias = "pgrst_scalar" if not fn.returns_composite else "pgrst_f"
    name = sql.Identifier(fn.schema, fn.name)
    if from_items.as_string(None):
        items = sql.SQL("{}, lateral {}({})").format(from_items, name, call)
    else:
        items = sql.SQL("{}({})").format(name, call)
    sub = sql.SQL("(select {}.* from {} as {}) pgrst_src").format(
        sql.Identifier(alias), items, sql.Identifier(alias)
    )
    return Source(sub, sql.Identifier("pgrst_src"), None, params)
