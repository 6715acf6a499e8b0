"""`python -m app.stack.mail`: the mail catcher on the stack's mail port (stack start runs it)."""

from __future__ import annotations

import uvicorn

from app.stack.mail.catcher import create_app
from app.stack.paths import StackPaths

uvicorn.run(
    create_app(),
    host="127.0.0.1",
    port=StackPaths.from_env().inbucket_port,
    log_level="warning",
    access_log=False,
    # A mailbox of small messages: bounded header and body sizes come from h11's defaults and
    # the catcher's own MAX_MESSAGE_BYTES.
    http="h11",
)
