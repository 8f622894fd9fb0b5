"""Edges found in review: a lockout ends every pending sign-in; a refused action after a
step-up leaves the session as it was; odd paths and vanished sessions never give a 500."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import delete, select, update

from models import AuthSession, Passkey, RecoveryCode, User, utcnow
from models.session import PARTIAL
from tests.helpers import ORIGIN, PASSWORD, query, reload_user
from tests.softauthn import SoftAuthenticator
from web import passkeys as passkeys_module


def two_factor_user(auth) -> None:
    auth.login()
    assert auth.add_passkey("Key").status_code == 200
    assert auth.enable_2fa().status_code == 200
    auth.logout()


def test_a_lockout_ends_every_pending_sign_in(auth, client, make_client, database):
    two_factor_user(auth)
    others = []
    for _ in range(2):  # the attacker holds more partial sessions, made before the lock
        other = make_client()
        other.page("/login")
        other.form("/login", {"username": "alice", "password": PASSWORD})
        others.append(other)
    auth.login()
    for _ in range(5):
        client.page("/login/2fa")
        client.form("/login/2fa/recovery", {"code": "AAAA-BBBB-CCCC"})
    assert reload_user(database).locked_until is not None
    assert query(database, select(AuthSession).where(AuthSession.state == PARTIAL)) == []
    for other in others:  # no more guesses from the sessions opened before the lock
        response = other.form("/login/2fa/recovery", {"code": "AAAA-BBBB-CCCC"})
        assert response.status_code == 303 and response.headers["location"] == "/login"


def test_a_locked_account_finishes_no_second_factor(auth, client, database):
    two_factor_user(auth)
    auth.login()
    client.page("/login/2fa")
    credential = auth.assertion("/login/2fa/passkey/start")
    with database.session() as db:  # locked meanwhile (by another sign-in's failures)
        db.exec(update(User).values(locked_until=utcnow() + timedelta(minutes=15)))
        db.commit()
    response = client.json_post("/login/2fa/passkey/finish", {"credential": credential})
    # SPEC §9 (rev 2): attempts while locked get 429 + Retry-After and the lock message
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "Try again after" in response.json()["detail"]
    assert all(s.state == PARTIAL for s in query(database, select(AuthSession)))


def test_a_refused_removal_after_a_step_up_keeps_the_session(auth, client, database, authn):
    auth.login()
    assert auth.add_passkey("First").status_code == 200
    second_device = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    options = client.json_post("/account/passkeys/start", {"name": "Second"}).json()
    finish = {"credential": second_device.register(options), "name": "Second"}
    assert client.json_post("/account/passkeys/finish", finish).status_code == 200
    assert auth.enable_2fa().status_code == 200
    first, second = query(database, select(Passkey).order_by(Passkey.id))
    # a fresh session (no step-up yet) starts removing the first passkey …
    auth.logout()
    auth.login()
    client.page("/login/2fa")
    done = client.json_post(
        "/login/2fa/passkey/finish", {"credential": auth.assertion("/login/2fa/passkey/start")}
    )
    assert done.status_code == 200
    with database.session() as db:  # (age the step-up of that sign-in)
        for session in db.exec(select(AuthSession)):
            session.reauth_at = None
            db.add(session)
        db.commit()
    client.page("/account")
    credential = auth.assertion(f"/account/passkeys/{first.id}/remove/start")
    # … while the other passkey is removed elsewhere: now the first one is the last
    with database.session() as db:
        db.exec(delete(Passkey).where(Passkey.id == second.id))
        db.commit()
    refused = client.json_post("/account/passkeys/remove/finish", {"credential": credential})
    assert refused.status_code == 409
    assert [p.id for p in query(database, select(Passkey))] == [first.id]
    page = client.get("/account", follow_redirects=False)
    assert page.status_code == 200  # still signed in: the step-up was undone with the refusal
    (session,) = query(database, select(AuthSession))
    assert session.reauth_at is None


def test_control_characters_in_a_path_never_give_a_500(client):
    response = client.get("/account/%0d%0aX-Evil:%201", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?return_to=/account/%0D%0AX-Evil%3A%201"
    assert "x-evil" not in response.headers
    # rev 2: a partial is no place to land after signing in: htmx gets no return_to
    partial = client.get("/account/%0d%0aX-Evil:%201", headers={"HX-Request": "true"})
    assert partial.status_code == 200 and partial.headers["hx-redirect"] == "/login"


def test_a_session_ended_during_the_second_factor_is_a_401(auth, client, database, monkeypatch):
    two_factor_user(auth)
    auth.login()
    client.page("/login/2fa")
    credential = auth.assertion("/login/2fa/passkey/start")
    verify = passkeys_module.verify_authentication

    def verify_then_sign_out_elsewhere(db, *args, **kwargs):
        passkey = verify(db, *args, **kwargs)
        db.exec(delete(AuthSession))  # "sign out everywhere" lands in between
        return passkey

    monkeypatch.setattr(passkeys_module, "verify_authentication", verify_then_sign_out_elsewhere)
    response = client.json_post("/login/2fa/passkey/finish", {"credential": credential})
    assert response.status_code == 401
    assert re.search("session ended", response.json()["detail"])
    assert len(query(database, select(RecoveryCode))) == 10
