"""Limits every API of the gateway applies at its boundary, before any other work.

One place for what a request may be, so /rest/v1, /auth/v1 and /functions/v1 refuse the same
hostile input the same way; each API maps the exceptions below to its own error body:

    read_body(request, max_bytes)          the raw body; BodyTooLarge past max_bytes
    parse_json(raw, max_depth=...)         strict JSON; InvalidJson, JsonTooDeep
    read_json(request, max_bytes=..., …)   both; None for an empty body
    off_loop(fn, *args)                    CPU-bound work (parsing a large request) off the
                                           event loop, so it never delays other requests

JSON is parsed strictly: UTF-8 only (PostgreSQL's encoding; Python would also take UTF-16/32),
no NaN/Infinity (not JSON, PostgreSQL refuses them), and at most MAX_JSON_DEPTH nested
arrays/objects, checked before parsing and without recursion, so a `[[[[…` body costs one linear
scan and a 400, never a RecursionError. docs/limits.md says why each number is what it is.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request

__all__ = [
    "MAX_JSON_DEPTH",
    "BODY_TIMEOUT_SECONDS",
    "BodyRejected",
    "BodyTimeout",
    "BodyTooLarge",
    "InvalidJson",
    "JsonTooDeep",
    "json_depth_exceeds",
    "off_loop",
    "parse_json",
    "read_body",
    "read_json",
]

# Ruby's JSON and many HTTP frameworks default to 100; no real API payload comes close.
MAX_JSON_DEPTH = 100
# The whole body must arrive within this long (nginx's client_body_timeout is 60 s between
# reads; a whole-body bound also stops a client dripping one byte at a time).
BODY_TIMEOUT_SECONDS = 30.0


# Bodies up to this size parse inline (well under a millisecond); larger ones off the loop.
_INLINE_JSON_BYTES = 64 * 1024

T = TypeVar("T")
# One thread: a single CPU-bound parse competes with the event loop for the GIL, which the loop
# then gets back every switch interval (5 ms); more threads would make it wait for each of them.
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-parse")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the gateway's parsing thread; its exceptions are raised here."""
    return await asyncio.get_running_loop().run_in_executor(_PARSER, fn, *args)


class BodyRejected(ValueError):
    """A request body refused at the boundary; `status` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BodyTooLarge(BodyRejected):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body exceeds {limit} bytes")
        self.limit = limit


class BodyTimeout(BodyRejected):
    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request body did not arrive within {seconds:g} s")


class InvalidJson(BodyRejected):
    pass


class JsonTooDeep(BodyRejected):
    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nesting deeper than {limit} levels")
        self.limit = limit


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body. Raises BodyTooLarge (before reading it all) past `max_bytes`,
    BodyTimeout when it takes longer than BODY_TIMEOUT_SECONDS to arrive."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit():
        if len(declared) > 18 or int(declared) > max_bytes:
            raise BodyTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(BODY_TIMEOUT_SECONDS) from None
    return b"".join(chunks)


# Keep only brackets, as 2 (open) and 0 (close): see json_depth_exceeds.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(raw: bytes, max_depth: int) -> bool:
    """Whether the JSON text `raw` nests arrays/objects deeper than `max_depth`.

    Runs at C speed with no recursion: escaped backslashes and quotes are dropped, so the
    quotes left delimit strings and every other piece between them is outside a string; of
    those, the brackets become 2 (open) and 0 (close), and the depth after the i-th bracket is
    (sum of the first i) - i."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False  # the common case: too few brackets to nest that deep
    outside = b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    marks = outside.translate(None, _NOT_BRACKETS).translate(_BRACKETS)
    depths = map(operator.sub, itertools.accumulate(marks), itertools.count(1))
    return max(depths, default=0) > max_depth


def _no_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON")


def parse_json(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`raw` as JSON. Raises InvalidJson (not UTF-8, malformed, NaN/Infinity) or JsonTooDeep."""
    if json_depth_exceeds(raw, max_depth):
        raise JsonTooDeep(max_depth)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("The request body is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # unreachable after the depth check; kept as a last guard
        raise JsonTooDeep(max_depth) from None
    except InvalidJson:
        raise
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise InvalidJson(str(exc)) from None


async def read_json(
    request: Request, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH
) -> Any | None:
    """The request body as JSON, None when it is empty (or only whitespace).

    Raises BodyTooLarge, BodyTimeout, InvalidJson, JsonTooDeep (all BodyRejected, with
    `.status` and `.message`)."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        return None
    if len(raw) <= _INLINE_JSON_BYTES:
        return parse_json(raw, max_depth=max_depth)
    return await off_loop(_parse_json_at, raw, max_depth)


def _parse_json_at(raw: bytes, max_depth: int) -> Any:
    return parse_json(raw, max_depth=max_depth)
