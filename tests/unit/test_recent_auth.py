"""Recent authentication ("Confirm it's you", SPEC §4.1, §9) through the handlers, with the
software authenticator: a stale session can't add a passkey, enable with a new one, remove or
regenerate until it confirms; a new authenticator can't answer the confirmation; a wrong
password there counts toward the lockout."""

from __future__ import annotations

import html
from datetime import timedelta

from sqlmodel import select, update
from webauthn.helpers import bytes_to_base64url

from models import AuthSession, Passkey, RecoveryCode, User, utcnow
from tests.helpers import ORIGIN, PASSWORD, query, reload_user
from tests.helpers.account import (
    add_key,
    codes_in,
    enabled_with_passkey,
    kinds,
    move_step_up,
    my_session,
)
from tests.softauthn import SoftAuthenticator
from web.sessions import COOKIE

CONFIRM = "Confirm it's you"


def stale(database) -> None:
    move_step_up(database, 11)  # past the default 600 seconds


def passkey_names(database) -> list[str]:
    return [p.name for p in query(database, select(Passkey).order_by(Passkey.id))]


def test_a_fresh_sign_in_adds_a_passkey_at_once(auth, database):
    auth.login()
    assert auth.add_passkey("First").status_code == 200
    assert passkey_names(database) == ["First"]


def test_a_stale_session_cannot_start_adding_a_passkey(auth, client, database):
    auth.login()
    assert auth.add_passkey("First").status_code == 200
    stale(database)
    events_before = kinds(database)

    refused = client.json_post("/account/passkeys/start", {"name": "Thief's key"})

    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == "reauth-required"
    assert body["step"] == "/account/confirm?then=passkeys"
    assert passkey_names(database) == ["First"]
    assert kinds(database) == events_before
    # the step the shim loads: "Confirm it's you" with a passkey (the account has one)
    step = client.htmx("GET", body["step"])
    assert step.status_code == 200
    assert CONFIRM in html.unescape(step.text) and "Verify with a passkey" in step.text
    assert 'data-start="/account/confirm/start"' in step.text
    assert 'name="password"' not in step.text
    assert "Sign in again" in step.text and "Cancel" in step.text


def test_a_new_authenticator_cannot_answer_the_confirmation(auth, client, database):
    """The takeover: a stolen stale cookie, the thief's own (empty) authenticator."""
    auth.login()
    assert auth.add_passkey("Owner's key").status_code == 200
    stale(database)
    options = client.json_post("/account/confirm/start", {"then": "passkeys"})
    assert options.status_code == 200
    allowed = options.json()["allowCredentials"]
    assert len(allowed) == 1  # only the owner's passkey
    # the thief's own authenticator holds nothing for the site: it can only answer with a
    # credential the account doesn't have (here the owner's signature under another id)
    forged = auth.authn.authenticate(options.json())
    forged["id"] = forged["rawId"] = "AAAAAAAAAAAAAAAAAAAAAA"  # not the owner's credential
    refused = client.json_post(
        "/account/confirm/finish", {"credential": forged, "then": "passkeys"}
    )
    assert 400 <= refused.status_code < 500
    assert my_session(database, client).reauth_at < utcnow() - timedelta(minutes=10)
    assert client.json_post("/account/passkeys/start", {"name": "x"}).status_code == 403


def test_confirming_with_a_passkey_then_adding_one(auth, client, database):
    auth.login()
    assert auth.add_passkey("Owner's key").status_code == 200
    [owner_key] = query(database, select(Passkey))
    first = my_session(database, client)
    stale(database)
    old_cookie = client.cookies.get(COOKIE)

    credential = auth.assertion("/account/confirm/start", {"then": "passkeys"})
    confirmed = client.json_post(
        "/account/confirm/finish", {"credential": credential, "then": "passkeys"}
    )

    assert confirmed.status_code == 200, confirmed.text
    assert "You can go on now" in html.unescape(confirmed.text)
    assert client.cookies.get(COOKIE) != old_cookie  # a confirmation rotates the token
    session = my_session(database, client)
    assert session.id == first.id
    assert session.reauth_at > utcnow() - timedelta(seconds=30)
    assert session.passkey_id == first.passkey_id  # the sign-in passkey is kept (None here)
    assert session.confirmed_passkey_ids == [owner_key.id]
    assert kinds(database)[-1] == "reauth"
    add_key(auth, "Second")  # offered again: a new press
    assert passkey_names(database) == ["Owner's key", "Second"]


