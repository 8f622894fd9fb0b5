"""Password change and recent authentication (SPEC §4.1, §9): with a passkey on the account,
a stale session confirms it's you with a passkey first; without one, "Current password" is
the confirmation (and counts as recent authentication afterwards)."""

from __future__ import annotations

from sqlmodel import select

from models import AuthSession
from tests.helpers import PASSWORD, query, reload_user
from tests.helpers.account import move_step_up
from web.passwords import verify_password

NEW = "plum orbit lantern 1987"
CONFIRM = "Confirm it's you"


def change(client, current: str = PASSWORD, new: str = NEW):
    data = {"current_password": current, "new_password": new}
    return client.htmx("POST", "/account/password", data)


def test_a_stale_session_with_a_passkey_confirms_with_it_first(auth, client, database):
    auth.login()
    assert auth.add_passkey("Work key").status_code == 200
    move_step_up(database, 11)  # past the default 600 seconds

    step = client.htmx("GET", "/account/password/change")
    assert step.status_code == 200
    assert CONFIRM in step.text and "Verify with a passkey" in step.text
    assert "Current password" not in step.text
    assert 'data-start="/account/confirm/start"' in step.text

    refused = change(client)  # a stolen stale cookie plus the password is not enough
    assert refused.status_code == 200 and CONFIRM in refused.text
    assert verify_password(reload_user(database).password_hash, PASSWORD)

    credential = auth.assertion("/account/confirm/start", {"then": "password"})
    confirmed = client.json_post(
        "/account/confirm/finish", {"credential": credential, "then": "password"}
    )
    assert confirmed.status_code == 200, confirmed.text
    assert "Current password" in confirmed.text and "Save password" in confirmed.text
    done = change(client)
    assert done.status_code == 200 and "Your password was changed" in done.text
    assert verify_password(reload_user(database).password_hash, NEW)


def test_without_a_passkey_the_current_password_is_the_confirmation(auth, client, database):
    auth.login()
    move_step_up(database, 11)
    form = client.htmx("GET", "/account/password/change")
    assert CONFIRM not in form.text and "Current password" in form.text
    done = change(client)
    assert done.status_code == 200, done.text
    (session,) = query(database, select(AuthSession))
    assert session.reauth_at is not None  # now recent: a password confirmation (SPEC §9)
    assert client.page("/account").status_code == 200


def test_a_recent_session_with_a_passkey_changes_at_once(auth, client, database):
    auth.login()
    auth.add_passkey("Work key")
    form = client.htmx("GET", "/account/password/change")
    assert CONFIRM not in form.text and "Current password" in form.text
    assert change(client).status_code == 200
    assert verify_password(reload_user(database).password_hash, NEW)
