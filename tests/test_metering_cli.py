"""`tokenmeter keys|upstreams|plans|subscriptions …` through the real CLI on the test stack, and
the Keys / Upstreams / Plans / Subscriptions facades through supabase-py: good input works (users
by id or email, --json), bad input is one line on stderr with exit 1 and writes nothing, an
unreachable API is exit 2. A key made by the CLI is a real key: authorize_request accepts it
while the subscription is active, and refuses it once the CLI suspends or revokes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.client import call
from app.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from app.keys import Keys, parse_expiry
from app.meter import Meter
from app.plans import Plans
from app.subscriptions import Subscriptions
from app.upstreams import Upstreams

# Wide enough that no table cell (ids, URLs, secrets) is folded across lines.
WIDE = {"COLUMNS": "250"}


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


def ok_json(*args: str):
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str, message: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def tag() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture()
def user(signed_up_user) -> tuple[str, str]:
    """(id, email) of a new user."""
    user_id, client = signed_up_user()
    return user_id, client.auth.get_user().user.email


@pytest.fixture()
def service_role(service):
    return service


@pytest.fixture()
def plan(service_role) -> str:
    """A plan of the test's own, routing gpt-4o-mini and gpt-4o to a configured upstream."""
    name = f"cli-plan-{tag()}"
    upstream = Upstreams(service_role).set(
        name=f"cli-up-{tag()}", base_url="http://127.0.0.1:9/v1", api_key_env="CLI_UP_KEY"
    )
    call(lambda: service_role.table("plans").insert({"name": name, "price": "1/month"}).execute())
    plans = Plans(service_role)
    for model in ("gpt-4o-mini", "gpt-4o"):
        plans.set_route(plan=name, model=model, upstream=upstream.name, weight=1)
    return name


# ── keys ───────────────────────────────────────────────────────────────────────────────────
def test_keys_create_by_email_json_returns_secret_once_and_list_never_shows_it(
    user, plan, service_role
):
    user_id, email = user
    made = ok_json("keys", "create", email, "--plan", plan, "--name", "laptop")
    assert made["key"].startswith("tm_") and len(made["key"]) == 46
    assert made["prefix"] == made["key"][:11]
    assert (made["user_id"], made["plan"], made["name"], made["state"]) == (
        user_id,
        plan,
        "laptop",
        "active",
    )
    assert made["expires_at"] is None and made["allowed_models"] is None
    # The secret is a working key of the plan.
    models = call(lambda: service_role.rpc("list_key_models", {"key": made["key"]}).execute()).data
    assert models["plan"] == plan

    listed = invoke("keys", "list", user_id)
    assert listed.exit_code == 0, listed.output
    assert made["prefix"] in listed.stdout and "laptop" in listed.stdout
    assert made["key"] not in listed.stdout
    as_json = ok_json("keys", "list", email)
    assert [k["id"] for k in as_json] == [made["id"]]
    assert "key" not in as_json[0]


def test_keys_create_table_prints_the_secret_whole_on_its_own_line(user, plan):
    user_id, _ = user
    result = invoke("keys", "create", user_id, "--plan", plan)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    secret = [line for line in lines if line.startswith("tm_") and len(line) == 46]
    assert len(secret) == 1, result.stdout
    assert "shown once" in result.stdout
    [key] = ok_json("keys", "list", user_id)
    assert secret[0].startswith(key["prefix"]) and key["name"] == "default"


def test_keys_create_expires_and_models_are_stored(user, plan):
    user_id, _ = user
    before = datetime.now(UTC)
    made = ok_json("keys", "create", user_id, "--plan", plan, "--expires", "30d",
                   "--models", "gpt-4o-mini, gpt-4o")  # fmt: skip
    expires = datetime.fromisoformat(made["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    assert made["allowed_models"] == ["gpt-4o-mini", "gpt-4o"]
    iso = ok_json("keys", "create", user_id, "--plan", plan, "--expires", "2099-01-02T03:04:05")
    assert datetime.fromisoformat(iso["expires_at"]) == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "no-such-plan-{tag}"], "plan_not_found"),
        (["--plan", "{plan}", "--expires", "tomorrow"], "expires must be never, a duration"),
        (
            ["--plan", "{plan}", "--expires", "2020-01-01"],
            "expires_at must be a time in the future",
        ),
        (["--plan", "{plan}", "--expires", "0d"], "expires must be never"),
        (["--plan", "{plan}", "--models", " , "], "--models must name at least one model"),
        (["--plan", "{plan}", "--models", "gpt-9-ultra"], "allowed_models must name models"),
        (["--plan", "{plan}", "--name", "   "], "name must be a non-empty string"),
    ],
)
def test_keys_create_bad_input_exits_1_and_creates_no_key(user, plan, args, message):
    user_id, _ = user
    refused("keys", "create", user_id,
            *[a.replace("{plan}", plan).replace("{tag}", tag()) for a in args],
            message=message)  # fmt: skip
    assert ok_json("keys", "list", user_id) == []


