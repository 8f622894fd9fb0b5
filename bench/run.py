"""`make bench`: throughput and latency of the hot routes, against a real server.

For each database (a temporary SQLite file; and PostgreSQL when `--database-url` or
BENCH_DATABASE_URL is given: a fresh database with a random name, dropped afterwards) and
for each population (10, then 100,000 users), this seeds a new database, starts
`barycenter-account serve --workers 2 --admin-port 0` on it and measures, at 16
connections on loopback:

- `GET /healthz` (the baseline) and `GET /account` (a signed-in aal2 user with 2FA on and
  three passkeys) with wrk;
- `/healthz` again with the asyncio client (the baseline of the rows below), then the
  second factor (`/login/2fa/passkey/start`, then `/finish` with real assertions signed
  ahead of time by a software authenticator) and passkey sign-in (`/login/passkey/start`,
  then `/finish`, discoverable) with the asyncio client.

Every route is warmed up first, and every status is counted: non-2xx responses are shown
in the table (a benchmark of errors is worthless). Nothing about speed is asserted. The
table goes to stdout and to bench/results/<UTC time>-<db>.md (and latest-<db>.md).
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from litestar.middleware.csrf import generate_csrf_token
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import load
from bench.seed import BROWSER_UA, Population, partial_sessions, seed
from web.db import upgrade

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.1"
SECRET_KEY = "bench-secret-key-" + "x" * 32

HEALTHZ = "GET /healthz"
ACCOUNT = "GET /account"
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
        return next((r for r in self.results if r.route == HEALTHZ and r.client == client), None)


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
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
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

    def headers(self, cookie: str | None = None) -> dict[str, str]:
        """The headers of `get` for wrk (which sends its own Host only if told)."""
        return {
            "Host": self.host,
            "User-Agent": BROWSER_UA,
            "Accept": "text/html",
            "Cookie": cookie or f"barycenter_csrf={self.csrf}",
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
) -> tuple[load.Result, load.Result]:
    """Time the starts (16 at a time), sign an assertion for each answer, time the finishes.

    `cookie_sets` is one (cookies, credential id or None for "the first allowed") per
    ceremony; the start's options come back in the same order.
    """
    starts = [browser.post_json(start_path, {}, cookies) for cookies, _ in cookie_sets]
    start_result, options = load.run_list_keep(HOST, server.port, starts, start_route)
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
        HOST, server.port, [f for f in finishes if f is not None], finish_route
    )
    return start_result, finish_result


def second_factor(
    url: str, server: Server, browser: Browser, population: Population, count: int
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
        start_route=TWOFA_START,
        finish_route=TWOFA_FINISH,
    )


def passkey_sign_in(
    server: Server, browser: Browser, population: Population, count: int
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
        start_route=PASSKEY_START,
        finish_route=PASSKEY_FINISH,
    )


def measure(url: str, users: int, args: argparse.Namespace, tmp: Path) -> Round:
    upgrade(url)
    print(f"  seeding {users:,} users …", flush=True)
    population = seed(url, users)
    print(f"  seeded in {population.seconds:.1f} s: {population.rows}", flush=True)
    results: list[load.Result] = []

    def keep(result: load.Result) -> None:
        results.append(result)
        print(
            f"  {result.route:<32} {result.client:<7} {result.rps:8.0f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
            f"non-2xx {result.failure_words()}",
            flush=True,
        )

    load_before = os.getloadavg()[0]
    with running_server(url, args.workers, tmp) as server:
        population.authenticator.origin = server.origin
        browser = Browser(server)
        base = f"http://{HOST}:{server.port}"
        account_cookie = (
            f"barycenter_csrf={browser.csrf}; barycenter_session={population.account_token}"
        )
        gets = [
            (HEALTHZ, "/healthz", browser.get("/healthz"), browser.headers()),
            (
                ACCOUNT,
                "/account",
                browser.get("/account", {"barycenter_session": population.account_token}),
                browser.headers(account_cookie),
            ),
        ]
        # Background load drifts: each GET is measured in slices that alternate with its
        # baseline, and the asyncio baseline in slices between the ceremonies.
        slices: dict[str, list[load.Result]] = {route: [] for route, *_ in gets}
        for route, path, raw, headers in gets:
            if load.wrk_available():
                load.run_wrk(base + path, headers, args.warmup, route)
            else:
                load.run_for(HOST, server.port, raw, args.warmup, route)
        for _ in range(SLICES):
            for route, path, raw, headers in gets:
                if load.wrk_available():
                    part = load.run_wrk(base + path, headers, args.duration / SLICES, route)
                else:
                    part = load.run_for(HOST, server.port, raw, args.duration / SLICES, route)
                slices[route].append(part)
        for route, *_ in gets:
            keep(load.merge(slices[route]))

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


def report(kind: str, rounds: list[Round], args: argparse.Namespace, seconds: float) -> str:
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
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}-{kind}.md"
    path.write_text(text_)
    (RESULTS / f"latest-{kind}.md").write_text(text_)
    return path


def run_database(kind: str, base: str | None, args: argparse.Namespace) -> str:
    started = time.perf_counter()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="barycenter-bench-") as tmp:
        for users in args.users:
            print(f"{kind}: {users:,} users", flush=True)
            with temporary_database(base) as url:
                rounds.append(measure(url, users, args, Path(tmp)))
    text_ = report(kind, rounds, args, time.perf_counter() - started)
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
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if not args.no_sqlite:
        run_database("sqlite", None, args)
    if args.database_url:
        run_database("postgresql", args.database_url, args)
    print(f"make bench: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
