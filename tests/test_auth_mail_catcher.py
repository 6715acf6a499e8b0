"""The local mail catcher (app/stack/mail): Mailpit's API as Supabase CLI 2.117's catcher serves
it, run with the stack on API port + 3. Most tests talk to the stack's own catcher over HTTP; the
mailbox bound uses the app in-process with a small bound."""

from __future__ import annotations

import uuid

import httpx
import inbox
import pytest
from starlette.testclient import TestClient

from app.stack.mail import catcher
from app.stack.mail.settings import read_mail_settings
from app.stack.manager import Stack


def _send(to: str, subject: str = "Hello", html: str = "<p>Hi <b>there</b></p>") -> str:
    answer = httpx.post(
        f"{inbox.catcher_url()}/api/v1/send",
        json={
            "From": {"Email": "sender@example.com", "Name": "Sender"},
            "To": [{"Email": to, "Name": ""}],
            "Subject": subject,
            "HTML": html,
        },
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["ID"])


def _to() -> str:
    return f"mail-{uuid.uuid4().hex[:10]}@example.com"


def test_stack_runs_mail_catcher_on_api_port_plus_three(stack: Stack):
    status = stack.status()
    assert status.mail_running is True
    assert status.mail_url == f"http://127.0.0.1:{stack.paths.api_port + 3}"
    assert httpx.get(f"{status.mail_url}/readyz").status_code == 200


def test_send_then_list_search_read_and_delete(stack: Stack):
    to = _to()
    message_id = _send(to, subject="Your code", html="<p>Code: <b>123456</b></p>")
    listed = httpx.get(f"{inbox.catcher_url()}/api/v1/messages").json()
    assert {"total", "unread", "messages_count", "messages_unread", "start", "tags"} <= set(listed)
    found = httpx.get(f"{inbox.catcher_url()}/api/v1/search", params={"query": f"to:{to}"}).json()
    assert found["messages_count"] == 1
    summary = found["messages"][0]
    assert (summary["ID"], summary["Subject"], summary["Read"]) == (message_id, "Your code", False)
    assert summary["To"] == [{"Name": "", "Address": to}]
    assert summary["From"] == {"Name": "Sender", "Address": "sender@example.com"}
    full = inbox.message(message_id)
    assert full["Text"] == "Code: 123456" and full["HTML"] == "<p>Code: <b>123456</b></p>"
    assert full["Subject"] == "Your code" and full["MessageID"].endswith("@mailpit")
    raw = httpx.get(f"{inbox.catcher_url()}/api/v1/message/{message_id}/raw").text
    assert f"To: {to}" in raw and "Subject: Your code" in raw
    again = httpx.get(f"{inbox.catcher_url()}/api/v1/search", params={"query": f"to:{to}"})
    assert again.json()["messages"][0]["Read"] is True  # reading a message marks it read
    deleted = httpx.request(
        "DELETE", f"{inbox.catcher_url()}/api/v1/messages", json={"IDs": [message_id]}
    )
    assert (deleted.status_code, deleted.text) == (200, "ok")
    gone = httpx.get(f"{inbox.catcher_url()}/api/v1/message/{message_id}")
    assert (gone.status_code, gone.text) == (404, "404 page not found")


def test_search_by_subject_and_delete_search(stack: Stack):
    to = _to()
    _send(to, subject="alpha report")
    _send(to, subject="beta report")
    url = f"{inbox.catcher_url()}/api/v1/search"
    beta = httpx.get(url, params={"query": f'to:{to} subject:"beta report"'}).json()
    assert [m["Subject"] for m in beta["messages"]] == ["beta report"]
    assert httpx.delete(url, params={"query": f"to:{to} subject:alpha"}).text == "ok"
    left = httpx.get(url, params={"query": f"to:{to}"}).json()
    assert [m["Subject"] for m in left["messages"]] == ["beta report"]
    assert httpx.get(url).status_code == 400  # no query: Mailpit's 400


def test_send_with_bad_address_or_header_returns_400_and_stores_nothing(stack: Stack):
    url = f"{inbox.catcher_url()}/api/v1/send"
    before = httpx.get(f"{inbox.catcher_url()}/api/v1/messages").json()["total"]
    bad_to = httpx.post(
        url,
        json={"From": {"Email": "a@example.com"}, "To": [{"Email": "not an address"}]},
    )
    bad_header = httpx.post(
        url,
        json={
            "From": {"Email": "a@example.com"},
            "To": [{"Email": _to()}],
            "Headers": {"Subject": "override"},
        },
    )
    assert [bad_to.status_code, bad_header.status_code] == [400, 400]
    assert "Error" in bad_to.json() and "cannot overwrite header" in bad_header.json()["Error"]
    assert httpx.get(f"{inbox.catcher_url()}/api/v1/messages").json()["total"] == before


def test_web_page_lists_mail_with_subject_escaped(stack: Stack):
    to = _to()
    message_id = _send(to, subject="<script>alert(1)</script>", html="<p>x</p>")
    page = httpx.get(f"{inbox.catcher_url()}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>" not in page.text
    view = httpx.get(f"{inbox.catcher_url()}/view/{message_id}")
    assert view.status_code == 200 and "sandbox" in view.text
    assert "default-src 'none'" in view.headers["content-security-policy"]


def test_mailbox_keeps_newest_messages_up_to_bound():
    app = catcher.create_app()
    app.state.mailbox = catcher.Mailbox(max_messages=3)
    with TestClient(app) as client:
        for n in range(5):
            client.post(
                "/api/v1/send",
                json={
                    "From": {"Email": "a@example.com"},
                    "To": [{"Email": "b@example.com"}],
                    "Subject": f"m{n}",
                },
            )
        listed = client.get("/api/v1/messages").json()
        latest = client.get("/api/v1/message/latest").json()
    assert [m["Subject"] for m in listed["messages"]] == ["m4", "m3", "m2"]
    assert listed["total"] == 3 and latest["Subject"] == "m4"


def test_mail_settings_from_config_toml_and_env(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[inbucket]\nenabled = true\nadmin_email = "auth@example.com"\n')
    settings = read_mail_settings(config, {})
    assert (settings.enabled, settings.admin_email, settings.sender_name) == (
        True,
        "auth@example.com",
        "Admin",
    )
    assert read_mail_settings(config, {"TOKENMETER_INBUCKET_ENABLED": "false"}).enabled is False
    assert read_mail_settings(tmp_path / "absent.toml", {}).enabled is False
    config.write_text('[inbucket]\nenabled = "yes"\n')
    with pytest.raises(ValueError):
        read_mail_settings(config, {})
