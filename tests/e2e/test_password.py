"""Changing the password in Chromium (SPEC §5.7): with htmx and without JavaScript; a weak
password is refused with zxcvbn's words, a good one signs every other browser out, the old
password stops working and the new one works. And the notification really leaves `serve`:
its background sender delivers it to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import temporary_database
from tests.helpers.e2e import (
    PASSWORD,
    NewContext,
    Server,
    add_authenticator,
    add_passkey,
    check_accessibility,
    make_stale,
    sign_in,
    sign_out,
    start_server,
    stop_server,
)
from tests.smtp import SmtpServer

NEW = "plum orbit lantern 1987"
WEAK_WORDS = "This is a very common password."


def on_account(page: Page) -> None:
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()


def change_password(page: Page, current: str, new: str) -> None:
    section = page.locator("#password")
    section.get_by_label("Current password").fill(current)
    section.get_by_label("New password").fill(new)
    section.get_by_role("button", name="Save password").click()


def sign_out_and_wait(page: Page) -> None:
    """Sign out, and wait for the sign-in page (a sign-in started before the sign-out has
    finished would land on the account page)."""
    sign_out(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def signed_out(page: Page, server: Server) -> None:
    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_change_password_with_javascript(new_context: NewContext, server: Server) -> None:
    username = server.create_user("password")
    other = new_context().new_page()  # another browser, signed in
    sign_in(other, server, username)
    on_account(other)
    page = new_context().new_page()
    sign_in(page, server, username)
    on_account(page)

    section = page.locator("#password")
    expect(section.get_by_text("Not changed since the account was created")).to_be_visible()
    section.get_by_role("link", name="Change password").click()
    expect(section.get_by_label("Current password")).to_be_focused()
    check_accessibility(page, "password form")

    # "Show" reveals what was typed, "Hide" masks it again (JavaScript only)
    new_field = section.get_by_label("New password")
    new_field.fill("password1")
    section.get_by_role("button", name="Show new password").click()
    expect(new_field).to_have_attribute("type", "text")
    section.get_by_role("button", name="Hide new password").click()
    expect(new_field).to_have_attribute("type", "password")

    change_password(page, PASSWORD, "password1")  # weak: zxcvbn's words
    expect(section.get_by_text(WEAK_WORDS)).to_be_visible()
    expect(section.get_by_label("New password")).to_have_attribute("aria-invalid", "true")
    check_accessibility(page, "password refused")

    change_password(page, PASSWORD, NEW)
    expect(section.get_by_role("status")).to_have_text(
        "Your password was changed. Every other session was signed out."
    )
    expect(section.get_by_text(re.compile(r"Last changed \d"))).to_be_visible()
    page.reload()
    on_account(page)  # this browser stays signed in (its token was rotated)
    signed_out(other, server)  # the other one is out

    sign_out_and_wait(page)
    sign_in(page, server, username, PASSWORD)
    expect(page.get_by_text("Incorrect username or password.")).to_be_visible()
    sign_in(page, server, username, NEW)
    on_account(page)


def test_change_password_without_javascript(new_context: NewContext, server: Server) -> None:
    username = server.create_user("password-nojs")
    page = new_context(java_script_enabled=False).new_page()
    sign_in(page, server, username)
    on_account(page)
    section = page.locator("#password")
    section.get_by_role("link", name="Change password").click()
    expect(page).to_have_url(re.compile(r"/account/password/change$"))
    expect(section.locator("[data-password-toggle]")).to_have_count(2)
    for toggle in section.locator("[data-password-toggle]").all():
        expect(toggle).to_be_hidden()  # no "Show" without JavaScript

    change_password(page, "wrong password", NEW)
    expect(section.get_by_text("Your current password is not correct.")).to_be_visible()
    change_password(page, PASSWORD, "password1")
    expect(section.get_by_text(WEAK_WORDS)).to_be_visible()
    change_password(page, PASSWORD, NEW)
    expect(section.get_by_role("status")).to_contain_text("Your password was changed.")
    section.get_by_role("link", name="Change password").click()
    section.get_by_role("link", name="Cancel").click()
    on_account(page)

    sign_out_and_wait(page)
    sign_in(page, server, username, NEW)
    on_account(page)


def test_a_stale_session_with_a_passkey_confirms_it_first(
    new_context: NewContext, server: Server
) -> None:
    username = server.create_user("password-stale")
    page = new_context().new_page()
    add_authenticator(page)
    sign_in(page, server, username)
    on_account(page)
    add_passkey(page, "Work key")
    make_stale(server, username)  # the sign-in is no longer recent
    page.reload()
    section = page.locator("#password")
    section.get_by_role("link", name="Change password").click()
    expect(section.get_by_role("heading", name="Confirm it's you")).to_be_visible()
    expect(section.get_by_label("Current password")).to_have_count(0)
    check_accessibility(page, "password confirm step")
    section.get_by_role("button", name="Verify with a passkey").click()
    expect(section.get_by_label("Current password")).to_be_visible()
    change_password(page, PASSWORD, NEW)
    expect(section.get_by_role("status")).to_contain_text("Your password was changed.")
    fresh = new_context().new_page()  # no authenticator: the login page's passkey autofill
    sign_in(fresh, server, username, NEW)  # would sign this one in without a password
    on_account(fresh)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    running = SmtpServer().start()
    yield running
    running.stop()


@pytest.fixture
def mailing_server(tmp_path, smtp: SmtpServer) -> Iterator[Server]:
    with temporary_database(tmp_path) as url:
        running = start_server(url, tmp_path, BARYCENTER_SMTP_URL=smtp.url)
        yield running
        stop_server(running)


@pytest.mark.database
def test_serve_mails_the_change_in_the_background(
    new_context: NewContext, mailing_server: Server, smtp: SmtpServer
) -> None:
    username = mailing_server.create_user("mailed")
    address = f"{username}@example.com"
    result = mailing_server.admin(
        "mutation($u: String!, $e: String) { setUserEmail(username: $u, email: $e) { success } }",
        {"u": username, "e": address},
    )
    assert result["setUserEmail"]["success"]
    page = new_context().new_page()
    sign_in(page, mailing_server, username)
    on_account(page)
    expect(
        page.get_by_text(f"Security notifications go to {username[0]}•••@example.com")
    ).to_be_visible()
    page.locator("#password").get_by_role("link", name="Change password").click()
    change_password(page, PASSWORD, NEW)
    expect(page.locator("#password").get_by_role("status")).to_be_visible()

    received = smtp.inbox.wait_for(2, timeout=30)  # address set, then password changed
    subjects = [str(m.message["Subject"]) for m in received]
    assert subjects == [
        "Your address for security notifications was changed",
        "Your password was changed",
    ]
    assert all(m.recipients == [address] for m in received)
    body = received[1].message.get_body(("plain",)).get_content()
    assert "Chrome" in body and "127.0.0.1" in body
    assert f"{mailing_server.base_url}/account" in body
