"""PostgREST's URL grammar: `select=`, `col=op.value` filters, `or=(…)`/`and=(…)` trees, `order=`.

Parsing only: the result is plain data that build.py checks against the schema cache and turns
into SQL. Anything malformed raises ApiError 400 PGRST100 with PostgREST's message style
("failed to parse filter (…)"), never lets an exception escape as a 500.

Hostile input stays cheap (docs/limits.md): numbers are ASCII digits only, as in PostgREST's
Haskell parser (Python's isdigit()/int() also take "²" or "٣"); a value nests at most MAX_NESTING
parentheses, refused while scanning, before any other work; and every value is scanned once, so
parsing is linear in the URL (itself capped by the HTTP server) and never recurses deeper than
MAX_NESTING.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.stack.gateway.errors import ApiError

# Operators and the SQL they become (build.py); grouped by what their value looks like.
COMPARISON_OPS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "like": "like",
    "ilike": "ilike",
    "match": "~",
    "imatch": "~*",
}
OTHER_BINARY_OPS = {
    "isdistinct": "is distinct from",
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
    "sl": "<<",
    "sr": ">>",
    "nxr": "&<",
    "nxl": "&>",
    "adj": "-|-",
}
FTS_OPS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
ALL_OPS = frozenset({*COMPARISON_OPS, *OTHER_BINARY_OPS, *FTS_OPS, "in", "is"})
IS_VALUES = {
    "null": "null",
    "not_null": "not null",
    "true": "true",
    "false": "false",
    "unknown": "unknown",
}
RESERVED = frozenset(
    {
        "select",
        "order",
        "limit",
        "offset",
        "on_conflict",
        "columns",
        "or",
        "and",
        "not.or",
        "not.and",
    }
)

# A field name: anything but the grammar's punctuation; PostgREST allows spaces and more.
_NAME = r'(?:"(?:[^"\\]|\\.)+"|[^.,:()"\->\s][^.,:()"\->]*)'
_FIELD_RE = re.compile(rf"^(?P<name>{_NAME})(?P<path>(?:->>?(?:{_NAME}))*)$")
_PATH_RE = re.compile(rf"(->>?)({_NAME})")
_CAST_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?: [A-Za-z_][A-Za-z0-9_]*)*(?:\[\])?$")
_OP_RE = re.compile(r"^(?P<op>[a-z]+)(?:\((?P<arg>[^()]*)\))?$")
# Where a scan of a value has to look: the rest is plain text.
_STRUCTURE = re.compile(r'[(),"\\{}]')

# Parentheses one parameter value may nest (logic trees, `in` lists, operator arguments), and
# steps of one JSON path. PostgREST's parser has no fixed bound; ours, the SQL built from it and
# PostgreSQL's own parser recurse once per level.
MAX_NESTING = 32
# limit/offset: PostgreSQL takes a bigint; 18 digits always fit one.
MAX_COUNT_DIGITS = 18
# JSON array indexes (`->2`) are PostgreSQL ints.
_MAX_JSON_INDEX = 2**31 - 1


def parse_error(what: str, raw: str, details: str) -> ApiError:
    return ApiError(400, "PGRST100", f"failed to parse {what} ({raw})", details)


@dataclass(frozen=True)
class Field:
    """A column, optionally followed by JSON path steps: (arrow, key) pairs."""

    name: str
    path: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SelectItem:
    field: Field | None  # None means `*` (or, with aggregate "count", `count()`)
    alias: str | None = None
    cast: str | None = None  # of the value selected (for an aggregate, of its result)
    aggregate: str | None = None  # sum, avg, max, min, count: `col.sum()`, `count()`
    input_cast: str | None = None  # `col::int.sum()`: the column's cast before aggregating


@dataclass(frozen=True)
class Embed:
    """A related table in `select=`: `[...][alias:]name[!hint][!inner|!left](items)`."""

    name: str  # a table, or (as PostgREST still allows) an FK's constraint or column name
    select: tuple[SelectItem | Embed, ...]
    alias: str | None = None
    hint: str | None = None
    inner: bool = False
    spread: bool = False

    @property
    def key(self) -> str:
        """How the embed is named in the response and in `key.col=` filters."""
        return self.alias or self.name


@dataclass(frozen=True)
class Filter:
    field: Field
    op: str
    value: str | tuple[str, ...]  # a tuple for `in`
    negate: bool = False
    modifier: str | None = None  # any / all
    config: str | None = None  # full-text search configuration


@dataclass(frozen=True)
class Logic:
    conj: str  # "and" / "or"
    children: tuple[Filter | Logic, ...]
    negate: bool = False


@dataclass(frozen=True)
class OrderTerm:
    field: Field
    desc: bool = False
    nulls: str | None = None  # "first" / "last"
    relation: str | None = None  # `order=rel(col)`: a column of a to-one embed


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name.strip()


def parse_field(raw: str, what: str, whole: str) -> Field:
    """`col` or `col->a->>b`. Raises ApiError PGRST100."""
    match = _FIELD_RE.match(raw.strip())
    if not match:
        raise parse_error(what, whole, f'unexpected field "{raw}"')
    path = tuple((arrow, _unquote(key)) for arrow, key in _PATH_RE.findall(match["path"]))
    if len(path) > MAX_NESTING:
        raise parse_error(what, whole, f"JSON path longer than {MAX_NESTING} steps")
    return Field(_unquote(match["name"]), path)


def is_ascii_digits(text: str) -> bool:
    """Whether `text` is one or more of 0-9 (str.isdigit() also takes "²", "٣", "１")."""
    return text.isascii() and text.isdigit()


def json_index(key: str) -> int | None:
    """The array index a JSON path step `->key` means (`->0`, `->-1`), or None for a key."""
    digits = key[1:] if key.startswith("-") else key
    if not is_ascii_digits(digits) or len(digits) > 10:
        return None
    index = int(key)
    return index if -_MAX_JSON_INDEX <= index <= _MAX_JSON_INDEX else None


@dataclass
class _Scan:
    """One pass over a value: the position of each parenthesis' partner and where each group
    (and the top level, key -1) has its commas, ignoring those inside double quotes."""

    partner: dict[int, int]
    commas: dict[int, list[int]]
    # The `(` directly inside each group (key -1: the top level), in order.
    openings: dict[int, list[int]]


def _scan(text: str, what: str, whole: str, arrays: bool = False) -> _Scan:
    """Raises ApiError PGRST100 for unbalanced input or nesting deeper than MAX_NESTING.

    `arrays`: commas inside `{…}` (array literals in logic trees, `tags.cs.{a,b}`) do not
    split; braces are only counted, never recursed into."""
    partner: dict[int, int] = {}
    braces = 0
    commas: dict[int, list[int]] = {-1: []}
    openings: dict[int, list[int]] = {-1: []}
    opened: list[int] = []
    quoted = False
    escaped_at = -1
    for match in _STRUCTURE.finditer(text):
        i = match.start()
        ch = text[i]
        if i == escaped_at:
            continue
        if quoted:
            if ch == "\\":
                escaped_at = i + 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "{":
            braces += arrays
        elif ch == "}":
            braces -= braces > 0
        elif braces:
            continue
        elif ch == "(":
            if len(opened) == MAX_NESTING:
                raise parse_error(
                    what, whole, f"parentheses nested deeper than {MAX_NESTING} levels"
                )
            openings[opened[-1] if opened else -1].append(i)
            opened.append(i)
            commas[i] = []
            openings[i] = []
        elif ch == ")":
            if not opened:
                raise parse_error(what, whole, 'unexpected ")"')
            partner[opened.pop()] = i
        elif ch == ",":
            commas[opened[-1] if opened else -1].append(i)
    if quoted or opened:
        raise parse_error(what, whole, "unexpected end of input")
    return _Scan(partner, commas, openings)


def _split(cuts: list[int], start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each piece of [start, end) between the commas at `cuts`."""
    bounds = [start - 1, *cuts, end]
    return [(bounds[k] + 1, bounds[k + 1]) for k in range(len(bounds) - 1)]


