"""GoTrue-compatible /auth/v1 (stub: being built)."""
from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
