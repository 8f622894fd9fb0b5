"""The Passkeys section (SPEC §5.3, §5.6) in Chromium with CDP virtual authenticators: add,
list, rename, remove with step-up, cancelled and duplicate ceremonies, escaped names."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.helpers.e2e import (
    add_authenticator,
    add_passkey,
    check_accessibility,
    make_stale,
    sign_in,
)

CANCELLED = "The passkey request was cancelled or timed out. Nothing was changed."
DUPLICATE = "This device already has a passkey for your account."


def signed_in(page: Page, server) -> str:
    username = server.create_user()
    sign_in(page, server, username)
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
    return username


def row(page: Page, name: str) -> Locator:
    """The passkey's row in the list, found by its exact name."""
    return (
        page.locator("#passkeys")
        .get_by_role("listitem")
        .filter(has=page.locator(".item-title", has_text=re.compile(rf"^{re.escape(name)}$")))
    )


def names(page: Page) -> Locator:
    return page.locator("#passkeys .item-title")


def test_add_two_rename_and_remove(page, server, authenticator):
    username = signed_in(page, server)
    passkeys = page.locator("#passkeys")
    expect(passkeys.get_by_text("You have no passkeys yet.")).to_be_visible()
    # The name field comes prefilled with a sensible default (browser and OS).
    expect(passkeys.get_by_label("Passkey name")).to_have_value(re.compile(r"\S"))

    add_passkey(page, "Laptop")
    expect(passkeys.get_by_role("status")).to_have_text("Passkey “Laptop” added.")
    expect(row(page, "Laptop")).to_contain_text("This device only")
    expect(row(page, "Laptop")).to_contain_text("Last used Never")
    [laptop] = authenticator.credentials()
    assert laptop["rpId"] == "localhost"
    assert laptop["userName"] == username
    assert laptop["isResidentCredential"] is True
    assert laptop["backupEligibility"] is False

    # A second device: a synced (backup-eligible) passkey provider.
    authenticator.remove()
    synced = add_authenticator(page, defaultBackupEligibility=True, defaultBackupState=True)
    add_passkey(page, "Phone")
    expect(names(page)).to_have_text(["Laptop", "Phone"])
    expect(row(page, "Phone")).to_contain_text("Synced")
    expect(row(page, "Laptop")).to_contain_text("This device only")
    expect(passkeys.get_by_text("2 passkeys")).to_be_visible()
    [phone] = synced.credentials()
    assert phone["userName"] == username and phone["backupEligibility"] is True
    assert phone["userHandle"] == laptop["userHandle"]  # one stable user handle
    assert phone["credentialId"] != laptop["credentialId"]
    assert server.status(username)["passkeyCount"] == 2

    # Rename inline: the row's form, prefilled with the current name.
    row(page, "Phone").get_by_role("link", name="Rename").click()
    field = passkeys.get_by_role("listitem").get_by_label("Passkey name")
    expect(field).to_have_value("Phone")
    field.fill("   ")
    passkeys.get_by_role("button", name="Save").click()
    expect(passkeys.get_by_text("Give the passkey a name.")).to_be_visible()
    expect(names(page)).to_have_text(["Laptop", "Phone"])
    field = passkeys.get_by_role("listitem").get_by_label("Passkey name")
    field.fill("Work phone")
    passkeys.get_by_role("button", name="Save").click()
    expect(passkeys.get_by_role("status")).to_have_text("Passkey renamed to “Work phone”.")
    expect(names(page)).to_have_text(["Laptop", "Work phone"])
    expect(passkeys.get_by_role("button", name="Save")).to_have_count(0)

    # Rename, then Cancel: nothing changes.
    row(page, "Laptop").get_by_role("link", name="Rename").click()
    passkeys.get_by_role("listitem").get_by_label("Passkey name").fill("Not saved")
    passkeys.get_by_role("link", name="Cancel").click()
    expect(passkeys.get_by_role("button", name="Save")).to_have_count(0)
    expect(names(page)).to_have_text(["Laptop", "Work phone"])
    expect(page.locator("#flash")).to_be_empty()

    # Remove asks first; Cancel keeps the passkey.
    row(page, "Work phone").get_by_role("link", name="Remove").click()
    expect(passkeys.get_by_text("Remove “Work phone”?")).to_be_visible()
    passkeys.get_by_role("link", name="Cancel").click()
    expect(passkeys.get_by_role("button", name="Remove passkey")).to_have_count(0)
    expect(names(page)).to_have_text(["Laptop", "Work phone"])

    # A password session whose sign-in is no longer recent must confirm with a passkey
    # before removing one (SPEC §4.1): the question itself carries it (one step).
    make_stale(server, username)
    row(page, "Work phone").get_by_role("link", name="Remove").click()
    expect(passkeys.get_by_role("button", name="Remove passkey")).to_have_count(0)
    verify = passkeys.get_by_role("button", name="Verify with a passkey")
    expect(verify).to_be_visible()
    expect(names(page)).to_have_text(["Laptop", "Work phone"])
    assert server.status(username)["passkeyCount"] == 2
    verify.click()
    expect(passkeys.get_by_role("status")).to_have_text("Passkey removed.")
    expect(names(page)).to_have_text(["Laptop"])
    assert server.status(username)["passkeyCount"] == 1

    # Within 10 minutes of that assertion, another removal needs no new one: the plain
    # question again, and one click removes.
    row(page, "Laptop").get_by_role("link", name="Remove").click()
    passkeys.get_by_role("button", name="Remove passkey").click()
    expect(passkeys.get_by_role("status")).to_have_text("Passkey removed.")
    expect(passkeys.get_by_text("You have no passkeys yet.")).to_be_visible()
    expect(passkeys.get_by_role("button", name="Verify with a passkey")).to_have_count(0)
    assert server.status(username)["passkeyCount"] == 0
    activity = page.locator("#activity")
    expect(activity.get_by_text("Passkey “Laptop” removed")).to_be_visible()
    expect(activity.get_by_text("Passkey “Work phone” removed")).to_be_visible()


