"""`make bench`: throughput and latency of the hot routes, against a real server, side by
side with django-allauth's MFA pages and a bare Litestar app (SPEC §8, §9).

Once per run, two yardsticks start next to ours: the django-allauth peer of
`../shared/peers/allauth/` (bench/peer.py: gunicorn, 2 sync workers; alice enrolled with a
passkey in Chromium, whose ceremony POSTs the peer times with Server-Timing), and a bare
Litestar JSON endpoint (bench/bare.py) under the same uvicorn with `--workers 2`.

For each database (a temporary SQLite file; and PostgreSQL when `--database-url` or
BENCH_DATABASE_URL is given: a fresh database with a random name, dropped afterwards) and
for each population (10, then 100,000 users), this seeds a new database, starts
`barycenter-account serve --workers 2 --admin-port 0` on it and measures, at 16
connections on loopback:

- with `wrk -t2 -c16`, in interleaved slices: `GET /healthz` (the baseline), `GET /account`
  (a signed-in aal2 user with 2FA on and three passkeys; after the first request it is
  served from memory, web/pagecache.py), the same page rendered each time (a new User-Agent
  on every request, so it is never the kept page), one section partial
  (`GET /account/activity` with `HX-Request`), the bare app's `GET /` and allauth's
  `GET /accounts/2fa/` (alice, 1 passkey + recovery codes);
- `/healthz` again with the asyncio client (the baseline of the rows below), then the
  second factor (`/login/2fa/passkey/start`, then `/finish` with real assertions signed
  ahead of time by a software authenticator) and passkey sign-in (`/login/passkey/start`,
  then `/finish`, discoverable) with the asyncio client; then both again one request at a
  time, whose median latency is our server time next to allauth's Server-Timing.

Every route is warmed up first, and every status is counted: non-2xx responses are shown
in the table (a benchmark of errors is worthless). Nothing about speed is asserted. The
tables go to stdout and to bench/results/latest-<db>.md. The machine is shared and noisy:
compare ratios within one run, never figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from litestar.middleware.csrf import generate_csrf_token
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import load
from bench.peer import PASSKEY, SECOND_FACTOR, Peer, running_peer
from bench.seed import BROWSER_UA, Population, partial_sessions, seed
from web.db import upgrade

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.1"
SECRET_KEY = "bench-secret-key-" + "x" * 32

HEALTHZ = "GET /healthz"
ACCOUNT = "GET /account"
RENDERED = "GET /account, rendered each time"
"""The same page with a new User-Agent on every request: never served from memory."""
SECTION = "GET /account/activity (htmx)"
BARE = "bare Litestar GET /"
ALLAUTH = "allauth GET /accounts/2fa/"
ONE_AT_A_TIME = " (one at a time)"
TWOFA_START = "POST /login/2fa/passkey/start"
TWOFA_FINISH = "POST /login/2fa/passkey/finish"
PASSKEY_START = "POST /login/passkey/start"
PASSKEY_FINISH = "POST /login/passkey/finish"
SLICES = 4


@dataclass
class Round:
    users: int
    results: list[load.Result]
    seed_seconds: float
    rows: dict[str, int]
    server_cpu: dict[int, float] = field(default_factory=dict)
    load_average: tuple[float, float] = (0.0, 0.0)
    """The machine's 1-minute load average before and after (other work skews results)."""

    def baseline(self, client: str) -> load.Result | None:
        return self.find(HEALTHZ, client)

    def find(self, route: str, client: str = "wrk") -> load.Result | None:
        return next((r for r in self.results if r.route == route and r.client == client), None)


@dataclass
class Yardsticks:
    """What our routes are compared with, started once per run."""

    peer: Peer | None
    bare_port: int | None


# ------------------------------------------------------------------------ databases


