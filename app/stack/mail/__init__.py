"""The local stack's mail catcher, as the Supabase CLI runs one (Mailpit since CLI 1.x-2.x; 2.117
ships Mailpit v1.30): every mail the local Auth API sends lands in it, readable on a web page and
through Mailpit's HTTP API on the stack's mail port (54324 by default, API port + 3, or
TOKENMETER_INBUCKET_PORT).

    settings.py  `[inbucket]` of supabase/config.toml: on or off, sender address and name
    catcher.py   the HTTP server: Mailpit's API over an in-memory mailbox, and the web page
    process.py   start and stop it with the stack (`python -m app.stack.mail`)
    client.py    how the gateway delivers a mail (Mailpit's send API)

There is no SMTP: the Auth API is the only sender and talks HTTP. docs/compatibility.md ("Auth",
mail catcher) lists what is served.
"""

from __future__ import annotations

from app.stack.mail.settings import MailSettings, read_mail_settings

__all__ = ["MailSettings", "read_mail_settings"]
