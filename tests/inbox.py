"""Reading the local mail catcher from tests, through its Mailpit API, as a developer would:
wait for the mail to an address, take the link or the code out of it."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from app.stack.paths import StackPaths

_LINK = re.compile(r"\((https?://[^)\s]+/verify\?[^)\s]+)\)")
_CODE = re.compile(r"code: (\d{6,10})")


def catcher_url() -> str:
    return f"http://127.0.0.1:{StackPaths.from_env().inbucket_port}"


def messages_to(address: str) -> list[dict[str, Any]]:
    """Summaries of the mails to `address`, newest first."""
    answer = httpx.get(
        f"{catcher_url()}/api/v1/search", params={"query": f"to:{address}", "limit": 100}
    )
    answer.raise_for_status()
    return [m for m in answer.json()["messages"] if any(t["Address"] == address for t in m["To"])]


def wait_for(address: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The full messages (newest first) once at least `count` mails to `address` arrived.
    Raises AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = messages_to(address)
        if len(found) >= count:
            return [message(m["ID"]) for m in found]
        assert time.monotonic() < deadline, f"{count} mail(s) to {address} expected, {len(found)}"
        time.sleep(0.05)


def message(message_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{catcher_url()}/api/v1/message/{message_id}")
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def link_in(mail: dict[str, Any]) -> str:
    found = _LINK.search(mail["Text"])
    assert found, f"no verify link in {mail['Text']!r}"
    return found.group(1)


def code_in(mail: dict[str, Any]) -> str:
    found = _CODE.search(mail["Text"])
    assert found, f"no code in {mail['Text']!r}"
    return found.group(1)