def test_keys_commands_bad_user_exit_1():
    refused("keys", "list", "not-a-user", message="uuid or an email")
    refused("keys", "list", f"nobody-{tag()}@example.com", message="user_not_found")
    refused("keys", "create", str(uuid.uuid4()), "--plan", "cursor-pro-auto",
            message="user_not_found")  # fmt: skip


def test_keys_revoke_by_prefix_then_again_is_idempotent_and_key_is_refused(
    user, plan, service_role
):
    user_id, _ = user
    made = ok_json("keys", "create", user_id, "--plan", plan)
    revoked = invoke("keys", "revoke", made["prefix"])
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked {made['prefix']}" in revoked.stdout
    again = ok_json("keys", "revoke", made["id"])
    assert again["revoked"] is False and again["state"] == "revoked"
    assert "already revoked" in invoke("keys", "revoke", made["prefix"]).stdout
    with pytest.raises(PermissionDenied) as refused_key:
        call(lambda: service_role.rpc("list_key_models", {"key": made["key"]}).execute())
    assert refused_key.value.code == "revoked_api_key"


def test_keys_revoke_unknown_exits_1():
    refused("keys", "revoke", "tm_zzzzzzzz", message="api_key_not_found")
    refused("keys", "revoke", str(uuid.uuid4()), message="api_key_not_found")


# ── upstreams ──────────────────────────────────────────────────────────────────────────────
def test_upstreams_set_creates_then_updates_keeping_the_secret_name():
    name = f"cli-up-{tag()}"
    made = ok_json("upstreams", "set", name, "--base-url", "http://127.0.0.1:9/v1",
                   "--api-key-env", "CLI_TEST_KEY")  # fmt: skip
    assert (made["base_url"], made["api_key_env"], made["wire_format"], made["is_active"]) == (
        "http://127.0.0.1:9/v1",
        "CLI_TEST_KEY",
        "openai_chat",
        True,
    )
    moved = ok_json("upstreams", "set", name, "--base-url", "https://llm.example.com/v1")
    assert (moved["id"], moved["base_url"], moved["api_key_env"]) == (
        made["id"],
        "https://llm.example.com/v1",
        "CLI_TEST_KEY",
    )
    listed = invoke("upstreams", "list")
    assert listed.exit_code == 0 and name in listed.stdout and "CLI_TEST_KEY" in listed.stdout
    assert [u["name"] for u in ok_json("upstreams", "list")].count(name) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cli-up-{tag}", "--base-url", "ftp://example.com"], "base_url must be an http(s)://"),
        (["cli-up-{tag}", "--base-url", "not a url"], "base_url must be an http(s)://"),
        (["Bad Name {tag}", "--base-url", "https://example.com"], "name must be 1-63 lowercase"),
        (
            ["cli-up-{tag}", "--base-url", "https://example.com", "--api-key-env", "sk-abc123"],
            "never the key itself",
        ),
    ],
)
def test_upstreams_set_bad_input_exits_1_and_writes_nothing(args, message):
    name_tag = tag()
    args = [a.replace("{tag}", name_tag) for a in args]
    refused("upstreams", "set", *args, message=message)
    assert args[0] not in [u["name"] for u in ok_json("upstreams", "list")]


# ── plans ──────────────────────────────────────────────────────────────────────────────────
def test_plans_list_and_show_the_seeded_plans_with_weights():
    plans = {p["name"]: p for p in ok_json("plans", "list")}
    assert {"cursor-pro-auto", "cursor-pro-sonnet", "cursor-pro-opus"} <= set(plans)
    assert sum(r["weight"] for r in plans["cursor-pro-opus"]["routes"]) == 130
    shown = ok_json("plans", "show", "cursor-pro-opus")
    assert shown["routes"] == plans["cursor-pro-opus"]["routes"]
    table = invoke("plans", "show", "cursor-pro-opus")
    assert table.exit_code == 0 and "of auto" in table.stdout
    assert all(r["upstream"] in table.stdout for r in shown["routes"])
    listed = invoke("plans", "list")
    assert listed.exit_code == 0 and "cursor-pro-opus" in listed.stdout


