"""The metered `openai` edge function against calling the same upstream directly (issue 11 §5).

One run, against the running local stack (TOKENMETER_* env for ports and state):
  - a local stand-in upstream (tests/fake_upstream.py, its own process, 5 words per answer);
  - a function gateway per database transport (tests/function_gateway.py): OPENAI_DB_ACCESS=sql
    (npm:postgres over SUPABASE_DB_URL, prepare: false) and =rpc (supabase-js through REST);
  - 8 concurrent clients (threads, one keep-alive httpx client each) for `--seconds` per
    scenario: direct, function/sql, function/rpc; non-streamed and streamed (latency = until
    `data: [DONE]`). Added latency = function percentile − direct percentile, throughput ratio =
    function req/s ÷ direct req/s (each within a run, then the median over runs), the function's
    own Server-Timing medians (authorize, upstream headers, complete), and the CPU per served
    request of each process (client, upstream, gateway, deno worker, postgres backends);
  - `--baseline REF`: an earlier commit's gateway and functions beside the current ones, same run.
  - money check in the same run: every 200 is one usage record, the balance fell by exactly
    their cost; then a budget phase — a balance covering 40 holds, 8 clients streaming until
    refused — must end with the balance ≥ 0, charges = admitted requests, no hold left open and
    balance_audit() empty.
Repeated `--runs` times; medians across runs are reported.

    python bench/openai_endpoint_bench.py --seconds 5 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fake_upstream import API_KEY  # noqa: E402
from function_gateway import FunctionGateway, free_port  # noqa: E402

from app.stack.paths import StackPaths  # noqa: E402

MODEL = "gpt-4o-mini"
CLIENTS = 8
HZ = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    """User + system CPU of a process so far, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Processes:
    """Where the CPU goes: the processes of one scenario, by role. The database's backends and
    the workers are looked up at each reading, so that connections opened during a scenario
    count (from zero) too."""

    gateway: FunctionGateway | None
    upstream_pid: int
    postmaster: int

    @classmethod
    def of(cls, gateway: FunctionGateway | None, upstream_pid: int, postmaster: int) -> Processes:
        return cls(gateway, upstream_pid, postmaster)

    def ticks(self) -> dict[str, dict[int, int]]:
        groups = {"upstream": [self.upstream_pid], "client": [os.getpid()]}
        if self.gateway is not None:
            groups["gateway"] = [self.gateway.process.pid]
            groups["deno"] = _children(self.gateway.process.pid)
            groups["postgres"] = [self.postmaster, *_children(self.postmaster)]
        return {name: {p: _cpu_ticks(p) for p in pids} for name, pids in groups.items()}

    @staticmethod
    def spent(
        before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]
    ) -> dict[str, int]:
        return {
            name: sum(t - before.get(name, {}).get(p, 0) for p, t in pids.items())
            for name, pids in after.items()
        }


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    # CPU milliseconds per served request, by process role (gateway, deno, postgres, ...).
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


_HTTP_CLIENTS: list[httpx.Client] = []


def _clients() -> list[httpx.Client]:
    """The client threads' HTTP clients, made once for the whole benchmark: making one loads
    the system's CA certificates (tens of ms of CPU), which would otherwise be measured."""
    while len(_HTTP_CLIENTS) < CLIENTS:
        _HTTP_CLIENTS.append(httpx.Client(timeout=60))
    return _HTTP_CLIENTS


