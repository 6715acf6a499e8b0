"""`tokenmeter demo`: one user's life, end to end, through the real APIs.

A user signs up through the Auth API (their balance exists at 0), the service tops them up,
reserves credit before an LLM call and settles the real usage after it, records a few more calls
(one retried: charged once), sends one chat completion through the `openai` edge function with
an API key of its own (to a local stand-in upstream, labelled as one: no provider account
needed), and prints the balance and the usage with their costs.
"""

from __future__ import annotations

import json
import threading
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from rich.console import Console

from app.cli.balance import balance_table
from app.cli.output import console as stdout_console
from app.cli.output import handle_errors, money
from app.cli.usage import usage_table
from app.client import call, close_client
from app.config import ConfigError, Settings
from app.errors import InsufficientBalance, UnknownModel
from app.keys import Keys
from app.meter import Meter
from app.plans import Plans
from app.subscriptions import Subscriptions
from app.upstreams import Upstreams
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

    _metered_call(say, console, settings, meter, user_id)

    say("the usage, with costs snapshotted at the prices in effect, and the balance")
    console.print(usage_table(meter.usage(user_id=user_id)))
    console.print(balance_table(meter.balance(user_id=user_id)))
    drift = meter.audit()
    console.print(
        f"   balance_audit(): {'no user whose balance differs from their ledger' if not drift else drift}"
    )


DEMO_PLAN = "demo-standin"
DEMO_UPSTREAM = "demo-standin"
DEMO_MODEL = "gpt-4o-mini"
STANDIN_ANSWER = "Hello from the local stand-in upstream."


class _StandIn(BaseHTTPRequestHandler):
    """A local stand-in for a paid upstream (not a real LLM): answers any chat completion in
    OpenAI's wire format with a fixed text and the usage a provider would report."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        answer = {
            "id": f"chatcmpl-standin-{uuid.uuid4().hex[:8]}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": STANDIN_ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 8 + words,
                "completion_tokens": len(STANDIN_ANSWER.split()),
                "total_tokens": 8 + words + len(STANDIN_ANSWER.split()),
            },
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # quiet: the demo prints what matters
        pass


def _metered_call(
    say: Any, console: Console, settings: Settings, meter: Meter, user_id: str
) -> None:
    """An API key on a plan routed to a local stand-in upstream, and one chat completion through
    the `openai` edge function: authorized (a hold), forwarded, charged the reported usage."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        say(
            f"an operator routes plan {DEMO_PLAN} to a LOCAL STAND-IN upstream ({base_url}; "
            "not a real LLM, so no provider account is needed), subscribes the user and gives "
            "them an API key"
        )
        client = meter.client
        Upstreams(client).set(name=DEMO_UPSTREAM, base_url=base_url)
        call(
            lambda: (
                client.table("plans")
                .upsert({"name": DEMO_PLAN, "price": "demo"}, on_conflict="name")
                .execute()
            )
        )
        Plans(client).set_route(plan=DEMO_PLAN, model=DEMO_MODEL, upstream=DEMO_UPSTREAM, weight=1)
        Subscriptions(client).create(user_id=user_id, plan=DEMO_PLAN, quota_requests=100)
        key = Keys(client).create(user_id=user_id, plan=DEMO_PLAN, name="demo")
        console.print(
            f"   key {key.prefix}… (the whole secret is shown once; only its hash is stored)",
            highlight=False,
        )

        url = f"{settings.supabase_url}/functions/v1/openai/v1/chat/completions"
        say(f"the user's app sends a chat completion to {url} with that key")
        try:
            response = httpx.post(
                url,
                headers={"authorization": f"Bearer {key.key}"},
                json={
                    "model": DEMO_MODEL,
                    "messages": [{"role": "user", "content": "Say hello in one sentence."}],
                    "max_tokens": 50,
                },
                timeout=60,
            )
        except httpx.HTTPError as exc:
            console.print(
                f"   [yellow]the openai function could not be reached ({exc}); skipped[/]"
            )
            return
        if response.status_code != 200:
            console.print(
                f"   [yellow]the openai function answered {response.status_code}: "
                f"{response.text[:300]}[/]",
                highlight=False,
            )
            return
        answer = response.json()
        usage = answer["usage"]
        console.print(
            f"   answer: {answer['choices'][0]['message']['content']!r} (from the stand-in)",
            highlight=False,
        )
        console.print(
            f"   {usage['prompt_tokens']} in, {usage['completion_tokens']} out → charged "
            f"{money(Decimal(usage['cost']))} (usage.cost); x-request-id "
            f"{response.headers.get('x-request-id')}",
            highlight=False,
        )
    finally:
        server.shutdown()
        server.server_close()
