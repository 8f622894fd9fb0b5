"""Per-IP limits (429 + Retry-After, shared through the database), trusted proxies, and the
clean-up of expired rows."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlmodel import select, update

from models import AuthSession, Passkey, RateCounter, SecurityEvent, WebAuthnChallenge, utcnow
from tests.helpers import ORIGIN, PASSWORD, Auth, Client, query
from tests.softauthn import SoftAuthenticator
from web.app import create_app
from web.cleanup import cleanup
from web.client import client_ip
from web.db import connect, upgrade
from web.users import create_user


@pytest.fixture(autouse=True)
def mid_minute(monkeypatch):
    """The window is a calendar minute: keep every attempt of a test inside one of them."""
    moment = utcnow().replace(second=30, microsecond=0)
    monkeypatch.setattr("web.ratelimit.utcnow", lambda: moment)


@pytest.fixture
def limited(settings, database):
    app = create_app(settings.with_(ip_limit_per_minute=3), database)
    with Client(app=app, base_url=ORIGIN) as c:
        yield c


def test_sign_in_attempts_over_the_limit_get_429_with_retry_after(limited, user):
    limited.page("/login")
    statuses = [
        limited.form("/login", {"username": "alice", "password": "wrong password"}).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    refused = limited.form("/login", {"username": "alice", "password": "wrong password"})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) == 31
    assert "Too many attempts" in refused.text


def test_a_recovery_code_over_the_limit_keeps_retry_after(settings, database, user):
    """The second step's plain forms re-render on a refusal: a 429 keeps its Retry-After
    (the recovery-code form and the password-before-enrolment form alike)."""
    app = create_app(settings.with_(ip_limit_per_minute=2), database)
    with Client(app=app, base_url=ORIGIN) as c:
        auth = Auth(c, SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
        auth.login()  # sign-in attempt 1 of 2 (ceremony starts have their own count)
        assert auth.add_passkey().status_code == 200
        assert auth.enable_2fa().status_code == 200
        auth.logout()
        c.page("/login")
        assert c.form("/login", {"username": "alice", "password": PASSWORD}).status_code == 303  # 2
        refused = c.form("/login/2fa/recovery", {"code": "AAAA-BBBB"})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) == 31
        assert "Too many attempts" in refused.text
        assert "<form" in refused.text  # the step again, not an error page


def test_ceremony_starts_are_limited_too(limited):
    limited.page("/login")
    statuses = [limited.json_post("/login/passkey/start", {}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_the_counter_lives_in_the_database(limited, settings, database, user):
    """A second app (another process) on the same database sees the same count."""
    limited.page("/login")
    for _ in range(3):
        limited.json_post("/login/passkey/start", {})
    other = create_app(settings.with_(ip_limit_per_minute=3), database)
    with Client(app=other, base_url=ORIGIN) as second:
        second.page("/login")
        assert second.json_post("/login/passkey/start", {}).status_code == 429
    assert query(database, select(RateCounter))


def test_zero_turns_the_per_ip_limit_off(client, user):
    client.page("/login")
    for _ in range(40):
        assert client.json_post("/login/passkey/start", {}).status_code == 200


class FakeRequest:
    def __init__(self, peer: str, forwarded: str | None) -> None:
        self.client = type("Peer", (), {"host": peer})()
        self.headers = {"x-forwarded-for": forwarded} if forwarded else {}


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("10.0.0.5", "203.0.113.9", (), "10.0.0.5"),  # not a trusted proxy: ignored
        ("10.0.0.5", "203.0.113.9", ("10.0.0.5",), "203.0.113.9"),
        ("10.0.0.5", "198.51.100.1, 203.0.113.9", ("10.0.0.5",), "203.0.113.9"),
        ("10.0.0.5", "203.0.113.9, 10.0.0.6", ("10.0.0.5", "10.0.0.6"), "203.0.113.9"),
        ("10.0.0.5", None, ("10.0.0.5",), "10.0.0.5"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(peer, forwarded, trusted, expected):
    assert client_ip(FakeRequest(peer, forwarded), trusted) == expected


def test_cleanup_ends_the_owners_locks_before_the_deletes_that_concern_no_account(
    database, settings
):
    """The owners of ended sessions and old events are locked (their rows change through
    the triggers) only for those deletes: committed before challenges, counters and
    notifications, so a sign-in does not wait for them."""
    done: list[str] = []

    def before(_conn, _cursor, statement: str, *_args) -> None:
        words = statement.split()
        if words[:2] == ["DELETE", "FROM"]:
            done.append(words[2])

    def committed(_conn) -> None:
        done.append("COMMIT")

    engines = {database.read, database.write}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "commit", committed)
    try:
        cleanup(database, settings)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "commit", committed)
    assert done == [
        "auth_sessions",
        "security_events",
        "COMMIT",
        "webauthn_challenges",
        "rate_counters",
        "unknown_name_counters",
        "notifications",
        "COMMIT",
    ], done


def test_cleanup_deletes_what_expired_and_keeps_the_rest(auth, client, database, settings):
    auth.login()
    auth.add_passkey("Key")
    client.json_post("/account/passkeys/start", {"name": "Pending"})  # a live challenge
    with database.session() as db:
        db.exec(update(SecurityEvent).values(created_at=utcnow() - timedelta(days=400)))
        expired = utcnow() - timedelta(seconds=1)
        first = db.exec(select(WebAuthnChallenge)).first()
        db.exec(
            update(WebAuthnChallenge)
            .where(WebAuthnChallenge.id == first.id)
            .values(expires_at=expired)
        )
        db.commit()
    live_sessions = len(query(database, select(AuthSession)))
    challenges = len(query(database, select(WebAuthnChallenge)))
    counts = cleanup(database, settings)
    assert counts["challenges"] == 1
    assert counts["events"] >= 1
    assert counts["sessions"] == 0
    assert len(query(database, select(AuthSession))) == live_sessions
    assert len(query(database, select(WebAuthnChallenge))) == challenges - 1
    with database.session() as db:
        db.exec(update(AuthSession).values(last_seen_at=utcnow() - timedelta(hours=2)))
        db.commit()
    assert cleanup(database, settings)["sessions"] == live_sessions
    assert client.get("/account", follow_redirects=False).status_code == 303


def test_a_locked_sqlite_database_answers_503_and_changes_nothing(settings, tmp_path, authn):
    """Another writer holds SQLite's lock past the busy timeout: a clear 503, no change.
    (SQLite on purpose, whichever database the rest of the run uses; a short timeout, so
    that the test does not wait the default 5 s.)"""
    url = f"sqlite:///{tmp_path}/locked.db"
    upgrade(url)
    database = connect(url, busy_timeout_ms=200)
    with database.session() as db:
        create_user(db, "alice", PASSWORD, actor="admin")
    app = create_app(settings.with_(database_url=url, sqlite_busy_timeout_ms=200), database)
    with Client(app=app, base_url=ORIGIN) as client:
        auth = Auth(client, authn)
        auth.login()
        assert auth.add_passkey("Before").status_code == 200
        (passkey,) = query(database, select(Passkey))
        blocker = sqlite3.connect(tmp_path / "locked.db", timeout=0)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            path = f"/account/passkeys/{passkey.id}/rename"
            response = client.htmx("POST", path, {"name": "After"})
        finally:
            blocker.rollback()
            blocker.close()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "busy" in response.text
    assert [p.name for p in query(database, select(Passkey))] == ["Before"]
    database.dispose()
