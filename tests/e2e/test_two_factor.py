"""Two-factor authentication (SPEC §4, §5.2, §5.4, §5.5) in Chromium: one test per row of
the rules table, with CDP virtual authenticators and the admin API of a real server."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.helpers.e2e import (
    Authenticator,
    add_authenticator,
    add_passkey,
    put_credentials,
    sign_in,
    sign_out,
)

CODE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}$")
CANCELLED = "The passkey request was cancelled or timed out. Nothing was changed."
ADMIN_REQUIRES = "Your administrator requires two-factor authentication"
REQUIRED = "Required by your administrator"
BOTH = "Required by your administrator (also turned on by you)"


def card(page: Page) -> Locator:
    return page.locator("#two-factor")


def status(page: Page) -> Locator:
    """The card's status in words ("Off", "On", "Required by your administrator"…)."""
    return card(page).locator("[data-2fa-status]")


def account_heading(page: Page) -> Locator:
    return page.get_by_role("heading", name="Account security")


def signed_in(page: Page, server) -> str:
    username = server.create_user()
    sign_in(page, server, username)
    expect(account_heading(page)).to_be_visible()
    return username


def session_method(page: Page, method: str) -> Locator:
    current = page.locator("#sessions li").filter(has_text="This session")
    return current.get_by_text(re.compile(rf"^{method} · IP"))


