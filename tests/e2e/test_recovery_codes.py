"""Recovery codes a person can trust (SPEC §4.1b, §9, rev 2), in Chromium against a real
server: codes whoever turned 2FA on, the question before regenerating, codes that survive
background refreshes, a stale second tab, codes on one line at every width; axe and the
keyboard over the new states."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect
from sqlalchemy import create_engine, text

from tests.helpers.e2e import (
    Authenticator,
    NewContext,
    Server,
    add_authenticator,
    add_passkey,
    check_accessibility,
    check_light_and_dark,
    expect_focus_on_heading,
    expect_visible_focus_ring,
    put_credentials,
    sign_in,
    sign_out,
    tab_to,
)

QUESTION = "Your current codes will stop working."
EXPLAINED = "Your administrator now requires two-factor authentication."
CODE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}$")


def section(page: Page) -> Locator:
    return page.locator("#recovery-codes")


def account(page: Page) -> None:
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()


def signed_in(page: Page, server: Server, prefix: str = "codes") -> str:
    username = server.create_user(prefix)
    sign_in(page, server, username)
    account(page)
    return username


def enable(page: Page, name: str = "Laptop") -> list[str]:
    card = page.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    card.get_by_label("Passkey name").fill(name)
    card.get_by_role("button", name="Register passkey and turn on").click()
    expect(card.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    codes = card.locator("ol.codes code").all_inner_texts()
    card.get_by_role("link", name="I have saved these codes").click()
    expect(card.locator("[data-2fa-status]")).to_have_text("On")
    return codes


def regenerate(page: Page) -> list[str]:
    """Regenerate → the question → the answer → the new codes (still on screen)."""
    section(page).get_by_role("link", name="Regenerate recovery codes").click()
    expect(section(page).get_by_text(QUESTION)).to_be_visible()
    section(page).get_by_role("button", name="Regenerate recovery codes").click()
    expect(section(page).get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    expect(section(page).locator("ol.codes code")).to_have_count(10)
    return section(page).locator("ol.codes code").all_inner_texts()


def away_from_passkey(page: Page, authenticator: Authenticator) -> list:
    """Sign out with the passkey kept aside (else the login page's autofill uses it)."""
    credentials = authenticator.credentials()
    authenticator.remove()
    sign_out(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    return credentials


# ---- 1. new codes are never swapped away before they are saved -------------------------


def another_device(page: Page, authenticator: Authenticator) -> Authenticator:
    """A new authenticator for the page (one holds one passkey for the account here)."""
    authenticator.remove()
    return add_authenticator(page)


def test_regenerate_asks_and_codes_survive_a_rename(page, server, authenticator):
    username = signed_in(page, server)
    old = enable(page)
    second = another_device(page, authenticator)
    add_passkey(page, "Spare key")  # (its refresh happens while the section is at rest)
    section(page).get_by_role("link", name="Regenerate recovery codes").click()
    expect(section(page).get_by_text(QUESTION)).to_be_visible()
    section(page).get_by_role("link", name="Cancel").click()
    expect(section(page).get_by_text("10 of 10 recovery codes remain")).to_be_visible()
    assert server.status(username)["recoveryCodesRemaining"] == 10

    new = regenerate(page)
    assert not set(new) & set(old)

    # something else changes the account: rename a passkey (and add another one)
    passkeys = page.locator("#passkeys")
    passkeys.get_by_role("link", name="Rename Spare key").click()
    passkeys.locator(".item").get_by_label("Passkey name").fill("Backup key")
    passkeys.get_by_role("button", name="Save").click()
    expect(passkeys.get_by_text("Passkey renamed to “Backup key”.")).to_be_visible()
    another_device(page, second)
    add_passkey(page, "Third key")
    page.wait_for_load_state("networkidle")
    # the new codes are still on screen, not the section's resting state
    expect(section(page).locator("ol.codes code")).to_have_text(new)
    expect(section(page).get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    # …and the activity list did refresh (it was at rest)
    expect(page.locator("#activity").get_by_text("renamed to “Backup key”")).to_be_visible()
    section(page).get_by_role("link", name="I have saved these codes").click()
    expect(section(page).get_by_text("10 of 10 recovery codes remain")).to_be_visible()


def test_an_open_rename_form_is_not_swapped_by_a_refresh(page, server, authenticator):
    signed_in(page, server)
    add_passkey(page, "Laptop")
    passkeys = page.locator("#passkeys")
    passkeys.get_by_role("link", name="Rename Laptop").click()
    passkeys.locator(".item").get_by_label("Passkey name").fill("Half-typed")
    card = page.locator("#two-factor")  # enabling refreshes the other sections it affects
    card.get_by_role("link", name="Enable two-factor authentication").click()
    card.get_by_role("button", name="Verify with a passkey").click()
    expect(card.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    page.wait_for_load_state("networkidle")
    expect(
        page.locator("#activity").get_by_text("Two-factor authentication turned on")
    ).to_be_visible()
    expect(passkeys.locator(".item").get_by_label("Passkey name")).to_have_value("Half-typed")


# ---- 2. an administrator requires 2FA of a passkey holder -------------------------------


def test_admin_requires_2fa_of_a_passkey_holder(page, server, authenticator):
    username = signed_in(page, server, "required")
    add_passkey(page, "Laptop")
    page.wait_for_load_state("networkidle")
    server.set_required(username, True)

    page.goto(f"{server.base_url}/account")
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    expect(page.get_by_text(EXPLAINED)).to_be_visible()
    page.get_by_role("button", name="Verify with a passkey").click()

    heading = page.get_by_role("heading", name="Save your recovery codes")
    expect(heading).to_be_visible()
    codes = page.locator("ol.codes code").all_inner_texts()
    assert len(codes) == 10 and all(CODE.match(c) for c in codes)
    assert server.status(username)["recoveryCodesRemaining"] == 10
    page.get_by_role("link", name="I have saved these codes").click()
    account(page)
    expect(section(page).get_by_text("10 of 10 recovery codes remain")).to_be_visible()
    expect(page.get_by_text("Only 0")).to_have_count(0)

    # shown once: signing in again goes straight on
    credentials = away_from_passkey(page, authenticator)
    sign_in(page, server, username)
    expect(page).to_have_url(f"{server.base_url}/login/2fa")
    put_credentials(add_authenticator(page), credentials)
    expect(page.get_by_text(EXPLAINED)).to_have_count(0)  # not the reason this time
    page.get_by_role("button", name="Verify with a passkey").click()
    account(page)
    assert server.status(username)["recoveryCodesRemaining"] == 10


# ---- 3. no "Enable" while required; the saved codes keep working ------------------------


def test_no_enable_while_required_and_saved_codes_keep_working(page, server, authenticator):
    username = server.create_user("enroll")
    server.set_required(username, True)
    sign_in(page, server, username)
    page.get_by_role("button", name="Register passkey and sign in").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    saved = page.locator("ol.codes code").all_inner_texts()
    page.get_by_role("link", name="I have saved these codes").click()
    account(page)
    card = page.locator("#two-factor")
    expect(card.locator("[data-2fa-status]")).to_have_text("Required by your administrator")
    expect(card.get_by_role("link", name="Enable two-factor authentication")).to_have_count(0)
    # a bookmarked/old link to the step answers the card as it is, with the reason
    page.goto(f"{server.base_url}/account/two-factor/enable")
    expect(card.get_by_role("alert")).to_have_text(
        "Your administrator already requires two-factor authentication."
    )
    expect(card.get_by_role("button", name="Register passkey and turn on")).to_have_count(0)

    away_from_passkey(page, authenticator)
    sign_in(page, server, username)
    page.get_by_label("Recovery code").fill(saved[4])
    page.get_by_role("button", name="Verify code").click()
    account(page)
    assert server.status(username)["recoveryCodesRemaining"] == 9


# ---- 4. codes on one line at every width -----------------------------------------------


ONE_LINE = """() => Array.from(document.querySelectorAll('ol.codes code'))
  .map((c) => c.getClientRects().length)"""
SIDEWAYS = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def expect_codes_on_one_line(page: Page, label: str) -> None:
    expect(page.locator("ol.codes code")).to_have_count(10)
    lines = page.evaluate(ONE_LINE)
    assert lines == [1] * 10, f"{label}: codes broken across lines: {lines}"
    assert page.evaluate(SIDEWAYS) <= 0, f"{label}: the page scrolls sideways"


def test_codes_on_one_line_at_every_width(new_context: NewContext, server: Server):
    for width in (375, 320, 768, 1280):
        page = new_context(viewport={"width": width, "height": 800}).new_page()
        add_authenticator(page)
        # the account card
        signed_in(page, server, f"w{width}")
        card = page.locator("#two-factor")
        card.get_by_role("link", name="Enable two-factor authentication").click()
        card.get_by_role("button", name="Register passkey and turn on").click()
        expect_codes_on_one_line(page, f"account card at {width}px")
        page.close()
        # the page after signing in (enroll-at-login), in a browser of its own
        page = new_context(viewport={"width": width, "height": 800}).new_page()
        add_authenticator(page)
        username = server.create_user(f"e{width}")
        server.set_required(username, True)
        sign_in(page, server, username)
        page.get_by_role("button", name="Register passkey and sign in").click()
        expect_codes_on_one_line(page, f"page after enroll-at-login at {width}px")
        download = page.get_by_role("link", name="Download recovery codes", exact=True)
        expect(download).to_be_visible()
        # Copy and Print where the browser supports them (Chromium does, on localhost)
        expect(page.get_by_role("button", name="Copy", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Print", exact=True)).to_be_visible()
        page.close()


def test_the_question_works_without_javascript(
    page, server, authenticator, new_context: NewContext
):
    username = signed_in(page, server, "nojs")
    codes = enable(page)
    plain = new_context(java_script_enabled=False).new_page()
    sign_in(plain, server, username)
    plain.get_by_label("Recovery code").fill(codes[0])
    plain.get_by_role("button", name="Verify code").click()
    account(plain)
    section(plain).get_by_role("link", name="Regenerate recovery codes").click()
    expect(section(plain).get_by_text(QUESTION)).to_be_visible()
    section(plain).get_by_role("button", name="Regenerate recovery codes").click()
    # a recovery-code sign-in is recent authentication (SPEC §4.1): the new codes, as a page
    expect(section(plain).locator("ol.codes code")).to_have_count(10)
    expect(section(plain).get_by_role("link", name="Download recovery codes")).to_be_visible()
    # Copy and Print need JavaScript: hidden, nothing broken
    expect(section(plain).get_by_role("button", name="Copy")).to_be_hidden()
    expect(section(plain).get_by_role("button", name="Print")).to_be_hidden()
    assert server.status(username)["recoveryCodesRemaining"] == 10


# ---- 5. a stale second tab ---------------------------------------------------------------


def test_a_stale_second_tab_answers_with_the_current_state(page, server, authenticator):
    username = signed_in(page, server, "tabs")
    enable(page)
    tab_b = page.context.new_page()
    tab_b.goto(f"{server.base_url}/account")
    account(tab_b)
    expect(section(tab_b).get_by_text("10 of 10 recovery codes remain")).to_be_visible()

    new = regenerate(page)  # tab A

    # tab B still shows the card from before; asking to regenerate there is refused with
    # the section as it is now (never a question about codes it didn't show)
    section(tab_b).get_by_role("link", name="Regenerate recovery codes").click()
    expect(section(tab_b).get_by_role("alert")).to_contain_text(
        "Your recovery codes were changed in another window or device."
    )
    expect(section(tab_b).get_by_text("10 of 10 recovery codes remain")).to_be_visible()
    expect(section(tab_b).get_by_text(QUESTION)).to_have_count(0)
    # tab A's codes are the ones that work
    expect(section(page).locator("ol.codes code")).to_have_text(new)
    assert server.status(username)["recoveryCodesRemaining"] == 10
    # and from the current state, tab B can ask the question
    section(tab_b).get_by_role("link", name="Regenerate recovery codes").click()
    expect(section(tab_b).get_by_text(QUESTION)).to_be_visible()


# ---- accessibility: the new states, light and dark, and the keyboard ---------------------


def delete_codes(server: Server, username: str) -> None:
    engine = create_engine(server.database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "DELETE FROM recovery_codes WHERE user_id ="
                " (SELECT id FROM users WHERE username = :u)"
            ),
            {"u": username},
        )
    engine.dispose()


def test_new_states_pass_axe_and_work_by_keyboard(page, server, authenticator):
    username = signed_in(page, server, "a11y-codes")
    add_passkey(page, "Laptop")
    page.wait_for_load_state("networkidle")
    server.set_required(username, True)
    page.goto(f"{server.base_url}/account")
    expect(page.get_by_text(EXPLAINED)).to_be_visible()
    check_light_and_dark(page, "/login/2fa, explained")
    page.get_by_role("button", name="Verify with a passkey").click()
    expect_focus_on_heading(page, "Save your recovery codes")
    check_light_and_dark(page, "codes after the second factor")
    page.get_by_role("link", name="I have saved these codes").click()
    account(page)

    # the question, by keyboard
    tab_to(page, "Regenerate recovery codes")
    expect_visible_focus_ring(page)
    page.keyboard.press("Enter")
    expect_focus_on_heading(page, "Regenerate recovery codes?")
    check_light_and_dark(page, "regenerate question")
    tab_to(page, "Regenerate recovery codes")
    page.keyboard.press("Enter")
    expect_focus_on_heading(page, "Save your recovery codes")
    check_light_and_dark(page, "new codes in the section")
    tab_to(page, "I have saved these codes")
    page.keyboard.press("Enter")
    expect(section(page).get_by_text("10 of 10 recovery codes remain")).to_be_visible()

    # "You don't have recovery codes yet"
    delete_codes(server, username)
    page.reload()
    expect(section(page).get_by_text("You don't have recovery codes yet")).to_be_visible()
    check_light_and_dark(page, "no recovery codes yet")
    tab_to(page, "Create recovery codes")
    page.keyboard.press("Enter")
    expect_focus_on_heading(page, "Save your recovery codes")
    check_accessibility(page, "codes created")


def test_a_passkey_sign_in_also_shows_the_new_codes_once(page, server, authenticator):
    username = signed_in(page, server, "pk-sign-in")
    add_passkey(page, "Laptop")
    page.wait_for_load_state("networkidle")
    credentials = away_from_passkey(page, authenticator)
    server.set_required(username, True)
    put_credentials(add_authenticator(page), credentials)
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect_focus_on_heading(page, "Save your recovery codes")
    expect(page.locator("ol.codes code")).to_have_count(10)
    assert server.status(username)["recoveryCodesRemaining"] == 10
    page.get_by_role("link", name="I have saved these codes").click()
    account(page)
    expect(section(page).get_by_text("10 of 10 recovery codes remain")).to_be_visible()


# ---- errors a person notices; phones -----------------------------------------------------


def test_errors_are_noticed_where_they_happen(page, server, authenticator):
    username = server.create_user("errors")
    sign_in(page, server, username, password="not-the-password")
    password = page.get_by_label("Password")
    expect(password).to_be_focused()  # a full-page post with an error: focus to the field
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_attribute("aria-describedby", "sign-in-error")
    expect(page.locator("#sign-in-error")).to_have_text("Incorrect username or password.")

    sign_in(page, server, username)
    account(page)
    add_passkey(page, "Laptop")
    # a passkey form's refusal looks like an error and marks its field
    footer = page.locator("#passkeys .card-footer")
    footer.get_by_label("Passkey name").fill("   ")
    footer.get_by_role("button", name="Add a passkey").click()
    status = footer.locator("[data-passkey-status]")
    expect(status).to_have_text("Give the passkey a name.")
    expect(status).to_have_attribute("data-kind", "error")
    field = footer.get_by_label("Passkey name")
    expect(field).to_have_attribute("aria-invalid", "true")
    assert field.get_attribute("aria-describedby") == status.get_attribute("id")
    # the newer message replaces the older one: no red and grey side by side
    page.locator("#passkeys").get_by_role("link", name="Rename Laptop").click()
    expect(page.locator("#flash")).to_be_empty()

    # a wrong recovery code, as a full-page post: the field takes the focus
    server.set_required(username, True)
    away_from_passkey(page, authenticator)
    sign_in(page, server, username)
    page.get_by_label("Recovery code").fill("AAAA-BBBB-CCCC")
    page.get_by_role("button", name="Verify code").click()
    code = page.get_by_label("Recovery code")
    expect(code).to_be_focused()
    expect(code).to_have_attribute("aria-describedby", "second-factor-error")


def test_tap_targets_on_a_touch_screen(new_context: NewContext, server: Server):
    phone = new_context(viewport={"width": 375, "height": 740}, has_touch=True, is_mobile=True)
    page = phone.new_page()
    first = add_authenticator(page)
    signed_in(page, server, "touch")
    enable(page)
    add_passkey_name = "A passkey with a very long name that keeps going and going on"
    another_device(page, first)
    add_passkey(page, add_passkey_name)
    small = page.evaluate(
        """() => Array.from(document.querySelectorAll('main button, main .btn, main input'))
          .filter((e) => e.offsetParent !== null && e.type !== 'hidden')
          .map((e) => [e.textContent.trim() || e.name, e.getBoundingClientRect().height])
          .filter(([, h]) => h < 44)"""
    )
    assert small == [], f"tap targets under 44 px: {small}"
    assert page.evaluate(SIDEWAYS) <= 0, "the page scrolls sideways"
