from playwright.sync_api import expect

from tests.helpers.e2e import sign_in


def test_sign_in_add_passkey_then_passkey_autofill_signs_in(page, server, authenticator):
    username = server.create_user()
    sign_in(page, server, username)
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
    passkeys = page.locator("#passkeys")
    passkeys.get_by_label("Passkey name").fill("Laptop")
    passkeys.get_by_role("button", name="Add a passkey").click()
    expect(passkeys.get_by_text("Passkey “Laptop” added.")).to_be_visible()
    assert len(authenticator.credentials()) == 1
    page.get_by_role("banner").get_by_role("button", name="Sign out").click()
    # The login page starts conditional mediation; the virtual authenticator answers it.
    expect(page.get_by_role("heading", name="Account security")).to_be_visible()
