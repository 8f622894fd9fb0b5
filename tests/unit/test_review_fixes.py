"""Regression tests for the security review of issues 9 and 11 (each fails before its fix):
enroll-at-login from a stolen stale cookie, leaked lockout reservations, enabling with a new
passkey counted as recent authentication, BARYCENTER_ORIGIN validation, recency re-checked at
a ceremony's finish, step-up starts without an explicit allow list, 429s counted as failures,
SQL parameters in logs."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from sqlmodel import select, update

from models import (
    AuthSession,
    Passkey,
    RecoveryCode,
    SecurityEvent,
    User,
    WebAuthnChallenge,
    utcnow,
)
from tests.helpers import ORIGIN, PASSWORD, query, reload_user
from tests.softauthn import SoftAuthenticator
from web.sessions import COOKIE
from web.tokens import digest


@pytest.fixture
def admin(admin):
    """The shared admin API fixture (tests/unit/conftest.py), answering with the first
    field's value instead of the whole `data`."""
    return lambda document: next(iter(admin(document).values()))


def passkeys_stored(database) -> list[Passkey]:
    return query(database, select(Passkey))


def session_row(database, client) -> AuthSession | None:
    token = client.cookies.get(COOKIE)
    rows = query(database, select(AuthSession).where(AuthSession.token_hash == digest(token)))
    return rows[0] if rows else None


def age_sessions(database, minutes: float) -> None:
    """The sign-in (and any confirmation) happened `minutes` ago."""
    then = utcnow() - timedelta(minutes=minutes)
    with database.session() as db:
        db.exec(update(AuthSession).values(auth_time=then, reauth_at=then))
        db.commit()


def kinds(database) -> list[str]:
    return [e.kind for e in query(database, select(SecurityEvent).order_by(SecurityEvent.id))]


# --------------------------------------------------------------------------------------
# 1. Enroll-at-login from a stolen stale cookie
# --------------------------------------------------------------------------------------


def test_a_stolen_stale_cookie_cannot_enroll_at_login(auth, client, make_client, admin, database):
    auth.login()  # the owner: password only, no passkey
    thief = make_client()
    thief.cookies.set(COOKIE, client.cookies.get(COOKIE))
    admin(
        'mutation { r: setUser2faRequired(username: "alice", required: true, graceDays: 7) '
        "{ success } }"
    )
    age_sessions(database, 20)
    with database.session() as db:  # the grace period ends
        db.exec(update(User).values(requires_2fa_from=utcnow() - timedelta(seconds=1)))
        db.commit()

    page = thief.page("/login/2fa")  # the next request demotes the session
    assert page.status_code == 200
    assert session_row(database, thief).partial_reason == "admin-required"
    assert "Password" in page.text and "Confirm" in page.text
    assert "Register passkey and sign in" not in page.text
    started = thief.json_post("/login/2fa/enroll/start", {"name": "Thief"})
    assert started.status_code == 403, started.text
    assert started.json()["code"] == "reauth-required"
    # nor with options the thief made up (no challenge of ours behind them)
    fake = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    options = {
        "challenge": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "rp": {"id": "localhost", "name": "x"},
        "user": {"id": "AAAA", "name": "alice", "displayName": "alice"},
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
    }
    done = thief.json_post(
        "/login/2fa/enroll/finish", {"credential": fake.register(options), "name": "Thief"}
    )
    assert done.status_code == 400
    assert passkeys_stored(database) == []
    assert query(database, select(RecoveryCode)) == []
    assert session_row(database, client) is not None  # the owner's session did not end


