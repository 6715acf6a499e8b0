"""The client's address, passed on as Supabase's API gateway passes it.

Hosted Supabase's gateway tells PostgREST, GoTrue and the functions where a request came from:
`X-Forwarded-For` with the connection's peer appended to whatever chain the request brought,
and `X-Real-IP`. PostgREST puts both into `request.headers`, where the audit trail reads them
(20261130040000). This middleware does the same for every request the local gateway serves.

What is trusted: nothing in front of the gateway. It is the edge (it binds 127.0.0.1 and no
proxy of ours sits before it), so only the socket's peer is known; a chain the client sent is
what the client claims. Hence `X-Real-IP` is always replaced by the peer (never passed through),
and the peer is appended as the last hop of `X-Forwarded-For` (several header lines are joined
first, as one list). The audit trail records `X-Real-IP`, else the last hop, and keeps the whole
chain in metadata: a client can add entries to it but not choose the recorded address.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ForwardedFor"]

_FORWARDED_FOR = b"x-forwarded-for"
_REAL_IP = b"x-real-ip"


class ForwardedFor:
    """ASGI middleware: sets `X-Real-IP` to the peer and appends it to `X-Forwarded-For`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client:
            scope["headers"] = forwarded_headers(scope["headers"], client[0])
        await self.app(scope, receive, send)


def forwarded_headers(headers: list[tuple[bytes, bytes]], peer: str) -> list[tuple[bytes, bytes]]:
    """`headers` without any X-Real-IP, with one X-Forwarded-For (the chain sent, then `peer`),
    and with `X-Real-IP: peer`."""
    chain: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == _FORWARDED_FOR:
            if value.strip():
                chain.append(value.strip())
        elif name != _REAL_IP:
            kept.append((name, value))
    address = peer.encode("latin-1")
    chain.append(address)
    kept.append((_FORWARDED_FOR, b", ".join(chain)))
    kept.append((_REAL_IP, address))
    return kept
