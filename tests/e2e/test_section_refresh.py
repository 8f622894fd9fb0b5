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


def refreshed(page: Page, event: str, section: str) -> None:
    """Fire a background refresh and wait until its section is swapped in and settled."""
    page.evaluate("(id) => { document.getElementById(id).dataset.old = '1'; }", section)
    with page.expect_response(lambda r: urlsplit(r.url).path == f"/account/{section}"):
        page.evaluate("(name) => htmx.trigger(document.body, name)", event)
    page.wait_for_function(
        """(id) => { const s = document.getElementById(id);
           return s && !s.dataset.old && !s.matches('.htmx-settling, .htmx-swapping'); }""",
        arg=section,
    )


def test_a_background_refresh_keeps_what_the_person_typed(page: Page, server: Server):
    """A refresh of a section (another change named it) waits while the person types in
    it: the name typed for a new passkey is not thrown away. At rest, it refreshes; one
    skipped is done when the person leaves the section at rest.

    "Nothing was asked for" is checked after a later refresh of another section has come
    back (requests are sent in order): a positive sentinel, not a wait for quiet."""
    sign_in(page, server, server.create_user())
    passkeys = page.locator("#passkeys")
    field = passkeys.get_by_label("Passkey name")
    expect(field).to_be_visible()
    page.wait_for_load_state("networkidle")
    seen = record_section_requests(page)
    refreshed(page, "refresh-passkeys", "passkeys")  # at rest: refreshed
    assert seen == ["/account/passkeys"]

    field.fill("My new phone")
    page.evaluate("() => htmx.trigger(document.body, 'refresh-passkeys')")  # skipped
    refreshed(page, "refresh-activity", "activity")  # the activity section still refreshes
    assert seen[1:] == ["/account/activity"], seen
    expect(field).to_have_value("My new phone")

    # The skipped refresh is not forgotten: leaving the section with the name still typed
    # keeps it waiting; leaving it at rest (the name put back) catches up.
    suggested = field.evaluate("(input) => input.defaultValue")
    elsewhere = "() => document.querySelector('#activity h2').focus()"
    page.evaluate(elsewhere)
    refreshed(page, "refresh-activity", "activity")
    assert seen[1:] == ["/account/activity"] * 2, seen
    field.fill(suggested)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/account/passkeys"):
        page.evaluate(elsewhere)
    # caught up once: leaving again asks for nothing more
    field.focus()
    page.evaluate(elsewhere)
    refreshed(page, "refresh-activity", "activity")
    assert seen[1:] == ["/account/activity"] * 2 + ["/account/passkeys", "/account/activity"]