def drive(
    url: str,
    headers: list[dict[str, str]],
    body: bytes | None,
    stream: bool,
    seconds: float,
    ok_status: int = 200,
    processes: Processes | None = None,
) -> Result:
    result = Result()
    http_clients = _clients()
    before = processes.ticks() if processes else {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(headers: dict[str, str], http: httpx.Client) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            method = "GET" if body is None else "POST"
            with http.stream(method, url, headers=headers, content=body) as answer:
                data = answer.read()
            took = time.perf_counter() - started
            timing = answer.headers.get("server-timing", "")
            with lock:
                result.statuses[answer.status_code] = result.statuses.get(answer.status_code, 0) + 1
                if answer.status_code == ok_status:
                    if stream and not data.endswith(b"data: [DONE]\n\n"):
                        raise AssertionError(f"stream did not end with [DONE]: {data[-80:]!r}")
                    result.latencies.append(took)
                    for part in filter(None, (p.strip() for p in timing.split(","))):
                        name, _, dur = part.partition(";dur=")
                        result.timings.setdefault(name, []).append(float(dur))

    threads = [
        threading.Thread(target=client, args=(headers[i % len(headers)], http_clients[i]))
        for i in range(CLIENTS)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed = time.monotonic() - started
    if processes:
        spent = Processes.spent(before, processes.ticks())
        result.cpu = {k: v / HZ * 1000 / max(result.ok, 1) for k, v in spent.items()}
    return result


def make_account(conn: psycopg.Connection, base_url: str, amount: Decimal) -> tuple[str, str]:
    name = f"bench-oe-{uuid.uuid4().hex[:10]}"
    user_id = str(uuid.uuid4())
    conn.execute(
        "insert into auth.users (id, aud, role, email, created_at, updated_at)"
        " values (%s, 'authenticated', 'authenticated', %s, now(), now())",
        (user_id, f"{name}@example.com"),
    )
    conn.execute(
        "insert into public.upstreams (name, base_url, api_key_env)"
        " values (%s, %s, 'FAKE_UPSTREAM_KEY')",
        (name, base_url),
    )
    conn.execute("insert into public.plans (name) values (%s)", (name,))
    conn.execute(
        "insert into public.plan_routes (plan_id, upstream_id, model, weight)"
        " select p.id, u.id, %s, 1 from public.plans p, public.upstreams u"
        " where p.name = %s and u.name = %s",
        (MODEL, name, name),
    )
    conn.execute(
        "insert into public.subscriptions (user_id, plan_id, status, quota_requests, quota_tokens)"
        " select %s, id, 'active', null, null from public.plans where name = %s",
        (user_id, name),
    )
    conn.execute("select public.top_up(%s, %s, %s)", (user_id, amount, name))
    (key,) = conn.execute(
        "select public.create_api_key('bench', %s, user_id => %s) ->> 'key'", (name, user_id)
    ).fetchone()  # type: ignore[misc]
    return user_id, key


def money(conn: psycopg.Connection, user_id: str) -> tuple[int, Decimal, Decimal, int]:
    # A stream whose client did not ask for usage ends before its charge commits (just after):
    # wait until none of the user's requests is in flight.
    deadline = time.monotonic() + 15
    while conn.execute(
        "select exists (select 1 from public.metered_requests where user_id = %s"
        " and status = 'authorized')",
        (user_id,),
    ).fetchone() != (False,):
        assert time.monotonic() < deadline, f"requests of {user_id} still in flight"
        time.sleep(0.02)
    row = conn.execute(
        "select (select count(*) from public.usage_records where user_id = %(u)s),"
        " (select coalesce(sum(cost), 0) from public.usage_records where user_id = %(u)s),"
        " (select balance from public.user_balances where user_id = %(u)s),"
        " (select count(*) from public.credit_reservations where user_id = %(u)s"
        "  and status = 'held')",
        {"u": user_id},
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def one_run(
    conn: psycopg.Connection,
    upstream_url: str,
    gateways: dict[str, FunctionGateway],
    seconds: float,
    pids: tuple[int, int],
) -> dict[str, dict[str, float]]:
    upstream_pid, postmaster = pids
    funded = Decimal(1000)
    # One account per client (a gateway's usual load: many users), plus one scenario where all
    # 8 clients share one key: the calls of one subscription serialise on its row lock.
    accounts = [make_account(conn, upstream_url, funded) for _ in range(CLIENTS)]
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "benchmark words:5"}]}
    plain = json.dumps({**chat, "max_tokens": 64}).encode()
    streamed = json.dumps({**chat, "max_tokens": 64, "stream": True}).encode()
    direct = [{"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}]
    metered = [
        {"authorization": f"Bearer {key}", "content-type": "application/json"}
        for _, key in accounts
    ]
    out: dict[str, dict[str, float]] = {}
    # The local gateway's relay and the function's dispatch alone: a path the function answers
    # 404 at once, with no database call.
    for transport, gw in gateways.items():
        relay = drive(
            f"{gw.url}/functions/v1/openai/v1/nope",
            metered,
            None,
            False,
            seconds,
            404,
            Processes.of(gw, upstream_pid, postmaster),
        )
        out[f"relay only ({transport} gateway)"] = {
            "rps": relay.rps,
            "p50": relay.pct(0.5),
            "p99": relay.pct(0.99),
            **{f"cpu {k}": v for k, v in relay.cpu.items()},
        }
    for stream, body in ((False, plain), (True, streamed)):
        kind = "stream" if stream else "json"
        scenarios: dict[str, tuple[str, list[dict[str, str]], FunctionGateway | None]] = {
            f"direct/{kind}": (f"{upstream_url}/chat/completions", direct, None)
        }
        for transport, gw in gateways.items():
            url = f"{gw.url}/functions/v1/openai/v1/chat/completions"
            scenarios[f"function-{transport}/{kind}"] = (url, metered, gw)
            if not stream:
                scenarios[f"function-{transport}/{kind}, one key"] = (url, metered[:1], gw)
        for name, (url, headers, gw) in scenarios.items():
            processes = Processes.of(gw, upstream_pid, postmaster)
            result = drive(url, headers, body, stream, seconds, processes=processes)
            if set(result.statuses) != {200}:
                raise AssertionError(f"{name}: statuses {result.statuses}")
            out[name] = {
                "rps": result.rps,
                "p50": result.pct(0.5),
                "p99": result.pct(0.99),
                **{k: statistics.median(v) for k, v in result.timings.items()},
                **{f"cpu {k}": v for k, v in result.cpu.items()},
            }
            if not name.startswith("direct"):
                out[name]["served"] = result.ok
    served = sum(v.get("served", 0) for v in out.values())
    count = 0
    for user_id, _ in accounts:
        n, cost, balance, open_holds = money(conn, user_id)
        count += n
        assert balance == funded - cost and open_holds == 0, (balance, funded, cost, open_holds)
    assert count == served, f"{served} requests served, {count} charged"
    out["money"] = {"served": served, "charged": count}
    out["budget"] = budget_phase(
        conn, upstream_url, gateways.get("sql") or next(iter(gateways.values())), streamed
    )
    return out


def budget_phase(
    conn: psycopg.Connection, upstream_url: str, gw: FunctionGateway, body: bytes
) -> dict[str, float]:
    row = conn.execute(
        "select price_per_input_token, price_per_output_token from public.price_for(null, %s)",
        (MODEL,),
    ).fetchone()
    assert row is not None
    hold = len(body) * row[0] + 64 * row[1]
    funded = 40 * hold
    user_id, key = make_account(conn, upstream_url, funded)
    url = f"{gw.url}/functions/v1/openai/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    result = Result()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                answer = http.post(url, headers=headers, content=body)
                with lock:
                    result.statuses[answer.status_code] = (
                        result.statuses.get(answer.status_code, 0) + 1
                    )
                if answer.status_code == 402:
                    return
                assert answer.status_code == 200, answer.text

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    count, cost, balance, open_holds = money(conn, user_id)
    audit = conn.execute("select count(*) from public.balance_audit()").fetchone()
    admitted = result.statuses.get(200, 0)
    assert count == admitted and balance == funded - cost and balance >= 0, (count, balance)
    assert open_holds == 0 and audit == (0,)
    return {"admitted": admitted, "refused": result.statuses.get(402, 0), "overshoot": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transports", default="sql,rpc")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the gateway and functions of this commit (sql transport), in the same run",
    )
    args = parser.parse_args()
    global CLIENTS
    CLIENTS = args.clients

    paths = StackPaths.from_env()
    os.environ.setdefault("TOKENMETER_STATE_DIR", str(paths.state))
    postmaster = int((paths.pgdata / "postmaster.pid").read_text().split()[0])
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    upstream_url = f"http://127.0.0.1:{port}/v1"
    gateways: dict[str, FunctionGateway] = {}
    checkout: Path | None = None
    load_before = os.getloadavg()
    try:
        if args.baseline:
            # The earlier commit's gateway (app/) and functions, over the same database.
            checkout = Path(tempfile.mkdtemp(prefix="tokenmeter-baseline-"))
            archive = subprocess.run(
                [
                    "git",
                    "archive",
                    args.baseline,
                    "app",
                    "supabase/functions",
                    "supabase/config.toml",
                ],
                cwd=ROOT,
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive, check=True)
            gateways[f"sql@{args.baseline}"] = FunctionGateway(
                {"FAKE_UPSTREAM_KEY": API_KEY, "OPENAI_DB_ACCESS": "sql"}, root=checkout
            )
        for transport in args.transports.split(","):
            gateways[transport] = FunctionGateway(
                {"FAKE_UPSTREAM_KEY": API_KEY, "OPENAI_DB_ACCESS": transport}
            )
        pids = (upstream.pid, postmaster)
        with psycopg.connect(paths.db_url(), autocommit=True) as conn:
            # Warm-up: boot the Deno workers, load npm packages, open pools.
            one_run(conn, upstream_url, gateways, 1.0, pids)
            runs = [
                one_run(conn, upstream_url, gateways, args.seconds, pids) for _ in range(args.runs)
            ]
    finally:
        for gw in gateways.values():
            gw.stop()
        upstream.terminate()
        upstream.wait()
        if checkout is not None:
            shutil.rmtree(checkout, ignore_errors=True)
    report(runs, list(gateways), args, load_before, os.getloadavg())


def report(
    runs: list[dict[str, dict[str, float]]],
    transports: list[str],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    print(
        f"# {args.runs} runs × {args.seconds:.0f} s per scenario, {CLIENTS} clients; load average "
        f"before {load_before[0]:.1f}, after {load_after[0]:.1f} {load_after[1]:.1f} "
        f"{load_after[2]:.1f}; cores: {os.cpu_count()}"
    )

    def med(name: str, metric: str) -> float:
        values = [r[name][metric] for r in runs if metric in r[name]]
        return statistics.median(values) if values else float("nan")

    def same_run(name: str, base: str, how: str) -> float:
        """Median over runs of a comparison made within each run."""
        values = []
        for r in runs:
            if how == "ratio":
                values.append(r[name]["rps"] / r[base]["rps"])
            else:
                values.append(r[name][how] - r[base][how])
        return statistics.median(values)

    print(
        "| scenario | req/s | p50 ms | p99 ms | added p50 | added p99 | × direct req/s "
        "| authorize | upstream | complete |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    scenario_names = []
    for kind in ("json", "stream"):
        base = f"direct/{kind}"
        names = [base]
        for t in transports:
            names += [
                n for n in (f"function-{t}/{kind}", f"function-{t}/{kind}, one key") if n in runs[0]
            ]
        scenario_names += names
        for name in names:
            if name == base:
                added = " |  | "
            else:
                added = (
                    f"{same_run(name, base, 'p50'):.1f} | {same_run(name, base, 'p99'):.1f} "
                    f"| {same_run(name, base, 'ratio'):.2f}"
                )
            print(
                f"| {name} | {med(name, 'rps'):.0f} | {med(name, 'p50'):.1f} | "
                f"{med(name, 'p99'):.1f} | {added} | {med(name, 'authorize'):.1f} | "
                f"{med(name, 'upstream'):.1f} | {med(name, 'complete'):.1f} |"
            )
    relays = [name for name in runs[0] if name.startswith("relay")]
    for name in relays:
        print(
            f"| {name} | {med(name, 'rps'):.0f} | {med(name, 'p50'):.1f} | "
            f"{med(name, 'p99'):.1f} | | | | | | |"
        )
    roles = ("client", "upstream", "gateway", "deno", "postgres")
    print("\nCPU ms per served request, by process (medians of the runs):\n")
    print("| scenario | " + " | ".join(roles) + " | total |")
    print("|---|" + "---|" * (len(roles) + 1))
    for name in scenario_names + relays:
        cells = [med(name, f"cpu {role}") for role in roles]
        total = sum(c for c in cells if c == c)
        shown = " | ".join("" if c != c else f"{c:.2f}" for c in cells)
        print(f"| {name} | {shown} | {total:.2f} |")
    for r in runs:
        print(f"money: {r['money']}, budget phase: {r['budget']}")


if __name__ == "__main__":
    main()
