"""`tokenmeter demo`: one user's life, end to end, through the real APIs.

A user signs up through the Auth API (their balance exists at 0), the service tops them up,
reserves credit before an LLM call and settles the real usage after it, records a few more calls
(one retried: charged once), and prints the balance and the usage with their costs.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from rich.console import Console

from app.cli.balance import balance_table
from app.cli.output import console as stdout_console
from app.cli.output import handle_errors, money
from app.cli.usage import usage_table
from app.client import call, close_client
from app.config import ConfigError, Settings
from app.errors import InsufficientBalance, UnknownModel
from app.meter import Meter
from supabase import Client, create_client


def demo() -> None:
    """A short end-to-end run against the configured project (the local stack by default)."""
    with handle_errors():
        run_demo(stdout_console)


def run_demo(console: Console) -> None:
    """Run the walk-through; raises ConfigError / TokenmeterError (the CLI renders them)."""
    settings = Settings.load()
    if not settings.anon_key:
        raise ConfigError("SUPABASE_ANON_KEY is needed to sign a demo user up")
    user_client = create_client(settings.supabase_url, settings.anon_key)
    try:
        with Meter.from_env() as meter:
            _walk_through(console, settings, meter, user_client)
    finally:
        close_client(user_client)


def _walk_through(console: Console, settings: Settings, meter: Meter, user_client: Client) -> None:
    step = iter(range(1, 100))

    def say(text: str) -> None:
        console.print(f"\n[bold cyan]{next(step)}.[/] {text}")

    email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
    say(f"[bold]{email}[/] signs up through the Auth API ({settings.supabase_url}/auth/v1)")
    session = call(
        lambda: user_client.auth.sign_up({"email": email, "password": "demo-password-1"})
    )
    assert session.user is not None
    user_id = session.user.id
    own = call(lambda: user_client.rpc("my_balance").execute()).data
    console.print(
        f"   their balance exists, created by the signup trigger: "
        f"{money(Decimal(own['balance']), own['currency'])} (read as the user, RLS)"
    )

    say("the service tops it up with $5.00 (reference pay_001: idempotent)")
    movement = meter.top_up(user_id=user_id, amount=Decimal("5.00"), reference=f"pay_001-{user_id}")
    console.print(f"   balance {money(movement.balance)}")

    say("before an LLM call: estimate the most it can cost and reserve that credit")
    estimate = meter.estimate_cost(model="gpt-4o", input_tokens=1200, max_output_tokens=800)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    hold = meter.reserve(
        user_id=user_id, request_id=request_id, amount=estimate.cost, model="gpt-4o"
    )
    console.print(
        f"   gpt-4o, 1,200 tokens in, up to 800 out → at most {money(estimate.cost)}; "
        f"held; available now {money(hold.available or Decimal(0))}"
    )

    say("after the call: settle at the real usage (1,187 in, 412 out) and release the hold")
    settled = meter.settle(request_id=request_id, input_tokens=1187, output_tokens=412)
    console.print(
        f"   charged {money(settled.cost)} (not the {money(estimate.cost)} estimate); "
        f"balance {money(settled.balance)}"
    )

    say("three more calls are recorded; the first is retried with the same request_id")
    calls = [
        ("claude-sonnet-4", 2_400, 0, 350),
        ("gemini-2.5-flash", 8_000, 0, 1_200),
        ("gpt-4o-mini", 3_000, 1_024, 500),
    ]
    for model, tokens_in, cached, tokens_out in calls:
        usage = dict(
            user_id=user_id,
            model=model,
            input_tokens=tokens_in,
            cached_input_tokens=cached,
            output_tokens=tokens_out,
            request_id=f"req-{uuid.uuid4().hex[:12]}",
        )
        result = meter.record_usage(**usage)
        console.print(f"   {model:<17} {money(result.cost):>22}")
        if model == "claude-sonnet-4":
            retry = meter.record_usage(**usage)  # the same call again: replayed, not charged
            console.print(
                f"   {'(retry)':<17} {money(retry.cost):>22}  replayed={retry.replayed}: "
                "charged once"
            )

    say("guards: an unknown model is refused (never $0), and so is a hold beyond the balance")
    try:
        meter.record_usage(
            user_id=user_id,
            model="gpt-9-ultra",
            input_tokens=10,
            output_tokens=10,
            request_id=f"req-{uuid.uuid4().hex[:12]}",
        )
    except UnknownModel as exc:
        console.print(f"   gpt-9-ultra → {exc.code}: {exc.detail}")
    try:
        meter.reserve(
            user_id=user_id, request_id=f"req-{uuid.uuid4().hex[:12]}", amount=Decimal("1000")
        )
    except InsufficientBalance as exc:
        console.print(f"   reserve $1,000 → {exc.code}: {exc.detail}")

    say("the usage, with costs snapshotted at the prices in effect, and the balance")
    console.print(usage_table(meter.usage(user_id=user_id)))
    console.print(balance_table(meter.balance(user_id=user_id)))
    drift = meter.audit()
    console.print(
        f"   balance_audit(): {'no user whose balance differs from their ledger' if not drift else drift}"
    )