def split_top(text: str, what: str, whole: str) -> list[str]:
    """Split on commas outside parentheses and double quotes. Raises ApiError PGRST100."""
    scan = _scan(text, what, whole)
    return [text[a:b] for a, b in _split(scan.commas[-1], 0, len(text))]


# ── select ────────────────────────────────────────────────────────────────────────────────
def parse_select(raw: str) -> tuple[SelectItem | Embed, ...]:
    """`*,a,alias:b,c::text,d->e,rel!hint!inner(x,sub(y)),...one(z)`. Raises ApiError PGRST100.

    One scan of the whole value finds every group; each embed's items are parsed from that
    scan, so nesting costs no re-scanning and recursion stays within MAX_NESTING."""
    scan = _scan(raw, "select parameter", raw)
    return _select_group(raw, scan, -1, 0, len(raw))


def _select_group(
    raw: str, scan: _Scan, group: int, start: int, end: int
) -> tuple[SelectItem | Embed, ...]:
    items: list[SelectItem | Embed] = []
    openings = scan.openings[group]
    k = 0
    pieces = _split(scan.commas[group], start, end)
    if start == end:
        return ()  # `rel()`: an embed with no columns
    for a, b in pieces:
        while k < len(openings) and openings[k] < a:
            k += 1
        aggregate = _aggregate_item(raw, raw[a:b])
        if aggregate is not None:
            items.append(aggregate)
        elif k < len(openings) and openings[k] < b:
            items.append(_embed(raw, scan, a, openings[k], b))
        else:
            items.append(_select_item(raw, raw[a:b]))
    return tuple(items)


