"""What the commands on the metering services share: the Meter for one command, users given by
id or email, and decimal arguments parsed exactly."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from app.cli.output import fail, handle_errors
from app.meter import Meter

USER_HELP = "User id (uuid) or email."
JSON_HELP = "Machine-readable output."


@contextlib.contextmanager
def meter_session() -> Iterator[Meter]:
    """The Meter for one command: our errors become a message and an exit code, and its
    connections are closed afterwards."""
    with handle_errors():
        meter = Meter.from_env()
    try:
        with handle_errors():
            yield meter
    finally:
        meter.close()


def resolve_user(meter: Meter, user: str) -> str:
    """The id of a user given by id or email (raises NotFound for an unknown email)."""
    try:
        return str(uuid.UUID(user))
    except ValueError:
        pass
    if "@" not in user:
        fail(f"user must be a uuid or an email address, got {user!r}")
    return meter.user_id_for_email(email=user)


def decimal_arg(value: str, name: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        fail(f"{name} must be a decimal number, got {value!r}")
    if not amount.is_finite():
        fail(f"{name} must be a finite number, got {value!r}")
    return amount
