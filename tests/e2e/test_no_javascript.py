"""With JavaScript off (`java_script_enabled=False`): every form is a plain form and every
answer a whole page; ceremonies cannot run, and the page says so.

Passkeys (and 2FA) are set up first in a browser with JavaScript and the virtual
authenticator; that browser also stays signed in as "another session".
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Locator, Page, expect

from tests.helpers.e2e import (
    NewContext,
    Server,
    add_authenticator,
    add_passkey,
    make_stale,
    sign_in,
)

NEEDS_JS = "Passkeys need JavaScript. Turn it on to use this step."


def needs_js(scope: Page | Locator) -> Locator:
    """The <noscript> notice (Playwright's text search skips <noscript>: find it by CSS)."""
    return scope.locator("noscript .alert")


FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


def on_account(page: Page) -> None:
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()


def no_js_page(new_context: NewContext, **options: Any) -> Page:
    page = new_context(java_script_enabled=False, **options).new_page()
    return page


def with_javascript(new_context: NewContext, server: Server, username: str) -> Page:
    """A browser with JavaScript and an authenticator, signed in on the account page."""
    page = new_context().new_page()
    add_authenticator(page)
    sign_in(page, server, username)
    on_account(page)
    return page


def test_sign_in_account_page_and_sign_out_without_javascript(
    new_context: NewContext, server: Server
) -> None:
    username = server.create_user("nojs")
    page = no_js_page(new_context)
    page.goto(f"{server.base_url}/login")
    assert page.evaluate("1 + 1") == 2  # Playwright's own evaluation still works …
    assert page.locator("noscript").count() > 0  # … and the page renders its <noscript>
    # The passkey button says it needs JavaScript.
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    expect(needs_js(page)).to_have_text(NEEDS_JS)
    expect(needs_js(page)).to_be_visible()

    sign_in(page, server, username, password="not-the-password")
    expect(page.get_by_role("alert").filter(has_text="Incorrect")).to_have_text(
        "Incorrect username or password."
    )
    sign_in(page, server, username)
    on_account(page)
    expect(page).to_have_url(re.compile(r"/account$"))
    for heading in (
        "Two-factor authentication",
        "Passkeys",
        "Sessions",
        "Recent security activity",
    ):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    passkeys = page.locator("#passkeys")
    expect(passkeys.get_by_role("button", name="Add a passkey")).to_be_visible()
    expect(needs_js(passkeys)).to_have_text(NEEDS_JS)
    expect(needs_js(passkeys)).to_be_visible()

    # The enrollment step is a page of its own; its ceremony button explains itself too.
    page.get_by_role("link", name="Enable two-factor authentication").click()
    expect(page).to_have_url(re.compile(r"/account/two-factor/enable$"))
    card = page.locator("#two-factor")
    expect(card.get_by_role("button", name="Register passkey and turn on")).to_be_visible()
    expect(needs_js(card)).to_have_text(NEEDS_JS)
    expect(needs_js(card)).to_be_visible()
    card.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(card.locator("[data-2fa-status]")).to_have_text("Off")
    assert server.status(username)["user2faEnabled"] is False

    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_rename_and_remove_a_passkey_without_javascript(
    new_context: NewContext, server: Server
) -> None:
    username = server.create_user("nojs-passkeys")
    add_passkey(with_javascript(new_context, server, username), "Work key")

    page = no_js_page(new_context)
    sign_in(page, server, username)
    on_account(page)
    passkeys = page.locator("#passkeys")
    titles = passkeys.locator(".item-title")
    expect(titles).to_have_text(["Work key"])

    # Rename: a link to the page in the rename state, then a plain POST.
    passkeys.get_by_role("link", name="Rename Work key").click()
    expect(page).to_have_url(re.compile(r"/account/passkeys/\d+/rename$"))
    field = passkeys.get_by_role("listitem").get_by_label("Passkey name")
    expect(field).to_have_value("Work key")
    field.fill("   ")
    passkeys.get_by_role("button", name="Save").click()
    expect(passkeys.get_by_text("Give the passkey a name.")).to_be_visible()
    field.fill("Desk key")
    passkeys.get_by_role("button", name="Save").click()
    expect(passkeys.get_by_role("status")).to_have_text("Passkey renamed to “Desk key”.")
    page.goto(f"{server.base_url}/account")
    expect(titles).to_have_text(["Desk key"])

    # Remove: the confirmation page, then (signed in with a password) the passkey check,
    # which needs JavaScript: the page says so, and nothing is removed.
    passkeys.get_by_role("link", name="Remove Desk key").click()
    expect(page).to_have_url(re.compile(r"/account/passkeys/\d+/remove$"))
    expect(passkeys.get_by_text("Remove “Desk key”?")).to_be_visible()
    make_stale(server, username)  # the sign-in is no longer recent (SPEC §4.1)
    passkeys.get_by_role("button", name="Remove passkey").click()
    expect(passkeys.get_by_text("Confirm it's you with one of your passkeys")).to_be_visible()
    expect(passkeys.get_by_role("button", name="Verify with a passkey")).to_be_visible()
    expect(needs_js(passkeys)).to_have_text([NEEDS_JS, NEEDS_JS])  # the step, "Add a passkey"
    expect(needs_js(passkeys).first).to_be_visible()
    assert server.status(username)["passkeyCount"] == 1
    # Cancel is a link back to the page.
    passkeys.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(titles).to_have_text(["Desk key"])


def test_sessions_without_javascript(new_context: NewContext, server: Server) -> None:
    username = server.create_user("nojs-sessions")
    scripted = with_javascript(new_context, server, username)
    firefox = no_js_page(new_context, user_agent=FIREFOX_UA)
    sign_in(firefox, server, username)
    on_account(firefox)
    page = no_js_page(new_context)
    sign_in(page, server, username)
    on_account(page)

    sessions = page.locator("#sessions")
    expect(sessions.locator("li.item")).to_have_count(3)
    sessions.get_by_role("button", name=re.compile(r"^Sign out Firefox on Windows")).click()
    expect(sessions.get_by_role("status")).to_have_text("That session was signed out.")
    expect(sessions.locator("li.item")).to_have_count(2)
    firefox.goto(f"{server.base_url}/account")
    expect(firefox).to_have_url(re.compile(r"/login$"))

    sessions.get_by_role("button", name="Sign out all other sessions").click()
    expect(sessions.get_by_role("status")).to_have_text("Signed out of 1 other session.")
    expect(sessions.locator("li.item")).to_have_count(1)
    scripted.goto(f"{server.base_url}/account")
    expect(scripted).to_have_url(re.compile(r"/login$"))
    page.reload()
    on_account(page)


def test_second_factor_with_a_recovery_code_without_javascript(
    new_context: NewContext, server: Server
) -> None:
    username = server.create_user("nojs-2fa")
    scripted = with_javascript(new_context, server, username)
    card = scripted.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    card.get_by_role("button", name="Register passkey and turn on").click()
    code = card.locator("ol.codes code").first.inner_text()

    page = no_js_page(new_context)
    sign_in(page, server, username)
    expect(page).to_have_url(re.compile(r"/login/2fa$"))
    expect(page.get_by_role("button", name="Verify with a passkey")).to_be_visible()
    expect(needs_js(page)).to_have_text(NEEDS_JS)
    expect(needs_js(page)).to_be_visible()
    page.get_by_label("Recovery code").fill(code.lower().replace("-", " "))
    page.get_by_role("button", name="Verify code").click()
    on_account(page)
    expect(page.locator("#recovery-codes")).to_contain_text("9 of 10 recovery codes remain.")
    assert server.status(username)["recoveryCodesRemaining"] == 9
