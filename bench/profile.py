"""Profile one route: `python -m bench.profile account|section|second-factor|passkey`
(`section`: one account section as htmx asks for it, `--section activity` by default).

Three views of where a request's time goes:

0. CPU per request of the route and of /healthz, the app called in-process with every
   handler inline (process_time: hardly affected by other work on the machine);
1. SQL statements per request, counted in-process through Litestar's TestClient (an N+1
   query shows up as a count that grows with the data);
2. py-spy sampling both worker processes of a real `serve --workers 2` while the route
   is under load (py-spy is not a project dependency: `.venv/bin/pip install py-spy`),
   summarised as the functions with the most inclusive and own samples. Only the thread
   holding the GIL is sampled (`--gil`): Python CPU time, not waits.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import Executor, Future
from pathlib import Path

from litestar.concurrency import set_asyncio_executor
from litestar.middleware.csrf import generate_csrf_token
from litestar.testing import TestClient
from sqlalchemy import event

from bench import load
from bench.run import (
    SECRET_KEY,
    Browser,
    passkey_sign_in,
    running_server,
    second_factor,
    temporary_database,
)
from bench.seed import BROWSER_UA, partial_sessions, seed
from web.app import create_app
from web.db import connect, upgrade
from web.settings import Settings

ORIGIN = "http://localhost:8000"
HTMX = {"HX-Request": "true"}  # a section alone, as htmx asks for it


def page_path(route: str, section: str) -> str:
    return f"/account/{section}" if route == "section" else "/account"


def count_statements(
    url: str, route: str, requests: int = 50, section: str = "activity"
) -> dict[str, tuple[float, float]]:
    """SQL statements per request of `route`, in-process."""
    population = seed(url, 10)
    population.authenticator.origin = ORIGIN
    settings = Settings(database_url=url, secret_key=SECRET_KEY, ip_limit_per_minute=0, port=8000)
    database = connect(url)
    statements: Counter = Counter()
    timings: Counter = Counter()

    def before(conn, _cursor, _sql, *_args):
        conn.info["bench_started"] = time.perf_counter()

    def after(conn, _cursor, sql, *_args):
        key = " ".join(sql.split())[:110]
        statements[key] += 1
        timings[key] += time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())

    for engine in {database.read, database.write}:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
    csrf = generate_csrf_token(SECRET_KEY)
    headers = {"User-Agent": BROWSER_UA, "Origin": ORIGIN, "X-CSRFToken": csrf}
    auth = population.authenticator
    with TestClient(create_app(settings, database), base_url=ORIGIN) as client:
        calls = []
        if route in ("account", "section"):
            cookie = f"barycenter_session={population.account_token}"
            calls = [("GET", page_path(route, section), None, cookie)] * requests
        elif route == "second-factor":
            pairs = partial_sessions(url, population.active, requests)
            for i, (token, user) in enumerate(pairs):
                cookie = f"barycenter_csrf={csrf}; barycenter_session={token}"
                options = client.post(
                    "/login/2fa/passkey/start", json={}, headers={**headers, "Cookie": cookie}
                ).json()
                credential = auth.authenticate(
                    options, credential_id=user.credential_ids[i % 3], sign_count=0
                )
                calls.append(("POST", "/login/2fa/passkey/finish", credential, cookie))
        else:
            for i in range(requests):
                user = population.active[i % len(population.active)]
                cookie = f"barycenter_csrf={csrf}; barycenter_ceremony=bench-nonce-{i:08d}"
                options = client.post(
                    "/login/passkey/start", json={}, headers={**headers, "Cookie": cookie}
                ).json()
                credential = auth.authenticate(
                    options, credential_id=user.credential_ids[0], sign_count=0
                )
                calls.append(("POST", "/login/passkey/finish", credential, cookie))
        statements.clear()
        timings.clear()
        for method, path, credential, cookie in calls:
            body = json.dumps({"credential": credential}) if credential else None
            response = client.request(
                method,
                path,
                content=body,
                headers={
                    **headers,
                    **(HTMX if route == "section" else {}),
                    "Cookie": cookie,
                    "Content-Type": "application/json",
                },
            )
            if not 200 <= response.status_code < 300:
                raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
    database.dispose()
    return {sql: (n / len(calls), timings[sql] / n * 1000) for sql, n in statements.items()}


class _Inline(Executor):
    """Runs `sync_to_thread` work in the calling thread, so one process's CPU is all of it."""

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 (handed to the awaiting request)
            future.set_exception(exc)
        return future


