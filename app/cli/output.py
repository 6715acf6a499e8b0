"""How the CLI talks to people and scripts: rich tables on stdout, one-line errors on stderr,
`--json` for machines, and ONE place mapping errors to exit codes.

Exit codes: 0 success; 1 the operation failed (bad input, refused, not found, conflict);
2 the backend could not be reached or used (stack down, not configured, API unavailable).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console

from app.config import ConfigError
from app.errors import TokenmeterError, Unavailable

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(
        f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True
    )
    raise typer.Exit(code)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact; a float would round money
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def print_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Turn our errors into a message and an exit code; a traceback is never shown for them."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), 2)
    except Unavailable as exc:
        fail(str(exc), 2)
    except TokenmeterError as exc:
        fail(f"{exc.code}: {exc.detail or exc.message}", 1)


def money(value: Decimal, currency: str = "USD") -> str:
    """A money amount for people: exact, without trailing zeros, at least 2 decimals."""
    text = format(value.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')} {currency}"
