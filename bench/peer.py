"""The django-allauth peer of `make bench` (SPEC §8: side by side, same machine, same run).

Drives the kit in `../shared/peers/allauth/` through its own scripts: `setup.sh` when its
venv is missing, `serve.sh` (gunicorn, 2 sync workers), `bench/login.py` (alice's session
cookie), `bench/browser.py ceremony` (Chromium with a CDP virtual authenticator: one passkey
added, then password + key and passwordless sign-ins, each POST timed by the peer's
`Server-Timing` header) and `stop.sh`. Anything that fails turns the peer off for the run
with a message saying why; our own rows are measured either way.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = Path(os.environ.get("BENCH_ALLAUTH_DIR", ROOT.parent / "shared" / "peers" / "allauth"))
VENV = Path(os.environ.get("BENCH_ALLAUTH_VENV", "/tmp/allauth-venv"))  # noqa: S108 (the kit's default)
DATA = Path(os.environ.get("BENCH_ALLAUTH_DATA", "/tmp/allauth-peer"))  # noqa: S108
PASSWORD = os.environ.get("ALICE_PASSWORD", "alice-peer-Pa55word")
PAGE = "/accounts/2fa/"

SECOND_FACTOR = "2FA stage POST (password, then passkey)"
PASSKEY = "passkey sign-in POST (passwordless)"


class PeerUnavailable(Exception):
    """The peer could not be set up or started; the message says why."""


@dataclass
class Peer:
    port: int
    cookie: str
    """Cookie header of alice's session, enrolled (1 passkey + recovery codes)."""
    server_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per ceremony POST: the peer's own Server-Timing figures (Django's time in the worker)."""
    versions: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def median_ms(self, label: str) -> float | None:
        values = self.server_ms.get(label) or []
        return statistics.median(values) if values else None

    def page_status(self) -> int:
        request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
            self.base + PAGE, headers={"Cookie": self.cookie}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                # urllib follows redirects: a session that no longer works lands on login
                return response.status if response.url.endswith(PAGE) else 302
        except OSError:
            return 0


def _env(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PORT": str(port),
        "VENV": str(VENV),
        "ALLAUTH_PEER_DATA": str(DATA),
        "ALICE_PASSWORD": PASSWORD,
        "WORKERS": "2",
        "WORKER_CLASS": "sync",
    }


def _run(command: list[str], port: int, what: str, timeout: float, **env: str) -> str:
    try:
        done = subprocess.run(
            command,
            cwd=PEER_DIR,
            env={**_env(port), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{what}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise PeerUnavailable(f"{what} failed (exit {done.returncode}): " + " | ".join(tail))
    return done.stdout


def _manage(port: int, code: str) -> str:
    return _run(
        [str(VENV / "bin/python"), "manage.py", "shell", "-v", "0", "-c", code],
        port,
        "manage.py shell",
        120,
    )


@contextmanager
def running_peer(port: int, log: Callable[[str], None] = print) -> Iterator[Peer | None]:
    """The peer serving on 127.0.0.1:`port` with alice enrolled, or None (with the reason
    printed) when it cannot be set up. Stops the server afterwards if it started it."""
    started = False
    try:
        if not (PEER_DIR / "serve.sh").exists():
            raise PeerUnavailable(f"no peer kit at {PEER_DIR}")
        if not (VENV / "bin/python").exists():
            log(f"  allauth peer: first set-up ({PEER_DIR}/setup.sh, a few minutes) …")
            _run(["./setup.sh"], port, "setup.sh", 900)
        started = not _run(["./serve.sh"], port, "serve.sh", 60).startswith("already running")
        peer = _enrol(port, log)
    except PeerUnavailable as exc:
        log(f"  allauth peer skipped: {exc}")
        if started:
            _stop(port)
        yield None
        return
    try:
        yield peer
    finally:
        if started:
            _stop(port)


def _stop(port: int) -> None:
    try:
        _run(["./stop.sh"], port, "stop.sh", 30)
    except PeerUnavailable as exc:
        print(f"  allauth peer: {exc}")


def _enrol(port: int, log: Callable[[str], None]) -> Peer:
    """As the peer's bench.sh: reset alice, sign in (requests), add a passkey and sign in
    with it in Chromium (timed), keep one passkey plus the recovery codes."""
    python = str(VENV / "bin/python")
    base, browser_base = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
    _manage(
        port,
        "from allauth.mfa.models import Authenticator as A\n"
        "A.objects.filter(user__username='alice').delete()",
    )
    with tempfile.TemporaryDirectory(prefix="bench-allauth-") as tmp:
        cookie_file, ceremony_file = Path(tmp) / "cookie.json", Path(tmp) / "ceremony.json"
        _run([python, "bench/login.py", base, str(cookie_file)], port, "peer login", 120)
        cookie = json.loads(cookie_file.read_text())["cookie_header"]
        log("  allauth peer: passkey ceremonies in Chromium (Server-Timing) …")
        _run(
            [python, "bench/browser.py", "ceremony", browser_base, str(ceremony_file)],
            port,
            "peer ceremony (Chromium)",
            300,
            ADDS="1",
            LOGINS="3",  # allauth allows 10 passkey sign-ins a minute per IP
        )
        ceremony = json.loads(ceremony_file.read_text())
    versions = _run(
        [
            python,
            "-c",
            "from importlib.metadata import version as v; print(f\"Django {v('django')}, "
            "django-allauth {v('django-allauth')}, gunicorn {v('gunicorn')} (sync)\")",
        ],
        port,
        "versions",
        30,
    ).strip()
    peer = Peer(
        port=port,
        cookie=cookie,
        versions=versions,
        server_ms={
            SECOND_FACTOR: [r["server_app_ms"] for r in ceremony.get("login_2fa_webauthn", [])],
            PASSKEY: [r["server_app_ms"] for r in ceremony.get("login_passkey", [])],
        },
    )
    if peer.page_status() != 200:
        raise PeerUnavailable(f"alice's session does not reach {PAGE} after enrolment")
    return peer
