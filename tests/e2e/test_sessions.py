"""Sessions and security activity on the account page, across several browsers.

Each browser is its own Playwright context (its own cookies); the user agent strings make
the sessions list tell them apart.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.helpers.e2e import (
    Authenticator,
    NewContext,
    Server,
    add_authenticator,
    add_passkey,
    make_stale,
    put_credentials,
    sign_in,
    sign_out,
)

CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


def on_account(page: Page) -> None:
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()


def signed_out(page: Page, server: Server) -> None:
    """The browser's next request for the account lands on the sign-in page."""
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def signed_in_browser(
    new_context: NewContext, server: Server, username: str, **options: Any
) -> Page:
    page = new_context(**options).new_page()
    sign_in(page, server, username)
    on_account(page)
    return page


def test_sessions_list_shows_both_browsers_and_signs_out_the_other(
    new_context: NewContext, server: Server
) -> None:
    username = server.create_user("sessions")
    chrome = signed_in_browser(new_context, server, username, user_agent=CHROME_UA)
    firefox = signed_in_browser(new_context, server, username, user_agent=FIREFOX_UA)

    chrome.reload()
    rows = chrome.locator("#sessions li.item")
    expect(rows).to_have_count(2)
    mine = rows.filter(has_text="This session")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("Chrome on Linux")
    expect(mine.get_by_role("button")).to_have_count(0)  # no "Sign out" for this one
    other = rows.filter(has_text="Firefox on Windows")
    expect(other).to_contain_text("Password · IP 127.0.0.1 · Last seen")
    expect(other).not_to_contain_text("This session")

    other.get_by_role("button", name=re.compile(r"^Sign out Firefox on Windows")).click()
    sessions = chrome.locator("#sessions")
    expect(sessions.get_by_role("status")).to_have_text("That session was signed out.")
    expect(rows).to_have_count(1)
    expect(sessions.get_by_role("button", name="Sign out all other sessions")).to_have_count(0)

    signed_out(firefox, server)
    chrome.reload()
    on_account(chrome)


def test_sign_out_all_other_sessions(new_context: NewContext, server: Server) -> None:
    username = server.create_user("sessions-all")
    first = signed_in_browser(new_context, server, username)
    second = signed_in_browser(new_context, server, username, user_agent=FIREFOX_UA)
    third = signed_in_browser(new_context, server, username, user_agent=CHROME_UA)

    first.reload()
    sessions = first.locator("#sessions")
    expect(sessions.locator("li.item")).to_have_count(3)
    sessions.get_by_role("button", name="Sign out all other sessions").click()
    expect(sessions.get_by_role("status")).to_have_text("Signed out of 2 other sessions.")
    expect(sessions.locator("li.item")).to_have_count(1)
    expect(first.locator("#activity li").first).to_contain_text("Signed out of other sessions")

    signed_out(second, server)
    signed_out(third, server)
    first.reload()
    on_account(first)


def test_activity_lists_a_full_enable_disable_cycle_newest_first(
    page: Page, server: Server, authenticator: Authenticator
) -> None:
    username = server.create_user("activity")
    sign_in(page, server, username, password="not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Incorrect username or password.")
    sign_in(page, server, username)
    on_account(page)

    card = page.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    card.get_by_label("Passkey name").fill("Laptop")
    card.get_by_role("button", name="Register passkey and turn on").click()
    card.get_by_role("link", name="I have saved these codes").click()
    expect(card.locator("[data-2fa-status]")).to_have_text("On")
    card.get_by_role("link", name="Disable two-factor authentication").click()
    card.get_by_role("button", name="Verify with a passkey").click()
    expect(card.locator("[data-2fa-status]")).to_have_text("Off")

    # Sign out; the login page's passkey autofill signs back in with the passkey.
    sign_out(page)
    expect(page.locator("#activity li").first).to_contain_text("Signed in with a passkey")
    server.set_enabled(username, True)  # an administrator turns it back on
    page.reload()
    on_account(page)

    activity = page.locator("#activity li")
    expect(activity.first).to_contain_text(
        "Two-factor authentication turned on by an administrator"
    )
    what = page.locator("#activity .activity-what").all_inner_texts()
    assert what[:7] == [
        "Two-factor authentication turned on by an administrator",
        "Signed in with a passkey",
        "Two-factor authentication turned off",
        "Two-factor authentication turned on",
        "Passkey “Laptop” added",
        "Signed in with password",
        "Failed sign-in attempt",
    ], what
    # Each line has its time, and the address where the user acted from.
    expect(activity.nth(1).locator(".activity-when")).to_contain_text("UTC · 127.0.0.1")
    # The failed attempt stands out as a warning.
    expect(activity.nth(6)).to_have_class(re.compile(r"\bwarning\b"))


def test_removing_a_passkey_ends_the_sessions_signed_in_with_it(
    new_context: NewContext, server: Server
) -> None:
    username = server.create_user("passkey-sessions")
    owner = new_context(user_agent=CHROME_UA).new_page()
    owner_key = add_authenticator(owner)
    sign_in(owner, server, username)
    on_account(owner)
    add_passkey(owner, "Shared key")
    saved = owner_key.credentials()

    # A second browser signs in with that passkey (a copy of the credential).
    with_passkey = new_context(user_agent=FIREFOX_UA).new_page()
    copy = add_authenticator(with_passkey)
    put_credentials(copy, saved)
    with_passkey.goto(f"{server.base_url}/login")  # passkey autofill signs in
    on_account(with_passkey)
    # Like a synced passkey, the owner's copy follows (its signature counter too: an
    # older counter would rightly be refused as a possible clone).
    owner_key.cdp.send("WebAuthn.clearCredentials", {"authenticatorId": owner_key.id})
    put_credentials(owner_key, copy.credentials())
    # A third one signs in with the password only.
    with_password = signed_in_browser(new_context, server, username)

    owner.reload()
    rows = owner.locator("#sessions li.item")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="Firefox on Windows")).to_contain_text("Passkey · IP")

    passkeys = owner.locator("#passkeys")
    passkeys.get_by_role("link", name="Remove Shared key").click()
    make_stale(server, username)  # the owner's sign-in is no longer recent: confirm first
    passkeys.get_by_role("button", name="Remove passkey").click()
    passkeys.get_by_role("button", name="Verify with a passkey").click()  # step-up
    expect(passkeys.get_by_role("status")).to_have_text("Passkey removed.")
    assert server.status(username)["passkeyCount"] == 0
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="Firefox on Windows")).to_have_count(0)

    copy.remove()  # else /login's autofill would try the removed passkey
    signed_out(with_passkey, server)
    with_password.reload()
    on_account(with_password)
    owner.reload()
    on_account(owner)