def test_cancelled_ceremony_shows_a_message_and_stores_nothing(page, server, authenticator):
    username = signed_in(page, server)
    passkeys = page.locator("#passkeys")
    authenticator.set_user_verified(False)  # the person cancels the browser's prompt
    passkeys.get_by_label("Passkey name").fill("Laptop")
    passkeys.get_by_role("button", name="Add a passkey").click()
    expect(passkeys.get_by_role("alert").filter(has_text=CANCELLED)).to_be_visible()
    expect(passkeys.get_by_text("You have no passkeys yet.")).to_be_visible()
    assert authenticator.credentials() == []
    assert server.status(username)["passkeyCount"] == 0

    # Nothing is stuck: trying again works.
    authenticator.set_user_verified(True)
    passkeys.get_by_role("button", name="Add a passkey").click()
    expect(names(page)).to_have_text(["Laptop"])
    assert server.status(username)["passkeyCount"] == 1


def test_cancelled_step_up_keeps_the_passkey(page, server, authenticator):
    username = signed_in(page, server)
    add_passkey(page, "Laptop")
    make_stale(server, username)
    passkeys = page.locator("#passkeys")
    row(page, "Laptop").get_by_role("link", name="Remove").click()  # one combined step
    authenticator.set_user_verified(False)
    passkeys.get_by_role("button", name="Verify with a passkey").click()
    expect(passkeys.get_by_role("alert").filter(has_text=CANCELLED)).to_be_visible()
    expect(names(page)).to_have_text(["Laptop"])
    assert server.status(username)["passkeyCount"] == 1