def cpu_per_request(
    url: str,
    route: str,
    users: int = 10,
    requests: int = 300,
    profiler: cProfile.Profile | None = None,
    section: str = "activity",
    kept: bool = True,
) -> tuple[float, float]:
    """(CPU ms of /healthz, CPU ms of `route`) per request: the app called as ASGI in this
    process with every handler inline, timed with process_time (so other work on the
    machine hardly matters). Their ratio bounds what the server can reach. `kept` False:
    no page is served from memory (web/pagecache.py), each one is rendered."""
    population = seed(url, users)
    population.authenticator.origin = ORIGIN
    settings = Settings(database_url=url, secret_key=SECRET_KEY, ip_limit_per_minute=0, port=8000)
    app = create_app(settings, connect(url))
    if not kept:
        app.state.pages = None
    csrf = generate_csrf_token(SECRET_KEY)

    async def call(method: str, path: str, cookie: str = "", body: bytes = b"") -> bytes:
        headers = {
            "host": "localhost:8000",
            "user-agent": BROWSER_UA,
            "origin": ORIGIN,
            "content-type": "application/json",
            "x-csrftoken": csrf,
            "cookie": f"barycenter_csrf={csrf}; {cookie}",
            "content-length": str(len(body)),
        }
        if route == "section" and path.startswith("/account/"):
            headers["hx-request"] = "true"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"{path}: {sent[0]['status']}")
        return b"".join(m.get("body", b"") for m in sent[1:])

    async def prepare() -> list[tuple[str, str, str, bytes]]:
        if route in ("account", "section"):
            cookie = f"barycenter_session={population.account_token}"
            return [("GET", page_path(route, section), cookie, b"")] * (requests + 30)
        calls = []
        auth = population.authenticator
        if route == "second-factor":
            pairs = partial_sessions(url, population.active, requests + 30)
            for i, (token, user) in enumerate(pairs):
                cookie = f"barycenter_session={token}"
                options = json.loads(await call("POST", "/login/2fa/passkey/start", cookie, b"{}"))
                credential = auth.authenticate(
                    options, credential_id=user.credential_ids[i % 3], sign_count=0
                )
                body = json.dumps({"credential": credential}).encode()
                calls.append(("POST", "/login/2fa/passkey/finish", cookie, body))
        else:
            for i in range(requests + 30):
                user = population.active[i % len(population.active)]
                cookie = f"barycenter_ceremony=bench-nonce-{i:08d}"
                options = json.loads(await call("POST", "/login/passkey/start", cookie, b"{}"))
                credential = auth.authenticate(
                    options, credential_id=user.credential_ids[0], sign_count=0
                )
                body = json.dumps({"credential": credential}).encode()
                calls.append(("POST", "/login/passkey/finish", cookie, body))
        return calls

    async def timed(
        calls: list[tuple[str, str, str, bytes]], profiler: cProfile.Profile | None = None
    ) -> float:
        for call_ in calls[:30]:  # warm-up
            await call(*call_)
        started = time.process_time()
        if profiler:
            profiler.enable()
        for call_ in calls[30:]:
            await call(*call_)
        if profiler:
            profiler.disable()
        return (time.process_time() - started) / len(calls[30:]) * 1000

    async def both() -> tuple[float, float]:
        calls = await prepare()
        healthz = await timed([("GET", "/healthz", "", b"")] * (requests * 3 + 30))
        return healthz, await timed(calls, profiler)

    set_asyncio_executor(_Inline())
    try:
        return asyncio.run(both())
    finally:
        set_asyncio_executor(None)