def test_a_demoted_session_enters_its_password_before_enrolling(
    auth, client, authn, admin, database
):
    auth.login()
    admin('mutation { r: setUser2faRequired(username: "alice", required: true) { success } }')
    assert client.page("/login/2fa").status_code == 200  # demoted: admin-required
    wrong = client.form("/login/2fa/password", {"password": "not the password"})
    assert wrong.status_code == 422
    assert 'role="alert"' in wrong.text and "That password is not right" in wrong.text
    assert reload_user(database).failed_login_count == 1  # counted by the lockout
    assert client.json_post("/login/2fa/enroll/start", {"name": "Phone"}).status_code == 403

    right = client.form("/login/2fa/password", {"password": PASSWORD})
    assert right.status_code == 303 and right.headers["location"] == "/login/2fa"
    assert reload_user(database).failed_login_count == 1  # not a completed sign-in yet
    page = client.page("/login/2fa")
    assert "Register passkey and sign in" in page.text
    options = client.json_post("/login/2fa/enroll/start", {"name": "Phone"})
    assert options.status_code == 200, options.text
    done = client.json_post(
        "/login/2fa/enroll/finish", {"credential": authn.register(options.json()), "name": "Phone"}
    )
    assert done.status_code == 200, done.text
    assert [p.name for p in passkeys_stored(database)] == ["Phone"]
    assert session_row(database, client).state == "full"
    assert reload_user(database).failed_login_count == 0


def test_enroll_at_login_window_passing_between_start_and_finish(auth, client, authn, database):
    with database.session() as db:
        db.exec(update(User).values(requires_2fa=True))
        db.commit()
    auth.client.page("/login")
    client.form("/login", {"username": "alice", "password": PASSWORD})  # fresh: allowed
    options = client.json_post("/login/2fa/enroll/start", {"name": "Phone"})
    assert options.status_code == 200, options.text
    age_sessions(database, 11)
    done = client.json_post(
        "/login/2fa/enroll/finish", {"credential": authn.register(options.json()), "name": "Phone"}
    )
    assert done.status_code == 403 and done.json()["code"] == "reauth-required"
    assert passkeys_stored(database) == []
    assert session_row(database, client).state == "partial"


