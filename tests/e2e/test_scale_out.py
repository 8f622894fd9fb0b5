"""Two `serve` processes on one database (SQLite file or PostgreSQL database): no state lives
in a process. A second server (`--admin-port 0`) runs next to the session's `server`.

Cookies are per host, not per port, so one browser context is signed in on both
http://localhost:A and http://localhost:B, like a browser behind a load balancer. Each
process checks WebAuthn against its own origin, so a ceremony's browser step runs on a page
of the process that finishes it; the start goes to the other process through the page's
request context (same cookies, the CSRF token from the page's meta tag).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.helpers.e2e import (
    Authenticator,
    NewContext,
    Server,
    sign_in,
    start_server,
    stop_server,
)

LOCKED = "Too many failed attempts. This account is locked for 15 minutes."
LOCKED_UNTIL = re.compile(re.escape(LOCKED) + r" Try again after \d\d:\d\d UTC\.")  # rev 2
CREATE = """async (options) => {
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
  return (await navigator.credentials.create({ publicKey })).toJSON();
}"""
GET = """async (options) => {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
  return (await navigator.credentials.get({ publicKey })).toJSON();
}"""


@pytest.fixture(scope="module")
def second_server(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(server.database_url, tmp_path_factory.mktemp("server-b"), admin=False)
    yield running
    stop_server(running)


def on_account(page: Page, username: str) -> None:
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text(f"Signed in as {username}")


def post_json(page: Page, url: str, payload: dict[str, Any]) -> Any:
    """A JSON POST like passkeys.js makes it: the page's cookies and CSRF token."""
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    return page.request.post(
        url, data=payload, headers={"X-CSRFToken": token or "", "HX-Request": "true"}
    )


def test_a_session_and_ceremonies_span_both_processes(
    page: Page, server: Server, second_server: Server, authenticator: Authenticator
) -> None:
    a, b = server.base_url, second_server.base_url
    username = server.create_user("scale")
    sign_in(page, server, username)
    on_account(page, username)

    # Signed in on A, the same session continues on B.
    page.goto(f"{b}/account")
    on_account(page, username)

    # Registration: options from A, the browser on B's page, finish on B.
    start = post_json(page, f"{a}/account/passkeys/start", {"name": "Cross key"})
    assert start.ok, start.text()
    credential = page.evaluate(CREATE, start.json())
    finish = post_json(
        page, f"{b}/account/passkeys/finish", {"credential": credential, "name": "Cross key"}
    )
    assert finish.ok, finish.text()
    assert "Passkey “Cross key” added." in finish.text()
    assert server.status(username)["passkeyCount"] == 1
    assert len(authenticator.credentials()) == 1
    # The challenge was used once, for both: replaying the finish on A is refused.
    replay = post_json(
        page, f"{a}/account/passkeys/finish", {"credential": credential, "name": "Again"}
    )
    assert 400 <= replay.status < 500, replay.status
    assert server.status(username)["passkeyCount"] == 1

    # htmx on B with the session from A: rename through the page.
    page.reload()
    passkeys = page.locator("#passkeys")
    passkeys.get_by_role("link", name="Rename Cross key").click()
    passkeys.get_by_role("listitem").get_by_label("Passkey name").fill("Key from B")
    passkeys.get_by_role("button", name="Save").click()
    expect(passkeys.get_by_role("status")).to_have_text("Passkey renamed to “Key from B”.")

    # Turning 2FA on: assertion options from B, the browser on A's page, finish on A.
    page.goto(f"{a}/account")
    start = post_json(page, f"{b}/account/two-factor/enable/start", {"mode": "existing"})
    assert start.ok, start.text()
    credential = page.evaluate(GET, start.json())
    finish = post_json(page, f"{a}/account/two-factor/enable/finish", {"credential": credential})
    assert finish.ok, finish.text()
    assert "Save your recovery codes" in finish.text()
    status = server.status(username)
    assert status["user2faEnabled"] and status["recoveryCodesRemaining"] == 10

    # A's answer rotated the session token; the new cookie works on B.
    page.goto(f"{b}/account")
    on_account(page, username)
    expect(page.locator("[data-2fa-status]")).to_have_text("On")
    expect(page.locator("#activity li").first).to_contain_text(
        "Two-factor authentication turned on"
    )


def test_lockout_counts_failures_on_both_processes(
    new_context: NewContext, server: Server, second_server: Server
) -> None:
    username = server.create_user("scale-lock")
    page = new_context().new_page()
    for target, attempts in ((server, 3), (second_server, 2)):
        for _ in range(attempts):
            sign_in(page, target, username, password="not-the-password")
            expect(page.get_by_role("alert").filter(has_text="Incorrect")).to_have_text(
                "Incorrect username or password."
            )
    # Five failures in all, on two processes: the account is locked on both, even for the
    # right password.
    for target in (server, second_server):
        sign_in(page, target, username)
        expect(page.get_by_role("alert").filter(has_text="locked")).to_have_text(LOCKED_UNTIL)
        expect(page).to_have_url(re.compile(r"/login$"))
