"""`tokenmeter balance …`, `tokenmeter usage …` and `tokenmeter demo` against the test stack:
good input works by user id or email, bad input is one line on stderr, exit 1, nothing written."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.meter import Meter


@pytest.fixture()
def user(signed_up_user, new_client, service_key) -> tuple[str, str]:
    """(id, email) of a new user."""
    user_id, client = signed_up_user()
    email = client.auth.get_user().user.email
    return user_id, email


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_balance_top_up_by_email_then_show_by_id_reports_exact_amount(user):
    user_id, email = user
    topped = invoke("balance", "top-up", email, "2.125", "--reference", f"cli-{user_id}", "--json")
    assert topped.exit_code == 0, topped.output
    assert json.loads(topped.stdout)["balance"] == "2.125"
    again = invoke("balance", "top-up", email, "2.125", "--reference", f"cli-{user_id}")
    assert again.exit_code == 0 and "already applied earlier" in again.stdout
    shown = invoke("balance", "show", user_id, "--json")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["available"] == "2.125"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["balance", "top-up", "{id}", "abc", "--reference", "x"], "amount must be a decimal"),
        (["balance", "top-up", "{id}", "NaN", "--reference", "x"], "finite"),
        (["balance", "top-up", "{id}", "0", "--reference", "x"], "invalid_amount"),
        (["balance", "show", "not-a-user"], "uuid or an email"),
        (["balance", "show", "nobody-{id}@example.com"], "user_not_found"),
        (
            ["usage", "record", "{id}", "--model", "gpt-9-ultra", "--input", "1", "--output", "1"],
            "unknown_model",
        ),
        (
            ["usage", "record", "{id}", "--model", "gpt-4o", "--input", "-5", "--output", "1"],
            "invalid_usage",
        ),
    ],
)
def test_billing_cli_bad_input_exits_1_with_one_line_and_writes_nothing(user, args, message):
    user_id, _ = user
    result = invoke(*[a.replace("{id}", user_id) for a in args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    check = invoke("balance", "show", user_id, "--json")
    assert json.loads(check.stdout)["balance"] == "0"
    assert json.loads(invoke("usage", "list", user_id, "--json").stdout) == []


def test_usage_record_then_list_shows_the_cost(user, new_client, service_key):
    user_id, email = user
    Meter(new_client(service_key)).top_up(user_id=user_id, amount=1, reference=f"u-{user_id}")
    request_id = f"cli-{uuid.uuid4().hex}"
    recorded = invoke(
        "usage",
        "record",
        email,
        "--model",
        "gpt-4o",
        "--input",
        "1000",
        "--output",
        "100",
        "--request-id",
        request_id,
        "--json",
    )
    assert recorded.exit_code == 0, recorded.output
    assert json.loads(recorded.stdout)["cost"] == "0.0035"  # 1000 × $2.50/1M + 100 × $10/1M
    listed = json.loads(invoke("usage", "list", user_id, "--json").stdout)
    assert [(row["request_id"], Decimal(row["cost"])) for row in listed] == [
        (request_id, Decimal("0.0035"))
    ]
    table = invoke("usage", "list", email)
    assert table.exit_code == 0 and "0.0035" in table.stdout


def test_demo_runs_end_to_end_and_audit_is_clean(stack):
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    assert "replayed=True: charged once" in result.stdout
    assert "unknown_model" in result.stdout and "insufficient_balance" in result.stdout
    assert "no user whose balance differs from their ledger" in result.stdout
    # The metered path: a key, the openai edge function, the stand-in upstream, a charge.
    assert "LOCAL STAND-IN upstream" in result.stdout
    assert "Hello from the local stand-in upstream." in result.stdout
    assert "(usage.cost)" in result.stdout and "openai function answered" not in result.stdout
