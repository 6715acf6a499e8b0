"""The dashboard in a real browser (issue 13 §3): headless Chromium from the Debian packages
(`chromium`, installed by scripts/setup.sh), driven by Playwright for Python through
`executable_path` — Playwright's own browser download is never used.

The demo's data is set up first (`tokenmeter demo`'s walk-through: a user, a top-up, a hold
settled, usage on four models, a key on a plan and one metered call). Every page must load with no
console error, no failed request and no request leaving the dashboard (nothing is fetched from
the network), and show the numbers SQL gives for that data. A full-page screenshot of each page
is saved in a temp folder (printed at the start; CI keeps it as an artifact).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright
from rich.console import Console

from app.cli.demo import run_demo
from app.dashboard import charts, editor
from app.dashboard import process as dashboard
from app.report import exact
from app.stack.manager import Stack


def system_chromium() -> str:
    """Debian's Chromium: the binary itself (/usr/bin/chromium is a shell wrapper)."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError(
        "no system Chromium: install Debian's package (apt-get install chromium; "
        "scripts/setup.sh does it as root)"
    )


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\ndashboard screenshots: {folder}")
    return folder


@dataclass(frozen=True)
class Demo:
    user_id: str
    email: str
    key_prefix: str


@pytest.fixture(scope="module")
def demo(stack: Stack) -> Demo:
    """The demo's data, set up as `tokenmeter demo` does it."""
    run_demo(Console(file=io.StringIO(), width=120))
    with psycopg.connect(stack.paths.db_url()) as conn:
        user_id, email = conn.execute(
            "select id::text, email from auth.users where email like 'demo-%' "
            "order by created_at desc limit 1"
        ).fetchone()
        (key_prefix,) = conn.execute(
            "select prefix from public.api_keys where user_id = %s", (user_id,)
        ).fetchone()
    return Demo(user_id, email, key_prefix)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=system_chromium(), headless=True)
        yield launched
        launched.close()


@dataclass
class Watch:
    """What a page did that it should not: console errors, failed or refused requests."""

    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def outside() -> list[str]:
    """URLs the pages asked for that are not the dashboard's (refused): must stay empty."""
    return []


