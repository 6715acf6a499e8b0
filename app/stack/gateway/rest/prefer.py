"""The `Prefer` header, read as PostgREST reads it (ApiRequest/Preferences.hs).

Several `Prefer` headers and comma-separated lists are one list; for each preference the first
value wins. Values PostgREST does not know are collected: with `handling=strict` they are a
400 PGRST122, with `handling=lenient` (the default) they are ignored. The preferences a
response honoured are echoed in `Preference-Applied`, in PostgREST's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.stack.gateway.errors import ApiError

_CHOICES = {
    "resolution": ("merge-duplicates", "ignore-duplicates"),
    "return": ("representation", "minimal", "headers-only"),
    "count": ("exact", "planned", "estimated"),
    "tx": ("commit", "rollback"),
    "missing": ("default", "null"),
    "handling": ("strict", "lenient"),
}


@dataclass
class Prefer:
    resolution: str | None = None
    ret: str | None = None  # None: minimal for writes
    count_method: str | None = None
    tx: str | None = None  # only when the database allows the override (db-tx-end)
    missing: str | None = None
    handling: str | None = None
    max_affected: int | None = None
    invalid: list[str] = field(default_factory=list)

    @property
    def count(self) -> bool:
        """A total is wanted (planned and estimated are answered from the plan: see reads)."""
        return self.count_method is not None

    @property
    def missing_default(self) -> bool:
        return self.missing == "default"

    @property
    def representation(self) -> str:
        return self.ret or "minimal"

    @classmethod
    def parse(cls, headers: list[str], *, tx_override: bool) -> Prefer:
        """Raises ApiError 400 PGRST122 for unknown preferences under handling=strict."""
        prefer = cls()
        tokens = [t.strip() for h in headers for t in h.split(",") if t.strip()]
        for token in tokens:
            key, sep, value = token.partition("=")
            key, value = key.strip(), value.strip()
            attr = {"return": "ret", "count": "count_method"}.get(key, key)
            if sep and value in _CHOICES.get(key, ()):
                if key == "tx" and not tx_override:
                    continue  # PostgREST drops it silently, and it is not "invalid"
                if getattr(prefer, attr) is None:
                    setattr(prefer, attr, value)
            elif key == "max-affected" and sep:
                if prefer.max_affected is None and value.lstrip("-").isdigit() and value.isascii():
                    prefer.max_affected = int(value)
            elif key == "timezone" and sep:
                pass  # accepted, not applied: responses are in the session's time zone
            else:
                prefer.invalid.append(token)
        if prefer.invalid and prefer.handling == "strict":
            raise ApiError(
                400,
                "PGRST122",
                "Invalid preferences given with handling=strict",
                "Invalid preferences: " + ", ".join(prefer.invalid)[:500],
            )
        return prefer

    def applied(self, kind: str, *, resolution_applies: bool = False) -> str | None:
        """`Preference-Applied` for a response of `kind`: read, insert, update, delete, upsert
        (PUT) or call (PostgREST's responsePreferences)."""
        values = [
            f"resolution={self.resolution}" if self.resolution and resolution_applies else None,
            f"missing={self.missing}" if self.missing and kind in ("insert", "update") else None,
            f"return={self.ret}" if self.ret and kind not in ("read", "call") else None,
            f"count={self.count_method}" if self.count_method else None,
            f"tx={self.tx}" if self.tx else None,
            f"handling={self.handling}" if self.handling else None,
            f"max-affected={self.max_affected}"
            if self.max_affected is not None
            and self.handling == "strict"
            and kind in ("update", "delete", "call")
            else None,
        ]
        found = [v for v in values if v]
        return ", ".join(found) if found else None
