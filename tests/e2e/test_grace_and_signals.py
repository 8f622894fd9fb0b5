"""An administrator's requirement with a grace period (SPEC §4.2), related origins'
/.well-known/webauthn (§5.6), and the WebAuthn Signal API calls of the shim (§5.6, §9), in
Chromium against a real server with a CDP virtual authenticator."""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.helpers import temporary_database
from tests.helpers.e2e import (
    PASSWORD,
    add_authenticator,
    add_passkey,
    check_accessibility,
    sign_in,
    sign_out,
    start_server,
    stop_server,
)

RESULT = "success message requiredFrom requirementPending effective2fa"


def require_with_grace(server, username: str, grace_days: int) -> dict[str, Any]:
    result = server.admin(
        "mutation($u: String!, $g: Int!) { setUser2faRequired(username: $u, required: true,"
        f" graceDays: $g) {{ {RESULT} }} }}",
        {"u": username, "g": grace_days},
    )["setUser2faRequired"]
    assert result["success"], result
    return result


def words(iso: str) -> str:
    """The server's words for a date ("8 December 2026, 14:05 UTC"), from requiredFrom."""
    from datetime import datetime

    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.strftime("%-d %B %Y, %H:%M UTC")


def card(page: Page):
    return page.locator("#two-factor")


def test_grace_period_notice_card_and_enable(page, server, authenticator):
    username = server.create_user("grace")
    result = require_with_grace(server, username, 7)
    assert result["requirementPending"] and not result["effective2fa"]
    date = words(result["requiredFrom"])

    # Sign-in works as before during the grace period: no second factor.
    sign_in(page, server, username)
    expect(page).to_have_url(f"{server.base_url}/account")
    notice = page.locator("#requirement-notice")
    expect(notice).to_contain_text(
        f"Your administrator requires two-factor authentication from {date}."
    )
    expect(notice.locator("time")).to_have_attribute("datetime", result["requiredFrom"])
    expect(card(page).locator("[data-requirement-pending]")).to_have_text(
        f"Required by your administrator from {date}."
    )
    expect(card(page).locator("time")).to_have_attribute("datetime", result["requiredFrom"])
    expect(card(page).locator("[data-2fa-status]")).to_have_text("Off")
    check_accessibility(page, "pending requirement")

    # The user turns it on before the date.
    card(page).get_by_role("link", name="Enable two-factor authentication").click()
    card(page).get_by_label("Passkey name").fill("Laptop")
    card(page).get_by_role("button", name="Register passkey and turn on").click()
    expect(card(page).get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    expect(notice).to_be_empty()  # the notice refreshed itself away (refresh-requirement-notice)
    card(page).get_by_role("link", name="I have saved these codes").click()
    expect(card(page).locator("[data-2fa-status]")).to_have_text("On")
    expect(card(page).locator("[data-requirement-pending]")).to_have_text(
        f"Required by your administrator from {date}."
    )
    # A pending requirement already forbids turning it off.
    expect(card(page).get_by_role("link", name="Disable two-factor authentication")).to_have_count(
        0
    )
    page.reload()
    expect(page.locator("#requirement-notice")).to_be_empty()
    check_accessibility(page, "pending requirement, 2FA on")
    status = server.admin(
        "query($u: String!) { user2faStatus(username: $u) { effective2fa requirementPending"
        " requiredFrom } }",
        {"u": username},
    )["user2faStatus"]
    assert status == {
        "effective2fa": True,
        "requirementPending": True,
        "requiredFrom": result["requiredFrom"],
    }


def test_grace_changed_to_zero_sends_a_live_session_to_enroll_at_login(page, server, authenticator):
    username = server.create_user("grace0")
    require_with_grace(server, username, 7)
    sign_in(page, server, username)  # no passkey yet
    expect(page.locator("#requirement-notice")).to_contain_text("Your administrator requires")

    # The administrator ends the grace period: the requirement is in force at once.
    result = require_with_grace(server, username, 0)
    assert result["effective2fa"] and not result["requirementPending"]

    # That session's next request (an htmx one here) goes to /login/2fa: enroll-at-login.
    card(page).get_by_role("link", name="Enable two-factor authentication").click()
    expect(page).to_have_url(re.compile(r"/login/2fa"))
    expect(page.get_by_role("heading", name="Two-factor authentication", level=1)).to_be_visible()
    # A session demoted by the requirement enters its password before registering a passkey
    # (a stolen cookie must not be enough: security review of issue 9).
    expect(page.get_by_role("button", name="Register passkey and sign in")).to_have_count(0)
    check_accessibility(page, "/login/2fa, password before enroll-at-login")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("alert").filter(has_text="That password is not right")).to_be_visible()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("button", name="Register passkey and sign in").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    assert server.status(username)["passkeyCount"] == 1


