"""PostgREST-compatible /rest/v1 (stub: being built)."""
from __future__ import annotations

import contextlib
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import BaseRoute


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


def routes() -> list[BaseRoute]:
    return []
