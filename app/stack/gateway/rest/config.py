"""The `[api]` settings of supabase/config.toml the REST API honours, as the Supabase CLI hands
them to PostgREST: `schemas` (PGRST_DB_SCHEMAS, the exposed schemas, the first the default) and
`max_rows` (PGRST_DB_MAX_ROWS, the most rows one response holds).

Settings PostgREST reads from the database itself (`alter role authenticator set pgrst.… `,
then `notify pgrst, 'reload config'`) live in the schema cache instead (schema_cache.py)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

# The Supabase CLI's defaults when config.toml says nothing.
DEFAULT_SCHEMAS = ("public", "graphql_public")
DEFAULT_MAX_ROWS = 1000


@dataclass(frozen=True)
class RestSettings:
    schemas: tuple[str, ...] = ("public",)
    max_rows: int | None = None  # None: no cap


def read_rest_settings(config_toml: Path) -> RestSettings:
    """`[api]` of config.toml. A missing file gives the CLI's defaults. Raises ValueError for a
    malformed value (the gateway then refuses to start, naming the setting)."""
    try:
        section = tomllib.loads(config_toml.read_text(encoding="utf-8")).get("api", {})
    except FileNotFoundError:
        section = {}
    schemas = section.get("schemas", list(DEFAULT_SCHEMAS))
    if (
        not isinstance(schemas, list)
        or not schemas
        or not all(isinstance(s, str) and s for s in schemas)
    ):
        raise ValueError(f"[api] schemas must be a non-empty list of names, not {schemas!r}")
    max_rows = section.get("max_rows", DEFAULT_MAX_ROWS)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0:
        raise ValueError(f"[api] max_rows must be a whole number ≥ 0, not {max_rows!r}")
    # graphql_public holds only the GraphQL endpoint's function, which this stack does not
    # serve (pg_graphql is not installed): listed or not, it exposes nothing here.
    return RestSettings(tuple(dict.fromkeys(schemas)), max_rows or None)
