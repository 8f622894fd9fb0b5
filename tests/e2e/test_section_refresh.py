"""Per-section refreshes in Chromium: after a change only the sections it affected are
requested again (web/sections.py AFFECTS → HX-Trigger refresh-<id>), never the section
that answered it, through htmx (a plain removal) and through the passkey shim's own fetch
(a removal confirmed with a passkey)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import Locator, Page, Request, expect

from tests.helpers.e2e import (
    Authenticator,
    Server,
    add_authenticator,
    add_passkey,
    make_stale,
    sign_in,
)

SECTION = re.compile(r"^/account/[a-z-]+$")  # a section's own URL, not a step's


def record_section_requests(page: Page) -> list[str]:
    """The paths of the section GETs the page makes from now on."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        path = urlsplit(request.url).path
        if request.method == "GET" and SECTION.match(path):
            seen.append(path)

    page.on("request", on_request)
    return seen


def two_passkeys(page: Page, server: Server, authenticator: Authenticator) -> str:
    username = server.create_user()
    sign_in(page, server, username)
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
    add_passkey(page, "Laptop")
    authenticator.remove()  # the second passkey on another authenticator
    add_authenticator(page)
    add_passkey(page, "Phone")
    expect(page.locator("#passkeys .item-title")).to_have_text(["Laptop", "Phone"])
    page.wait_for_load_state("networkidle")  # the additions' own refreshes are over
    return username


def row_action(page: Page, name: str, action: str) -> Locator:
    row = page.locator("#passkeys li.item").filter(has_text=name)
    return row.get_by_role("link", name=action)


def removed_and_settled(page: Page, name: str) -> None:
    passkeys = page.locator("#passkeys")
    expect(passkeys.get_by_role("status")).to_have_text("Passkey removed.")
    expect(page.locator("#activity").get_by_text(f"Passkey “{name}” removed")).to_be_visible()
    page.wait_for_load_state("networkidle")
    # the answering section was not refreshed away: its notice is still there
    expect(passkeys.get_by_role("status")).to_have_text("Passkey removed.")


def test_a_removal_refreshes_only_the_sections_it_affected(page, server, authenticator):
    two_passkeys(page, server, authenticator)
    row_action(page, "Phone", "Remove").click()
    remove = page.locator("#passkeys").get_by_role("button", name="Remove passkey")
    expect(remove).to_be_visible()
    requested = record_section_requests(page)
    remove.click()
    removed_and_settled(page, "Phone")
    # passkeys answered the removal; sessions (those signed in with it end) and activity
    # refresh; two-factor, recovery codes, password and the notice are left alone
    assert sorted(requested) == ["/account/activity", "/account/sessions"]


def test_a_removal_through_the_passkey_shim_refreshes_the_same(page, server, authenticator):
    username = two_passkeys(page, server, authenticator)
    make_stale(server, username)  # the removal asks "Confirm it's you" with a passkey
    row_action(page, "Laptop", "Remove").click()
    verify = page.locator("#passkeys").get_by_role("button", name="Verify with a passkey")
    expect(verify).to_be_visible()
    page.wait_for_load_state("networkidle")
    requested = record_section_requests(page)
    verify.click()  # the second authenticator holds "Phone": it confirms, "Laptop" goes
    removed_and_settled(page, "Laptop")
    expect(page.locator("#passkeys .item-title")).to_have_text(["Phone"])
    assert sorted(requested) == ["/account/activity", "/account/sessions"]


def test_a_background_refresh_keeps_what_the_person_typed(page: Page, server: Server):
    """A refresh of a section (another change named it) waits while the person types in
    it: the name typed for a new passkey is not thrown away. At rest, it refreshes; one
    skipped is done when the person leaves the section at rest."""
    sign_in(page, server, server.create_user())
    passkeys = page.locator("#passkeys")
    expect(passkeys.get_by_label("Passkey name")).to_be_visible()
    page.wait_for_load_state("networkidle")
    seen = record_section_requests(page)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/account/passkeys"):
        page.evaluate("() => htmx.trigger(document.body, 'refresh-passkeys')")  # at rest
    page.wait_for_load_state("networkidle")
    assert seen == ["/account/passkeys"]

    passkeys.get_by_label("Passkey name").fill("My new phone")
    both = (
        "() => { htmx.trigger(document.body, 'refresh-passkeys');"
        " htmx.trigger(document.body, 'refresh-activity'); }"
    )
    with page.expect_response(lambda r: urlsplit(r.url).path == "/account/activity"):
        page.evaluate(both)  # the activity section (at rest) still refreshes
    page.wait_for_load_state("networkidle")
    assert seen[1:] == ["/account/activity"], seen
    expect(passkeys.get_by_label("Passkey name")).to_have_value("My new phone")

    # The skipped refresh is not forgotten: leaving the section with the name still typed
    # keeps it waiting; leaving it at rest (the name put back) catches up.
    field = passkeys.get_by_label("Passkey name")
    suggested = field.evaluate("(input) => input.defaultValue")
    elsewhere = "() => document.querySelector('#activity h2').focus()"
    page.evaluate(elsewhere)
    page.wait_for_load_state("networkidle")
    assert seen[1:] == ["/account/activity"], seen
    field.fill(suggested)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/account/passkeys"):
        page.evaluate(elsewhere)
    page.wait_for_load_state("networkidle")
    assert seen[1:] == ["/account/activity", "/account/passkeys"], seen
    # caught up once: leaving again asks for nothing more
    field.focus()
    page.evaluate(elsewhere)
    page.wait_for_load_state("networkidle")
    assert seen[1:] == ["/account/activity", "/account/passkeys"], seen
