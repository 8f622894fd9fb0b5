"""Takeover resistance (issue 9, SPEC §4.1): a stolen session cookie, once its sign-in is no
longer recent, can't add a passkey — the "Confirm it's you" assertion is limited to the
owner's passkeys, which the thief's authenticator doesn't hold. Real server (with a short
BARYCENTER_REAUTH_SECONDS), real Chromium, CDP virtual authenticators."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import temporary_database
from tests.helpers.e2e import (
    PASSWORD,
    Server,
    add_authenticator,
    add_passkey,
    check_accessibility,
    sign_in,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.database  # short_server: a database of its own

WINDOW = 5  # seconds of recent authentication on this test server
CONFIRM = "Confirm it's you"
CANCELLED = "The passkey request was cancelled or timed out. Nothing was changed."


@pytest.fixture(scope="module")
def short_server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("takeover")
    with temporary_database(tmp) as url:
        running = start_server(url, tmp, BARYCENTER_REAUTH_SECONDS=str(WINDOW))
        yield running
        stop_server(running)


def let_the_window_pass() -> None:
    time.sleep(WINDOW + 1)


def names(page: Page):
    return page.locator("#passkeys .item-title")


def signed_in(page: Page, server: Server) -> str:
    username = server.create_user("owner")
    sign_in(page, server, username)
    expect(page.get_by_role("heading", name="Account security", level=1)).to_be_visible()
    return username


def test_a_stolen_stale_cookie_cannot_add_a_passkey(page, new_context, short_server):
    server = short_server
    owner_key = add_authenticator(page)
    username = signed_in(page, server)
    add_passkey(page, "Owner's key")  # right after signing in: recent

    # The thief copies the cookies into another browser with its own, empty authenticator.
    thief_context = new_context()
    thief_context.add_cookies(page.context.cookies())
    thief = thief_context.new_page()
    thief_key = add_authenticator(thief)
    let_the_window_pass()
    thief.goto(f"{server.base_url}/account")
    expect(names(thief)).to_have_text(["Owner's key"])

    passkeys = thief.locator("#passkeys")
    passkeys.get_by_label("Passkey name").fill("Thief's key")
    passkeys.get_by_role("button", name="Add a passkey").click()
    # refused before any ceremony: the step asks for one of the OWNER's passkeys
    expect(passkeys.get_by_role("heading", name=CONFIRM)).to_be_focused()
    expect(passkeys.get_by_label("Password")).to_have_count(0)
    check_accessibility(thief, "confirm it's you, passkey")
    passkeys.get_by_role("button", name="Verify with a passkey").click()
    expect(passkeys.get_by_role("alert").filter(has_text=CANCELLED)).to_be_visible()
    assert thief_key.credentials() == []
    assert server.status(username)["passkeyCount"] == 1

    # The rest of the takeover fails too: removing the owner's passkey asks the same.
    passkeys.get_by_role("link", name="Cancel").click()
    expect(passkeys.get_by_role("heading", name=CONFIRM)).to_have_count(0)  # the step closed
    passkeys.get_by_role("link", name="Remove Owner's key").click()  # one combined step
    expect(passkeys.get_by_role("heading", name=CONFIRM)).to_be_visible()
    # the combined step's own button (verifies and removes in one ceremony)
    remove = passkeys.get_by_role("button", name="Verify with a passkey and remove")
    expect(remove).to_be_visible()
    remove.click()
    expect(passkeys.get_by_role("alert").filter(has_text=CANCELLED)).to_be_visible()
    assert server.status(username)["passkeyCount"] == 1

    # The owner confirms with their passkey, and adds a new one (a new device).
    page.reload()
    owners = page.locator("#passkeys")
    owners.get_by_label("Passkey name").fill("Owner's phone")
    owners.get_by_role("button", name="Add a passkey").click()
    expect(owners.get_by_role("heading", name=CONFIRM)).to_be_focused()
    owners.get_by_role("button", name="Verify with a passkey").click()
    expect(owners.get_by_role("status")).to_contain_text("confirmed")
    owner_key.remove()  # the new passkey lives on another authenticator
    add_authenticator(page)
    add_passkey(page, "Owner's phone")
    expect(names(page)).to_have_text(["Owner's key", "Owner's phone"])
    assert server.status(username)["passkeyCount"] == 2


def test_a_stale_password_session_confirms_with_its_password(page, short_server):
    server = short_server
    add_authenticator(page)
    username = signed_in(page, server)
    let_the_window_pass()
    passkeys = page.locator("#passkeys")
    passkeys.get_by_label("Passkey name").fill("Laptop")
    passkeys.get_by_role("button", name="Add a passkey").click()
    expect(passkeys.get_by_role("heading", name=CONFIRM)).to_be_focused()
    check_accessibility(page, "confirm it's you, password")

    passkeys.get_by_label("Password").fill("not the password")
    passkeys.get_by_role("button", name="Confirm", exact=True).click()
    expect(passkeys.get_by_role("alert")).to_contain_text("That password is not right")
    check_accessibility(page, "confirm it's you, wrong password")
    assert server.status(username)["passkeyCount"] == 0

    passkeys.get_by_label("Password").fill(PASSWORD)
    passkeys.get_by_role("button", name="Confirm", exact=True).click()
    expect(passkeys.get_by_role("status")).to_contain_text("confirmed")
    add_passkey(page, "Laptop")
    assert server.status(username)["passkeyCount"] == 1


def test_a_recovery_code_sign_in_adds_a_passkey_without_an_assertion(page, short_server):
    """Lost passkeys: a sign-in with a recovery code is recent authentication, so the new
    device's passkey is added with no assertion from the lost one."""
    server = short_server
    lost = add_authenticator(page)
    username = signed_in(page, server)
    card = page.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    card.get_by_label("Passkey name").fill("Lost phone")
    card.get_by_role("button", name="Register passkey and turn on").click()
    expect(card.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    codes = card.locator("code").all_inner_texts()
    card.get_by_role("link", name="I have saved these codes").click()
    lost.remove()  # the phone is gone
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    let_the_window_pass()

    sign_in(page, server, username)
    expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
    page.get_by_label("Recovery code").fill(codes[0])
    page.get_by_role("button", name="Verify code").click()
    expect(page.get_by_role("heading", name="Account security", level=1)).to_be_visible()
    add_authenticator(page)  # the new phone
    add_passkey(page, "New phone")
    expect(names(page)).to_have_text(["Lost phone", "New phone"])
    assert server.status(username)["passkeyCount"] == 2
