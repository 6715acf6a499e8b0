"""The local dashboard over HTTP (the browser tests are in test_dashboard_browser.py): who may
reach it, that `stack start/status/stop` are honest about it, and the SQL editor's bounds —
row cap, one transaction, error positions, timeout, no session state leaking between scripts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.dashboard import editor
from app.dashboard import process as dashboard
from app.meter import Meter
from app.report import exact
from app.stack.manager import Stack

# httpx's default 5 s is too short on a shared CI machine for the first chart after a restart
# (matplotlib's import and first draw); a page that hangs still fails.
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def dashboard_url(stack: Stack) -> str:
    assert dashboard.enabled(stack.paths), "supabase/config.toml [studio] enabled = true"
    assert dashboard.running(stack.paths)
    return dashboard.url(stack.paths)


@pytest.fixture()
def web(dashboard_url: str, service_key: str) -> Iterator[httpx.Client]:
    """A client that presents the service_role key, as a script would."""
    with httpx.Client(
        base_url=dashboard_url, headers={"apikey": service_key}, timeout=TIMEOUT
    ) as client:
        yield client


def run_sql(web: httpx.Client, script: str) -> httpx.Response:
    return web.post("/sql", data={"query": script})


def result_cells(page: str) -> list[str]:
    table = page.split('data-testid="sql-result"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<td[^>]*>(.*?)</td>", table)


# ── Access ────────────────────────────────────────────────────────────────────────────────────


def test_dashboard_page_without_session_redirects_to_sign_in(dashboard_url: str):
    response = httpx.get(f"{dashboard_url}/users?q=x", timeout=TIMEOUT)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/users%3Fq%3Dx"
    assert (
        httpx.post(f"{dashboard_url}/sql", timeout=TIMEOUT, data={"query": "select 1"}).status_code
        == 401
    )


def test_dashboard_sign_in_with_wrong_key_is_refused(dashboard_url: str, anon_key: str):
    response = httpx.post(
        f"{dashboard_url}/login", timeout=TIMEOUT, data={"key": anon_key, "next": "/"}
    )
    assert response.status_code == 401
    assert "not this stack&#39;s service_role key" in response.text
    assert "set-cookie" not in response.headers
    wrong_header = httpx.get(f"{dashboard_url}/", timeout=TIMEOUT, headers={"apikey": anon_key})
    assert wrong_header.status_code == 303


def test_dashboard_sign_in_with_service_key_opens_a_session(dashboard_url: str, service_key: str):
    with httpx.Client(base_url=dashboard_url, timeout=TIMEOUT) as browser:
        response = browser.post("/login", data={"key": service_key, "next": "/models?q=gpt"})
        assert response.status_code == 303
        assert response.headers["location"] == "/models?q=gpt"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/models?q=gpt").status_code == 200
        browser.post("/logout")
        assert browser.get("/models").status_code == 303


def test_dashboard_sign_in_next_to_another_site_goes_home(dashboard_url: str, service_key: str):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = httpx.post(
            f"{dashboard_url}/login", timeout=TIMEOUT, data={"key": service_key, "next": target}
        )
        assert response.headers["location"] == "/"


def test_dashboard_foreign_host_header_is_refused(dashboard_url: str, service_key: str):
    # A DNS-rebinding page reaches 127.0.0.1 under its own host name.
    response = httpx.get(
        f"{dashboard_url}/", headers={"host": "rebind.example:54323", "apikey": service_key}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unexpected_host"


def test_dashboard_cross_origin_post_is_refused(web: httpx.Client):
    response = web.post(
        "/sql", data={"query": "select 1"}, headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "cross_origin"


def test_dashboard_listens_on_loopback_only(stack: Stack):
    port = f"{stack.paths.studio_port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.endswith(f":{port}"):  # 0A: LISTEN
                listening.append(local.split(":")[0])
    assert listening == ["0100007F"]  # 127.0.0.1, and nothing else


def test_stack_status_shows_dashboard_url_and_running(stack: Stack, dashboard_url: str):
    result = CliRunner().invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["dashboard_url"] == dashboard_url
    assert status["dashboard_running"] is True
    assert dashboard_url == f"http://127.0.0.1:{stack.paths.studio_port}"


def test_stack_start_restarts_a_dashboard_that_died(stack: Stack, dashboard_url: str):
    pid = dashboard.running_pid(stack.paths)
    assert pid is not None
    dashboard.stop(stack.paths)
    assert not dashboard.running(stack.paths)
    stack.start()
    assert dashboard.running(stack.paths)
    assert dashboard.running_pid(stack.paths) != pid
    assert httpx.get(f"{dashboard_url}/health", timeout=TIMEOUT).json() == {"status": "ok"}


# ── Pages ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "path", ["/", "/users", "/models", "/models?report=1", "/keys", "/audit", "/sql"]
)
def test_dashboard_page_renders_for_the_service_key(web: httpx.Client, path: str):
    response = web.get(path)
    assert response.status_code == 200
    assert "runs as <code>postgres</code> on the LOCAL" in response.text  # the page says so
    assert "Not shown:" not in response.text  # no section failed


def test_dashboard_user_page_unknown_or_malformed_id_is_404(web: httpx.Client):
    assert web.get(f"/users/{uuid.uuid4()}").status_code == 404
    response = web.get("/users/not-a-uuid")
    assert response.status_code == 404
    assert "is not a user id" in response.text


def test_dashboard_bad_parameters_are_400_with_the_reason(web: httpx.Client):
    assert "order must be balance" in web.get("/users?order=drop").text
    assert web.get("/users?order=drop").status_code == 400
    assert web.get("/users?offset=-1").status_code == 400
    assert web.get("/?low=lots").status_code == 400
    assert web.get("/?low=NaN").status_code == 400
    assert web.get("/sql?snippet=nope").status_code == 404


def test_dashboard_low_balances_are_the_lowest_below_the_threshold(
    web: httpx.Client, db, service, sign_up
):
    user_id = sign_up()
    Meter(service).record_usage(
        user_id=user_id,
        model="gpt-4o",
        input_tokens=1_000_000,
        output_tokens=1000,
        request_id=f"dash-{uuid.uuid4().hex}",
    )
    expected = db.execute(
        "select user_id::text, balance from public.user_balances where balance < 0 "
        "order by balance, user_id limit 10"
    ).fetchall()
    page = web.get("/?low=0").text
    low = page.split('data-testid="low-balances"', 1)[1].split("</table>", 1)[0]
    shown = re.findall(r'href="/users/([0-9a-f-]+)"', low)
    assert shown == [u for u, _ in expected]
    for _, balance in expected:
        assert f"{exact(balance)} USD" in low


def test_dashboard_audit_page_shows_audit_logs_when_present_else_says_so(web: httpx.Client, db):
    present = db.execute("select to_regclass('public.audit_logs') is not null").fetchone()[0]
    page = web.get("/audit").text
    if present:
        assert 'data-testid="missing-public.audit_logs"' not in page
    else:
        assert "has no <code>public.audit_logs</code> table" in page
    newest = db.execute("select max(id) from public.price_audit").fetchone()[0]
    table = page.split('data-testid="audit-public.price_audit"', 1)[1]
    assert f'<span class="clip">{newest}</span>' in table.split("</tr>", 2)[1]


# ── SQL editor ────────────────────────────────────────────────────────────────────────────────


def test_sql_editor_select_shows_rows_as_postgres(web: httpx.Client):
    response = run_sql(web, "select current_user as who, 1.50::numeric(6,3) as amount, null as n")
    assert response.status_code == 200
    assert result_cells(response.text) == ["postgres", "1.500", "NULL"]


def test_sql_editor_large_result_is_capped_at_max_rows(web: httpx.Client):
    response = run_sql(web, "select g from generate_series(1, 5000000) g")
    cells = result_cells(response.text)
    assert len(cells) == editor.MAX_ROWS
    assert cells[-1] == str(editor.MAX_ROWS)
    assert f"only the first {editor.MAX_ROWS:,} rows are shown" in response.text


def test_sql_editor_error_rolls_back_the_whole_script(web: httpx.Client, db):
    table = f"dash_{uuid.uuid4().hex[:8]}"
    script = (
        f"create table public.{table} (a int);\ninsert into public.{table} values (1);\nselect 1/0;"
    )
    response = run_sql(web, script)
    assert "22012: division by zero" in response.text
    assert "Rolled back" in response.text
    assert db.execute("select to_regclass(%s)", (f"public.{table}",)).fetchone()[0] is None


def test_sql_editor_writes_of_a_good_script_are_kept(web: httpx.Client, db):
    table = f"dash_{uuid.uuid4().hex[:8]}"
    response = run_sql(
        web, f"create table public.{table} (a int); insert into public.{table} values (7)"
    )
    assert "INSERT 0 1" in response.text
    try:
        assert db.execute(f"select a from public.{table}").fetchone()[0] == 7
    finally:
        db.execute(f"drop table public.{table}")


def test_sql_editor_error_in_a_later_statement_points_into_the_script(web: httpx.Client):
    script = "select 1;\n-- a comment\nselect missing_column\n  from public.plans"
    response = run_sql(web, script)
    text = response.text
    assert "42703: column &#34;missing_column&#34; does not exist" in text
    position = script.index("missing_column") + 1
    assert f"at line 3, column 8 (character {position})" in text
    assert f'data-error-position="{position}"' in text


def test_sql_editor_syntax_error_position_counts_characters_not_bytes(web: httpx.Client):
    script = "select 'héllo wörld' as a;\nselect 'ü' as b frm x"
    response = run_sql(web, script)
    position = script.index("frm") + 1
    assert "42601: syntax error at or near &#34;frm&#34;" in response.text
    assert f"at line 2, column 17 (character {position})" in response.text


def test_sql_editor_error_in_a_select_read_by_cursor_points_into_the_script(web: httpx.Client):
    script = "select 1;\nselect nope_fn(1)"
    text = run_sql(web, script).text
    position = script.index("nope_fn") + 1
    assert f"at line 2, column 8 (character {position})" in text


def test_sql_editor_session_settings_do_not_leak_to_the_next_script(web: httpx.Client):
    for _ in range(3):  # the editor's pool has two connections: reach both
        run_sql(web, "set search_path = nowhere; set statement_timeout = 0")
    for _ in range(3):
        cells = result_cells(run_sql(web, "show search_path").text)
        assert cells and "nowhere" not in cells[0]


def test_sql_editor_snippets_run_without_error(web: httpx.Client):
    for snippet in editor.SNIPPETS:
        if snippet.slug == "consolidation-populate":
            continue  # writes; covered by the pricing tests
        page = web.get(f"/sql?snippet={snippet.slug}").text
        assert snippet.title in page
        response = run_sql(web, snippet.sql)
        assert 'data-testid="sql-error"' not in response.text, snippet.slug


def test_sql_editor_balance_audit_snippet_is_empty(web: httpx.Client):
    response = run_sql(web, editor.snippet("balance-audit").sql)
    assert "SELECT 0" in response.text


def test_sql_editor_empty_or_oversized_script_is_refused(web: httpx.Client):
    assert "the query is empty" in run_sql(web, "  \n").text
    huge = "select 1" + " " * editor.MAX_SCRIPT_CHARS
    assert "the editor runs up to" in run_sql(web, huge).text


async def test_sql_editor_statement_timeout_rolls_back(db_url: str, monkeypatch):
    monkeypatch.setattr(editor, "STATEMENT_TIMEOUT_MS", 200)
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        result = await editor.run(conn, "create temp table t (a int); select pg_sleep(5)")
        assert result.error is not None
        assert result.error.sqlstate == "57014"
        assert "statement timeout" in (result.error.hint or "")
        check = await conn.execute("select to_regclass('pg_temp.t')")
        assert (await check.fetchone())[0] is None
