"""Sign in (SPEC §5.1) in Chromium: password, sign out, wrong password, lockout,
`return_to`, the "Sign in with a passkey" button and passkey autofill."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.helpers.e2e import (
    PASSWORD,
    Server,
    add_authenticator,
    add_passkey,
    put_credentials,
    sign_in,
    sign_out,
)

BAD_CREDENTIALS = "Incorrect username or password."
LOCKED = "Too many failed attempts. This account is locked for 15 minutes."
LOCKED_UNTIL = re.compile(re.escape(LOCKED) + r" Try again after \d\d:\d\d UTC\.")  # rev 2


def account_heading(page: Page):
    return page.get_by_role("heading", name="Account security")


def sign_in_alert(page: Page):
    """The error of the sign-in form (not the empty #flash or passkey-status regions)."""
    return page.locator(".auth-card").get_by_role("alert").filter(has_text=re.compile(r"\S"))


def fill_and_submit(page: Page, username: str, password: str = PASSWORD) -> None:
    """Sign in on the /login page already loaded (keeps its return_to)."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def user_with_passkey(browser: Browser, server: Server) -> tuple[str, list[dict[str, Any]]]:
    """A new user who added one passkey (in a browser of their own): the username and the
    passkey as the virtual authenticator holds it, private key included."""
    context = browser.new_context()
    try:
        page = context.new_page()
        authenticator = add_authenticator(page)
        username = server.create_user()
        sign_in(page, server, username)
        expect(account_heading(page)).to_be_visible()
        add_passkey(page, "Laptop")
        credentials = authenticator.credentials()
    finally:
        context.close()
    assert len(credentials) == 1
    return username, credentials


def signed_in_with(page: Page, method: str):
    """This session's row in the Sessions section says how it was signed in."""
    current = page.locator("#sessions li").filter(has_text="This session")
    return current.get_by_text(re.compile(rf"^{method} · IP"))


def test_password_sign_in_then_sign_out(page, server):
    username = server.create_user()
    sign_in(page, server, username)
    expect(account_heading(page)).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/account")
    expect(page.get_by_text(f"Signed in as {username}").first).to_be_visible()
    expect(signed_in_with(page, "Password")).to_be_visible()

    sign_out(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/login")
    # The session is gone on the server: the account page sends us back to sign in.
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login")
    expect(account_heading(page)).to_have_count(0)


def test_wrong_password_and_unknown_user_show_the_same_alert(page, server):
    username = server.create_user()
    sign_in(page, server, username, password="not-the-password")
    expect(sign_in_alert(page)).to_have_text(BAD_CREDENTIALS)
    expect(page).to_have_url(f"{server.base_url}/login")
    expect(page.get_by_label("Username")).to_have_value(username)
    expect(page.get_by_label("Password")).to_have_value("")
    wrong_password = sign_in_alert(page).inner_text()

    sign_in(page, server, f"nobody-{username}")
    expect(sign_in_alert(page)).to_have_text(BAD_CREDENTIALS)
    assert sign_in_alert(page).inner_text() == wrong_password
    expect(account_heading(page)).to_have_count(0)

    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login")


def test_lockout_after_five_failures_refuses_even_the_right_password(page, server):
    username = server.create_user()
    for _ in range(5):
        sign_in(page, server, username, password="wrong-password")
        expect(sign_in_alert(page)).to_be_visible()
        expect(page).to_have_url(f"{server.base_url}/login")

    sign_in(page, server, username)  # the right password, 6th attempt
    expect(sign_in_alert(page)).to_have_text(LOCKED_UNTIL)
    expect(account_heading(page)).to_have_count(0)
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login")

    # Another user is not affected by this account's lock.
    other = server.create_user()
    sign_in(page, server, other)
    expect(account_heading(page)).to_be_visible()


def test_return_to_a_local_path_is_honoured(page, server):
    username = server.create_user()
    # Visiting a signed-in page sends us to sign in, remembering where we were going.
    page.goto(f"{server.base_url}/account/activity")
    expect(page).to_have_url(f"{server.base_url}/login?return_to=/account/activity")
    fill_and_submit(page, username)
    expect(account_heading(page)).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/account/activity")


@pytest.mark.parametrize(
    "target",
    ["//evil.example", "//evil.example/account", "https://evil.example/", "/\\evil.example"],
)
def test_return_to_elsewhere_is_ignored(page, server, target):
    username = server.create_user()
    page.goto(f"{server.base_url}/login?return_to={quote(target, safe='')}")
    fill_and_submit(page, username)
    expect(account_heading(page)).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/account")


# Notes when the page's passkey autofill asks the browser (the request itself is unchanged).
WATCH_AUTOFILL = """
(() => {
  const credentials = navigator.credentials;
  if (!credentials) return;
  const get = credentials.get.bind(credentials);
  credentials.get = (options) => {
    const answer = get(options);
    if (options && options.mediation === "conditional") window.autofillAsked = true;
    return answer;
  };
})();
"""


def test_sign_in_with_a_passkey_button(page, server, browser, authenticator):
    username, credentials = user_with_passkey(browser, server)
    # The authenticator holds nothing for this site while autofill (conditional mediation)
    # starts, so it has nothing to offer; the passkey arrives afterwards. (Put in as soon as
    # the heading showed, it was once there before the autofill asked, which signed in.)
    page.add_init_script(WATCH_AUTOFILL)
    page.goto(f"{server.base_url}/login?return_to=/account/passkeys")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.wait_for_function("() => window.autofillAsked === true")
    put_credentials(authenticator, credentials)
    page.get_by_role("button", name="Sign in with a passkey").click()

    expect(account_heading(page)).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/account/passkeys")
    expect(page.get_by_text(f"Signed in as {username}").first).to_be_visible()
    expect(signed_in_with(page, "Passkey")).to_be_visible()
    expect(
        page.locator("#passkeys").get_by_text(re.compile(r"Last used (?!Never)"))
    ).to_be_visible()
    assert authenticator.credentials()[0]["signCount"] > credentials[0]["signCount"]


def test_passkey_button_cancelled_shows_a_message_and_signs_nobody_in(
    page, server, browser, authenticator
):
    _, credentials = user_with_passkey(browser, server)
    page.goto(f"{server.base_url}/login")
    # the person will cancel the prompt; set before the credential is there, so the page's
    # passkey autofill can't pick it up first
    authenticator.set_user_verified(False)
    put_credentials(authenticator, credentials)
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.locator("[data-passkey-status]")).to_have_text(
        "The passkey request was cancelled or timed out. Nothing was changed."
    )
    expect(page).to_have_url(f"{server.base_url}/login")
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login")


def test_passkey_autofill_signs_in(page, server, browser, authenticator):
    username, credentials = user_with_passkey(browser, server)
    put_credentials(authenticator, credentials)
    page.goto(f"{server.base_url}/login?return_to=/account/sessions")
    # No click: the username field offers the passkey (autocomplete "username webauthn"),
    # and the virtual authenticator picks it at once.
    expect(account_heading(page)).to_be_visible()
    expect(page).to_have_url(f"{server.base_url}/account/sessions")
    expect(page.get_by_text(f"Signed in as {username}").first).to_be_visible()
    expect(signed_in_with(page, "Passkey")).to_be_visible()


def test_login_page_offers_passkey_autofill(page, server):
    page.goto(f"{server.base_url}/login")
    expect(page.get_by_label("Username")).to_have_attribute("autocomplete", "username webauthn")
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