# --------------------------------------------------------------------------------------
# The Signal API: spied on with an init script
# --------------------------------------------------------------------------------------

SPY = """
(() => {
  if (!window.PublicKeyCredential) return;
  const spy = (kind) => (options) => {
    window.__recordSignal(kind, JSON.stringify(options));
    return Promise.resolve();
  };
  PublicKeyCredential.signalAllAcceptedCredentials = spy("accepted");
  PublicKeyCredential.signalUnknownCredential = spy("unknown");
})();
"""


def b64url(standard: str) -> str:
    """CDP gives credential IDs in standard base64; WebAuthn JSON uses base64url."""
    return base64.urlsafe_b64encode(base64.b64decode(standard)).decode().rstrip("=")


@pytest.fixture
def signals(context: BrowserContext) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    context.expose_function(
        "__recordSignal", lambda kind, options: calls.append((kind, json.loads(options)))
    )
    context.add_init_script(SPY)
    return calls


def eventually(page: Page, check, seconds: float = 5) -> None:
    """The binding's calls arrive asynchronously: wait for them (then assert the exact list)."""
    for _ in range(int(seconds * 10)):
        if check():
            return
        page.wait_for_timeout(100)
    assert check()


def accepted(calls) -> list[list[str]]:
    return [c["allAcceptedCredentialIds"] for kind, c in calls if kind == "accepted"]


def test_signals_after_sign_in_removal_and_unknown_credential(page, server, signals):
    authenticator = add_authenticator(page)
    username = server.create_user("signals")
    sign_in(page, server, username)
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
    # The account page, once per load: no passkeys yet.
    eventually(page, lambda: accepted(signals) == [[]])
    _, first = signals[0]
    assert first["rpId"] == "localhost" and first["userId"]

    add_passkey(page, "Laptop")
    [credential] = authenticator.credentials()
    passkey_id = b64url(credential["credentialId"])
    assert b64url(credential["userHandle"]) == first["userId"]
    page.wait_for_timeout(500)  # the other sections refresh meanwhile
    assert accepted(signals) == [[]]  # section refreshes don't signal

    # A passkey sign-in (the login page's autofill): the shim signals before going on, and
    # the account page signals again when it loads.
    signals.clear()
    sign_out(page)
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
    eventually(page, lambda: accepted(signals) == [[passkey_id], [passkey_id]])
    assert all(c["userId"] == first["userId"] and c["rpId"] == "localhost" for _, c in signals)

    # Removal: the passkeys that remain (none), once, not again on the background refreshes.
    signals.clear()
    passkeys = page.locator("#passkeys")
    passkeys.get_by_role("link", name=re.compile("^Remove")).click()
    passkeys.get_by_role("button", name="Remove passkey").click()
    expect(passkeys.get_by_role("status")).to_have_text("Passkey removed.")
    page.wait_for_timeout(500)  # the other sections refresh meanwhile
    assert accepted(signals) == [[]]
    assert server.status(username)["passkeyCount"] == 0

    # A sign-in with the removed passkey (still in the authenticator): the server answers
    # unknown-credential and the shim tells the password manager.
    signals.clear()
    sign_out(page)
    expect(page.get_by_text("That passkey is not registered with this account.")).to_be_visible()
    eventually(
        page, lambda: ("unknown", {"rpId": "localhost", "credentialId": passkey_id}) in signals
    )
    assert accepted(signals) == []
    expect(page).to_have_url(re.compile(r"/login"))


# --------------------------------------------------------------------------------------
# /.well-known/webauthn from a real server
# --------------------------------------------------------------------------------------


@pytest.mark.database
def test_well_known_webauthn_served_and_bad_config_stops_start_up(tmp_path):
    related = "https://accounts.related.example"
    with temporary_database(tmp_path) as url:
        server = start_server(
            url, tmp_path, admin=False, BARYCENTER_RELATED_ORIGINS=f" {related} ,"
        )
        try:
            with urllib.request.urlopen(
                f"{server.base_url.replace('localhost', '127.0.0.1')}/.well-known/webauthn"
            ) as response:  # noqa: S310
                assert response.headers["Content-Type"].startswith("application/json")
                assert response.headers["Cache-Control"] == "public, max-age=3600"
                assert json.loads(response.read()) == {"origins": [server.base_url, related]}
        finally:
            stop_server(server)
        with pytest.raises(RuntimeError) as failed:
            start_server(
                url, tmp_path, admin=False, BARYCENTER_RELATED_ORIGINS="https://x.example/path"
            )
        assert "configuration error" in str(failed.value)
        assert "'https://x.example/path' is not a bare origin" in str(failed.value)