@contextmanager
def temporary_database(base: str | None) -> Iterator[str]:
    """A fresh empty database: a SQLite file, or a randomly named PostgreSQL database."""
    if not base:
        with tempfile.TemporaryDirectory(prefix="barycenter-bench-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    name = f"barycenter_bench_{secrets.token_hex(6)}"
    url = make_url(base)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def serve_command() -> list[str]:
    script = Path(sys.executable).parent / "barycenter-account"
    return [str(script)] if script.exists() else [sys.executable, "-m", "web.cli"]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"

    def cpu_seconds(self) -> dict[int, float]:
        """User+system CPU of every process of the server (its process group)."""
        ticks = os.sysconf("SC_CLK_TCK")
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.process.pid:  # pgrp
                found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks
        return found


@contextmanager
def running_server(url: str, workers: int, tmp: Path) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "BARYCENTER_DATABASE_URL": url,
        "BARYCENTER_IP_LIMIT_PER_MINUTE": "0",
        "BARYCENTER_ORIGIN": f"http://localhost:{port}",
        "BARYCENTER_SECRET_KEY": SECRET_KEY,
        "BARYCENTER_ADMIN_TOKEN": "",
    }
    log = tmp / f"server-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*serve_command(), "serve", "--host", HOST, "--port", str(port)]
            + ["--workers", str(workers), "--admin-port", "0"],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers stop with it
        )
    server = Server(process, port, log)
    try:
        wait_for(f"http://{HOST}:{port}/healthz", process, log)
        yield server
    finally:
        stop_group(process)


def wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: no answer:\n{log.read_text()}")
        time.sleep(0.2)