def _embed(raw: str, scan: _Scan, a: int, opening: int, b: int) -> Embed:
    closing = scan.partner[opening]
    if raw[closing + 1 : b].strip():
        raise parse_error("select parameter", raw, f'unexpected "{raw[closing + 1 : b][:20]}"')
    head = raw[a:opening].strip()
    spread = head.startswith("...")
    if spread:
        head = head[3:]
    alias: str | None = None
    before, colon, after = head.partition(":")
    if colon:
        alias, head = _unquote(before), after
    name, *modifiers = (_unquote(p) for p in head.split("!"))
    hint: str | None = None
    inner = False
    for modifier in modifiers:
        if modifier in ("inner", "left"):
            inner = modifier == "inner"
        elif hint is None and modifier:
            hint = modifier
        else:
            raise parse_error("select parameter", raw, f'unexpected "!{modifier[:20]}"')
    if not name or (colon and not alias):
        raise parse_error("select parameter", raw, "unexpected empty embedded resource name")
    select = _select_group(raw, scan, opening, opening + 1, closing)
    return Embed(name, select, alias, hint, inner, spread)


AGGREGATES = ("sum", "avg", "max", "min", "count")
_AGGREGATE_RE = re.compile(
    r"^\s*(?:(?P<alias>[^:()]+):(?!:))?"
    r"(?:(?P<field>[^()]+?)(?:::(?P<incast>[^.():]+))?\.(?P<fn>sum|avg|max|min|count)|(?P<count>count))"
    r"\(\)(?:::(?P<cast>[^()]+))?\s*$"
)


def _aggregate_item(raw: str, part: str) -> SelectItem | None:
    """`[alias:]col[::type].fn()[::type]` or `[alias:]count()[::type]` (PostgREST's
    aggregate functions); None when `part` is not one. Raises ApiError PGRST100."""
    found = _AGGREGATE_RE.match(part)
    if found is None:
        return None
    casts = [found["incast"], found["cast"]]
    for cast in casts:
        if cast is not None and not _CAST_RE.match(cast.strip()):
            raise parse_error("select parameter", raw, f'unexpected cast "{cast}"')
    alias = _unquote(found["alias"]) if found["alias"] else None
    if found["count"]:
        return SelectItem(None, alias, found["cast"] and found["cast"].strip(), "count")
    fld = parse_field(found["field"].strip(), "select parameter", raw)
    return SelectItem(
        fld,
        alias,
        found["cast"] and found["cast"].strip(),
        found["fn"],
        found["incast"] and found["incast"].strip(),
    )


