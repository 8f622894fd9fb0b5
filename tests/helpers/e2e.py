"""End-to-end helpers: a real `barycenter-account serve` process on free ports, Debian's
Chromium settings, a CDP virtual authenticator, and what a person does on a page (sign in,
add a passkey, sign out), what axe-core says about it in the light and the dark colour
scheme, and where the keyboard focus is. Fixtures: tests/e2e/conftest.py.

Browse http://localhost:PORT (WebAuthn refuses IP addresses as RP IDs).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, CDPSession, Page, expect

from tests.helpers.client import PASSWORD, Auth, ServerClient
from tests.softauthn import SoftAuthenticator

# CI shares two cores with the server and Chromium: give expectations the actions' patience.
expect.set_options(timeout=10_000)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
AXE = ROOT / ".cache/npm/node_modules/axe-core/axe.min.js"
VIRTUAL_AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base_url: str
    admin_url: str
    admin_token: str
    database_url: str
    process: subprocess.Popen

    def admin(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.admin_url,
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.admin_token}",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            body = json.loads(response.read())
        assert "errors" not in body, body
        return body["data"]

    def create_user(self, prefix: str = "user") -> str:
        username = f"{prefix}-{secrets.token_hex(4)}"
        data = self.admin(
            "mutation($u: String!, $p: String!) { createUser(username: $u, password: $p,"
            " displayName: $u) { success message } }",
            {"u": username, "p": PASSWORD},
        )
        assert data["createUser"]["success"], data
        return username

    def status(self, username: str) -> dict[str, Any]:
        return self.admin(
            "query($u: String!) { user2faStatus(username: $u) { requires2fa user2faEnabled"
            " effective2fa passkeyCount recoveryCodesRemaining } }",
            {"u": username},
        )["user2faStatus"]

    def set_required(self, username: str, required: bool) -> None:
        self.admin(
            "mutation($u: String!, $r: Boolean!) { setUser2faRequired(username: $u,"
            " required: $r) { success } }",
            {"u": username, "r": required},
        )

    def set_enabled(self, username: str, enabled: bool) -> None:
        self.admin(
            "mutation($u: String!, $e: Boolean!) { setUser2faEnabled(username: $u,"
            " enabled: $e) { success } }",
            {"u": username, "e": enabled},
        )


def start_server(database_url: str, tmp: Path, *, admin: bool = True, **env: str) -> Server:
    port, admin_port = free_port(), free_port()
    token = secrets.token_urlsafe(24)
    environment = {
        **os.environ,
        "BARYCENTER_DATABASE_URL": database_url,
        "BARYCENTER_ADMIN_TOKEN": token,
        "BARYCENTER_SECRET_KEY": "e2e-secret-" + "x" * 32,
        "BARYCENTER_IP_LIMIT_PER_MINUTE": "0",
        "BARYCENTER_ORIGIN": f"http://localhost:{port}",
        **env,
    }
    log = open(tmp / f"server-{port}.log", "w")  # noqa: SIM115 (kept open for the process)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "web.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port if admin else 0),
        ],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(tmp / f'server-{port}.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):  # noqa: S310
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("server did not start")
    return Server(
        base_url=f"http://localhost:{port}",
        admin_url=f"http://127.0.0.1:{admin_port}/graphql",
        admin_token=token,
        database_url=database_url,
        process=process,
    )


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


NewContext = Callable[..., BrowserContext]
"""The `new_context` fixture: `new_context(**browser_context_options)`."""


@dataclass
class Authenticator:
    """A CDP virtual authenticator attached to one page."""

    cdp: CDPSession
    id: str

    def credentials(self) -> list[dict[str, Any]]:
        return self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})["credentials"]

    def set_user_verified(self, verified: bool) -> None:
        self.cdp.send(
            "WebAuthn.setUserVerified", {"authenticatorId": self.id, "isUserVerified": verified}
        )

    def remove(self) -> None:
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.id})


def add_authenticator(page: Page, **options: Any) -> Authenticator:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    result = cdp.send(
        "WebAuthn.addVirtualAuthenticator", {"options": {**VIRTUAL_AUTHENTICATOR, **options}}
    )
    return Authenticator(cdp=cdp, id=result["authenticatorId"])


def sign_in(page: Page, server: Server, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{server.base_url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def check_accessibility(page: Page, label: str = "") -> None:
    """axe-core on the current page state: no violations. axe is evaluated through the
    DevTools protocol: the page's CSP (rightly) refuses an injected inline <script>."""
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    violations = [
        f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: {[n['target'] for n in v['nodes']][:3]})"
        for v in result["violations"]
    ]
    assert not violations, f"axe violations {label}: {violations}"