@contextmanager
def running_bare(workers: int, tmp: Path) -> Iterator[int]:
    """bench/bare.py under `uvicorn --workers N` (uvicorn's own multi-process mode)."""
    port = free_port()
    log = tmp / f"bare-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", HOST]
            + ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
            + ["--no-access-log"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(f"http://{HOST}:{port}/", process, log)
        yield port
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -------------------------------------------------------------------------- requests


class Browser:
    """What a browser would send: host, origin, user agent, CSRF cookie and header."""

    def __init__(self, server: Server):
        self.host = f"localhost:{server.port}"
        self.origin = server.origin
        self.csrf = generate_csrf_token(SECRET_KEY)

    def get(self, path: str, cookies: dict[str, str] | None = None) -> bytes:
        """A GET with the cookies a browser that has seen a page sends (CSRF at least)."""
        cookies = {"barycenter_csrf": self.csrf, **(cookies or {})}
        headers = {
            "User-Agent": BROWSER_UA,
            "Accept": "text/html",
            "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        }
        return load.request_bytes("GET", path, self.host, headers)

    def headers(self, cookie: str | None = None, **extra: str) -> dict[str, str]:
        """The headers of `get` for wrk (which sends its own Host only if told)."""
        return {
            "Host": self.host,
            "User-Agent": BROWSER_UA,
            "Accept": "text/html",
            "Cookie": cookie or f"barycenter_csrf={self.csrf}",
            **extra,
        }

    def post_json(self, path: str, payload: object, cookies: dict[str, str]) -> bytes:
        cookies = {"barycenter_csrf": self.csrf, **cookies}
        headers = {
            "User-Agent": BROWSER_UA,
            "Origin": self.origin,
            "Content-Type": "application/json",
            "Accept": "application/json, text/html",
            "X-CSRFToken": self.csrf,
            "Sec-Fetch-Site": "same-origin",
            "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        }
        return load.request_bytes("POST", path, self.host, headers, json.dumps(payload).encode())


def starts_then_finishes(
    server: Server,
    browser: Browser,
    population: Population,
    *,
    start_path: str,
    finish_path: str,
    cookie_sets: list[tuple[dict[str, str], bytes | None]],
    start_route: str,
    finish_route: str,
    concurrency: int = load.CONCURRENCY,
) -> tuple[load.Result, load.Result]:
    """Time the starts (16 at a time), sign an assertion for each answer, time the finishes.

    `cookie_sets` is one (cookies, credential id or None for "the first allowed") per
    ceremony; the start's options come back in the same order.
    """
    starts = [browser.post_json(start_path, {}, cookies) for cookies, _ in cookie_sets]
    start_result, options = load.run_list_keep(HOST, server.port, starts, start_route, concurrency)
    finishes = []
    for (cookies, chosen), answer in zip(cookie_sets, options, strict=True):
        status, body = answer
        if status != 200:
            finishes.append(None)
            continue
        credential = population.authenticator.authenticate(
            json.loads(body),
            credential_id=chosen,
            sign_count=0,  # like synced passkeys: no counter, so order does not matter
        )
        finishes.append(browser.post_json(finish_path, {"credential": credential}, cookies))
    finish_result = load.run_list(
        HOST, server.port, [f for f in finishes if f is not None], finish_route, concurrency
    )
    return start_result, finish_result


def second_factor(
    url: str,
    server: Server,
    browser: Browser,
    population: Population,
    count: int,
    concurrency: int = load.CONCURRENCY,
) -> tuple[load.Result, load.Result]:
    """Sessions that passed the password step (inserted directly), then the passkey step."""
    pairs = partial_sessions(url, population.active, count)
    cookie_sets = [
        ({"barycenter_session": token}, user.credential_ids[i % 3])
        for i, (token, user) in enumerate(pairs)
    ]
    return starts_then_finishes(
        server,
        browser,
        population,
        start_path="/login/2fa/passkey/start",
        finish_path="/login/2fa/passkey/finish",
        cookie_sets=cookie_sets,
        start_route=TWOFA_START + ("" if concurrency > 1 else ONE_AT_A_TIME),
        finish_route=TWOFA_FINISH + ("" if concurrency > 1 else ONE_AT_A_TIME),
        concurrency=concurrency,
    )


def passkey_sign_in(
    server: Server,
    browser: Browser,
    population: Population,
    count: int,
    concurrency: int = load.CONCURRENCY,
) -> tuple[load.Result, load.Result]:
    """Discoverable sign-in: the start sets the ceremony nonce (we pick it), the finish
    names the user by its userHandle."""
    cookie_sets = []
    for i in range(count):
        user = population.active[i % len(population.active)]
        nonce = secrets.token_urlsafe(32)
        cookie_sets.append(({"barycenter_ceremony": nonce}, user.credential_ids[(i // 10) % 3]))
    return starts_then_finishes(
        server,
        browser,
        population,
        start_path="/login/passkey/start",
        finish_path="/login/passkey/finish",
        cookie_sets=cookie_sets,
        start_route=PASSKEY_START + ("" if concurrency > 1 else ONE_AT_A_TIME),
        finish_route=PASSKEY_FINISH + ("" if concurrency > 1 else ONE_AT_A_TIME),
        concurrency=concurrency,
    )


def measure(
    url: str, users: int, args: argparse.Namespace, tmp: Path, yardsticks: Yardsticks
) -> Round:
    upgrade(url)
    print(f"  seeding {users:,} users …", flush=True)
    population = seed(url, users)
    print(f"  seeded in {population.seconds:.1f} s: {population.rows}", flush=True)
    results: list[load.Result] = []

    def keep(result: load.Result) -> None:
        results.append(result)
        print(
            f"  {result.route:<44} {result.client:<7} {result.rps:8.0f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
            f"non-2xx {result.failure_words()}",
            flush=True,
        )

    load_before = os.getloadavg()[0]
    with running_server(url, args.workers, tmp) as server:
        population.authenticator.origin = server.origin
        browser = Browser(server)
        base = f"http://{HOST}:{server.port}"
        session = {"barycenter_session": population.account_token}
        account_cookie = (
            f"barycenter_csrf={browser.csrf}; barycenter_session={population.account_token}"
        )
        htmx = {"HX-Request": "true", "HX-Current-URL": f"{browser.origin}/account"}
        # (route, URL for wrk, its headers, the same request for the asyncio client or None)
        gets: list[tuple[str, str, dict[str, str], bytes | None]] = [
            (HEALTHZ, base + "/healthz", browser.headers(), browser.get("/healthz")),
            (
                ACCOUNT,
                base + "/account",
                browser.headers(account_cookie),
                browser.get("/account", session),
            ),
            (RENDERED, base + "/account", browser.headers(account_cookie), None),
            (
                SECTION,
                base + "/account/activity",
                browser.headers(account_cookie, **htmx),
                None,
            ),
        ]
        if load.wrk_available() and yardsticks.bare_port:
            gets.append((BARE, f"http://{HOST}:{yardsticks.bare_port}/", {}, None))
        peer = yardsticks.peer
        if load.wrk_available() and peer:
            gets.append((ALLAUTH, peer.base + "/accounts/2fa/", {"Cookie": peer.cookie}, None))
        if not load.wrk_available():
            print("  wrk not installed: GETs with the asyncio client, no side-by-side rows")
            gets = [g for g in gets if g[3] is not None]

        def run(route: str, target: str, headers: dict[str, str], raw: bytes | None, s: float):
            if load.wrk_available():
                return load.run_wrk(target, headers, s, route, vary_user_agent=route == RENDERED)
            assert raw is not None
            return load.run_for(HOST, server.port, raw, s, route)

        # Background load drifts (other engineers' tests share the two cores): every GET is
        # measured in slices taken in turn, so each ratio compares the same moments.
        slices: dict[str, list[load.Result]] = {route: [] for route, *_ in gets}
        for get in gets:
            run(*get, args.warmup)
        for _ in range(SLICES):
            for get in gets:
                slices[get[0]].append(run(*get, args.duration / SLICES))
        for route, *_ in gets:
            keep(load.merge(slices[route]))
        if peer and peer.page_status() != 200:
            print("  warning: allauth's session no longer reaches /accounts/2fa/ after wrk")

        healthz = browser.get("/healthz")
        load.run_for(HOST, server.port, healthz, args.warmup, HEALTHZ)
        baseline = [load.run_for(HOST, server.port, healthz, args.duration / 3, HEALTHZ)]
        second_factor(url, server, browser, population, args.warmup_requests)
        ceremonies = list(second_factor(url, server, browser, population, args.requests))
        baseline.append(load.run_for(HOST, server.port, healthz, args.duration / 3, HEALTHZ))
        passkey_sign_in(server, browser, population, args.warmup_requests)
        ceremonies += passkey_sign_in(server, browser, population, args.requests)
        baseline.append(load.run_for(HOST, server.port, healthz, args.duration / 3, HEALTHZ))
        keep(load.merge(baseline))
        for result in ceremonies:
            keep(result)
        # Server time, as allauth's Server-Timing gives it: one request at a time, so the
        # latency is the request's own time (plus a loopback round trip and uvicorn's parsing).
        alone = args.sequential
        keep(second_factor(url, server, browser, population, alone, concurrency=1)[1])
        keep(passkey_sign_in(server, browser, population, alone, concurrency=1)[1])
        cpu = server.cpu_seconds()
    load_average = (load_before, os.getloadavg()[0])
    return Round(users, results, population.seconds, population.rows, cpu, load_average)


# ----------------------------------------------------------------------------- report


def fmt_users(n: int) -> str:
    return f"{n:,}"


def table(rounds: list[Round]) -> str:
    lines = [
        "| Route | Client | Users | req/s | p50 ms | p99 ms | vs /healthz | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for round_ in rounds:
        for r in round_.results:
            base = round_.baseline(r.client)
            ratio = f"{r.rps / base.rps:.1%}" if base and base.rps else "—"
            lines.append(
                f"| {r.route} | {r.client} | {fmt_users(round_.users)} | {r.rps:,.0f} "
                f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {ratio} | {r.failure_words()} |"
            )
    return "\n".join(lines)


def scale_table(small: Round, large: Round) -> str:
    """Each route at both sizes: throughput, its ratio to /healthz (robust to the machine's
    load drifting between rounds), and how many times slower the large population is."""
    a_n, b_n = fmt_users(small.users), fmt_users(large.users)
    lines = [
        f"| Route | Client | req/s {a_n} | req/s {b_n} | req/s {a_n} ÷ {b_n} "
        f"| vs /healthz {a_n} | vs /healthz {b_n} | ({a_n} ÷ {b_n}) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a in small.results:
        b = next((r for r in large.results if (r.route, r.client) == (a.route, a.client)), None)
        base_a, base_b = small.baseline(a.client), large.baseline(a.client)
        if b is None or not b.rps or not base_a or not base_b or a.route == HEALTHZ:
            continue
        ratio_a, ratio_b = a.rps / base_a.rps, b.rps / base_b.rps
        lines.append(
            f"| {a.route} | {a.client} | {a.rps:,.0f} | {b.rps:,.0f} | {a.rps / b.rps:.2f}× "
            f"| {ratio_a:.1%} | {ratio_b:.1%} | {ratio_a / ratio_b:.2f}× |"
        )
    return "\n".join(lines)


def _verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**missed**"


def side_by_side(rounds: list[Round], yardsticks: Yardsticks) -> str:
    """The targets of SPEC §8 and issue 12, each a ratio of two rows of the same round."""
    peer = yardsticks.peer
    lines = [
        "| Comparison (same round, interleaved) | Users | Ours | Theirs | Ratio | Target | |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for round_ in rounds:
        n = fmt_users(round_.users)
        account, healthz = round_.find(ACCOUNT), round_.find(HEALTHZ)
        allauth, bare, section = round_.find(ALLAUTH), round_.find(BARE), round_.find(SECTION)
        if account and allauth and allauth.rps:
            x = account.rps / allauth.rps
            lines.append(
                f"| `GET /account` vs allauth `GET /accounts/2fa/` (enrolled), req/s | {n} "
                f"| {account.rps:,.0f} | {allauth.rps:,.0f} | {x:.1f}× | ≥ 10× "
                f"| {_verdict(x, 10)} |"
            )
            p = account.p99_ms / allauth.p99_ms if allauth.p99_ms else 0.0
            lines.append(
                f"| same, p99 ms | {n} | {account.p99_ms:.1f} | {allauth.p99_ms:.1f} "
                f"| {p:.2f} | ≤ 0.33 | {_verdict(p, 1 / 3, higher_is_better=False)} |"
            )
        if healthz and bare and bare.rps:
            x = healthz.rps / bare.rps
            lines.append(
                f"| `GET /healthz` vs a bare Litestar JSON endpoint, req/s | {n} "
                f"| {healthz.rps:,.0f} | {bare.rps:,.0f} | {x:.0%} | ≥ 50 % | {_verdict(x, 0.5)} |"
            )
        rendered = round_.find(RENDERED)
        if rendered and allauth and allauth.rps:
            lines.append(
                f"| `GET /account` rendered each time (a new User-Agent per request: never "
                f"kept) vs allauth, req/s | {n} | {rendered.rps:,.0f} | {allauth.rps:,.0f} "
                f"| {rendered.rps / allauth.rps:.1f}× | — | |"
            )
        if account and healthz and healthz.rps:
            x = account.rps / healthz.rps
            lines.append(
                f"| `GET /account` vs our `GET /healthz`, req/s | {n} | {account.rps:,.0f} "
                f"| {healthz.rps:,.0f} | {x:.0%} | ≥ 25 % | {_verdict(x, 0.25)} |"
            )
        if section and account and account.rps:
            lines.append(
                f"| section partial `GET /account/activity` vs the page, req/s | {n} "
                f"| {section.rps:,.0f} | {account.rps:,.0f} | {section.rps / account.rps:.2f}× "
                "| — | |"
            )
        for ours, theirs, words in (
            (TWOFA_FINISH, SECOND_FACTOR, "second-factor finish"),
            (PASSKEY_FINISH, PASSKEY, "passkey sign-in finish"),
        ):
            mine = round_.find(ours + ONE_AT_A_TIME, "asyncio")
            other = peer.median_ms(theirs) if peer else None
            if mine and other:
                lines.append(
                    f"| {words}, server ms (ours: median latency one at a time; allauth: "
                    f"Server-Timing, median of {len(peer.server_ms[theirs]) if peer else 0}) "
                    f"| {n} | {mine.p50_ms:.1f} | {other:.1f} | {mine.p50_ms / other:.2f} | — | |"
                )
    if len(lines) == 2:
        return "No side-by-side rows: neither the allauth peer nor wrk was available."
    return "\n".join(lines)


def report(
    kind: str,
    rounds: list[Round],
    args: argparse.Namespace,
    seconds: float,
    yardsticks: Yardsticks,
) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    parts = [
        f"# Benchmark: {kind}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · commit {commit or '?'} (plus local changes) · "
        f"{os.cpu_count()} CPUs · Python {platform.python_version()} · "
        f"`serve --workers {args.workers}` · {load.CONCURRENCY} connections on loopback · "
        f"GETs {args.duration:g} s each after {args.warmup:g} s warm-up · ceremonies "
        f"{args.requests} each after {args.warmup_requests} warm-up · run took {seconds:.0f} s",
        "",
        "Each round seeds a fresh database and starts a fresh server. `vs /healthz` compares a "
        "route's throughput with `/healthz` of the same server measured by the same client: "
        "wrk for the GETs (the session cookie of a signed-in aal2 user with 2FA on and three "
        "passkeys), the asyncio client for the ceremonies (its baseline is measured in slices "
        "between them; the client shares the two cores with the server). Ceremony rows: the "
        "starts, then the finishes with assertions signed beforehand by a software "
        "authenticator (10 users with 2FA on take turns; second factor: sessions that passed "
        "the password step). Every status is counted: `non-2xx` lists any other answer.",
        "",
        "**The machine is shared and noisy** (2 cores; other engineers' test suites ran during "
        "this run, see the load averages at the end): compare ratios within one round, not "
        "figures across runs. Both servers run 2 worker processes; wrk -t2 -c16 on the same "
        "cores. allauth: "
        + (
            f"{yardsticks.peer.versions}, 2 workers, SQLite, alice with 1 passkey + recovery "
            "codes; its ceremony figures come from one Chromium run (virtual authenticator) "
            "at the start of the bench."
            if yardsticks.peer
            else "**not measured** (see the bench's output for why)."
        ),
        "",
        side_by_side(rounds, yardsticks),
        "",
        "All rows:",
        "",
        table(rounds),
    ]
    if len(rounds) >= 2:
        parts += [
            "",
            f"Scale: {fmt_users(rounds[0].users)} → {fmt_users(rounds[-1].users)} users "
            "(a ÷ column above 1 means the large population is slower; the second compares "
            "the ratios to /healthz, which the machine's changing load affects less).",
            "",
            scale_table(rounds[0], rounds[-1]),
        ]
    samples = [(r.route, s) for round_ in rounds for r in round_.results for s in r.samples]
    if samples:
        parts += ["", "Non-2xx samples:", ""]
        parts += [f"- {route}: `{s}`" for route, s in samples[:10]]
    parts += [""]
    for round_ in rounds:
        cpu = ", ".join(f"{v:.0f}" for v in sorted(round_.server_cpu.values(), reverse=True))
        parts.append(
            f"- {fmt_users(round_.users)} users: seeded in {round_.seed_seconds:.1f} s "
            f"({', '.join(f'{k} {v:,}' for k, v in round_.rows.items())}); "
            f"server CPU seconds per process: {cpu}; machine load average "
            f"{round_.load_average[0]:.1f} before, {round_.load_average[1]:.1f} after"
        )
    return "\n".join(parts) + "\n"


def save(kind: str, text_: str) -> Path:
    """Only the latest table per database is kept (git history has the older ones)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"latest-{kind}.md"
    path.write_text(text_)
    return path


def run_database(
    kind: str, base: str | None, args: argparse.Namespace, yardsticks: Yardsticks
) -> str:
    started = time.perf_counter()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="barycenter-bench-") as tmp:
        for users in args.users:
            print(f"{kind}: {users:,} users", flush=True)
            with temporary_database(base) as url:
                rounds.append(measure(url, users, args, Path(tmp), yardsticks))
    text_ = report(kind, rounds, args, time.perf_counter() - started, yardsticks)
    path = save(kind, text_)
    print()
    print(text_)
    print(f"saved {path.relative_to(ROOT)}", flush=True)
    return text_


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="a PostgreSQL server URL (also BENCH_DATABASE_URL); a database is created on it",
    )
    p.add_argument("--no-sqlite", action="store_true", help="only PostgreSQL")
    p.add_argument(
        "--users",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10, 100_000],
        help="populations, comma-separated (default 10,100000)",
    )
    p.add_argument("--duration", type=float, default=8, help="seconds per GET measurement")
    p.add_argument("--warmup", type=float, default=2, help="warm-up seconds per GET route")
    p.add_argument("--requests", type=int, default=2000, help="ceremonies timed per route")
    p.add_argument("--warmup-requests", type=int, default=200)
    p.add_argument(
        "--sequential", type=int, default=100, help="ceremonies timed one at a time per route"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-peer", action="store_true", help="without the django-allauth peer")
    p.add_argument(
        "--peer-port", type=int, default=int(os.environ.get("BENCH_ALLAUTH_PORT", "8801"))
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="barycenter-bench-")))
        peer = None
        if args.no_peer:
            print("allauth peer: off (--no-peer)", flush=True)
        else:
            print(f"allauth peer on 127.0.0.1:{args.peer_port} …", flush=True)
            peer = stack.enter_context(running_peer(args.peer_port))
        bare_port = stack.enter_context(running_bare(args.workers, tmp))
        yardsticks = Yardsticks(peer, bare_port)
        if not args.no_sqlite:
            run_database("sqlite", None, args, yardsticks)
        if args.database_url:
            run_database("postgresql", args.database_url, args, yardsticks)
    print(f"make bench: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