def _select_item(raw: str, part: str) -> SelectItem:
    part = part.strip()
    if not part:
        raise parse_error("select parameter", raw, "unexpected empty select item")
    if part == "*":
        return SelectItem(None)
    alias: str | None = None
    cast: str | None = None
    if "::" in part:
        part, cast = part.rsplit("::", 1)
        if not _CAST_RE.match(cast.strip()):
            raise parse_error("select parameter", raw, f'unexpected cast "{cast}"')
        cast = cast.strip()
    head, sep, rest = part.partition(":")
    if sep:
        alias, part = _unquote(head), rest
        if not alias:
            raise parse_error("select parameter", raw, "unexpected empty alias")
    return SelectItem(parse_field(part, "select parameter", raw), alias, cast)


# ── filters ───────────────────────────────────────────────────────────────────────────────
def parse_filter(field: Field, expr: str, whole: str) -> Filter:
    """`[not.]op[(modifier|config)].value` for `field`. Raises ApiError PGRST100."""
    negate = False
    rest = expr
    if rest.startswith("not."):
        negate, rest = True, rest[4:]
    op_text, dot, value = rest.partition(".")
    match = _OP_RE.match(op_text)
    if not dot or not match or match["op"] not in ALL_OPS:
        raise parse_error(
            "filter",
            whole,
            f'unexpected "{op_text[:20]}" expecting "not" or operator (eq, gt, ...)',
        )
    op, arg = match["op"], match["arg"]
    modifier = config = None
    if arg is not None:
        if op in FTS_OPS:
            config = arg
        elif op in COMPARISON_OPS and arg in ("any", "all"):
            modifier = arg
        else:
            raise parse_error("filter", whole, f'unexpected "({arg})" after "{op}"')
    if op == "in":
        return Filter(field, op, parse_list(value, whole), negate)
    if op == "is":
        if value.lower() not in IS_VALUES:
            raise parse_error(
                "filter",
                whole,
                'unexpected value expecting "null", "not_null", "true", "false" or "unknown"',
            )
        return Filter(field, op, value.lower(), negate)
    return Filter(field, op, value, negate, modifier, config)


def parse_list(raw: str, whole: str) -> tuple[str, ...]:
    """`(a,"b,c",d)` → ('a', 'b,c', 'd'). Raises ApiError PGRST100."""
    if len(raw) < 2 or raw[0] != "(" or raw[-1] != ")":
        raise parse_error("filter", whole, 'unexpected value expecting "(" list ")"')
    inner = raw[1:-1]
    if not inner.strip():
        return ()
    items = []
    for item in split_top(inner, "filter", whole):
        item = item.strip()
        if len(item) >= 2 and item[0] == '"' and item[-1] == '"':
            item = re.sub(r"\\(.)", r"\1", item[1:-1])
        items.append(item)
    return tuple(items)


def parse_logic(key: str, raw: str) -> Logic:
    """`or=(a.eq.1,and(b.gt.2,c.is.null))`, key `or`/`and`/`not.or`/`not.and`.

    Raises ApiError PGRST100."""
    negate = key.startswith("not.")
    conj = key[4:] if negate else key
    # Refuses deep or unbalanced input before any work.
    scan = _scan(raw, "logic tree", raw, arrays=True)
    if len(raw) < 2 or raw[0] != "(" or scan.partner.get(0) != len(raw) - 1:
        raise parse_error("logic tree", raw, 'unexpected input expecting "("')
    return _parse_logic_group(conj, negate, raw, scan, 0)


_NESTED_LOGIC = re.compile(r"\s*(not\.)?(and|or)\(")


