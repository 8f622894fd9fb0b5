"""Regression tests for the security review of issues 9 and 11 (each fails before its fix):
enroll-at-login from a stolen stale cookie, leaked lockout reservations, enabling with a new
passkey counted as recent authentication, BARYCENTER_ORIGIN validation, recency re-checked at
a ceremony's finish, step-up starts without an explicit allow list, 429s counted as failures,
SQL parameters in logs."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from litestar.testing import TestClient
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
from tests.softauthn import SoftAuthenticator
from tests.unit.conftest import ORIGIN, PASSWORD, query, reload_user
from web.admin.app import create_admin_app
from web.sessions import COOKIE
from web.tokens import digest


@pytest.fixture(autouse=True)
def light_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    import web.passwords

    web.passwords._dummy_hash()
    monkeypatch.setattr(
        web.passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def admin(settings, database):  # type: ignore[no-untyped-def]
    with TestClient(app=create_admin_app(settings, database)) as api:

        def call(document: str) -> dict:
            response = api.post(
                "/graphql",
                json={"query": document},
                headers={"Authorization": f"Bearer {settings.admin_token}"},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert not body.get("errors"), body
            return next(iter(body["data"].values()))

        yield call


def passkeys_stored(database) -> list[Passkey]:  # type: ignore[no-untyped-def]
    return query(database, select(Passkey))


def session_row(database, client) -> AuthSession | None:  # type: ignore[no-untyped-def]
    token = client.cookies.get(COOKIE)
    rows = query(database, select(AuthSession).where(AuthSession.token_hash == digest(token)))
    return rows[0] if rows else None


def age_sessions(database, minutes: float) -> None:  # type: ignore[no-untyped-def]
    """The sign-in (and any confirmation) happened `minutes` ago."""
    then = utcnow() - timedelta(minutes=minutes)
    with database.session() as db:
        db.exec(update(AuthSession).values(auth_time=then, reauth_at=then))
        db.commit()


def kinds(database) -> list[str]:  # type: ignore[no-untyped-def]
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
