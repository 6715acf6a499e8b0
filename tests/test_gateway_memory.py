"""Gateway memory stays bounded whatever a caller sends (issue 9 §3 and §6).

1,000 requests, each with a different token of the largest accepted size (tokens.MAX_TOKEN_BYTES)
and a body of the largest accepted size (the gateway's 1 MiB), to REST, Auth and Functions: the
gateway process's resident memory (VmRSS of the pid the stack manager recorded) ends within
RSS_GROWTH_BOUND of where it started. Before the fix every verified token stayed in the claims
cache (up to 10,000 of them, of any size), so this grew by tens of megabytes and kept them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_hostile_auth import sized_token

from app.stack.gateway.tokens import MAX_TOKEN_BYTES
from app.stack.keys import StackKeys
from app.stack.manager import Stack

REQUESTS = 1000
WARM_UP = 60
# The claims cache holds at most CLAIMS_CACHE_BYTES as it estimates them (8 MiB, about 5 MiB of
# Python objects for tokens of the largest size); the rest is allocator slack from the 1 MiB
# bodies (measured: 6-7 MiB). The previous cache kept all 800 REST tokens here, about 23 MiB.
RSS_GROWTH_BOUND = 20 * 1024 * 1024
MAX_BODY_BYTES = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def body_of_size(wrap: Callable[[str], object], size: int) -> bytes:
    """The JSON text of `wrap(padding)`, with the padding string making it exactly `size` bytes."""
    padding = "x" * (size - len(json.dumps(wrap(""))))
    return json.dumps(wrap(padding)).encode()


@pytest.fixture()
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=60) as client:
        yield client


def test_gateway_rss_largest_tokens_and_bodies_stays_within_bound(
    stack: Stack, keys: StackKeys, http: httpx.Client
):
    pid = int(stack.paths.gateway_pid.read_text().strip())
    rest_body = body_of_size(lambda pad: {"currency": pad}, MAX_BODY_BYTES)
    auth_body = body_of_size(lambda pad: {"data": {"pad": pad}}, MAX_BODY_BYTES)
    assert len(rest_body) == len(auth_body) == MAX_BODY_BYTES

    def send(i: int) -> None:
        token = sized_token(keys.jwt_secret, MAX_TOKEN_BYTES)
        headers = {
            "apikey": keys.anon_key,
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        kind = i % 10
        if kind < 8:
            # Verified and cached token, body read, parsed and sent as the insert's parameter,
            # refused by the database: users may not write the price list.
            answer = http.post("/rest/v1/model_pricing", content=rest_body, headers=headers)
            assert answer.status_code == 403, answer.text
        elif kind < 9:
            # Verified token, body read and parsed, refused for its metadata size.
            answer = http.put("/auth/v1/user", content=auth_body, headers=headers)
            assert answer.status_code == 400, answer.text
        else:
            # Passed on to the function's worker, which answers.
            answer = http.post(
                f"/functions/v1/health?n={uuid.uuid4().hex}", content=rest_body, headers=headers
            )
            assert answer.status_code == 200, answer.text

    for i in range(WARM_UP):
        send(i)
    start = rss_bytes(pid)
    for i in range(REQUESTS):
        send(i)
    growth = rss_bytes(pid) - start
    print(f"gateway RSS {start / 2**20:.1f} MiB -> growth {growth / 2**20:.1f} MiB")
    assert growth <= RSS_GROWTH_BOUND, f"RSS grew {growth / 2**20:.1f} MiB"