def _parse_logic_group(conj: str, negate: bool, whole: str, scan: _Scan, opening: int) -> Logic:
    """The group whose `(` is at `opening`; recursion is bounded by _scan's MAX_NESTING."""
    children: list[Filter | Logic] = []
    for start, end in _split(scan.commas[opening], opening + 1, scan.partner[opening]):
        text = whole[start:end]
        part = text.strip()
        if not part:
            raise parse_error("logic tree", whole, "unexpected empty condition")
        nested = _NESTED_LOGIC.match(whole, start, end)
        if nested:
            # The group must close exactly where the condition ends: `or(…)x` is malformed.
            last = end - 1 - (len(text) - len(text.rstrip()))
            if scan.partner[nested.end() - 1] != last:
                raise parse_error("logic tree", whole, 'unexpected input expecting "("')
            children.append(
                _parse_logic_group(nested[2], nested[1] is not None, whole, scan, nested.end() - 1)
            )
        else:
            children.append(_parse_logic_leaf(part, whole))
    return Logic(conj, tuple(children), negate)


_LEAF_RE = re.compile(rf"^(?P<field>{_NAME}(?:->>?{_NAME})*)\.(?P<expr>.+)$", re.S)


def _parse_logic_leaf(part: str, whole: str) -> Filter:
    match = _LEAF_RE.match(part)
    if not match:
        raise parse_error("logic tree", whole, f'unexpected "{part[:40]}" expecting a filter')
    field = parse_field(match["field"], "logic tree", whole)
    flt = parse_filter(field, match["expr"], whole)
    # Inside a tree, values may be double-quoted to carry commas and parentheses.
    if isinstance(flt.value, str) and len(flt.value) >= 2 and flt.value[0] == flt.value[-1] == '"':
        flt = Filter(
            flt.field,
            flt.op,
            re.sub(r"\\(.)", r"\1", flt.value[1:-1]),
            flt.negate,
            flt.modifier,
            flt.config,
        )
    return flt


# ── order, limit, offset ─────────────────────────────────────────────────────────────────
def parse_order(raw: str) -> tuple[OrderTerm, ...]:
    """`a.desc.nullslast,b`. Raises ApiError PGRST100."""
    terms = []
    for part in split_top(raw, "order", raw):
        relation: str | None = None
        part = part.strip()
        if "(" in part:  # `rel(col).desc`: balanced and shallow, split_top's scan checked it
            relation, _, rest = part.partition("(")
            inside, _, after = rest.partition(")")
            if not relation or not inside or after[:1] not in ("", "."):
                raise parse_error("order", raw, f'unexpected "{part[:40]}"')
            relation = _unquote(relation)
            part = inside + after
        pieces = part.split(".")
        field = parse_field(pieces[0], "order", raw)
        desc = False
        nulls: str | None = None
        for modifier in pieces[1:]:
            if modifier in ("asc", "desc") and nulls is None:
                desc = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast") and nulls is None:
                nulls = modifier[5:]
            else:
                raise parse_error(
                    "order",
                    raw,
                    f'unexpected "{modifier[:20]}" expecting "asc", "desc", "nullsfirst" '
                    'or "nullslast"',
                )
        terms.append(OrderTerm(field, desc, nulls, relation))
    return tuple(terms)


def parse_count(name: str, raw: str) -> int:
    """A non-negative integer for `limit` / `offset`. Raises ApiError PGRST100."""
    if not is_ascii_digits(raw) or len(raw) > MAX_COUNT_DIGITS:
        raise parse_error(name, raw, "expecting a non-negative integer")
    return int(raw)


def parse_columns(raw: str) -> tuple[str, ...]:
    """`columns="a","b"` of a bulk insert. Raises ApiError PGRST100."""
    names = tuple(_unquote(part) for part in split_top(raw, "columns", raw))
    if any(not n for n in names):
        raise parse_error("columns", raw, "unexpected empty column name")
    return names
