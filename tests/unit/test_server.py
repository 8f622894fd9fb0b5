"""The server around the app: `serve --workers N` (one SO_REUSEPORT socket per worker), a
quiet stop on SIGTERM and Ctrl-C, the favicon, and the user-agent words."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import PASSWORD
from tests.smtp import SmtpServer
from web import events
from web.db import connect
from web.settings import Settings
from web.users import create_user
from web.views import browser_and_os

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        return response.status


@contextmanager
def serving(
    database_url: str, tmp_path: Path, workers: int, admin: bool, **env: str
) -> Iterator[dict]:
    """`barycenter-account serve` in its own process group; yields what a test needs."""
    port = free_port()
    out = tmp_path / f"serve-{port}.log"
    with open(out, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1"]
            + ["--port", str(port), "--workers", str(workers)]
            + ["--admin-port", str(free_port() if admin else 0)],
            cwd=ROOT,
            env={
                **os.environ,
                "BARYCENTER_DATABASE_URL": database_url,
                "BARYCENTER_SECRET_KEY": "serve-test-" + "x" * 32,
                "BARYCENTER_ADMIN_TOKEN": "serve-test-token-of-thirty-two-characters",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, out.read_text()
            try:
                if get(f"http://127.0.0.1:{port}/healthz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no answer: {out.read_text()}"
            time.sleep(0.1)
        yield {"process": process, "port": port, "log": out}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state on 127.0.0.1:`port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            found.add(inode)
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def stop_and_check_quiet(server: dict, sig: signal.Signals, to_group: bool) -> None:
    """Exit status 0, nothing alarming in the log, no worker left listening."""
    process = server["process"]
    if to_group:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    assert process.wait(timeout=30) == 0
    time.sleep(0.2)  # the workers' last words, if any, reach the log
    log = server["log"].read_text()
    assert "Traceback" not in log
    assert "Error" not in log
    assert not listening_inodes(server["port"])


# Each case starts a real `serve` (a few seconds on two busy cores), so the Ctrl-C case
# also checks the workers' sockets.
@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
def test_each_worker_listens_on_its_own_socket_serves_and_stops_quietly_on_ctrl_c(
    database_url, tmp_path
):
    with serving(database_url, tmp_path, workers=2, admin=False) as server:
        port, parent = server["port"], server["process"].pid
        workers = [pid for pid in children(parent) if socket_inodes(pid)]
        listening = listening_inodes(port)
        # two listening sockets on the port, one in each worker (none in the parent)
        assert len(listening) == 2
        assert sorted(len(socket_inodes(pid) & listening) for pid in workers) == [1, 1]
        assert not socket_inodes(parent) & listening
        # every new connection is answered, whichever worker the kernel hands it to
        statuses = [get(f"http://127.0.0.1:{port}/healthz") for _ in range(40)]
        assert statuses == [200] * 40
        # Ctrl-C in a terminal signals the whole process group
        stop_and_check_quiet(server, signal.SIGINT, to_group=True)


@pytest.mark.parametrize("workers", [2, 1])
def test_sigterm_stops_the_server_and_its_admin_listener_quietly(database_url, tmp_path, workers):
    with serving(database_url, tmp_path, workers=workers, admin=True) as server:
        stop_and_check_quiet(server, signal.SIGTERM, to_group=False)


def test_workers_without_an_admin_listener_still_send_mail_and_stop_on_sigterm(
    database_url, tmp_path
):
    """`serve --workers 2 --admin-port 0`: the parent process still runs the background jobs
    (the outbox sender among them), and SIGTERM to it alone stops the workers too."""
    smtp = SmtpServer().start()
    try:
        database = connect(database_url)
        with database.session() as db:
            user = create_user(db, "mia", PASSWORD, email="mia@example.com", actor="admin")
            events.record(db, user.pk, "passkey_added", name="Work laptop")
            db.commit()
        with serving(
            database_url, tmp_path, workers=2, admin=False, BARYCENTER_SMTP_URL=smtp.url
        ) as server:
            received = smtp.inbox.wait_for(1, timeout=30)
            assert len(received) == 1, server["log"].read_text()
            assert received[0].recipients == ["mia@example.com"]
            stop_and_check_quiet(server, signal.SIGTERM, to_group=False)
    finally:
        smtp.stop()


class _AlwaysAlive:
    def is_alive(self) -> bool:
        return True


def test_a_signal_while_serving_ends_the_wait_and_is_never_raised_from_its_handler(settings):
    """uvicorn raises a signal it took once more after its graceful shutdown. An exception
    from a signal handler would land wherever the main thread is (once, a weakref callback,
    which printed it and carried on), so from the start of serving the handler only asks
    `_serve` to finish, and after it, does nothing."""
    from web import cli

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        cli._quiet_signals()

        async def serve_then_signal() -> None:
            asyncio.get_running_loop().call_later(0.05, signal.raise_signal, signal.SIGTERM)
            # no server in this process, a worker that never ends: only the signal stops it
            await cli._serve([], [], settings, with_cleanup=False, workers=[_AlwaysAlive()])

        asyncio.run(asyncio.wait_for(serve_then_signal(), timeout=10))
        signal.raise_signal(signal.SIGINT)  # after serving: the process is on its way out
        signal.raise_signal(signal.SIGTERM)
    finally:
        cli._on_signal = None
        cli._stop_requested = False
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_signal_while_starting_is_noted_and_serving_never_starts(settings):
    """A worker signalled while it starts (the parent stopping right after the first worker
    answered) serves nothing and ends; a second signal ends a process at once."""
    from web import cli

    before = signal.getsignal(signal.SIGTERM)
    try:
        cli._quiet_signals()
        signal.raise_signal(signal.SIGTERM)  # noted, not raised
        assert cli._stop_requested

        async def serve() -> None:
            await cli._serve([], [], settings, with_cleanup=False, workers=[_AlwaysAlive()])

        asyncio.run(asyncio.wait_for(serve(), timeout=10))  # returns at once

        cli._on_signal = None
        with pytest.raises(SystemExit) as stopped:
            signal.raise_signal(signal.SIGTERM)
        assert stopped.value.code == 0
    finally:
        cli._on_signal = None
        cli._stop_requested = False
        signal.signal(signal.SIGTERM, before)


def test_favicon_is_served_with_the_security_headers_and_linked(client):
    response = client.get("/static/favicon.svg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page = client.get("/login")
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in page.text


def test_the_conventional_favicon_address_answers_the_icon_with_a_long_cache(client):
    """Browsers and tools that skip the <link> ask /favicon.ico: the same icon, no 404."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content == client.get("/static/favicon.svg").content
    cache = response.headers["cache-control"]
    assert cache.startswith("public, max-age=")
    assert int(cache.rsplit("=", 1)[1]) >= 7 * 24 * 3600
    assert "set-cookie" not in response.headers  # cacheable by anyone
    assert response.headers["x-content-type-options"] == "nosniff"


CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("user_agent", "words"),
    [
        (CHROME, "Chrome on Linux"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.1 Safari/605.1.15",
            "Safari on Mac OS X",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Mobile Safari on iOS",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox on Windows",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome Mobile on Android",
        ),
        ("curl/8.5.0", "curl"),  # a browser without a system
        ("", "Unknown browser"),
        ("<script>alert(1)</script>", "Unknown browser"),
        ("\x00\r\n" * 100, "Unknown browser"),
    ],
)
def test_browser_and_os_in_words(user_agent, words):
    assert browser_and_os(user_agent) == words


def test_browser_and_os_is_cached():
    browser_and_os.cache_clear()
    browser_and_os(CHROME)
    browser_and_os(CHROME)
    assert browser_and_os.cache_info().hits == 1


def test_the_sqlite_busy_timeout_is_a_setting(tmp_path):
    env = {"BARYCENTER_SECRET_KEY": "k" * 48}
    assert Settings.from_env(env).sqlite_busy_timeout_ms == 5000
    settings = Settings.from_env({**env, "BARYCENTER_SQLITE_BUSY_TIMEOUT_MS": "250"})
    assert settings.sqlite_busy_timeout_ms == 250
    for bad in ("-1", "soon"):
        with pytest.raises(ValueError, match="BARYCENTER_SQLITE_BUSY_TIMEOUT_MS"):
            Settings.from_env({**env, "BARYCENTER_SQLITE_BUSY_TIMEOUT_MS": bad})
    database = connect(f"sqlite:///{tmp_path}/timeout.db", busy_timeout_ms=250)
    try:
        for engine in (database.read, database.write):
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250
    finally:
        database.dispose()


def test_a_stopping_server_waits_for_requests_in_flight_a_bounded_time(settings):
    """uvicorn waits for every request in flight unless told how long: a stuck one would
    keep a stopped server alive for ever (SIGTERM again does nothing once it stops)."""
    from web import cli

    admin = cli._admin_server(settings, "127.0.0.1", 0)
    assert admin.config.timeout_graceful_shutdown == cli.SHUTDOWN_GRACE
    user_site = cli._user_server(settings, None, "127.0.0.1", 0)
    assert user_site.config.timeout_graceful_shutdown == cli.SHUTDOWN_GRACE
