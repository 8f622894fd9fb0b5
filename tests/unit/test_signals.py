"""What the passkey shim needs for the WebAuthn Signal API (SPEC §5.6, §9): the code
`unknown-credential` (with the credential ID) when a passkey sign-in presents a credential we
don't know, and the account's current credentials after a passkey sign-in, on the account page
and after a removal. The shim's calls themselves are checked in Chromium (tests/e2e)."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select, update
from webauthn.helpers import bytes_to_base64url

from models import AuthSession, Passkey, WebAuthnChallenge, utcnow
from tests.helpers import ORIGIN, query, reload_user
from tests.softauthn import SoftAuthenticator

NOT_REGISTERED = "That passkey is not registered with this account."


def ids(database) -> list[str]:
    return [bytes_to_base64url(p.credential_id) for p in query(database, select(Passkey))]


def sign_in_options(client) -> dict:
    client.form("/logout")
    client.page("/login")
    response = client.json_post("/login/passkey/start", {})
    assert response.status_code == 200
    return response.json()


def fresh_confirmation(database) -> None:
    """Removal needs recent authentication: as if the user had just confirmed it."""
    with database.session() as db:
        db.exec(update(AuthSession).values(reauth_at=utcnow()))
        db.commit()


def test_removed_passkey_at_sign_in_is_unknown_credential(auth, client, database):
    auth.login()
    assert auth.add_passkey("Old key").status_code == 200
    (old,) = query(database, select(Passkey))
    fresh_confirmation(database)
    client.page("/account")
    assert client.htmx("POST", f"/account/passkeys/{old.id}/remove").status_code == 200
    assert query(database, select(Passkey)) == []
    options = sign_in_options(client)
    credential = auth.authn.authenticate(options, credential_id=old.credential_id)
    response = client.json_post("/login/passkey/finish", {"credential": credential})
    assert response.status_code == 400
    assert response.json() == {
        "detail": NOT_REGISTERED,
        "code": "unknown-credential",
        "credentialId": bytes_to_base64url(old.credential_id),
    }
    assert query(database, select(AuthSession)) == []
    assert all(c.consumed_at for c in query(database, select(WebAuthnChallenge)))


def test_unknown_handle_and_unknown_credential(client, user, database):
    stranger = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    options = sign_in_options(client)
    registered = stranger.register(
        {"challenge": options["challenge"], "rp": {"id": "localhost"}, "user": {"id": "bm9ib2R5"}}
    )
    credential = stranger.authenticate(options)
    response = client.json_post("/login/passkey/finish", {"credential": credential})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unknown-credential" and body["credentialId"] == registered["id"]


@pytest.mark.parametrize("how", ["bad-signature", "wrong-owner-handle", "no-handle"])
def test_a_known_credential_that_fails_is_not_unknown(auth, client, database, make_client, how):
    auth.login()
    assert auth.add_passkey("Key").status_code == 200
    options = sign_in_options(client)
    overrides: dict = {
        "bad-signature": {"signature": b"\x30\x06\x02\x01\x01\x02\x01\x01"},
        "wrong-owner-handle": {"user_handle": b"someone else entirely"},
        "no-handle": {"user_handle": None},
    }[how]
    credential = auth.authn.authenticate(options, **overrides)
    response = client.json_post("/login/passkey/finish", {"credential": credential})
    assert response.status_code == 400
    assert "code" not in response.json()  # never tell a password manager to drop a good passkey
    assert len(query(database, select(Passkey))) == 1


def test_passkey_sign_in_answers_the_accepted_credentials(auth, client, database):
    auth.login()
    assert auth.add_passkey("One").status_code == 200
    options = sign_in_options(client)
    credential = auth.authn.authenticate(options)
    response = client.json_post("/login/passkey/finish", {"credential": credential})
    assert response.status_code == 200
    alice = reload_user(database)
    assert response.json() == {
        "redirect": "/account",
        "signal": {
            "rpId": "localhost",
            "userId": bytes_to_base64url(alice.webauthn_handle),
            "allAcceptedCredentialIds": ids(database),
        },
    }


def marker(text: str) -> dict[str, str]:
    found = re.search(r"<div hidden data-signal-accepted([^>]*)>", text)
    assert found, "no Signal API marker"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', found.group(1)))


def test_the_account_page_carries_the_current_credentials_once(auth, client, database):
    auth.login()
    assert auth.add_passkey("One").status_code == 200
    page = client.page("/account")
    alice = reload_user(database)
    found = marker(page.text)
    assert found["rp-id"] == "localhost"
    assert found["user-id"] == bytes_to_base64url(alice.webauthn_handle)
    assert found["credential-ids"].split() == ids(database)
    assert "data-signal-on-load" in page.text
    # background refreshes of a section don't carry it (once per page load)
    for name in ("passkeys", "two-factor", "sessions", "activity", "requirement-notice"):
        assert "data-signal-accepted" not in client.htmx("GET", f"/account/{name}").text


def test_removal_answers_the_remaining_credentials(auth, client, database):
    auth.login()
    assert auth.add_passkey("One").status_code == 200
    (one,) = query(database, select(Passkey))
    fresh_confirmation(database)
    response = client.htmx("POST", f"/account/passkeys/{one.id}/remove")
    assert response.status_code == 200, response.text
    assert marker(response.text)["credential-ids"] == ""
    assert query(database, select(Passkey)) == []
