"""What the commands on the metering services share: the Meter for one command, users given by
id or email, and decimal arguments parsed exactly."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from app.cli.output import fail, handle_errors
from app.facade import ServiceFacade
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


F = TypeVar("F", bound=ServiceFacade)


@contextlib.contextmanager
def facade_session(cls: type[F]) -> Iterator[F]:
    """An admin facade (Keys, Plans, …) for one command, as `meter_session` does for Meter."""
    with handle_errors():
        facade = cls.from_env()
    try:
        with handle_errors():
            yield facade
    finally:
        facade.close()


def resolve_user_of(facade: ServiceFacade, user: str) -> str:
    """`resolve_user` through a facade's client (no second client for an email lookup)."""
    return resolve_user(Meter(facade.client), user)


def when(value: datetime | None, never: str = "never") -> str:
    """A time for a table: UTC to the minute."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else never