def test_password_confirmation_without_a_passkey(auth, client, database):
    auth.login()
    stale(database)
    refused = client.json_post("/account/passkeys/start", {"name": "New"})
    assert refused.status_code == 403 and refused.json()["code"] == "reauth-required"
    step = client.htmx("GET", refused.json()["step"])
    assert 'name="password"' in step.text and ">Confirm</button>" in step.text
    assert 'autocomplete="current-password"' in step.text

    wrong = client.htmx("POST", "/account/confirm", {"then": "passkeys", "password": "nope nope"})
    assert wrong.status_code == 422
    assert 'role="alert"' in wrong.text and "That password is not right" in wrong.text
    assert reload_user(database).failed_login_count == 1  # counts toward the lockout
    assert kinds(database)[-1] == "reauth_failed"
    assert client.json_post("/account/passkeys/start", {"name": "New"}).status_code == 403

    right = client.htmx("POST", "/account/confirm", {"then": "passkeys", "password": PASSWORD})
    assert right.status_code == 200
    assert kinds(database)[-1] == "reauth"
    assert reload_user(database).failed_login_count == 1  # a confirmation is not a sign-in
    assert auth.add_passkey("New").status_code == 200


def test_password_confirmation_works_without_javascript(auth, client, database):
    auth.login()
    stale(database)
    page = client.page("/account/confirm?then=passkeys")
    assert page.status_code == 200 and "<html" in page.text and CONFIRM in html.unescape(page.text)
    done = client.form("/account/confirm", {"then": "passkeys", "password": PASSWORD})
    assert done.status_code == 200 and "<html" in done.text
    assert my_session(database, client).reauth_at > utcnow() - timedelta(seconds=30)


def test_five_wrong_confirmations_lock_the_account(auth, client, database):
    auth.login()
    stale(database)
    for _ in range(4):
        answer = client.htmx("POST", "/account/confirm", {"then": "passkeys", "password": "x" * 9})
        assert answer.status_code == 422
    fifth = client.htmx("POST", "/account/confirm", {"then": "passkeys", "password": "x" * 9})
    assert fifth.status_code == 422
    assert reload_user(database).locked_until is not None
    locked = client.htmx("POST", "/account/confirm", {"then": "passkeys", "password": PASSWORD})
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    assert "Try again after" in locked.text
    assert my_session(database, client).reauth_at < utcnow() - timedelta(minutes=10)


def test_a_password_confirmation_is_refused_when_a_passkey_exists(auth, client, database):
    auth.login()
    assert auth.add_passkey("Key").status_code == 200
    stale(database)
    answer = client.htmx("POST", "/account/confirm", {"then": "passkeys", "password": PASSWORD})
    assert answer.status_code == 409
    assert my_session(database, client).reauth_at < utcnow() - timedelta(minutes=10)


def test_unknown_confirmation_targets_are_refused(auth, client, database):
    auth.login()
    for then in ("", "sessions", "../x", "<script>"):
        assert client.page(f"/account/confirm?then={then}").status_code == 422
        answer = client.form("/account/confirm", {"then": then, "password": PASSWORD})
        assert answer.status_code == 422


def test_regenerating_with_a_password_confirmation(auth, client, database):
    auth.login()
    with database.session() as db:  # 2FA on, no passkey (signed in with a recovery code)
        db.exec(update(User).values(user_2fa_enabled=True))
        db.exec(update(AuthSession).values(mfa_verified=True, acr="aal2", amr=["pwd", "otp"]))
        db.commit()
    stale(database)
    asked = client.htmx("POST", "/account/recovery-codes/regenerate")
    assert asked.status_code == 200 and CONFIRM in html.unescape(asked.text)
    assert 'name="password"' in asked.text
    done = client.htmx("POST", "/account/confirm", {"then": "recovery-codes", "password": PASSWORD})
    assert done.status_code == 200
    assert len(codes_in(done.text)) == 10  # goes on at once
    assert len(query(database, select(RecoveryCode))) == 10


