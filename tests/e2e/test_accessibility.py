"""Accessibility: axe-core finds nothing on every page and partial state; focus and the
polite announcer after htmx swaps; the enable flow by keyboard alone; reduced motion and the
dark colour scheme (contrast) still pass.

Each test walks one user through several states and runs axe at each (light, and dark
where the state has colours of its own), so the states cost a swap each, not a sign-in.
"""

from __future__ import annotations

import re

from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.helpers.e2e import (
    PASSWORD,
    Authenticator,
    NewContext,
    Server,
    add_authenticator,
    add_passkey,
    check_accessibility,
    check_light_and_dark,
    expect_focus_on_heading,
    expect_visible_focus_ring,
    focused,
    make_stale,
    sign_in,
    tab_to,
)

ACCOUNT = "Account security"


def wait_for_account(page: Page) -> None:
    expect(page.get_by_role("heading", name=ACCOUNT)).to_be_visible()


def enable_with_new_passkey(page: Page, name: str) -> list[str]:
    """From the account page: Enable → name → Register passkey and turn on → the codes."""
    card = page.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    card.get_by_label("Passkey name").fill(name)
    card.get_by_role("button", name="Register passkey and turn on").click()
    expect(card.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    return card.locator("ol.codes code").all_inner_texts()


def csrf_from(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def use_recovery_codes(
    context: BrowserContext, server: Server, username: str, codes: list[str]
) -> None:
    """Sign in with password + a recovery code once per code, as plain form posts (a
    browser with JavaScript would do the same through the page's forms)."""
    request = context.request
    token = csrf_from(request.get(f"{server.base_url}/login").text())
    for code in codes:
        request.post(f"{server.base_url}/logout", form={"_csrf_token": token})
        signed = request.post(
            f"{server.base_url}/login",
            form={"username": username, "password": PASSWORD, "_csrf_token": token},
        )
        assert signed.url.endswith("/login/2fa"), signed.url
        done = request.post(
            f"{server.base_url}/login/2fa/recovery", form={"code": code, "_csrf_token": token}
        )
        assert done.url.endswith("/account"), (done.url, done.text()[:500])


# ---- pages before sign-in, and the error page -----------------------------------------


def test_sign_in_page_and_error_page_pass_axe(page: Page, server: Server) -> None:
    username = server.create_user("a11y-login")
    page.goto(f"{server.base_url}/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    check_light_and_dark(page, "login, empty")

    sign_in(page, server, username, password="not-the-password")
    expect(
        page.get_by_role("alert").filter(has_text="Incorrect username or password.")
    ).to_be_visible()
    # The field keeps what was typed; the error is in an alert, read at once.
    expect(page.get_by_label("Username")).to_have_value(username)
    check_light_and_dark(page, "login, with an error")

    sign_in(page, server, username)
    wait_for_account(page)
    response = page.goto(f"{server.base_url}/account/passkeys/999999/rename")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text("That passkey was not found.")
    check_light_and_dark(page, "error page (404)")


def test_second_factor_pages_pass_axe(page: Page, server: Server, authenticator: Authenticator):
    # Required by the administrator before any passkey: enroll-at-login on /login/2fa.
    username = server.create_user("a11y-2fa")
    server.set_required(username, True)
    sign_in(page, server, username)
    expect(page).to_have_url(re.compile(r"/login/2fa$"))
    expect(page.get_by_role("button", name="Register passkey and sign in")).to_be_visible()
    check_accessibility(page, "/login/2fa, enroll at login")

    page.get_by_role("button", name="Register passkey and sign in").click()
    expect_focus_on_heading(page, "Save your recovery codes")
    check_accessibility(page, "/login/2fa, codes after enrolling")
    page.get_by_role("link", name="I have saved these codes").click()
    wait_for_account(page)
    expect(page.locator("[data-2fa-status]")).to_have_text("Required by your administrator")
    check_light_and_dark(page, "account, 2FA required")

    # Verify mode: without the authenticator (else /login's passkey autofill signs in).
    authenticator.remove()
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    sign_in(page, server, username)
    expect(page.get_by_role("button", name="Verify with a passkey")).to_be_visible()
    check_accessibility(page, "/login/2fa, verify")
    page.get_by_label("Recovery code").fill("AAAA-BBBB-CCCC")
    page.get_by_role("button", name="Verify code").click()
    expect(page.get_by_role("alert").filter(has_text="not valid")).to_be_visible()
    check_light_and_dark(page, "/login/2fa, wrong recovery code")


# ---- the account page: every state of the two-factor card ------------------------------


def test_two_factor_card_states_pass_axe_with_focus_and_announcements(
    page: Page, server: Server, authenticator: Authenticator
) -> None:
    username = server.create_user("a11y-card")
    sign_in(page, server, username)
    wait_for_account(page)
    expect(page.locator("[data-2fa-status]")).to_have_text("Off")
    check_light_and_dark(page, "account, 2FA off, no passkeys")

    card = page.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    # The swapped-in step takes the focus at its heading.
    expect_focus_on_heading(page, "Turn on two-factor authentication")
    check_accessibility(page, "enrollment step, no passkeys")
    # Cancel brings the card back, focus on the card's heading.
    card.get_by_role("link", name="Cancel").click()
    expect_focus_on_heading(page, "Two-factor authentication")

    codes = enable_with_new_passkey(page, "Laptop")
    assert len(codes) == 10
    expect_focus_on_heading(page, "Save your recovery codes")
    expect(page.locator("#announcer")).to_have_text("Two-factor authentication is on.")
    # The other sections refresh in the background; they must not steal the focus.
    expect(page.locator("#activity")).to_contain_text("Two-factor authentication turned on")
    expect(page.locator("#passkeys")).to_contain_text("Laptop")
    expect_focus_on_heading(page, "Save your recovery codes")
    check_light_and_dark(page, "codes step")

    card.get_by_role("link", name="I have saved these codes").click()
    expect(page.locator("[data-2fa-status]")).to_have_text("On")
    expect_focus_on_heading(page, "Two-factor authentication")
    check_light_and_dark(page, "account, 2FA on")

    card.get_by_role("link", name="Disable two-factor authentication").click()
    expect_focus_on_heading(page, "Turn off two-factor authentication")
    check_light_and_dark(page, "disable step")
    card.get_by_role("link", name="Cancel").click()

    # The only passkey with 2FA on: the refusal appears in its row (rev 2: a 409 answers the
    # section as it is now), and takes the focus.
    page.locator("#passkeys").get_by_role("link", name="Remove").click()
    refusal = page.locator("#passkeys li.item").get_by_role("alert")
    expect(refusal).to_contain_text("You can't remove your last passkey")
    expect(refusal).to_be_focused()
    expect(page.locator("#flash")).to_be_empty()
    check_light_and_dark(page, "refusal in the passkey's row")

    server.set_required(username, True)
    page.reload()
    expect(page.locator("[data-2fa-status]")).to_have_text(
        "Required by your administrator (also turned on by you)"
    )
    expect(card.get_by_role("link", name="Disable two-factor authentication")).to_have_count(0)
    check_light_and_dark(page, "account, 2FA required and on")


# ---- passkeys: add, enrolment with passkeys, rename, 422, remove, step-up ---------------


def test_a_late_answer_leaves_the_focus_where_the_person_moved_it(
    page: Page, server: Server
) -> None:
    """An answer that arrives after the person went on (tapped into another field and
    started typing) is shown, but does not take the focus: the typing stays in their field.
    (Once, a test typing right after "I have saved these codes" lost its first letters to
    the card's heading.)"""
    username = server.create_user("a11y-late")
    sign_in(page, server, username)
    wait_for_account(page)
    held: list[Route] = []
    page.route("**/account/two-factor/enable", lambda route: held.append(route))  # held
    card = page.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the step was not asked for"

    field = page.locator("#passkeys").get_by_label("Passkey name")
    field.fill("")
    page.keyboard.type("Desk")
    page.evaluate(
        """() => { window.settled = new Promise((done) =>
             document.addEventListener("htmx:afterSettle", done, { once: true })); }"""
    )
    held[0].continue_()
    page.evaluate("() => window.settled")  # page.js's own handler has run before this one
    expect(card.get_by_role("heading", name="Turn on two-factor authentication")).to_be_visible()
    page.keyboard.type(" key")
    expect(field).to_be_focused()
    expect(field).to_have_value("Desk key")

    # Where the focus was lost with the replaced content, the new content takes it.
    card.get_by_role("link", name="Cancel").click()
    expect_focus_on_heading(page, "Two-factor authentication")


def test_passkey_states_pass_axe_with_focus_and_announcements(
    page: Page, server: Server, authenticator: Authenticator
) -> None:
    username = server.create_user("a11y-passkeys")
    sign_in(page, server, username)
    wait_for_account(page)
    add_passkey(page, "Work key")
    expect(page.locator("#announcer")).to_have_text("Passkey “Work key” added.")
    expect_focus_on_heading(page, "Passkeys")
    # The other sections refresh; the answered one keeps its notice and the focus.
    expect(page.locator("#activity")).to_contain_text("Passkey “Work key” added")
    expect(page.locator("#passkeys").get_by_role("status")).to_have_text(
        "Passkey “Work key” added."
    )
    expect_focus_on_heading(page, "Passkeys")
    check_light_and_dark(page, "account with a passkey")

    card = page.locator("#two-factor")
    card.get_by_role("link", name="Enable two-factor authentication").click()
    expect_focus_on_heading(page, "Turn on two-factor authentication")
    check_accessibility(page, "enrollment step, with passkeys")
    card.get_by_text("Add a new passkey instead").click()
    expect(card.get_by_label("Passkey name")).to_be_visible()
    check_accessibility(page, "enrollment step, <details> open")
    card.get_by_role("link", name="Cancel").click()

    passkeys = page.locator("#passkeys")
    passkeys.get_by_role("link", name="Rename Work key").click()
    # The rename form takes the focus at its field.
    field = passkeys.get_by_role("listitem").get_by_label("Passkey name")
    expect(field).to_be_focused()
    assert focused(page)["value"] == "Work key"
    check_accessibility(page, "rename form")

    field.fill("   ")
    passkeys.get_by_role("button", name="Save").click()
    expect(passkeys.get_by_text("Give the passkey a name.")).to_be_visible()
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    check_light_and_dark(page, "rename form, 422 error")

    field.fill("Desk key")
    passkeys.get_by_role("button", name="Save").click()
    expect(page.locator("#announcer")).to_have_text("Passkey renamed to “Desk key”.")

    passkeys.get_by_role("link", name="Remove Desk key").click()
    expect(passkeys.get_by_text("Remove “Desk key”?")).to_be_focused()
    check_light_and_dark(page, "remove confirmation")
    passkeys.get_by_role("link", name="Cancel").click()
    make_stale(server, username)  # the sign-in is no longer recent (SPEC §4.1)
    passkeys.get_by_role("link", name="Remove Desk key").click()
    # Not recent: the question and "Confirm it's you" are one step, its heading focused.
    expect(passkeys.get_by_role("heading", name="Confirm it's you")).to_be_focused()
    expect(passkeys.get_by_text("Remove “Desk key”?")).to_be_visible()
    expect(passkeys.get_by_role("button", name="Remove passkey")).to_have_count(0)
    check_light_and_dark(page, "removal question with Confirm it's you")
    assert server.status(username)["passkeyCount"] == 1


# ---- recovery codes running low; two sessions -------------------------------------------


def test_low_recovery_codes_and_two_sessions_pass_axe(
    new_context: NewContext, page: Page, server: Server, authenticator: Authenticator
) -> None:
    username = server.create_user("a11y-codes")
    sign_in(page, server, username, password="not-the-password")  # a warning in the activity
    sign_in(page, server, username)
    wait_for_account(page)
    codes = enable_with_new_passkey(page, "Laptop")
    page.locator("#two-factor").get_by_role("link", name="I have saved these codes").click()
    expect_focus_on_heading(page, "Two-factor authentication")
    section = page.locator("#recovery-codes")
    expect(section.get_by_role("heading", name="Recovery codes")).to_be_visible()
    check_accessibility(page, "recovery codes, 10 left")

    # Another browser signs in eight times with a recovery code: two remain.
    use_recovery_codes(new_context(), server, username, codes[:8])
    page.reload()
    expect(section.get_by_text("2 left")).to_be_visible()
    expect(section.get_by_text("Only 2 recovery codes left.")).to_be_visible()
    sessions = page.locator("#sessions").locator("li.item")
    expect(sessions).to_have_count(2)
    expect(page.locator("#activity")).to_contain_text("Recovery code used — 2 left")
    expect(page.locator("#activity li.warning")).to_contain_text("Failed sign-in attempt")
    check_light_and_dark(page, "low recovery codes, two sessions")

    # Regenerating right after enabling: the question first (rev 2), then (the enable
    # ceremony counts as step-up) the codes.
    section.get_by_role("link", name="Regenerate recovery codes").click()
    expect_focus_on_heading(page, "Regenerate recovery codes?")
    section.get_by_role("button", name="Regenerate recovery codes").click()
    expect_focus_on_heading(page, "Save your recovery codes")
    check_accessibility(page, "regenerated codes")


# ---- keyboard only ----------------------------------------------------------------------


def test_enable_two_factor_with_the_keyboard_only(
    page: Page, server: Server, authenticator: Authenticator
) -> None:
    username = server.create_user("a11y-keys")
    page.goto(f"{server.base_url}/login")
    tab_to(page, "Skip to content")
    expect(page.get_by_role("link", name="Skip to content")).to_be_visible()
    tab_to(page, "Username")
    page.keyboard.type(username)
    tab_to(page, "Password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    wait_for_account(page)

    tab_to(page, "Enable two-factor authentication")
    expect_visible_focus_ring(page)
    page.keyboard.press("Enter")
    expect_focus_on_heading(page, "Turn on two-factor authentication")
    tab_to(page, "Passkey name")
    page.keyboard.press("Control+A")
    page.keyboard.type("Keyboard key")
    tab_to(page, "Register passkey and turn on")
    expect_visible_focus_ring(page)
    page.keyboard.press("Enter")
    expect_focus_on_heading(page, "Save your recovery codes")
    tab_to(page, "I have saved these codes")
    expect_visible_focus_ring(page)
    page.keyboard.press("Enter")
    expect_focus_on_heading(page, "Two-factor authentication")
    expect(page.locator("[data-2fa-status]")).to_have_text("On")
    status = server.status(username)
    assert status["user2faEnabled"] and status["passkeyCount"] == 1
    passkeys = page.locator("#passkeys")
    expect(passkeys).to_contain_text("Keyboard key")

    # Rename by keyboard: the form's field takes the focus; Enter saves.
    tab_to(page, "Rename Keyboard key")
    page.keyboard.press("Enter")
    expect(passkeys.get_by_role("listitem").get_by_label("Passkey name")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("Typed key")
    page.keyboard.press("Enter")
    expect(page.locator("#announcer")).to_have_text("Passkey renamed to “Typed key”.")
    expect_focus_on_heading(page, "Passkeys")

    # A refused ceremony (this authenticator is registered already): the message is in the
    # alert next to the button, and the focus is back on the button.
    tab_to(page, "Add a passkey")
    page.keyboard.press("Enter")
    expect(passkeys.locator("[data-passkey-status]")).to_have_text(
        "This device already has a passkey for your account."
    )
    expect(passkeys.get_by_role("button", name="Add a passkey")).to_be_focused()
    assert server.status(username)["passkeyCount"] == 1


# ---- reduced motion and the dark colour scheme ------------------------------------------


def test_reduced_motion_and_dark_scheme_pass_axe(new_context: NewContext, server: Server) -> None:
    page = new_context(color_scheme="dark", reduced_motion="reduce").new_page()
    add_authenticator(page)
    username = server.create_user("a11y-dark")
    page.goto(f"{server.base_url}/login")
    # The dark palette is in use, and nothing moves.
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)", background
    transition = page.evaluate(
        "() => getComputedStyle(document.querySelector('button')).transitionDuration"
    )
    assert transition == "0s", transition
    check_accessibility(page, "login, dark, reduced motion")

    sign_in(page, server, username)
    wait_for_account(page)
    add_passkey(page, "Dark key")
    check_accessibility(page, "account, dark, reduced motion")
    passkeys = page.locator("#passkeys")
    make_stale(server, username)
    passkeys.get_by_role("link", name="Remove Dark key").click()  # one combined step
    expect(passkeys.get_by_role("button", name="Verify with a passkey")).to_be_visible()
    check_accessibility(page, "step-up, dark, reduced motion")