def _frame_name(frame: str) -> str:
    """`render (jinja2/environment.py:1295)` → `render (jinja2/environment.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise(collapsed: list[Path], top: int) -> str:
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for path in collapsed:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [_frame_name(f) for f in stack.split(";")]
            if frames[-1].startswith(("_worker (", "select (")):
                continue  # an idle pool thread or event loop
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    lines = [f"{total} samples (busy) across the workers", "", "Inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "Own time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def sample(url: str, route: str, users: int, seconds: float, top: int) -> str:
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        return "py-spy not installed (.venv/bin/pip install py-spy): no sampling profile"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    upgrade(url)
    population = seed(url, users)
    with tempfile.TemporaryDirectory() as tmp, running_server(url, 2, Path(tmp)) as server:
        population.authenticator.origin = server.origin
        browser = Browser(server)
        workers = [pid for pid in server.cpu_seconds() if pid != server.process.pid]
        outputs = [Path(tmp) / f"{pid}.txt" for pid in workers]
        headers = browser.headers(
            f"barycenter_csrf={browser.csrf}; barycenter_session={population.account_token}"
        )
        base = f"http://127.0.0.1:{server.port}"
        load.run_wrk(base + "/account", headers, 2, "warm-up")
        spies = [
            subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--duration", str(round(seconds))]
                + ["--format", "raw", "--output", str(out), "--nonblocking", "--gil"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, out in zip(workers, outputs, strict=True)
        ]
        if route == "account":
            load.run_wrk(base + "/account", headers, seconds, "GET /account")
        else:  # starts and finishes (both are sampled) until py-spy is done
            while any(spy_process.poll() is None for spy_process in spies):
                if route == "second-factor":
                    second_factor(url, server, browser, population, 500)
                else:
                    passkey_sign_in(server, browser, population, 500)
        for spy_process in spies:
            spy_process.wait()
        return summarise([o for o in outputs if o.exists()], top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("route", choices=["account", "section", "second-factor", "passkey"])
    p.add_argument("--section", default="activity", help="the section of route `section`")
    p.add_argument("--users", type=int, default=10, help="population of views 0 and 2")
    p.add_argument("--cpu-only", action="store_true", help="only view 0")
    p.add_argument(
        "--rendered",
        action="store_true",
        help="the page cache off (web/pagecache.py): every page rendered",
    )
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--top", type=int, default=30)
    p.add_argument(
        "--cprofile",
        action="store_true",
        help="view 0 again under cProfile: the functions with the most cumulative time",
    )
    args = p.parse_args(argv)
    with temporary_database(None) as url:
        upgrade(url)
        healthz, cpu = cpu_per_request(
            url, args.route, args.users, section=args.section, kept=not args.rendered
        )
    name = page_path(args.route, args.section) if args.route == "section" else args.route
    if args.rendered:
        name += " (rendered each time)"
    print(
        f"CPU per request in one process (handlers inline, {args.users:,} users): /healthz "
        f"{healthz:.3f} ms, {name} {cpu:.3f} ms, ratio {healthz / cpu:.1%}"
    )
    if args.cprofile:
        profiler = cProfile.Profile()
        with temporary_database(None) as url:
            upgrade(url)
            cpu_per_request(
                url,
                args.route,
                args.users,
                profiler=profiler,
                section=args.section,
                kept=not args.rendered,
            )
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
    if args.cpu_only:
        return 0
    print()
    with temporary_database(None) as url:
        upgrade(url)
        per_request = count_statements(url, args.route, section=args.section)
    print("SQL statements per request (count, mean ms):")
    for sql, (n, ms) in sorted(per_request.items(), key=lambda item: -item[1][0] * item[1][1]):
        print(f"  {n:5.2f} {ms:7.3f}  {sql}")
    print()
    if args.route == "section":
        return 0  # (the sampling view loads the whole page)
    with temporary_database(None) as url:
        print(sample(url, args.route, args.users, args.seconds, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