def settle_transitions(page: Page) -> None:
    """Switching the colour scheme starts the buttons' colour transitions: let them end
    before axe measures contrast."""
    page.evaluate("() => Promise.all(document.getAnimations().map((a) => a.finished))")


def check_light_and_dark(page: Page, label: str) -> None:
    """axe in the light and the dark colour scheme (contrast differs), back to light."""
    check_accessibility(page, f"{label} (light)")
    page.emulate_media(color_scheme="dark")
    try:
        settle_transitions(page)
        check_accessibility(page, f"{label} (dark)")
    finally:
        page.emulate_media(color_scheme="light")
        settle_transitions(page)


def focused(page: Page) -> dict[str, Any]:
    """What has the keyboard focus: tag, text, accessible label of a field, id."""
    return page.evaluate(
        """() => {
          const e = document.activeElement;
          return {
            tag: e.tagName.toLowerCase(),
            id: e.id,
            text: (e.textContent || "").trim(),
            label: e.labels && e.labels.length ? e.labels[0].textContent.trim() : "",
            value: e.value === undefined ? null : e.value,
          };
        }"""
    )


def expect_focus_on_heading(page: Page, text: str) -> None:
    expect(page.get_by_role("heading", name=text, exact=True)).to_be_focused()


def tab_to(page: Page, name: str, limit: int = 40) -> None:
    """Press Tab until the focused element's text (or its field's label) is `name`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focused(page)
        if name in (now["text"], now["label"]):
            return
    raise AssertionError(f"{name!r} is not reachable with Tab (last: {focused(page)})")


def expect_visible_focus_ring(page: Page) -> None:
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
    )
    assert outline[0] != "none" and outline[1] >= 2, f"no visible focus ring: {outline}"


def put_credentials(authenticator: Authenticator, credentials: list[dict[str, Any]]) -> None:
    """Copy credentials saved with `.credentials()` (private keys included) into an
    authenticator, e.g. to bring a passkey back after signing in with a password."""
    for credential in credentials:
        authenticator.cdp.send(
            "WebAuthn.addCredential",
            {"authenticatorId": authenticator.id, "credential": credential},
        )


def add_passkey(page: Page, name: str) -> None:
    """Add a passkey from the account page's Passkeys section (the page's authenticator)."""
    passkeys = page.locator("#passkeys")
    passkeys.get_by_label("Passkey name").fill(name)
    passkeys.get_by_role("button", name="Add a passkey").click()
    title = passkeys.locator(".item-title").filter(has_text=" ".join(name.split()))
    expect(title.first).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()


def make_stale(server: Server, username: str, minutes: int = 30) -> None:
    """Let the recent-authentication window pass for every session of `username` (as if
    the sign-in or confirmation was `minutes` ago), without waiting for it."""
    from datetime import timedelta

    from sqlmodel import Session, col, create_engine, select, update

    from models import AuthSession, User, utcnow

    engine = create_engine(server.database_url)
    try:
        with Session(engine) as db:
            owner = select(User.id).where(col(User.username_key) == username.lower())
            db.exec(
                update(AuthSession)
                .where(col(AuthSession.user_id).in_(owner.scalar_subquery()))
                .values(reauth_at=utcnow() - timedelta(minutes=minutes))
            )
            db.commit()
    finally:
        engine.dispose()


def server_auth(server: Server) -> Auth:
    """A browser-less user of the real server: a `ServerClient` with a software
    authenticator of its own (race and cross-process tests)."""
    return Auth(
        ServerClient(server.base_url), SoftAuthenticator(rp_id="localhost", origin=server.base_url)
    )
