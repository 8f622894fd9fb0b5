"""The lockout does not tell known usernames from unknown ones (SPEC §5.1, §9): an unknown
name is counted and held by the same rules, in a counter keyed by a digest of the name."""

from __future__ import annotations

import html
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlmodel import select

from models import UnknownNameCounter, utcnow
from tests.helpers import PASSWORD, Client, query
from web import lockout, tokens
from web.cleanup import UNKNOWN_NAME_RETENTION, cleanup
from web.signin import BAD_CREDENTIALS, LOCKED
from web.users import create_user


def sign_in(client: Client, username: str, password: str):
    client.page("/login")
    return client.form("/login", {"username": username, "password": password})


def alert_of(response) -> str:
    text = html.unescape(response.text)
    start = text.index('role="alert">') + len('role="alert">')
    return text[start : text.index("</div>", start)].strip()


def answers(client: Client, username: str, count: int) -> list[tuple[int, str, str | None]]:
    return [
        (r.status_code, alert_of(r), r.headers.get("retry-after"))
        for r in (sign_in(client, username, f"wrong password {n}") for n in range(count))
    ]


def test_known_and_unknown_names_get_the_same_answers(client, user, monkeypatch):
    moment = utcnow()
    monkeypatch.setattr("web.lockout.utcnow", lambda: moment)

    known = answers(client, "alice", 7)
    unknown = answers(client, "nobody", 7)

    assert known == unknown
    until = f"{moment + timedelta(minutes=15):%H:%M}"
    locked = (429, f"{LOCKED} Try again after {until} UTC.", "901")
    assert known == [(401, BAD_CREDENTIALS, None)] * 5 + [locked] * 2
    # the right password of alice is refused like any password of the unknown name
    assert sign_in(client, "alice", PASSWORD).status_code == 429

    moment += timedelta(minutes=15, seconds=1)  # both holds are over: counted afresh
    assert answers(client, "alice", 1) == answers(client, "nobody", 1)
    assert answers(client, "nobody", 1) == [(401, BAD_CREDENTIALS, None)]


def test_the_unknown_name_is_stored_only_as_a_digest(client, database):
    for name in ("NoBody", " nobody"):  # one counter, as sign-in compares names
        assert sign_in(client, name, "wrong password").status_code == 401

    rows = query(database, select(UnknownNameCounter))
    assert [(r.key, r.failed_login_count) for r in rows] == [(tokens.digest("nobody"), 2)]
    with database.session() as db:
        dump = str(db.connection().exec_driver_sql("SELECT * FROM unknown_name_counters").all())
    assert "nobody" not in dump.lower()


@pytest.mark.parametrize("username", ["alice", "nobody"])
def test_twelve_attempts_at_once_check_at_most_five_known_or_not(
    username, client, make_client, user, database, monkeypatch
):
    checking, most, guard = 0, 0, threading.Lock()
    real_verify = lockout.verify_password

    def slow_verify(stored: str | None, password: str) -> bool:
        nonlocal checking, most
        with guard:
            checking += 1
            most = max(most, checking)
        time.sleep(0.3)  # long enough for every attempt to arrive meanwhile
        with guard:
            checking -= 1
        return real_verify(stored, password)

    monkeypatch.setattr(lockout, "verify_password", slow_verify)
    clients = [make_client() for _ in range(12)]
    for each in clients:
        each.page("/login")

    def attempt(each: Client):
        return each.form("/login", {"username": username, "password": "wrong password"})

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = [r.status_code for r in pool.map(attempt, clients)]

    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= statuses.count(401) <= 5 and most <= 5, (statuses, most)
    assert sign_in(client, username, PASSWORD).status_code == 429


def test_an_error_while_checking_gives_the_reservation_back(client, database, monkeypatch):
    def broken(stored: str | None, password: str) -> bool:
        raise RuntimeError("hashing failed")

    assert sign_in(client, "nobody", "wrong password").status_code == 401
    monkeypatch.setattr(lockout, "verify_password", broken)
    assert sign_in(client, "nobody", "wrong password").status_code == 500
    (row,) = query(database, select(UnknownNameCounter))
    assert row.failed_login_count == 1


def test_cleanup_deletes_counters_whose_hold_is_over(database, settings):
    now = utcnow()
    old = now - UNKNOWN_NAME_RETENTION - timedelta(minutes=1)
    rows = {
        "lock over": (0, now - timedelta(seconds=1), now - timedelta(minutes=16)),
        "busy window over": (5, now - timedelta(seconds=1), now - timedelta(minutes=2)),
        "locked": (0, now + timedelta(minutes=10), now - timedelta(minutes=5)),
        "busy": (5, now + timedelta(seconds=30), now - timedelta(seconds=30)),
        "counting": (3, None, now - timedelta(days=2)),
        "forgotten": (3, None, old),
    }
    with database.session() as db:
        for name, (count, until, last) in rows.items():
            db.add(
                UnknownNameCounter(
                    key=tokens.digest(name),
                    failed_login_count=count,
                    locked_until=until,
                    last_attempt_at=last,
                )
            )
        db.commit()

    assert cleanup(database, settings)["unknown_name_counters"] == 3

    kept = {r.key for r in query(database, select(UnknownNameCounter))}
    assert kept == {tokens.digest(n) for n in ("locked", "busy", "counting")}


def test_creating_the_user_clears_the_counter_of_the_name(client, database):
    assert [a[0] for a in answers(client, "Bob", 6)] == [401] * 5 + [429]
    assert len(query(database, select(UnknownNameCounter))) == 1

    with database.session() as db:
        create_user(db, "bob", PASSWORD, actor="admin")

    assert query(database, select(UnknownNameCounter)) == []
    signed_in = sign_in(client, "BOB", PASSWORD)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/account"
