"""How the gateway hands a mail to the catcher: Mailpit's send API (POST /api/v1/send)."""

from __future__ import annotations

import httpx

from app.stack.mail.settings import MailSettings

SEND_TIMEOUT_SECONDS = 5.0


class MailNotSent(RuntimeError):
    """The catcher did not take the mail (not running, or it refused it)."""


async def send(
    *,
    catcher_url: str,
    settings: MailSettings,
    to: str,
    subject: str,
    body_html: str,
    headers: dict[str, str] | None = None,
) -> str | None:
    """Deliver one HTML mail from `[inbucket] admin_email`; returns the catcher's message ID,
    or None when the catcher is off (GoTrue without an SMTP host drops mail the same way).
    Raises MailNotSent."""
    if not settings.enabled:
        return None
    payload = {
        "From": {"Email": settings.admin_email, "Name": settings.sender_name},
        "To": [{"Email": to, "Name": ""}],
        "Subject": subject,
        "HTML": body_html,
        "Headers": headers or {},
    }
    try:
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_SECONDS) as http:
            answer = await http.post(f"{catcher_url}/api/v1/send", json=payload)
    except httpx.HTTPError as exc:
        raise MailNotSent(f"mail catcher at {catcher_url} unreachable: {exc}") from None
    if answer.status_code != 200:
        raise MailNotSent(f"mail catcher refused the mail ({answer.status_code}): {answer.text}")
    message_id = answer.json().get("ID")
    return str(message_id) if message_id else None