def test_plans_route_adds_then_reweights_one_route(plan):
    upstream = ok_json("upstreams", "set", f"cli-up-{tag()}", "--base-url", "https://x.test/v1")
    route = ok_json("plans", "route", plan, "gpt-4o", "--upstream", upstream["name"],
                    "--weight", "3")  # fmt: skip
    assert (route["model"], route["upstream"], route["weight"]) == ("gpt-4o", upstream["name"], 3)
    again = ok_json("plans", "route", plan, "gpt-4o", "--upstream", upstream["name"],
                    "--weight", "0")  # fmt: skip
    assert again["id"] == route["id"] and again["weight"] == 0
    routes = ok_json("plans", "show", plan)["routes"]
    assert sorted((r["model"], r["weight"]) for r in routes) == [
        ("gpt-4o", 0),
        ("gpt-4o", 1),
        ("gpt-4o-mini", 1),
    ]
    table = invoke("plans", "route", plan, "gpt-4o", "--upstream", upstream["name"],
                   "--weight", "1")  # fmt: skip
    assert table.exit_code == 0 and "50.0%" in table.stdout  # gpt-4o: two routes of weight 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "no-such-plan-{tag}"], "plan_not_found"),
        (["route", "no-such-plan-{tag}", "gpt-4o", "--upstream", "x", "--weight", "1"],
         "plan_not_found"),
        (["route", "{plan}", "gpt-4o", "--upstream", "no-such-up-{tag}", "--weight", "1"],
         "upstream_not_found"),
        (["route", "{plan}", "gpt-4o", "--upstream", "x", "--weight", "-1"], "weight must be between"),
        (["route", "{plan}", "gpt-4o", "--upstream", "x", "--weight", "1000001"],
         "weight must be between"),
        (["route", "{plan}", " ", "--upstream", "x", "--weight", "1"], "model must be a non-empty"),
    ],
)  # fmt: skip
def test_plans_bad_input_exits_1_and_changes_no_route(plan, args, message):
    before = ok_json("plans", "show", plan)["routes"]
    refused("plans", *[a.replace("{plan}", plan).replace("{tag}", tag()) for a in args],
            message=message)  # fmt: skip
    assert ok_json("plans", "show", plan)["routes"] == before


# ── subscriptions ──────────────────────────────────────────────────────────────────────────
def test_subscriptions_create_list_suspend_resume_gate_the_key(user, plan, service_role):
    user_id, email = user
    made = ok_json("subscriptions", "create", email, "--plan", plan, "--quota-requests", "5",
                   "--quota-tokens", "unlimited", "--period", "week")  # fmt: skip
    assert (made["status"], made["quota_requests"], made["quota_tokens"], made["period"]) == (
        "active",
        5,
        None,
        "week",
    )
    assert made["plan"] == plan and made["used_requests"] == 0
    listed = invoke("subscriptions", "list", user_id)
    assert listed.exit_code == 0 and made["id"] in listed.stdout and "0 / 5" in listed.stdout
    assert [s["id"] for s in ok_json("subscriptions", "list", email)] == [made["id"]]

    key = ok_json("keys", "create", user_id, "--plan", plan)["key"]
    Meter(service_role).top_up(user_id=user_id, amount=Decimal(1), reference=f"cli-{user_id}")

    def authorize():
        params = {"key": key, "model": "gpt-4o-mini", "max_tokens": 10,
                  "request_id": f"cli-{uuid.uuid4().hex}"}  # fmt: skip
        return call(lambda: service_role.rpc("authorize_request", params).execute()).data

    assert authorize()["status"] == "authorized"
    suspended = ok_json("subscriptions", "suspend", made["id"])
    assert (suspended["status"], suspended["suspension_reason"], suspended["changed"]) == (
        "suspended",
        "operator",
        True,
    )
    with pytest.raises(PermissionDenied) as inactive:
        authorize()
    assert inactive.value.code == "subscription_inactive"
    assert "nothing changed" in invoke("subscriptions", "suspend", made["id"]).stdout
    resumed = ok_json("subscriptions", "resume", made["id"])
    assert (resumed["status"], resumed["changed"]) == ("active", True)
    assert authorize()["status"] == "authorized"
    # Requests in flight count only on completion; used_requests is what completed.
    assert ok_json("subscriptions", "list", user_id)[0]["status"] == "active"


def test_subscriptions_create_defaults_to_seed_quotas_and_plan_period(user, plan):
    user_id, _ = user
    made = ok_json("subscriptions", "create", user_id, "--plan", plan)
    assert (made["quota_requests"], made["quota_tokens"], made["period"]) == (
        10_000,
        1_000_000,
        "month",
    )
    refused("subscriptions", "create", user_id, "--plan", plan, message="subscription_exists")
    assert len(ok_json("subscriptions", "list", user_id)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "{plan}", "--quota-requests", "-1"], "--quota-requests must be a whole number"),
        (["--plan", "{plan}", "--quota-tokens", "lots"], "--quota-tokens must be a whole number"),
        (["--plan", "{plan}", "--period", "fortnight"], "period must be one of"),
        (["--plan", "no-such-plan-{tag}"], "plan_not_found"),
    ],
)
def test_subscriptions_create_bad_input_exits_1_and_creates_none(user, plan, args, message):
    user_id, _ = user
    refused("subscriptions", "create", user_id,
            *[a.replace("{plan}", plan).replace("{tag}", tag()) for a in args],
            message=message)  # fmt: skip
    assert ok_json("subscriptions", "list", user_id) == []