def read_codes(scope: Locator) -> list[str]:
    """The codes step: heading, 10 codes each in its own <code>, a Download link."""
    expect(scope.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    expect(scope.locator("code")).to_have_count(10)
    codes = scope.locator("code").all_inner_texts()
    assert all(CODE.match(code) for code in codes), codes
    assert len(set(codes)) == 10
    expect(scope.get_by_role("link", name="Download")).to_be_visible()
    return codes


def enable_with_new_passkey(page: Page, name: str = "Laptop") -> list[str]:
    """No passkey yet: enable 2FA with a new one; returns the recovery codes."""
    card(page).get_by_role("link", name="Enable two-factor authentication").click()
    card(page).get_by_label("Passkey name").fill(name)
    card(page).get_by_role("button", name="Register passkey and turn on").click()
    codes = read_codes(card(page))
    card(page).get_by_role("link", name="I have saved these codes").click()
    expect(status(page)).to_have_text("On")
    return codes


def to_second_factor(page: Page, server, username: str, authenticator: Authenticator):
    """Sign out and in again with the password (the passkey kept aside meanwhile, or the
    login page's autofill would sign in with it): lands on /login/2fa. Returns the page's
    new authenticator, which holds the passkey again."""
    credentials = authenticator.credentials()
    authenticator.remove()
    sign_out(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    sign_in(page, server, username)
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    again = add_authenticator(page)
    put_credentials(again, credentials)
    return again


def test_enable_with_a_new_passkey(page, server, authenticator):
    username = signed_in(page, server)
    expect(status(page)).to_have_text("Off")
    expect(page.locator("#recovery-codes")).to_be_empty()
    card(page).get_by_role("link", name="Enable two-factor authentication").click()
    expect(card(page).get_by_role("button", name="Verify with a passkey")).to_have_count(0)
    card(page).get_by_label("Passkey name").fill("Laptop")
    card(page).get_by_role("button", name="Register passkey and turn on").click()

    codes = read_codes(card(page))
    with page.expect_download() as download:
        card(page).get_by_role("link", name="Download").click()
    # rev 2: the file names the account, the site and the date (name and content)
    assert re.fullmatch(
        rf"barycenter-recovery-codes-{username}-localhost-\d{{4}}-\d\d-\d\d\.txt",
        download.value.suggested_filename,
    ), download.value.suggested_filename
    text = Path(download.value.path()).read_text()
    assert all(code in text for code in codes)
    assert text.startswith(f"Recovery codes for {username} at localhost, created ")
    facts = server.status(username)
    assert facts["user2faEnabled"] and facts["effective2fa"]
    assert facts["passkeyCount"] == 1 and facts["recoveryCodesRemaining"] == 10
    assert len(authenticator.credentials()) == 1

    card(page).get_by_role("link", name="I have saved these codes").click()
    expect(status(page)).to_have_text("On")
    expect(card(page).locator("code")).to_have_count(0)
    expect(card(page).get_by_role("link", name="Disable two-factor authentication")).to_be_visible()
    expect(page.locator("#passkeys .item-title")).to_have_text(["Laptop"])
    expect(
        page.locator("#recovery-codes").get_by_text("10 of 10 recovery codes remain")
    ).to_be_visible()
    expect(
        page.locator("#activity").get_by_text("Two-factor authentication turned on")
    ).to_be_visible()
    page.reload()  # the codes are shown once
    expect(status(page)).to_have_text("On")
    expect(page.locator("code")).to_have_count(0)


def test_enable_with_an_existing_passkey(page, server, authenticator):
    username = signed_in(page, server)
    add_passkey(page, "Laptop")
    card(page).get_by_role("link", name="Enable two-factor authentication").click()
    expect(card(page).get_by_text("Add a new passkey instead")).to_be_visible()
    card(page).get_by_role("button", name="Verify with a passkey").click()
    read_codes(card(page))
    card(page).get_by_role("link", name="I have saved these codes").click()
    expect(status(page)).to_have_text("On")
    facts = server.status(username)
    assert facts["user2faEnabled"] and facts["passkeyCount"] == 1
    assert facts["recoveryCodesRemaining"] == 10
    assert len(authenticator.credentials()) == 1


def test_sign_in_again_through_the_second_factor_with_a_passkey(page, server, authenticator):
    username = signed_in(page, server)
    enable_with_new_passkey(page)
    again = to_second_factor(page, server, username, authenticator)
    # A partial session reaches nothing but the second-factor step.
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    expect(page.get_by_role("heading", name="Use a recovery code")).to_be_visible()

    page.get_by_role("button", name="Verify with a passkey").click()
    expect(account_heading(page)).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/account")
    expect(status(page)).to_have_text("On")
    expect(session_method(page, "Password and passkey")).to_be_visible()
    assert again.credentials()[0]["signCount"] >= 2


def test_passkey_sign_in_needs_no_second_step(page, server, authenticator):
    signed_in(page, server)
    enable_with_new_passkey(page)
    sign_out(page)
    # The login page's autofill signs in with the passkey: user-verified, so multi-factor.
    expect(account_heading(page)).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/account")
    expect(session_method(page, "Passkey")).to_be_visible()
    expect(status(page)).to_have_text("On")


def test_recovery_code_signs_in_once(page, server, authenticator):
    username = signed_in(page, server)
    codes = enable_with_new_passkey(page)
    to_second_factor(page, server, username, authenticator).remove()  # codes only, here
    # Case, spaces and hyphens don't matter.
    page.get_by_label("Recovery code").fill(codes[3].lower().replace("-", " "))
    page.get_by_role("button", name="Verify code").click()
    expect(account_heading(page)).to_be_visible()
    expect(session_method(page, "Password and recovery code")).to_be_visible()
    expect(
        page.locator("#recovery-codes").get_by_text("9 of 10 recovery codes remain")
    ).to_be_visible()
    assert server.status(username)["recoveryCodesRemaining"] == 9

    sign_out(page)  # no authenticator on this page: the autofill has no passkey to offer
    sign_in(page, server, username)
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    page.get_by_label("Recovery code").fill(codes[3])
    page.get_by_role("button", name="Verify code").click()
    expect(
        page.get_by_role("alert").filter(
            has_text="That recovery code is not valid or was already used."
        )
    ).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login/2fa"))
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    assert server.status(username)["recoveryCodesRemaining"] == 9


def test_disable(page, server, authenticator):
    username = signed_in(page, server)
    enable_with_new_passkey(page)
    disable = card(page).get_by_role("link", name="Disable two-factor authentication")
    disable.click()
    expect(card(page).get_by_text("Your recovery codes will stop working.")).to_be_visible()
    card(page).get_by_role("link", name="Cancel").click()
    expect(status(page)).to_have_text("On")

    disable.click()
    card(page).get_by_role("button", name="Verify with a passkey").click()
    expect(status(page)).to_have_text("Off")
    expect(card(page).get_by_role("status")).to_have_text("Two-factor authentication is off.")
    expect(card(page).get_by_role("link", name="Enable two-factor authentication")).to_be_visible()
    expect(page.locator("#recovery-codes")).to_be_empty()
    expect(
        page.locator("#activity").get_by_text("Two-factor authentication turned off")
    ).to_be_visible()
    facts = server.status(username)
    assert not facts["user2faEnabled"] and not facts["effective2fa"]
    assert facts["recoveryCodesRemaining"] == 0 and facts["passkeyCount"] == 1


def enroll_at_login(page: Page, server) -> str:
    """An administrator requires 2FA of a new user without a passkey; they sign in."""
    username = server.create_user()
    server.set_required(username, True)
    sign_in(page, server, username)
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    page.get_by_label("Passkey name").fill("Laptop")
    page.get_by_role("button", name="Register passkey and sign in").click()
    expect(
        page.get_by_role("status").filter(
            has_text="Your passkey is registered and you are signed in."
        )
    ).to_be_visible()
    read_codes(page.locator("#second-factor"))
    page.get_by_role("link", name="I have saved these codes").click()
    expect(account_heading(page)).to_be_visible()
    return username


def test_admin_required_user_without_a_passkey_enrolls_at_login(page, server, authenticator):
    username = server.create_user()
    server.set_required(username, True)
    sign_in(page, server, username)
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    expect(page.get_by_role("button", name="Verify with a passkey")).to_have_count(0)
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    page.get_by_label("Passkey name").fill("Laptop")
    page.get_by_role("button", name="Register passkey and sign in").click()
    expect(
        page.get_by_role("status").filter(
            has_text="Your passkey is registered and you are signed in."
        )
    ).to_be_visible()
    read_codes(page.locator("#second-factor"))
    page.get_by_role("link", name="I have saved these codes").click()

    expect(account_heading(page)).to_be_visible()
    expect(status(page)).to_have_text(REQUIRED)
    expect(page.locator("#passkeys .item-title")).to_have_text(["Laptop"])
    expect(session_method(page, "Password and passkey")).to_be_visible()
    facts = server.status(username)
    assert facts["requires2fa"] and not facts["user2faEnabled"] and facts["effective2fa"]
    assert facts["passkeyCount"] == 1 and facts["recoveryCodesRemaining"] == 10
    assert len(authenticator.credentials()) == 1


def test_admin_required_user_cannot_disable(page, server, authenticator):
    username = enroll_at_login(page, server)
    expect(status(page)).to_have_text(REQUIRED)
    expect(card(page).get_by_text(ADMIN_REQUIRES)).to_be_visible()
    expect(card(page).get_by_role("link", name="Disable two-factor authentication")).to_have_count(
        0
    )
    # Going to the step directly, or calling the endpoint, is refused with the reason.
    page.goto(f"{server.base_url}/account/two-factor/disable")
    expect(page.get_by_role("alert").filter(has_text=ADMIN_REQUIRES)).to_be_visible()
    page.goto(f"{server.base_url}/account")
    answer = page.evaluate(
        """async () => {
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const r = await fetch("/account/two-factor/disable/start", {method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRFToken": token}, body: "{}"});
            return [r.status, (await r.json()).detail];
        }"""
    )
    assert answer == [403, ADMIN_REQUIRES]
    facts = server.status(username)
    assert facts["requires2fa"] and facts["effective2fa"] and facts["recoveryCodesRemaining"] == 10


def test_required_and_enabled_shows_both(page, server, authenticator):
    username = signed_in(page, server)
    enable_with_new_passkey(page)
    server.set_required(username, True)
    page.reload()
    expect(status(page)).to_have_text(BOTH)
    expect(card(page).get_by_role("link", name="Disable two-factor authentication")).to_have_count(
        0
    )
    server.set_required(username, False)
    page.reload()
    expect(status(page)).to_have_text("On")
    expect(card(page).get_by_role("link", name="Disable two-factor authentication")).to_be_visible()


def test_admin_override_turns_it_off(page, server, authenticator):
    username = signed_in(page, server)
    enable_with_new_passkey(page)
    server.set_enabled(username, False)
    page.reload()
    expect(status(page)).to_have_text("Off")
    expect(card(page).get_by_role("link", name="Enable two-factor authentication")).to_be_visible()
    expect(page.locator("#recovery-codes")).to_be_empty()
    assert not server.status(username)["effective2fa"]
    # The password alone signs in again.
    authenticator.remove()
    sign_out(page)
    sign_in(page, server, username)
    expect(account_heading(page)).to_be_visible()
    expect(session_method(page, "Password")).to_be_visible()


def test_admin_requiring_2fa_sends_a_live_session_to_the_second_factor(page, server, authenticator):
    username = signed_in(page, server)
    add_passkey(page, "Laptop")
    # let the sections' background refreshes after the change finish first: any of them
    # would itself be "the next request" and take the page to /login/2fa
    page.wait_for_load_state("networkidle")
    server.set_required(username, True)
    # The next request, even an htmx one, goes to /login/2fa.
    page.locator("#passkeys").get_by_role("link", name="Rename").click()
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login/2fa")

    # rev 2 (§4.1b): the page says why, and the finish shows the new codes once
    expect(
        page.get_by_text("Your administrator now requires two-factor authentication.")
    ).to_be_visible()
    page.get_by_role("button", name="Verify with a passkey").click()
    read_codes(page.locator("#second-factor"))
    page.get_by_role("link", name="I have saved these codes").click()
    expect(account_heading(page)).to_be_visible()
    expect(status(page)).to_have_text(REQUIRED)


def test_last_passkey_cannot_be_removed_while_two_factor_is_on(page, server, authenticator):
    username = signed_in(page, server)
    enable_with_new_passkey(page)
    passkeys = page.locator("#passkeys")
    passkeys.get_by_role("link", name="Remove").click()
    expect(
        page.get_by_role("alert").filter(has_text="can't remove your last passkey")
    ).to_be_visible()
    expect(passkeys.get_by_role("button", name="Remove passkey")).to_have_count(0)
    expect(passkeys.locator(".item-title")).to_have_text(["Laptop"])
    assert server.status(username)["passkeyCount"] == 1


def test_enabling_signs_out_the_other_sessions(page, server, authenticator, browser):
    username = signed_in(page, server)
    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        sign_in(elsewhere, server, username)
        expect(account_heading(elsewhere)).to_be_visible()
        page.reload()
        expect(page.locator("#sessions li")).to_have_count(2)

        enable_with_new_passkey(page)
        expect(page.locator("#sessions li")).to_have_count(1)
        elsewhere.reload()
        expect(elsewhere).to_have_url(f"{server.base_url}/login")
        expect(account_heading(elsewhere)).to_have_count(0)
    finally:
        other.close()
    page.reload()
    expect(status(page)).to_have_text("On")


def test_cancelled_enable_changes_nothing(page, server, authenticator):
    username = signed_in(page, server)
    authenticator.set_user_verified(False)  # the person cancels the browser's prompt

    # With no passkey: registration.
    card(page).get_by_role("link", name="Enable two-factor authentication").click()
    card(page).get_by_role("button", name="Register passkey and turn on").click()
    expect(card(page).get_by_role("alert").filter(has_text=CANCELLED)).to_be_visible()
    expect(status(page)).to_have_text("Off")
    facts = server.status(username)
    assert not facts["user2faEnabled"] and facts["passkeyCount"] == 0
    assert authenticator.credentials() == []

    # With a passkey: the verification.
    authenticator.set_user_verified(True)
    page.reload()
    add_passkey(page, "Laptop")
    authenticator.set_user_verified(False)
    card(page).get_by_role("link", name="Enable two-factor authentication").click()
    card(page).get_by_role("button", name="Verify with a passkey").click()
    expect(card(page).get_by_role("alert").filter(has_text=CANCELLED)).to_be_visible()
    expect(status(page)).to_have_text("Off")
    facts = server.status(username)
    assert not facts["user2faEnabled"] and facts["passkeyCount"] == 1
    assert facts["recoveryCodesRemaining"] == 0
    page.reload()
    expect(status(page)).to_have_text("Off")
