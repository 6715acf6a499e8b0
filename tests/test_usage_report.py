"""`tokenmeter usage report` against the test stack: totals and breakdowns equal SQL's sums to the
last digit in every format, charts are real PNG / self-contained HTML carrying the same exact
strings, `--me` sees only the signed-in user's rows, and empty ranges or unknown users are a
message and exit 1, not an empty picture.

Each test records its usage on three days picked at random 40-390 days back; the expected numbers
are read from usage_records over the same range, so they hold even if another test's rows fell
in it."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.meter import Meter

PASSWORD = "correct-horse-9"  # what conftest's signed_up_user signs up with


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture()
def usage(signed_up_user, new_client, service_key, db):
    """Two users with usage on three days (two models) in a range of this test's own:
    (first day, {"a": (id, email, client), "b": …})."""
    meter = Meter(new_client(service_key))
    # record_usage takes times within the last 400 days; 40+ days back is clear of the tests
    # that record now.
    first = datetime.now(UTC).date() - timedelta(days=random.randrange(40, 390))
    users = {}
    for name in ("a", "b"):
        user_id, client = signed_up_user()
        users[name] = (user_id, client.auth.get_user().user.email, client)
        meter.top_up(user_id=user_id, amount=Decimal(50), reference=f"report-{user_id}")
    plan = [
        ("a", 0, "gpt-4o", 1234, 567),
        ("a", 0, "gpt-4o-mini", 98765, 4321),
        ("a", 2, "gpt-4o", 777, 1),
        ("b", 1, "gpt-4o", 50000, 12345),
        ("b", 2, "gpt-4o-mini", 3, 3),
    ]
    for name, offset, model, tokens_in, tokens_out in plan:
        meter.record_usage(
            user_id=users[name][0],
            model=model,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            request_id=f"report-{uuid.uuid4().hex}",
            occurred_at=datetime.combine(first + timedelta(days=offset), time(12), UTC),
        )
    return first, users


def sql_sums(db, first: date, group: str, user_id: str | None = None) -> dict[str, Decimal]:
    """What SQL says, read straight from usage_records (not through usage_report)."""
    expr = {"day": "(occurred_at at time zone 'UTC')::date::text", "model": "model_id",
            "user": "user_id::text"}[group]  # fmt: skip
    rows = db.execute(
        f"select {expr}, sum(cost)::text from public.usage_records "
        "where occurred_at >= %s and occurred_at < %s and (%s::uuid is null or user_id = %s::uuid) "
        "group by 1",
        (first, first + timedelta(days=3), user_id, user_id),
    ).fetchall()
    return {label: Decimal(total) for label, total in rows}


def span(first: date) -> list[str]:
    return ["--since", first.isoformat(), "--until", (first + timedelta(days=2)).isoformat()]


@pytest.mark.parametrize("group", ["day", "model", "user"])
def test_usage_report_json_breakdown_and_totals_equal_sql_exactly(usage, db, group):
    first, _ = usage
    result = invoke("usage", "report", *span(first), "--by", group, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    field = {"day": "day", "model": "model", "user": "user_id"}[group]
    expected = sql_sums(db, first, group)
    assert {row[field]: Decimal(row["cost"]) for row in report["rows"]} == expected
    assert [row["cost"] for row in report["rows"]] == [
        format(Decimal(row["cost"]).normalize(), "f") for row in report["rows"]
    ]
    (total,) = report["totals"]
    assert Decimal(total["cost"]) == sum(expected.values())
    count = db.execute(
        "select count(*) from public.usage_records where occurred_at >= %s and occurred_at < %s",
        (first, first + timedelta(days=3)),
    ).fetchone()[0]
    assert total["requests"] == count >= 5 and total["currency"] == "USD"


def test_usage_report_table_shows_exact_day_costs_and_total(usage, db):
    first, _ = usage
    result = invoke("usage", "report", *span(first))
    assert result.exit_code == 0, result.output
    expected = sql_sums(db, first, "day")
    for day, cost in expected.items():
        assert day in result.stdout and format(cost.normalize(), "f") in result.stdout
    assert format(sum(expected.values()).normalize(), "f") in result.stdout  # the footer


def test_usage_report_csv_and_out_file_carry_the_same_rows(usage, db, tmp_path):
    first, users = usage
    user_id = users["a"][0]
    result = invoke("usage", "report", *span(first), "--user", users["a"][1], "--by", "model",
                    "--format", "csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "model", "currency", "requests", "input_tokens", "cached_input_tokens", "output_tokens",
        "cost",
    ]  # fmt: skip
    assert {r["model"]: Decimal(r["cost"]) for r in rows} == sql_sums(db, first, "model", user_id)
    out = tmp_path / "report.csv"
    written = invoke("usage", "report", *span(first), "--user", user_id, "--by", "model",
                     "--format", "csv", "--out", str(out))  # fmt: skip
    assert written.exit_code == 0 and written.stdout == ""
    assert out.read_text() == result.stdout
    table_out = tmp_path / "report.txt"
    assert invoke("usage", "report", *span(first), "--out", str(table_out)).exit_code == 0
    assert "total" in table_out.read_text()


def test_usage_report_png_is_a_real_png_chart(usage, tmp_path):
    first, _ = usage
    out = tmp_path / "report.png"
    result = invoke("usage", "report", *span(first), "--format", "png", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # three panels of bars and text, not a blank canvas


def test_usage_report_html_is_self_contained_with_the_exact_numbers(usage, db, tmp_path):
    first, _ = usage
    out = tmp_path / "report.html"
    result = invoke("usage", "report", *span(first), "--format", "html", "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    # Nothing to fetch: no src/href to any URL, no script or stylesheet link, no @import.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', ""
    )
    by_day = sql_sums(db, first, "day")
    for cost in [*by_day.values(), sum(by_day.values())]:
        assert format(cost.normalize(), "f") in page  # in the chart's labels and the table


def test_usage_report_me_sees_only_own_rows(usage, db):
    first, users = usage
    user_id, email, client = users["a"]
    own = sql_sums(db, first, "user", user_id)
    signed_in = {"TOKENMETER_EMAIL": email, "TOKENMETER_PASSWORD": PASSWORD}
    token = {"TOKENMETER_ACCESS_TOKEN": client.auth.get_session().access_token}
    for env in (signed_in, token):
        result = invoke("usage", "report", "--me", *span(first), "--by", "user", "--format",
                        "json", env=env)  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["rows"]
        assert {r["user_id"]: Decimal(r["cost"]) for r in rows} == own
    other = invoke("usage", "report", "--me", *span(first), "--key", "tm_notmine0", env=token)
    assert other.exit_code == 1 and "api_key_not_found" in other.output


def test_usage_report_me_without_a_session_says_what_to_set(usage):
    result = invoke("usage", "report", "--me", env={"TOKENMETER_ACCESS_TOKEN": "",
                                                    "TOKENMETER_EMAIL": ""})  # fmt: skip
    assert result.exit_code == 2
    assert "TOKENMETER_ACCESS_TOKEN" in result.output and "Traceback" not in result.output
    bad = invoke("usage", "report", "--me", env={"TOKENMETER_ACCESS_TOKEN": "not-a-jwt"})
    assert bad.exit_code == 1 and "Traceback" not in bad.output


@pytest.mark.parametrize("fmt", ["table", "json", "png", "html"])
def test_usage_report_empty_range_exits_1_with_a_message(usage, fmt, tmp_path):
    out = tmp_path / f"empty.{fmt}"
    args = ["--out", str(out)] if fmt in ("png", "html") else []
    result = invoke("usage", "report", "--since", "2001-01-01", "--until", "2001-01-31",
                    "--format", fmt, *args)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "no_usage: no usage from 2001-01-01 until before 2001-02-01" in result.output
    assert not out.exists()  # no empty picture


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody-{r}@example.com"], "user_not_found"),
        (["--user", "{uuid}"], "user_not_found"),
        (["--key", "tm_nokey{r4}"], "api_key_not_found"),
        (["--by", "week"], "--by must be one of"),
        (["--format", "pdf"], "--format must be one of"),
        (["--since", "yesterday"], "since must be a date"),
        (["--since", "2030-01-02", "--until", "2030-01-01"], "until must be after since"),
    ],
)
def test_usage_report_bad_input_exits_1_with_one_line(stack, args, message):
    filled = [
        a.replace("{r}", uuid.uuid4().hex)
        .replace("{uuid}", str(uuid.uuid4()))
        .replace("{r4}", uuid.uuid4().hex[:4])
        for a in args
    ]
    result = invoke("usage", "report", *filled)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_usage_report_by_key_splits_metered_requests_from_direct_usage(sign_up, db, service):
    """A request through the metered endpoint's SQL (authorize + complete with a key) and one
    recorded directly: --by key tells them apart, --key keeps only the key's."""
    user_id = sign_up()
    name = f"report-{uuid.uuid4().hex[:12]}"
    db.execute("insert into public.upstreams (name, base_url) values (%s, 'http://127.0.0.1:9/v1')",
               (name,))  # fmt: skip
    db.execute("insert into public.plans (name) values (%s)", (name,))
    db.execute(
        "insert into public.plan_routes (plan_id, upstream_id, model, weight) select p.id, u.id,"
        " 'gpt-4o-mini', 1 from public.plans p, public.upstreams u where p.name = %s and"
        " u.name = %s",
        (name, name),
    )
    db.execute(
        "insert into public.subscriptions (user_id, plan_id, status) select %s, id, 'active'"
        " from public.plans where name = %s",
        (user_id, name),
    )
    db.execute("select public.top_up(%s, 10, %s)", (user_id, name))
    key = db.execute(
        "select public.create_api_key('report', %s, user_id => %s)", (name, user_id)
    ).fetchone()[0]
    request_id = f"report-{uuid.uuid4().hex}"
    db.execute("select public.authorize_request(%s, 'gpt-4o-mini', 100, %s, 100)",
               (key["key"], request_id))  # fmt: skip
    db.execute("select public.complete_request(%s, %s, 200)",
               (request_id, '{"prompt_tokens": 1234, "completion_tokens": 77}'))  # fmt: skip
    direct = (
        Meter(service)
        .record_usage(
            user_id=user_id,
            model="gpt-4o",
            input_tokens=999,
            output_tokens=11,
            request_id=f"report-{uuid.uuid4().hex}",
        )
        .cost
    )
    (cost,) = db.execute(
        "select cost::text from public.usage_records where request_id = %s", (request_id,)
    ).fetchone()
    metered = Decimal(cost)

    result = invoke("usage", "report", "--user", user_id, "--by", "key", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["api_key_id"]: (r["api_key_name"], Decimal(r["cost"]))
            for r in json.loads(result.stdout)["rows"]}  # fmt: skip
    assert rows == {key["id"]: ("report", metered), None: (None, direct)}
    only = invoke("usage", "report", "--key", key["prefix"], "--by", "model", "--format", "json")
    assert only.exit_code == 0, only.output
    assert [(r["model"], Decimal(r["cost"])) for r in json.loads(only.stdout)["rows"]] == [
        ("gpt-4o-mini", metered)
    ]
    table = invoke("usage", "report", "--user", user_id, "--by", "key")
    assert "report (" in table.stdout and "(direct)" in table.stdout


