"""Which relationship an embedded resource (`select=*,rel!hint(*)`) names, as PostgREST's
findRel picks it, and its errors: 400 PGRST200 when none matches, 300 PGRST201 when several do.
"""

from __future__ import annotations

import difflib

from app.stack.gateway.errors import ApiError
from app.stack.gateway.rest.parse import Embed
from app.stack.gateway.rest.schema_cache import CacheMiss, Relationship, SchemaCache, Table


def find(cache: SchemaCache, origin: Table, embed: Embed) -> Relationship:
    """The one relationship from `origin` that `embed` names. Raises ApiError PGRST200/201."""
    rels = cache.relationships.get((origin.schema, origin.name), [])
    target, hint = embed.name, embed.hint
    found = [r for r in rels if _matches(cache, r, target, hint)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise _no_relationship(cache, origin, target, hint)
    raise ApiError(
        300,
        "PGRST201",
        f"Could not embed because more than one relationship was found for '{origin.name}' "
        f"and '{target}'",
        [_describe(r) for r in found],  # type: ignore[arg-type]
        f"Try changing '{target}' to one of the following: "
        + ", ".join(f"'{r.target[1]}!{r.constraint}'" for r in found)
        + ". Find the desired relationship in the 'details' key.",
    )


def _single(columns: tuple[tuple[str, str], ...], side: int) -> str | None:
    return columns[0][side] if len(columns) == 1 else None


def _matches(cache: SchemaCache, rel: Relationship, target: str, hint: str | None) -> bool:
    table_name = rel.target[1]
    m2m = rel.cardinality == "many-to-many"
    own_col = None if m2m else _single(rel.columns, 0)
    their_col = None if m2m else _single(rel.columns, 1)
    if rel.is_self and not m2m:
        if hint is None:
            # /family?select=children:family(*) is one-to-many; /family?select=parent(*)
            # (the FK column) is many-to-one.
            return (target == table_name and rel.cardinality == "one-to-many") or (
                target == own_col and rel.cardinality == "many-to-one"
            )
        return target == table_name and rel.cardinality == "one-to-many" and hint == their_col
    if hint is None:
        target_is_view = cache.tables[rel.target].is_view
        return (
            target == table_name
            or (not m2m and target == rel.constraint and not target_is_view)
            or (target == own_col and not target_is_view)
        )
    return target == table_name and (
        (not m2m and hint == rel.constraint)
        or hint == own_col
        or hint == their_col
        or (m2m and rel.junction is not None and hint == rel.junction[1])
    )


def _describe(rel: Relationship) -> dict[str, str]:
    """One entry of PGRST201's details, in PostgREST's words."""

    def cols(pairs: tuple[tuple[str, str], ...], side: int) -> str:
        return "(" + ", ".join(p[side] for p in pairs) + ")"

    embedding = f"{rel.origin[1]} with {rel.target[1]}"
    if rel.cardinality == "many-to-many" and rel.junction is not None:
        c1, c2 = rel.junction_constraints
        relationship = (
            f"{rel.junction[1]} using {c1}{cols(rel.junction_origin, 1)} "
            f"and {c2}{cols(rel.junction_target, 1)}"
        )
    else:
        relationship = (
            f"{rel.constraint} using {rel.origin[1]}{cols(rel.columns, 0)} "
            f"and {rel.target[1]}{cols(rel.columns, 1)}"
        )
    return {"cardinality": rel.cardinality, "embedding": embedding, "relationship": relationship}


def _no_relationship(cache: SchemaCache, origin: Table, target: str, hint: str | None) -> CacheMiss:
    # A CacheMiss: the handler looks again after refreshing, so an FK just created is found.
    schema = origin.schema
    using = f"' using the hint '{hint}" if hint else ""
    # A near miss among the tables `origin` relates to, as PostgREST's fuzzy hint.
    names = sorted({r.target[1] for r in cache.relationships.get((schema, origin.name), [])})
    close = difflib.get_close_matches(target, [n for n in names if n != target], n=1)
    return CacheMiss(
        400,
        "PGRST200",
        f"Could not find a relationship between '{origin.name}' and '{target}' in the schema cache",
        f"Searched for a foreign key relationship between '{origin.name}' and '{target}"
        f"{using}' in the schema '{schema}', but no matches were found.",
        f"Perhaps you meant '{close[0]}' instead of '{target}'." if close else None,
    )