def test_enroll_at_login_is_refused_while_locked(auth, client, database):
    with database.session() as db:
        db.exec(update(User).values(requires_2fa=True))
        db.commit()
    client.page("/login")
    client.form("/login", {"username": "alice", "password": PASSWORD})
    with database.session() as db:
        db.exec(update(User).values(locked_until=utcnow() + timedelta(minutes=15)))
        db.commit()
    refused = client.json_post("/login/2fa/enroll/start", {"name": "Phone"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert query(database, select(WebAuthnChallenge)) == []
    password = client.form("/login/2fa/password", {"password": PASSWORD})
    assert password.status_code == 429
    assert "locked" in html.unescape(password.text)


# --------------------------------------------------------------------------------------
# 2. A reserved lockout attempt can't leak into a permanent 429
# --------------------------------------------------------------------------------------


def counters(database) -> tuple[int, object]:
    user = reload_user(database)
    return user.failed_login_count, user.locked_until


def test_a_confirmation_the_action_refuses_checks_no_password(auth, client, database):
    auth.login()  # 2FA off: regenerating codes is refused anyway
    for _ in range(6):
        refused = client.htmx(
            "POST", "/account/confirm", {"then": "recovery-codes", "password": PASSWORD}
        )
        assert refused.status_code == 409, refused.text
    assert counters(database) == (0, None)
    auth.logout()
    assert auth.login().status_code == 303  # not locked out


def test_an_error_while_checking_gives_the_reservation_back(client, user, database, monkeypatch):
    import web.lockout

    def broken(*_args):
        raise RuntimeError("argon2 crashed")

    monkeypatch.setattr(web.lockout, "verify_password", broken)
    client.page("/login")
    for _ in range(6):
        answer = client.form("/login", {"username": "alice", "password": PASSWORD})
        assert answer.status_code == 500
    assert counters(database) == (0, None)


def test_leaked_reservations_expire_after_the_busy_window(client, user, database, monkeypatch):
    """Even when the reservation can't be given back (a crash), 5 of them hold the account
    for a minute, not forever."""
    import web.lockout

    def broken(*_args):
        raise RuntimeError("argon2 crashed")

    with monkeypatch.context() as patch:
        patch.setattr(web.lockout, "verify_password", broken)
        patch.setattr(web.lockout, "give_back", lambda *_args: None)
        client.page("/login")
        for _ in range(5):
            assert (
                client.form("/login", {"username": "alice", "password": PASSWORD}).status_code
                == 500
            )
    count, until = counters(database)
    assert count == 5 and until is not None
    held = client.form("/login", {"username": "alice", "password": PASSWORD})
    assert held.status_code == 429 and "Retry-After" in held.headers
    assert "Try again in a minute" in html.unescape(held.text)
    with database.session() as db:  # the minute passes
        db.exec(update(User).values(locked_until=utcnow() - timedelta(seconds=1)))
        db.commit()
    assert client.form("/login", {"username": "alice", "password": PASSWORD}).status_code == 303
    assert counters(database) == (0, None)


def test_the_busy_window_is_not_a_lock_for_a_correct_password_in_flight(user, database):
    """The 5th reservation opens the busy window; that attempt, when correct, still signs in
    (only a real lock set meanwhile wins)."""
    from web import lockout
    from web.client import ClientInfo

    with database.session() as db:
        db.exec(update(User).values(failed_login_count=4))
        db.commit()
    info = ClientInfo(ip="127.0.0.1", user_agent="test")
    with database.session() as db:
        checked = lockout.check_password(db, user.id, PASSWORD, info, fail_kind="sign_in_failed")
        lockout.release_attempt(db, checked, completed=True)
    assert counters(database) == (0, None)


# --------------------------------------------------------------------------------------
# 3. Enabling 2FA with a NEW passkey is not recent authentication
# 5. Recent authentication is asked again at a ceremony's finish
# --------------------------------------------------------------------------------------


def set_reauth(database, minutes_ago: float) -> None:
    with database.session() as db:
        db.exec(update(AuthSession).values(reauth_at=utcnow() - timedelta(minutes=minutes_ago)))
        db.commit()


def test_enabling_with_a_new_passkey_does_not_count_as_recent(auth, client, authn, database):
    auth.login()
    set_reauth(database, 5)  # recent, but not now
    before = session_row(database, client)
    options = client.json_post("/account/two-factor/enable/start", {"mode": "new", "name": "Phone"})
    assert options.status_code == 200, options.text
    done = client.json_post(
        "/account/two-factor/enable/finish", {"credential": authn.register(options.json())}
    )
    assert done.status_code == 200, done.text
    after = session_row(database, client)  # a new token
    assert after is not None and after.token_hash != before.token_hash
    assert after.reauth_at == before.reauth_at  # did not move
    assert after.confirmed_passkey_ids == [] and after.amr == ["pwd"]
    assert after.mfa_verified  # still meets the rules with 2FA on
    assert client.page("/account", follow_redirects=False).status_code == 200
    # so 6 minutes later it is stale: the new passkey gave no recent authentication
    set_reauth(database, 11)
    answer = client.json_post("/account/passkeys/start", {"name": "Another"})
    assert answer.status_code == 403 and answer.json()["code"] == "reauth-required"


def test_adding_a_passkey_is_refused_when_the_window_passes_before_the_finish(
    auth, client, authn, database
):
    auth.login()
    options = client.json_post("/account/passkeys/start", {"name": "Late"})
    assert options.status_code == 200, options.text
    set_reauth(database, 11)
    done = client.json_post(
        "/account/passkeys/finish", {"credential": authn.register(options.json()), "name": "Late"}
    )
    assert done.status_code == 403, done.text
    assert done.json()["code"] == "reauth-required"
    assert passkeys_stored(database) == []


def test_enabling_with_a_new_passkey_is_refused_when_the_window_passes(
    auth, client, authn, database
):
    auth.login()
    options = client.json_post("/account/two-factor/enable/start", {"mode": "new", "name": "Late"})
    assert options.status_code == 200, options.text
    set_reauth(database, 11)
    done = client.json_post(
        "/account/two-factor/enable/finish", {"credential": authn.register(options.json())}
    )
    assert done.status_code == 403 and done.json()["code"] == "reauth-required"
    assert passkeys_stored(database) == []
    assert not reload_user(database).user_2fa_enabled
    assert query(database, select(RecoveryCode)) == []


# --------------------------------------------------------------------------------------
# 6. Step-up ceremonies never fall back to "any passkey of the user"
# 7. A 429 on the passkey second factor is not another failure
# --------------------------------------------------------------------------------------


def two_factor_on(auth) -> None:
    auth.login()
    assert auth.add_passkey("Key").status_code == 200
    assert auth.enable_2fa().status_code == 200
    auth.client.page("/account")


def test_a_step_up_start_without_a_passkey_is_a_409(auth, client, database):
    two_factor_on(auth)
    with database.session() as db:  # the passkey is gone (e.g. removed in another way)
        for passkey in db.exec(select(Passkey)).all():
            db.delete(passkey)
        db.commit()
    for url in ("/account/two-factor/disable/start", "/account/recovery-codes/start"):
        answer = client.json_post(url, {})
        assert answer.status_code == 409, (url, answer.text)
    assert (
        query(database, select(WebAuthnChallenge).where(WebAuthnChallenge.consumed_at.is_(None)))
        == []
    )


def test_a_user_bound_challenge_with_an_empty_allow_list_accepts_nothing(auth, client, database):
    two_factor_on(auth)
    options = client.json_post("/account/two-factor/disable/start", {})
    assert options.status_code == 200, options.text
    with database.session() as db:  # stored without its list
        db.exec(update(WebAuthnChallenge).values(allow_credentials=[]))
        db.commit()
    credential = auth.authn.authenticate(options.json())
    done = client.json_post("/account/two-factor/disable/finish", {"credential": credential})
    assert done.status_code == 400, done.text
    assert reload_user(database).user_2fa_enabled


def test_a_locked_second_factor_is_not_counted_again(auth, client, database):
    two_factor_on(auth)
    auth.logout()
    client.page("/login")
    assert client.form("/login", {"username": "alice", "password": PASSWORD}).status_code == 303
    client.page("/login/2fa")
    options = client.json_post("/login/2fa/passkey/start", {})
    assert options.status_code == 200, options.text
    until = utcnow() + timedelta(minutes=15)
    with database.session() as db:
        db.exec(update(User).values(locked_until=until, failed_login_count=0))
        db.commit()
    done = client.json_post(
        "/login/2fa/passkey/finish", {"credential": auth.authn.authenticate(options.json())}
    )
    assert done.status_code == 429, done.text
    assert reload_user(database).failed_login_count == 0
    assert "second_factor_failed" not in kinds(database)


# --------------------------------------------------------------------------------------
# 4. BARYCENTER_ORIGIN is checked and normalised like related origins
# 9. SQL errors are never logged with their parameters
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://ID.Example.com", "https://id.example.com"),
        ("https://id.example.com:443", "https://id.example.com"),
        ("https://id.example.com/", "https://id.example.com"),
        ("https://id.example.com:8443", "https://id.example.com:8443"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("  https://id.example.com  ", "https://id.example.com"),
    ],
)
def test_the_origin_is_normalised(value, origin):
    from web.settings import Settings

    settings = Settings.from_env({"BARYCENTER_SECRET_KEY": "k" * 48, "BARYCENTER_ORIGIN": value})
    assert settings.origin == origin
    assert settings.expected_origins[0] == origin


@pytest.mark.parametrize(
    "value",
    [
        "https://id.example.com/login",
        "https://id.example.com?x=1",
        "https://id.example.com#top",
        "http://id.example.com",
        "http://192.168.1.5:8000",
        "ftp://id.example.com",
        "https://user@id.example.com",
        "https://id.example.com:0",
        "http://localhost:0",
        "id.example.com",
    ],
)
def test_a_bad_origin_stops_start_up(value):
    from web.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match="BARYCENTER_ORIGIN"):
        Settings.from_env({"BARYCENTER_SECRET_KEY": "k" * 48, "BARYCENTER_ORIGIN": value})


def test_port_zero_is_refused_in_related_origins():
    from web.settings import ConfigError, parse_origins

    with pytest.raises(ConfigError):
        parse_origins("https://login.example.org:0")


def test_sql_errors_are_logged_without_their_parameters(database):
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    secret = "a-secret-value-of-the-statement"
    with database.session() as db, pytest.raises(SQLAlchemyError) as caught:
        db.exec(text("INSERT INTO no_such_table (x) VALUES (:x)").bindparams(x=secret))
    assert secret not in str(caught.value)


def test_the_login_password_step_is_only_for_enroll_at_login(auth, client, database):
    two_factor_on(auth)
    auth.logout()
    client.page("/login")
    client.form("/login", {"username": "alice", "password": PASSWORD})
    client.page("/login/2fa")
    answer = client.form("/login/2fa/password", {"password": "wrong password here"})
    assert answer.status_code == 409
    assert reload_user(database).failed_login_count == 0  # no password was checked