def test_enable_with_a_new_passkey_needs_recent_authentication(auth, client, database):
    auth.login()
    stale(database)
    refused = client.json_post("/account/two-factor/enable/start", {"mode": "new", "name": "K"})
    assert refused.status_code == 403
    assert refused.json()["step"] == "/account/confirm?then=two-factor"
    assert passkey_names(database) == []
    assert not reload_user(database).user_2fa_enabled


def test_enable_with_an_existing_passkey_is_itself_the_assertion(auth, client, database):
    auth.login()
    assert auth.add_passkey("Key").status_code == 200
    stale(database)
    assert auth.enable_2fa().status_code == 200
    assert reload_user(database).user_2fa_enabled


def test_a_recovery_code_sign_in_adds_a_passkey_without_an_assertion(auth, client, database):
    codes = enabled_with_passkey(auth)
    auth.logout()
    client.page("/login")
    client.form("/login", {"username": "alice", "password": PASSWORD})
    client.page("/login/2fa")
    used = client.form("/login/2fa/recovery", {"code": codes[0]})
    assert used.status_code == 303
    client.page("/account")
    lost = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)  # the old passkey is lost
    options = client.json_post("/account/passkeys/start", {"name": "Replacement"})
    assert options.status_code == 200
    credential = lost.register(options.json())
    added = client.json_post(
        "/account/passkeys/finish", {"credential": credential, "name": "Replacement"}
    )
    assert added.status_code == 200
    assert passkey_names(database) == ["Work key", "Replacement"]


def test_removing_a_passkey_ends_sessions_that_confirmed_with_it(
    auth, client, database, make_client
):
    auth.login()
    assert auth.add_passkey("A").status_code == 200
    add_key(auth, "B")
    a, b = query(database, select(Passkey).order_by(Passkey.id))
    # a second browser signs in with the password and confirms with B
    other = make_client()
    other.page("/login")
    other.form("/login", {"username": "alice", "password": PASSWORD})
    other.page("/account")
    other_id = my_session(database, other).id
    with database.session() as db:
        db.exec(
            update(AuthSession)
            .where(AuthSession.id == other_id)
            .values(reauth_at=utcnow() - timedelta(minutes=30))
        )
        db.commit()
    options = other.json_post("/account/confirm/start", {"then": "passkeys"})
    allow = {c["id"] for c in options.json()["allowCredentials"]}
    assert len(allow) == 2
    credential = auth.authn.authenticate(options.json())
    done = other.json_post(
        "/account/confirm/finish", {"credential": credential, "then": "passkeys"}
    )
    assert done.status_code == 200, done.text
    row = my_session(database, other)
    by_credential = {bytes_to_base64url(p.credential_id): p.id for p in (a, b)}
    confirmed_with = by_credential[credential["id"]]
    assert row.passkey_id is None and row.confirmed_passkey_ids == [confirmed_with]
    kept = ({a.id, b.id} - {confirmed_with}).pop()
    # removing the passkey it did not use leaves that session alone
    assert client.htmx("POST", f"/account/passkeys/{kept}/remove").status_code == 200
    assert len(query(database, select(AuthSession).where(AuthSession.id == other_id))) == 1
    # removing the one it confirmed with ends it
    removed = client.htmx("POST", f"/account/passkeys/{confirmed_with}/remove")
    assert removed.status_code == 200, removed.text
    assert query(database, select(AuthSession).where(AuthSession.id == other_id)) == []
    assert other.get("/account", follow_redirects=False).status_code in (303, 401)
    assert kinds(database).count("passkey_removed") == 2
    assert len(query(database, select(AuthSession))) == 1  # this browser's own session