def test_subscriptions_suspend_resume_bad_ids_and_states_exit_1(user, plan, service_role):
    user_id, _ = user
    refused("subscriptions", "suspend", "not-a-uuid", message="subscription_id must be a uuid")
    refused("subscriptions", "resume", str(uuid.uuid4()), message="subscription_not_found")
    cancelled = call(
        lambda: (
            service_role.table("subscriptions")
            .insert(
                {
                    "user_id": user_id,
                    "status": "cancelled",
                    "plan_id": Plans(service_role).get(name=plan).id,
                }
            )  # fmt: skip
            .execute()
        )
    ).data[0]
    refused("subscriptions", "resume", cancelled["id"], message="invalid_status_change")
    refused("subscriptions", "suspend", cancelled["id"], message="invalid_status_change")
    assert [s["status"] for s in ok_json("subscriptions", "list", user_id)] == ["cancelled"]
    refused("subscriptions", "create", str(uuid.uuid4()), "--plan", plan, message="user_not_found")


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "list", "00000000-0000-4000-8000-000000000000"],
        ["upstreams", "list"],
        ["plans", "list"],
        ["subscriptions", "suspend", "00000000-0000-4000-8000-000000000000"],
    ],
)
def test_metering_commands_api_unreachable_exit_2(stack, args):
    result = invoke(*args, env={"SUPABASE_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert "unavailable" in result.stderr and "Traceback" not in result.output


# ── the facades, through supabase-py ───────────────────────────────────────────────────────
def test_keys_facade_create_list_revoke_typed_results(user, plan, service_role):
    user_id, _ = user
    keys = Keys(service_role)
    made = keys.create(user_id=user_id, plan=plan, name="svc", allowed_models=["gpt-4o"],
                       spend_limit=Decimal("2.50"), spend_limit_period="day")  # fmt: skip
    assert made.spend_limit == Decimal("2.5") and made.allowed_models == ["gpt-4o"]
    assert [k.id for k in keys.list(user_id=user_id)] == [made.id]
    assert keys.revoke(key=made.prefix).revoked is True
    assert keys.list(user_id=user_id)[0].state == "revoked"
    with pytest.raises(NotFound) as missing:
        keys.create(user_id=user_id, plan=f"nope-{tag()}")
    assert missing.value.code == "plan_not_found"
    with pytest.raises(InvalidInput) as bad:
        keys.create(user_id=user_id, plan=plan, spend_limit=Decimal("1"))
    assert "spend_limit_period" in str(bad.value)


def test_parse_expiry_forms():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("never") is None and parse_expiry("-1") is None
    assert parse_expiry("30d", now=now) == now + timedelta(days=30)
    assert parse_expiry("12h", now=now) == now + timedelta(hours=12)
    assert parse_expiry("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    for bad in ("", "30", "30w", "soon", "0h"):
        with pytest.raises(InvalidInput) as err:
            parse_expiry(bad)
        assert err.value.field == "expires"


def test_upstreams_facade_refuses_a_pasted_secret_and_writes_nothing(service_role):
    name = f"svc-up-{tag()}"
    with pytest.raises(InvalidInput) as err:
        Upstreams(service_role).set(name=name, base_url="https://x.test", api_key_env="sk-live-1")
    assert err.value.field == "api_key_env"
    assert name not in [u.name for u in Upstreams(service_role).list()]


def test_subscriptions_facade_suspend_resume_and_conflicts(user, plan, service_role):
    user_id, _ = user
    subs = Subscriptions(service_role)
    made = subs.create(user_id=user_id, plan=plan, quota_requests=None, period="day")
    assert made.quota_requests is None and made.quota_tokens == 1_000_000
    assert made.reset_at - made.started_at == timedelta(days=1)
    with pytest.raises(Conflict) as exists:
        subs.create(user_id=user_id, plan=plan)
    assert exists.value.code == "subscription_exists"
    assert subs.suspend(subscription_id=made.id).status == "suspended"
    assert subs.resume(subscription_id=made.id).status == "active"
    with pytest.raises(InvalidInput):
        subs.create(user_id=user_id, plan=plan, quota_tokens=-5)
    assert [s.id for s in subs.list(user_id=user_id)] == [made.id]
