"""The main flows through the test client, end to end in-process."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlmodel import select

from models import AuthSession, Passkey, RecoveryCode
from tests.helpers import ORIGIN, query, reload_user
from tests.softauthn import SoftAuthenticator


def test_password_sign_in_reaches_account_page(auth, client):
    response = auth.login()
    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    page = client.page("/account")
    assert page.status_code == 200
    assert "Account security" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_add_passkey_enable_2fa_and_second_factor(auth, client, database):
    auth.login()
    added = auth.add_passkey("Work key")
    assert added.status_code == 200, added.text
    assert "Work key" in added.text
    enabled = auth.enable_2fa()
    assert enabled.status_code == 200, enabled.text
    assert "Save your recovery codes" in enabled.text
    codes = re.findall(r"<code>([A-Z0-9-]+)</code>", enabled.text)
    assert len(codes) == 10
    user = reload_user(database)
    assert user.user_2fa_enabled
    assert len(query(database, select(RecoveryCode))) == 10

    client.page("/account")
    auth.logout()
    response = auth.login()
    assert response.headers["location"] == "/login/2fa"
    assert client.page("/account", follow_redirects=False).status_code == 303
    page = client.page("/login/2fa")
    assert "Two-factor authentication" in page.text
    credential = auth.assertion("/login/2fa/passkey/start")
    finished = client.json_post("/login/2fa/passkey/finish", {"credential": credential})
    assert finished.status_code == 200, finished.text
    assert finished.headers["hx-redirect"] == "/account"
    sessions = query(database, select(AuthSession))
    assert [s.amr for s in sessions] == [["pwd", "hwk"]]
    assert sessions[0].acr == "aal2"
    assert client.page("/account").status_code == 200
    assert len(query(database, select(Passkey))) == 1


def test_every_section_answers_its_partial_and_the_page(auth, client):
    """Each section is reachable on its own (htmx) and as the whole page (no JS)."""
    auth.login()
    for name in ["two-factor", "passkeys", "recovery-codes", "sessions", "activity"]:
        partial = client.htmx("GET", f"/account/{name}")
        assert partial.status_code == 200, name
        assert f'id="{name}"' in partial.text and "<html" not in partial.text
        page = client.get(f"/account/{name}")
        assert page.status_code == 200 and "<html" in page.text, name
        assert page.headers["vary"] == "HX-Request"


ICLOUD = uuid.UUID("fbfc3007-154e-4ecc-8c0b-6e020557d7bd").bytes


@pytest.mark.parametrize(
    ("aaguid", "typed", "stored"),
    [
        (ICLOUD, None, "iCloud Keychain"),  # the prefilled default, untouched
        (ICLOUD, "Work laptop", "Work laptop"),  # what the person typed wins
        (bytes(16), None, "Passkey"),  # unknown provider: the browser-and-OS default
    ],
)
def test_a_new_passkey_is_named_after_its_provider_when_known(
    auth, client, database, aaguid, typed, stored
):
    auth.login()
    page = client.page("/account")
    default = re.search(r'id="new-passkey-name"[^>]*value="([^"]*)"', page.text)
    default = default or re.search(r'value="([^"]*)"[^>]*id="new-passkey-name"', page.text)
    name = typed or default.group(1)
    auth.authn = SoftAuthenticator(rp_id="localhost", origin=ORIGIN, aaguid=aaguid)
    response = auth.add_passkey(name)
    assert response.status_code == 200, response.text
    assert [p.name for p in query(database, select(Passkey))] == [stored]