def test_registering_the_same_authenticator_twice_is_refused(page, server, authenticator):
    username = signed_in(page, server)
    add_passkey(page, "Laptop")
    passkeys = page.locator("#passkeys")
    passkeys.get_by_label("Passkey name").fill("Laptop again")
    passkeys.get_by_role("button", name="Add a passkey").click()
    expect(passkeys.get_by_role("alert").filter(has_text=DUPLICATE)).to_be_visible()
    expect(names(page)).to_have_text(["Laptop"])
    assert len(authenticator.credentials()) == 1
    assert server.status(username)["passkeyCount"] == 1


def test_names_with_html_are_shown_as_text(page, server, authenticator):
    signed_in(page, server)
    page.evaluate("window.injected = false")
    hostile = "<b>x</b><script>window.injected = true</script>"
    add_passkey(page, hostile)
    passkeys = page.locator("#passkeys")
    expect(names(page)).to_have_text([hostile])
    expect(passkeys.get_by_role("status")).to_have_text(f"Passkey “{hostile}” added.")
    expect(page.locator("#activity").get_by_text(f"Passkey “{hostile}” added")).to_be_visible()

    # Renamed to another piece of HTML, and in the removal question: still text.
    row(page, hostile).get_by_role("link", name="Rename").click()
    passkeys.get_by_role("listitem").get_by_label("Passkey name").fill('<img src=x alt="y">')
    passkeys.get_by_role("button", name="Save").click()
    expect(names(page)).to_have_text(['<img src=x alt="y">'])
    row(page, '<img src=x alt="y">').get_by_role("link", name="Remove").click()
    expect(passkeys.get_by_text('Remove “<img src=x alt="y">”?')).to_be_visible()

    page.reload()
    expect(names(page)).to_have_text(['<img src=x alt="y">'])
    for selector in ("main b", "main img", "script:not([src])"):
        expect(page.locator(selector)).to_have_count(0)
    assert page.evaluate("window.injected") is not True


def test_stale_removal_is_one_step(page, server, authenticator):
    """Issue 13: with no recent authentication, "Remove" opens ONE step in the passkey's
    row: it says what will happen, and one press of "Verify with a passkey" confirms it's
    you and removes the passkey (no second "Confirm it's you" after "Remove passkey")."""
    username = signed_in(page, server)
    passkeys = page.locator("#passkeys")
    add_passkey(page, "Laptop")
    authenticator.remove()  # a second device (one authenticator holds one passkey of ours)
    add_authenticator(page)
    add_passkey(page, "Old key")
    make_stale(server, username)

    # Cancel closes the step and keeps the passkey.
    row(page, "Old key").get_by_role("link", name="Remove Old key").click()
    step = row(page, "Old key")
    expect(step.get_by_role("heading", name="Confirm it's you")).to_be_focused()
    passkeys.get_by_role("link", name="Cancel").click()
    expect(passkeys.get_by_role("heading", name="Confirm it's you")).to_have_count(0)
    expect(names(page)).to_have_text(["Laptop", "Old key"])

    row(page, "Old key").get_by_role("link", name="Remove Old key").click()
    step = row(page, "Old key")
    expect(step.get_by_role("heading", name="Confirm it's you")).to_be_focused()
    expect(step).to_contain_text("Remove “Old key”? You won't be able to sign in with it any more.")
    expect(passkeys.get_by_role("button", name="Remove passkey")).to_have_count(0)
    expect(passkeys.get_by_label("Password")).to_have_count(0)
    expect(step.get_by_role("link", name="Cancel")).to_be_visible()
    check_accessibility(page, "removal question with Confirm it's you")
    assert server.status(username)["passkeyCount"] == 2

    verify = step.get_by_role("button", name="Verify with a passkey and remove “Old key”")
    verify.click()  # the one press: the assertion confirms and removes
    expect(passkeys.get_by_role("status")).to_have_text("Passkey removed.")
    expect(names(page)).to_have_text(["Laptop"])
    expect(passkeys.get_by_role("heading", name="Confirm it's you")).to_have_count(0)
    assert server.status(username)["passkeyCount"] == 1
    expect(page.locator("#activity").get_by_text("Passkey “Old key” removed")).to_be_visible()
