"""tokenmeter: pricing, prepaid balances and metering for LLM APIs on Supabase.

The public surface, imported lazily (`from app import Keys`) so that `import app.stack…` — the
gateway, the migration runner — does not load supabase-py."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Meter": "app.meter",
    "AsyncMeter": "app.meter",
    "Pricing": "app.pricing",
    "Keys": "app.keys",
    "Upstreams": "app.upstreams",
    "Plans": "app.plans",
    "Subscriptions": "app.subscriptions",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