def test_usage_report_cost_beyond_float_precision_is_exact_in_every_format(sign_up, db, tmp_path):
    """21 significant digits: a float anywhere between SQL and the output would round them."""
    user_id = sign_up()
    day = datetime.now(UTC).date() - timedelta(days=random.randrange(40, 390))
    cost = "123456789.123456789012"
    db.execute(
        "insert into public.usage_records (user_id, request_id, provider_id, model_id,"
        " input_tokens, output_tokens, price_per_input_token, price_per_output_token,"
        " price_per_cached_input_token, price_per_request, cost, occurred_at)"
        " values (%s, %s, 'openai', 'gpt-4o', 1, 1, 0, 0, 0, 0, %s, %s)",
        (user_id, f"report-{uuid.uuid4().hex}", cost, datetime.combine(day, time(1), UTC)),
    )
    args = ["usage", "report", "--user", user_id, "--since", day.isoformat(), "--until",
            day.isoformat()]  # fmt: skip
    try:
        report = json.loads(invoke(*args, "--format", "json").stdout)
        assert report["rows"][0]["cost"] == report["totals"][0]["cost"] == cost
        assert f",{cost}\n" in invoke(*args, "--format", "csv").stdout
        assert cost in invoke(*args).stdout
        out = tmp_path / "r.html"
        assert invoke(*args, "--format", "html", "--out", str(out)).exit_code == 0
        assert cost in out.read_text()
    finally:
        # A usage record is its charge's ledger line: one written by hand, with no balance
        # change behind it, would leave balance_audit() (database-wide) a difference.
        db.execute("delete from public.usage_records where user_id = %s", (user_id,))
