"""The mail catcher's HTTP server: Mailpit's API (the catcher the Supabase CLI 2.117 runs, Mailpit
v1.30) over an in-memory mailbox, and a small web page to read it.

Served, with Mailpit's request and answer shapes:

    GET    /api/v1/messages?start=&limit=      newest first; {total, unread, count,
                                                 messages_count, messages_unread, start, tags,
                                                 messages: [MessageSummary]}
    DELETE /api/v1/messages  {"IDs": [...]}      those, or all when no IDs; answers "ok"
    PUT    /api/v1/messages  {"IDs", "Read"}     mark read / unread
    GET    /api/v1/search?query=...             to:, from:, subject:, is:read, is:unread and
                                                 words (all must match, case-insensitive)
    DELETE /api/v1/search?query=...
    GET    /api/v1/message/{ID}                 the Message (marks it read); ID may be `latest`
    GET    /api/v1/message/{ID}/raw             the RFC 5322 source
    GET    /api/v1/message/{ID}/headers         the headers as {name: [values]}
    POST   /api/v1/send                         Mailpit's send API; how the Auth API delivers
    GET    /api/v1/info, /livez, /readyz
    GET    /, /view/{ID}                        the web page

Errors are Mailpit's: 400 text/plain with the reason, 404 "404 page not found"; the send API
answers 400 `{"Error": "..."}`. The mailbox keeps the newest MAX_MESSAGES (Mailpit's default
`--max`), each at most MAX_MESSAGE_BYTES; it is empty again after a restart, like Mailpit's
default temporary database. Not served: SMTP and POP3 (the stack's Auth API sends through the
HTTP API), attachments, tags, release, chaos, the websocket and Mailpit's link/HTML checks.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import shlex
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from html.parser import HTMLParser
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

VERSION = "v1.30.2 (tokenmeter)"
MAX_MESSAGES = 500
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_LIMIT = 1000
# Mailpit's IDs: 22 characters of shortuuid's alphabet.
_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_RESTRICTED_HEADERS = frozenset(
    h.lower()
    for h in ("To", "From", "Cc", "Bcc", "Reply-To", "Date", "Subject", "Content-Type")
    + ("Mime-Version",)
)


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _TextOf(HTMLParser):
    """The text of an HTML body, links kept as `text (url)`: what a reader of the plain part
    needs (Mailpit derives Text from an HTML-only message the same way)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("p", "br", "h1", "h2", "h3", "div", "li", "tr"):
            self.parts.append("\n")
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None
        if tag in ("p", "h1", "h2", "h3", "div"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(body_html: str) -> str:
    parser = _TextOf()
    parser.feed(body_html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _address(value: Any, what: str) -> dict[str, str]:
    """Mailpit's {"Email", "Name"} request address as its {"Name", "Address"} answer."""
    if not isinstance(value, dict):
        raise ValueError(f"invalid {what} address")
    email, name = value.get("Email"), value.get("Name", "")
    if not isinstance(email, str) or not isinstance(name, str) or not _valid_email(email):
        raise ValueError(f"invalid {what} address: {email}")
    return {"Name": name, "Address": email}


def _valid_email(email: str) -> bool:
    _, parsed = parseaddr(email)
    return bool(parsed) and parsed == email and "@" in email and "\n" not in email


@dataclass
class Message:
    id: str
    sender: dict[str, str]
    to: list[dict[str, str]]
    cc: list[dict[str, str]]
    bcc: list[dict[str, str]]
    reply_to: list[dict[str, str]]
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    tags: list[str]
    created: datetime
    read: bool = False
    raw: bytes = field(default=b"")

    @property
    def message_id(self) -> str:
        return f"{self.id}@mailpit"

    def build_raw(self) -> None:
        msg = EmailMessage()
        msg["Message-ID"] = f"<{self.message_id}>"
        msg["Date"] = format_datetime(self.created)
        msg["From"] = _header_address(self.sender)
        if self.to:
            msg["To"] = [_header_address(a) for a in self.to]
        if self.cc:
            msg["Cc"] = [_header_address(a) for a in self.cc]
        if self.reply_to:
            msg["Reply-To"] = [_header_address(a) for a in self.reply_to]
        msg["Subject"] = self.subject
        if self.tags:
            msg["X-Tags"] = ", ".join(self.tags)
        for name, value in self.headers.items():
            msg[name] = value
        msg.set_content(self.text or "")
        if self.html:
            msg.add_alternative(self.html, subtype="html")
        self.raw = msg.as_bytes()

    def summary(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "MessageID": self.message_id,
            "Read": self.read,
            "From": self.sender,
            "To": self.to,
            "Cc": self.cc,
            "Bcc": self.bcc,
            "ReplyTo": self.reply_to,
            "Subject": self.subject,
            "Created": _rfc3339(self.created),
            "Username": "",
            "Tags": self.tags,
            "Size": len(self.raw),
            "Attachments": 0,
            "Snippet": " ".join(self.text.split())[:250],
        }

    def full(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "MessageID": self.message_id,
            "From": self.sender,
            "To": self.to,
            "Cc": self.cc,
            "Bcc": self.bcc,
            "ReplyTo": self.reply_to,
            "ReturnPath": self.sender["Address"],
            "Subject": self.subject,
            "ListUnsubscribe": {"Header": "", "Links": [], "Errors": "", "HeaderPost": ""},
            "Date": _rfc3339(self.created),
            "Tags": self.tags,
            "Username": "",
            "Text": self.text,
            "HTML": self.html,
            "Size": len(self.raw),
            "Inline": [],
            "Attachments": [],
        }

    def matches(self, terms: list[str]) -> bool:
        for term in terms:
            negate = term.startswith("-") and len(term) > 1
            if negate:
                term = term[1:]
            if self._matches(term.lower()) == negate:
                return False
        return True

    def _matches(self, term: str) -> bool:
        key, sep, value = term.partition(":")
        addresses = {
            "to": self.to + self.cc + self.bcc,
            "from": [self.sender],
            "cc": self.cc,
            "bcc": self.bcc,
            "reply-to": self.reply_to,
        }
        if sep and key in addresses:
            return any(value in f"{a['Name']} <{a['Address']}>".lower() for a in addresses[key])
        if sep and key == "subject":
            return value in self.subject.lower()
        if sep and key == "is":
            return {"read": self.read, "unread": not self.read}.get(value, False)
        if sep and key == "tag":
            return value in (t.lower() for t in self.tags)
        haystack = " ".join(
            [self.subject, self.text, self.sender["Address"], self.sender["Name"]]
            + [a["Address"] for a in self.to + self.cc]
        ).lower()
        return term in haystack


def _header_address(value: dict[str, str]) -> Address:
    local, _, domain = value["Address"].rpartition("@")
    return Address(display_name=value["Name"], username=local, domain=domain)


class Mailbox:
    """The newest MAX_MESSAGES messages, by ID, oldest first in insertion order."""

    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._messages: OrderedDict[str, Message] = OrderedDict()

    def add(self, message: Message) -> None:
        self._messages[message.id] = message
        while len(self._messages) > self.max_messages:
            self._messages.popitem(last=False)

    def newest_first(self) -> list[Message]:
        return list(reversed(self._messages.values()))

    def get(self, message_id: str) -> Message | None:
        if message_id == "latest":
            return next(reversed(self._messages.values()), None)
        return self._messages.get(message_id)

    def delete(self, ids: list[str] | None) -> None:
        if ids is None:
            self._messages.clear()
        for message_id in ids or ():
            self._messages.pop(message_id, None)

    def stats(self) -> tuple[int, int, list[str]]:
        unread = sum(1 for m in self._messages.values() if not m.read)
        tags = sorted({t for m in self._messages.values() for t in m.tags})
        return len(self._messages), unread, tags


# ── answers ────────────────────────────────────────────────────────────────────────────────────
def _bad_request(message: str) -> Response:
    return PlainTextResponse(message, status_code=400)


def _not_found() -> Response:
    return PlainTextResponse("404 page not found", status_code=404)


def _start_limit(request: Request) -> tuple[int, int]:
    """Mailpit's `start` (default 0) and `limit` (default 50); unparsable values are ignored,
    as Mailpit ignores them. The limit is capped so one answer stays small."""
    start, limit = 0, 50
    try:
        start = max(int(request.query_params.get("start", "0")), 0)
    except ValueError:
        pass
    try:
        given = int(request.query_params.get("limit", "50"))
        if given > -1:
            limit = given
    except ValueError:
        pass
    return start, min(limit or MAX_LIMIT, MAX_LIMIT)


def _summary_page(
    request: Request, box: Mailbox, found: list[Message], *, searched: bool
) -> JSONResponse:
    start, limit = _start_limit(request)
    total, unread, tags = box.stats()
    page = found[start : start + limit]
    return JSONResponse(
        {
            "total": total,
            "unread": unread,
            "count": len(page),
            "messages_count": len(found) if searched else total,
            "messages_unread": sum(1 for m in found if not m.read) if searched else unread,
            "start": start,
            "tags": tags,
            "messages": [m.summary() for m in page],
        }
    )


def _search_terms(request: Request) -> list[str] | None:
    query = request.query_params.get("query", "").strip()
    if not query:
        return None
    try:
        return shlex.split(query)
    except ValueError:  # an unbalanced quote: the words as typed
        return query.split()


async def _json_body(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_MESSAGE_BYTES:
            raise _TooLarge
    if not body.strip():
        return None
    return json.loads(body)


class _TooLarge(Exception):
    pass


# ── endpoints ──────────────────────────────────────────────────────────────────────────────────
def _box(request: Request) -> Mailbox:
    box: Mailbox = request.app.state.mailbox
    return box


async def list_messages(request: Request) -> Response:
    box = _box(request)
    return _summary_page(request, box, box.newest_first(), searched=False)


async def delete_messages(request: Request) -> Response:
    try:
        data = await _json_body(request)
    except (ValueError, _TooLarge):
        data = None
    ids = data.get("IDs") if isinstance(data, dict) else None
    if isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids):
        _box(request).delete(ids)
    else:  # as Mailpit: a body it cannot read, or no IDs, deletes everything
        _box(request).delete(None)
    return PlainTextResponse("ok")


async def set_read(request: Request) -> Response:
    try:
        data = await _json_body(request)
    except (ValueError, _TooLarge) as exc:
        return _bad_request(str(exc) or "invalid JSON")
    if not isinstance(data, dict):
        return _bad_request("invalid request body")
    read, ids, search = data.get("Read", False), data.get("IDs") or [], data.get("Search") or ""
    if not isinstance(read, bool) or not isinstance(ids, list) or not isinstance(search, str):
        return _bad_request("invalid request body")
    if ids and search:
        return _bad_request("You may specify either IDs or a search query, not both")
    box = _box(request)
    if search:
        targets = [m for m in box.newest_first() if m.matches(shlex.split(search))]
    elif ids:
        targets = [m for i in ids if isinstance(i, str) and (m := box.get(i)) is not None]
    else:
        targets = box.newest_first()
    for message in targets:
        message.read = read
    return PlainTextResponse("ok")


async def search(request: Request) -> Response:
    terms = _search_terms(request)
    if terms is None:
        return _bad_request("Error: no search query")
    box = _box(request)
    found = [m for m in box.newest_first() if m.matches(terms)]
    return _summary_page(request, box, found, searched=True)


async def delete_search(request: Request) -> Response:
    terms = _search_terms(request)
    if terms is None:
        return _bad_request("Error: no search query")
    box = _box(request)
    box.delete([m.id for m in box.newest_first() if m.matches(terms)])
    return PlainTextResponse("ok")


async def get_message(request: Request) -> Response:
    message = _box(request).get(request.path_params["id"])
    if message is None:
        return _not_found()
    message.read = True
    return JSONResponse(message.full())


async def get_raw(request: Request) -> Response:
    message = _box(request).get(request.path_params["id"])
    if message is None:
        return _not_found()
    return Response(message.raw, media_type="text/plain; charset=utf-8")


async def get_headers(request: Request) -> Response:
    message = _box(request).get(request.path_params["id"])
    if message is None:
        return _not_found()
    parsed = message_from_bytes(message.raw)
    headers: dict[str, list[str]] = {}
    for name, value in parsed.items():
        headers.setdefault(name, []).append(str(value))
    return JSONResponse(dict(sorted(headers.items())))


def _send_error(message: str, status: int = 400) -> Response:
    return JSONResponse({"Error": message}, status_code=status)


async def send(request: Request) -> Response:
    """Mailpit's POST /api/v1/send: {From, To, Cc, Bcc, ReplyTo, Subject, Text, HTML, Headers,
    Tags} → {"ID"}."""
    try:
        data = await _json_body(request)
    except _TooLarge:
        return _send_error("http: request body too large", 413)
    except ValueError as exc:
        return _send_error(str(exc))
    if not isinstance(data, dict):
        return _send_error("invalid request body")
    try:
        message = _message_from(data)
    except ValueError as exc:
        return _send_error(str(exc))
    message.build_raw()
    if len(message.raw) > MAX_MESSAGE_BYTES:
        return _send_error("message is too large", 413)
    _box(request).add(message)
    return JSONResponse({"ID": message.id})


def _message_from(data: dict[str, Any]) -> Message:
    def addresses(key: str) -> list[dict[str, str]]:
        value = data.get(key) or []
        if not isinstance(value, list):
            raise ValueError(f"invalid {key} addresses")
        return [_address(a, key) for a in value]

    def text(key: str) -> str:
        value = data.get(key) or ""
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        if "\x00" in value:
            raise ValueError(f"{key} cannot contain NUL characters")
        return value

    sender = _address(data.get("From"), "From")
    to, cc, reply_to = addresses("To"), addresses("Cc"), addresses("ReplyTo")
    bcc_raw = data.get("Bcc") or []
    if not isinstance(bcc_raw, list) or not all(
        isinstance(a, str) and _valid_email(a) for a in bcc_raw
    ):
        raise ValueError("invalid Bcc address")
    bcc = [{"Name": "", "Address": a} for a in bcc_raw]
    if not (to or cc or bcc):
        raise ValueError("no recipients")
    headers = data.get("Headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError("Headers must be an object of strings")
    for name, value in headers.items():
        if name.lower() in _RESTRICTED_HEADERS:
            raise ValueError(f'cannot overwrite header: "{name}"')
        if not re.fullmatch(r"[!-9;-~]+", name) or "\n" in value or "\r" in value:
            raise ValueError(f'invalid header: "{name}"')
    tags = data.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("Tags must be an array of strings")
    subject = text("Subject")
    if "\n" in subject or "\r" in subject:
        raise ValueError("Subject cannot contain line breaks")
    body_html, body_text = text("HTML"), text("Text")
    if body_html and not body_text:
        body_text = text_of(body_html)
    return Message(
        id=_new_id(),
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        text=body_text,
        html=body_html,
        headers=headers,
        tags=tags,
        created=datetime.now(UTC),
    )


async def info(request: Request) -> Response:
    total, unread, tags = _box(request).stats()
    return JSONResponse(
        {
            "Version": VERSION,
            "LatestVersion": "",
            "Database": "",
            "DatabaseSize": 0,
            "Messages": total,
            "Unread": unread,
            "Tags": {t: 0 for t in tags},
            "RuntimeStats": {},
        }
    )


async def alive(_request: Request) -> Response:
    return PlainTextResponse("ok")


# ── web page ───────────────────────────────────────────────────────────────────────────────────
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #ddd; }}
tr.unread td {{ font-weight: 600; }}
iframe {{ width: 100%; height: 28rem; border: 1px solid #ddd; }}
pre {{ white-space: pre-wrap; background: #f6f6f6; padding: .6rem; }}
.muted {{ color: #777; }}
</style></head><body>{body}</body></html>"""


def _page(title: str, body: str) -> HTMLResponse:
    headers = {
        # The mail's HTML is shown in a sandboxed frame; nothing on the page runs scripts.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:; frame-src 'self'",
        "Referrer-Policy": "no-referrer",
    }
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), headers=headers)


def _who(addresses: list[dict[str, str]]) -> str:
    return ", ".join(a["Address"] for a in addresses)


async def index(request: Request) -> Response:
    messages = _box(request).newest_first()
    rows = "".join(
        f'<tr class="{"read" if m.read else "unread"}">'
        f"<td>{html.escape(_rfc3339(m.created)[:19].replace('T', ' '))}</td>"
        f"<td>{html.escape(m.sender['Address'])}</td><td>{html.escape(_who(m.to))}</td>"
        f'<td><a href="view/{m.id}">{html.escape(m.subject or "(no subject)")}</a></td></tr>'
        for m in messages
    )
    body = (
        f"<h1>Mail catcher</h1><p class=muted>{len(messages)} message(s), newest first. "
        "Mail the local Auth API sends lands here; the same mailbox is served as Mailpit's "
        "API under <code>/api/v1/</code>.</p>"
        "<table><tr><th>Received (UTC)</th><th>From</th><th>To</th><th>Subject</th></tr>"
        f"{rows}</table>"
    )
    return _page("Mail catcher", body)


async def view(request: Request) -> Response:
    message = _box(request).get(request.path_params["id"])
    if message is None:
        return _not_found()
    message.read = True
    frame = (
        f'<iframe sandbox srcdoc="{html.escape(message.html, quote=True)}"></iframe>'
        if message.html
        else ""
    )
    body = (
        f'<p><a href="../">&larr; all messages</a></p><h1>{html.escape(message.subject)}</h1>'
        f"<p>From {html.escape(message.sender['Address'])} to {html.escape(_who(message.to))}"
        f", {html.escape(_rfc3339(message.created))}</p>{frame}"
        f"<h2>Text</h2><pre>{html.escape(message.text)}</pre>"
    )
    return _page(message.subject or "(no subject)", body)


def create_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/api/v1/messages", list_messages, methods=["GET"]),
            Route("/api/v1/messages", delete_messages, methods=["DELETE"]),
            Route("/api/v1/messages", set_read, methods=["PUT"]),
            Route("/api/v1/search", search, methods=["GET"]),
            Route("/api/v1/search", delete_search, methods=["DELETE"]),
            Route("/api/v1/send", send, methods=["POST"]),
            Route("/api/v1/message/{id}/raw", get_raw, methods=["GET"]),
            Route("/api/v1/message/{id}/headers", get_headers, methods=["GET"]),
            Route("/api/v1/message/{id}", get_message, methods=["GET"]),
            Route("/api/v1/info", info, methods=["GET"]),
            Route("/livez", alive, methods=["GET"]),
            Route("/readyz", alive, methods=["GET"]),
            Route("/", index, methods=["GET"]),
            Route("/view/{id}", view, methods=["GET"]),
        ]
    )
    app.state.mailbox = Mailbox()
    return app
