"""The audit trail's address under the local stack (issue 12 §5): the gateway passes the client's
address as Supabase's does (X-Real-IP, X-Forwarded-For with the peer appended), and the trail
records the address the gateway saw — a client-sent X-Forwarded-For is kept in metadata but
cannot choose it (app/stack/gateway/forwarded.py, 20261130040000)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from auth_gateway import auth_gateway
from conftest import random_email
from starlette.testclient import TestClient

from app.stack.gateway.forwarded import forwarded_headers
from app.stack.gateway.server import GatewayConfig, create_app
from supabase import Client, ClientOptions, create_client


def _client(api_url: str, key: str, http: httpx.Client, headers: dict[str, str]) -> Client:
    return create_client(
        api_url, key, ClientOptions(auto_refresh_token=False, httpx_client=http, headers=headers)
    )


@pytest.fixture()
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def test_audit_admin_price_change_through_api_records_peer_address_and_agent(
    api_url: str, service_key: str, service: Client, http: httpx.Client
):
    admin = _client(api_url, service_key, http, {"User-Agent": "audit-admin/1.0"})
    model = f"addr-{uuid.uuid4().hex[:10]}"
    admin.rpc(
        "set_model_price",
        {
            "provider": "addrco",
            "model": model,
            "input_per_token": "0.000001",
            "output_per_token": "0.000002",
        },
    ).execute()
    entries = (
        service.table("audit_logs")
        .select("action, resource_type, actor_role, ip_address, user_agent, metadata")
        .eq("resource_type", "model_pricing")
        .eq("metadata->>model_id", model)
        .execute()
        .data
    )
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["action"], entry["actor_role"]) == ("insert", "service_role")
    assert entry["ip_address"] == "127.0.0.1"
    assert entry["user_agent"] == "audit-admin/1.0"
    assert entry["metadata"]["forwarded_for"] == "127.0.0.1"


def test_audit_key_creation_with_spoofed_forwarded_for_records_peer_keeps_chain(
    api_url: str, anon_key: str, service: Client, http: httpx.Client
):
    plan = (service.table("plans").select("name").eq("is_active", True).limit(1).execute().data[0])[
        "name"
    ]
    user = _client(
        api_url,
        anon_key,
        http,
        {
            "X-Forwarded-For": "203.0.113.66",
            "X-Real-IP": "203.0.113.77",
            "User-Agent": "audit-spoof/1.0",
        },
    )
    signed = user.auth.sign_up({"email": random_email(), "password": "correct-horse-9"})
    assert signed.user is not None
    made = user.rpc("create_api_key", {"name": "spoofed", "plan": plan}).execute().data
    entry = (
        user.table("audit_logs")
        .select("action, actor_user_id, ip_address, user_agent, metadata")
        .eq("resource_id", made["id"])
        .single()
        .execute()
        .data
    )
    assert (entry["action"], entry["actor_user_id"]) == ("insert", signed.user.id)
    assert entry["ip_address"] == "127.0.0.1", "the claimed addresses are not recorded"
    assert entry["user_agent"] == "audit-spoof/1.0"
    # The chain as a proxy passes it on: what the client claimed, then the peer.
    assert entry["metadata"]["forwarded_for"] == "203.0.113.66, 127.0.0.1"


def test_forwarded_headers_several_lines_joined_peer_appended_real_ip_replaced():
    rewritten = dict(
        (name.decode(), value.decode())
        for name, value in forwarded_headers(
            [
                (b"x-forwarded-for", b"198.51.100.1"),
                (b"x-real-ip", b"198.51.100.2"),
                (b"x-forwarded-for", b"198.51.100.3, 10.0.0.1"),
                (b"user-agent", b"x"),
            ],
            "127.0.0.1",
        )
    )
    assert rewritten == {
        "x-forwarded-for": "198.51.100.1, 198.51.100.3, 10.0.0.1, 127.0.0.1",
        "x-real-ip": "127.0.0.1",
        "user-agent": "x",
    }


ECHO_ADDRESS = """
Deno.serve((req: Request) => Response.json({
  forwarded_for: req.headers.get("x-forwarded-for"),
  real_ip: req.headers.get("x-real-ip"),
}));
"""


def test_function_invocation_sees_peer_as_real_ip_and_appended_forwarded_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anon_key: str, stack
):
    (tmp_path / "address").mkdir()
    (tmp_path / "address" / "index.ts").write_text(ECHO_ADDRESS)
    monkeypatch.setenv("TOKENMETER_FUNCTIONS_DIR", str(tmp_path))
    app = create_app(GatewayConfig.from_env())
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        answer = client.post(
            "/functions/v1/address",
            headers={
                "Authorization": f"Bearer {anon_key}",
                "X-Forwarded-For": "192.0.2.5",
                "X-Real-IP": "192.0.2.6",
            },
        )
    assert answer.status_code == 200
    assert answer.json() == {"forwarded_for": "192.0.2.5, 127.0.0.1", "real_ip": "127.0.0.1"}


def test_sign_up_rate_limit_with_new_forwarded_for_each_time_still_returns_429(
    stack, anon_key: str
):
    """A caller cannot pick its own rate-limit bucket by sending X-Forwarded-For: uvicorn, by
    default, takes the client's address from it when the peer is 127.0.0.1."""
    limits = {"TOKENMETER_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS": "1"}
    with (
        auth_gateway(limits) as url,
        httpx.Client(base_url=url, headers={"apikey": anon_key}, timeout=30) as http,
    ):
        for n in range(30):  # GoTrue's bucket size: refused sign-ups count too
            weak = http.post(
                "/auth/v1/signup",
                json={"email": random_email(), "password": "x"},
                headers={"X-Forwarded-For": "198.51.100.8"},
            )
            assert weak.status_code == 422, n
        answer = http.post(
            "/auth/v1/signup",
            json={"email": random_email(), "password": "correct-horse-9"},
            headers={"X-Forwarded-For": "198.51.100.9"},
        )
        assert answer.status_code == 429