@pytest.fixture(scope="module")
def context(
    browser: Browser, stack: Stack, service_key: str, outside: list[str]
) -> Iterator[BrowserContext]:
    """A browser signed in through the login form, allowed to reach the dashboard only."""
    base = dashboard.url(stack.paths)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base)

    def only_dashboard(route: Route) -> None:
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_dashboard)
    page = context.new_page()
    page.goto("/")
    assert page.url.startswith(f"{base}/login")
    page.fill("#key", service_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    page.close()
    yield context
    context.close()


@pytest.fixture()
def page(context: BrowserContext, outside: list[str]) -> Iterator[tuple[Page, Watch]]:
    watch = Watch()
    page = context.new_page()
    page.on(
        "console",
        lambda m: (
            watch.problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: watch.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: watch.problems.append(f"request failed: {r.url}"))
    page.on(
        "response",
        lambda r: watch.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    yield page, watch
    page.close()
    assert outside == [], "requests left the dashboard"


def visit(page: Page, watch: Watch, path: str, shot: Path) -> None:
    response = page.goto(path)
    assert response is not None and response.status == 200, path
    page.screenshot(path=str(shot), full_page=True)
    assert watch.problems == [], watch.problems


def text(page: Page, test_id: str) -> str:
    return page.get_by_test_id(test_id).inner_text()


def sql_value(db: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# ── Pages ─────────────────────────────────────────────────────────────────────────────────────


def test_overview_shows_spend_equal_to_sql(page, demo: Demo, db, screenshots: Path):
    tab, watch = page
    # "Today" is the UTC date at which the dashboard renders the page, and the SQL below sums that
    # date: a render that straddles midnight is done again. A run that reaches this test on the
    # day after it set the demo up makes today's usage again (a second demo user), so that the
    # tile is not 0 = 0.
    for _ in range(3):
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if not sql_value(db, "select count(*) from public.usage_records where occurred_at >= %s"
                         " and occurred_at < %s and currency = 'USD'",
                         today, today + timedelta(days=1)):  # fmt: skip
            run_demo(Console(file=io.StringIO(), width=120))
        visit(tab, watch, "/", screenshots / "overview.png")
        if datetime.now(UTC) < today + timedelta(days=1):
            break
    since = today - timedelta(days=29)
    spend = {
        label: sql_value(
            db,
            "select coalesce(sum(cost), 0) from public.usage_records "
            "where occurred_at >= %s and currency = 'USD'",
            start,
        )
        for label, start in (
            ("today", today),
            ("7d", today - timedelta(days=6)),
            ("30d", since),
        )
    }
    assert spend["today"] > 0  # the demo's usage is today's
    assert text(tab, "spend-today") == f"{exact(spend['today'])} USD"
    assert text(tab, "spend-7d") == f"{exact(spend['7d'])} USD"
    assert text(tab, "spend-30d") == f"{exact(spend['30d'])} USD"
    # The chart's legend: each drawn model's 30-day total, exact.
    per_model = db.execute(
        "select model_id, sum(cost) from public.usage_records "
        "where occurred_at >= %s and currency = 'USD' group by 1 order by 2 desc, 1",
        (since,),
    ).fetchall()
    legend = tab.get_by_test_id("spend-chart").inner_text()
    for model, cost in per_model[: charts.MAX_SERIES]:
        assert f"{model}: {exact(cost)} USD" in legend


def test_users_page_finds_the_demo_user_with_their_balance(page, demo: Demo, db, screenshots: Path):
    tab, watch = page
    visit(tab, watch, f"/users?q={demo.email}", screenshots / "users.png")
    balance = sql_value(
        db, "select balance from public.user_balances where user_id = %s", demo.user_id
    )
    row = tab.get_by_test_id("users").locator("tbody tr")
    assert row.count() == 1
    assert demo.email in row.inner_text()
    assert f"{exact(balance)} USD" in row.inner_text()


def test_user_page_shows_balance_usage_keys_subscription_and_ledger(
    page, demo: Demo, db, screenshots: Path
):
    tab, watch = page
    visit(tab, watch, f"/users/{demo.user_id}", screenshots / "user.png")
    balance = sql_value(
        db, "select balance from public.user_balances where user_id = %s", demo.user_id
    )
    assert text(tab, "user-balance") == f"{exact(balance)} USD"
    assert text(tab, "user-held") == "0 USD"  # the demo's hold was settled
    usage = db.execute(
        "select request_id, cost from public.usage_records where user_id = %s",
        (demo.user_id,),
    ).fetchall()
    assert len(usage) == 5
    recent = tab.get_by_test_id("user-usage").inner_text()
    for request_id, cost in usage:
        assert request_id in recent and f"{exact(cost)} USD" in recent
    assert demo.key_prefix in recent  # the metered call is the key's
    by_model = db.execute(
        "select model_id, sum(cost) from public.usage_records where user_id = %s group by 1",
        (demo.user_id,),
    ).fetchall()
    table = tab.get_by_test_id("user-usage-by-model").inner_text()
    for model, cost in by_model:
        assert model in table and f"{exact(cost)} USD" in table
    assert demo.key_prefix in text(tab, "user-keys")
    assert "demo-standin" in text(tab, "user-subscriptions")
    assert "5 USD" in text(tab, "user-ledger")  # the top-up


def test_models_page_shows_prices_history_aliases_and_consolidation(
    page, demo: Demo, db, screenshots: Path
):
    tab, watch = page
    visit(tab, watch, "/models?model=gpt-4o", screenshots / "models.png")
    tab.get_by_test_id("run-consolidation").click()
    tab.get_by_test_id("consolidation").wait_for()
    assert watch.problems == []
    provider, per_1m = db.execute(
        "select w.provider_id, w.price_per_input_token * 1000000 from public.models_with_pricing w "
        "join public.models m on m.id = w.id where w.model_id = 'gpt-4o' and m.is_default"
    ).fetchone()
    rows = [
        r.split("\t") for r in tab.get_by_test_id("prices").locator("tbody tr").all_inner_texts()
    ]
    (row,) = [r for r in rows if r[0] == "gpt-4o" and r[1] == f"{provider} ★"]
    assert row[3] == exact(per_1m)  # input per 1M
    versions = sql_value(db, "select count(*) from public.model_pricing where model_id = 'gpt-4o'")
    assert tab.get_by_test_id("price-history").locator("tbody tr").count() == versions
    aliases = sql_value(db, "select count(*) from public.model_aliases")
    assert tab.get_by_test_id("aliases").locator("tbody tr").count() == min(aliases, 200)
    passed = sql_value(db, "select (public.pricing_consolidation_report()->>'passed')::boolean")
    assert text(tab, "consolidation-passed").startswith("Passed" if passed else "Failed")


def test_keys_page_shows_the_demo_key_on_its_plan(page, demo: Demo, db, screenshots: Path):
    tab, watch = page
    visit(tab, watch, "/keys", screenshots / "keys.png")
    key_row = tab.get_by_test_id("keys").locator("tr", has_text=demo.key_prefix)
    assert demo.email in key_row.inner_text() and "demo-standin" in key_row.inner_text()
    plans = sql_value(db, "select count(*) from public.plans")
    assert tab.get_by_test_id("plans").locator("tbody tr").count() == plans
    routes = sql_value(db, "select count(*) from public.plan_routes")
    assert tab.get_by_test_id("routes").locator("tbody tr").count() == routes


def test_audit_page_shows_the_newest_entries(page, demo: Demo, db, screenshots: Path):
    tab, watch = page
    visit(tab, watch, "/audit", screenshots / "audit.png")
    newest = sql_value(db, "select max(id) from public.price_audit")
    first = tab.get_by_test_id("audit-public.price_audit").locator("tbody tr").first
    assert first.locator("td").first.inner_text() == str(newest)
    if sql_value(db, "select to_regclass('public.audit_logs') is not null"):
        assert (
            tab.get_by_test_id("audit-public.audit_logs").count()
            + tab.get_by_text("No entry.").count()
            >= 1
        )
    else:
        assert tab.get_by_test_id("missing-public.audit_logs").is_visible()


def test_sql_editor_runs_a_query_and_shows_its_rows(page, demo: Demo, db, screenshots: Path):
    tab, watch = page
    visit(tab, watch, "/sql", screenshots / "sql-editor.png")
    tab.fill("#query", f"select sum(cost) as spent from public.usage_records\n"
             f"where user_id = '{demo.user_id}'")  # fmt: skip
    tab.press("#query", "Control+Enter")  # the editor's shortcut (its script)
    tab.wait_for_selector("[data-testid=sql-result]")
    spent = sql_value(
        db, "select sum(cost)::text from public.usage_records where user_id = %s", demo.user_id
    )
    cells = tab.get_by_test_id("sql-result").locator("td").all_inner_texts()
    assert cells == [spent]
    assert "SELECT 1" in text(tab, "sql-status")
    tab.screenshot(path=str(screenshots / "sql-editor-result.png"), full_page=True)
    assert watch.problems == []


def test_sql_editor_shows_a_bad_query_error_at_its_position(page, demo: Demo, screenshots: Path):
    tab, watch = page
    visit(tab, watch, "/sql?snippet=balance-audit", screenshots / "sql-snippet.png")
    assert tab.input_value("#query").strip() == editor.snippet("balance-audit").sql
    script = "select 1;\nselect model_id\n  frm public.usage_records"
    tab.fill("#query", script)
    tab.click("#run")
    error = tab.get_by_test_id("sql-error")
    error.wait_for()
    position = script.index("public") + 1  # `frm` reads as an alias; the error is after it
    assert "42601: syntax error at or near" in error.inner_text()
    assert text(tab, "sql-error-position") == (f"at line 3, column 7 (character {position})")
    # The editor puts the text cursor on the error (editor.js, which may run a moment after
    # the error box is visible: wait for the page's load event before reading the cursor).
    tab.wait_for_load_state("load")
    assert tab.evaluate("document.getElementById('query').selectionStart") == position - 1
    tab.screenshot(path=str(screenshots / "sql-editor-error.png"), full_page=True)
    assert watch.problems == []
