"""The invariants hold under races against a real server process (SQLite and PostgreSQL):
a challenge is used at most once, and effective 2FA on ⇒ at least one passkey. Requests
are fired at the same moment from parallel threads."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import PASSWORD, ServerClient
from tests.helpers.e2e import server_auth
from tests.softauthn import SoftAuthenticator

ROUNDS = 3
T = TypeVar("T")
DISABLE_FINISH = "/account/two-factor/disable/finish"
ENABLE_FINISH = "/account/two-factor/enable/finish"


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run the calls in parallel threads released by one barrier; their answers."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def member(server):
    """A signed-in user with one passkey."""
    username = server.create_user("race")
    user = server_auth(server)
    assert user.login(username).status_code == 303
    assert user.add_passkey("First").status_code == 200
    yield username, user
    user.client.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_the_same_assertion_twice_succeeds_once(server, member, round_):
    username, user = member
    assert user.enable_2fa().status_code == 200
    user.logout()
    assert user.login(username).status_code == 303
    user.client.page("/login/2fa")
    credential = user.assertion("/login/2fa/passkey/start")
    twin = user.client.clone()
    body = {"credential": credential}
    statuses = at_once(
        lambda: user.client.json_post("/login/2fa/passkey/finish", body).status_code,
        lambda: twin.json_post("/login/2fa/passkey/finish", body).status_code,
    )
    assert sorted(statuses)[0] == 200, statuses
    assert sorted(statuses)[1] in (400, 401), statuses
    twin.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_removing_the_last_two_passkeys_at_once_leaves_one(server, member, round_):
    username, user = member
    other_device = SoftAuthenticator(rp_id="localhost", origin=server.base_url)
    assert user.add_passkey("Second", other_device).status_code == 200
    assert user.enable_2fa().status_code == 200  # also a fresh step-up for removals
    page = user.client.page("/account").text
    ids = sorted({int(i) for i in re.findall(r'id="passkey-(\d+)"', page)})
    assert len(ids) == 2
    twin = user.client.clone()

    def remove(client: ServerClient, passkey_id: int) -> int:
        return client.form(f"/account/passkeys/{passkey_id}/remove").status_code

    statuses = at_once(lambda: remove(user.client, ids[0]), lambda: remove(twin, ids[1]))
    assert sorted(statuses) == [200, 409], statuses
    status = server.status(username)
    assert status["effective2fa"] and status["passkeyCount"] == 1
    twin.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_enable_and_disable_at_once_stay_consistent(server, member, round_):
    username, user = member
    assert user.enable_2fa().status_code == 200
    # Prepare a disable ceremony and, via the admin override, a state where enabling is
    # allowed again; then race the user's disable against the user's enable.
    disable = user.assertion("/account/two-factor/disable/start")
    server.set_enabled(username, False)
    enable = user.assertion("/account/two-factor/enable/start", {"mode": "existing"})
    server.set_enabled(username, True)
    twin = user.client.clone()
    statuses = at_once(
        lambda: user.client.json_post(DISABLE_FINISH, {"credential": disable}).status_code,
        lambda: twin.json_post(ENABLE_FINISH, {"credential": enable}).status_code,
    )
    assert all(code < 500 for code in statuses), statuses
    status = server.status(username)
    # Whatever the order, the flag and the recovery codes agree.
    assert status["user2faEnabled"] == (status["recoveryCodesRemaining"] == 10), status
    assert status["passkeyCount"] == 1
    twin.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_admin_require_against_user_disable(server, member, round_):
    username, user = member
    assert user.enable_2fa().status_code == 200
    disable = user.assertion("/account/two-factor/disable/start")
    results: dict[str, int] = {}

    def user_disable() -> int:
        results["user"] = user.client.json_post(DISABLE_FINISH, {"credential": disable}).status_code
        return results["user"]

    def admin_require() -> int:
        server.set_required(username, True)
        return 200

    at_once(user_disable, admin_require)
    status = server.status(username)
    assert status["requires2fa"] and status["effective2fa"] and status["passkeyCount"] == 1
    if results["user"] == 200:  # the user was first: their preference is off
        assert not status["user2faEnabled"] and status["recoveryCodesRemaining"] == 0
    else:  # the administrator was first: refused, nothing changed
        assert results["user"] == 403
        assert status["user2faEnabled"] and status["recoveryCodesRemaining"] == 10


@pytest.mark.parametrize("round_", range(2))
def test_twelve_wrong_passwords_at_once_check_at_most_five(server, round_):
    """SPEC §5.1: at most 5 passwords are checked per lockout window however many arrive at
    once; the rest, and then the correct password, are 429 with Retry-After."""
    username = server.create_user("burst")
    users = [ServerClient(server.base_url) for _ in range(12)]
    for user in users:
        user.page("/login")

    def wrong(user: ServerClient) -> Callable[[], int]:
        def send() -> int:
            response = user.form("/login", {"username": username, "password": "wrong-password"})
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) > 0
                assert "Too many failed attempts" in response.text or "Too many" in response.text
            return response.status_code

        return send

    statuses = at_once(*(wrong(user) for user in users))
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, statuses
    assert statuses.count(429) >= 7, statuses
    right = users[0].form("/login", {"username": username, "password": PASSWORD})
    assert right.status_code == 429, right.status_code
    assert "Try again after" in right.text and int(right.headers["retry-after"]) > 0
    assert not any("session" in c for c in right.headers.get_list("set-cookie"))
    for user in users:
        user.close()


def test_sixteen_passkey_sign_ins_at_once_all_succeed(server, member):
    """Sixteen browsers finish a passkey sign-in at the same moment. Each answer reads after
    its commit (the passkeys the password manager should keep), so on SQLite it holds the
    write lock again until its request's database session is closed: closed in the thread
    pool, that waited for a pool thread while every pool thread waited for the lock, and the
    finishes ran into the busy timeout (503) one after another. None may fail."""
    _, user = member
    finishes = []
    for _ in range(16):
        browser = ServerClient(server.base_url)
        browser.page("/login")
        options = browser.json_post("/login/passkey/start", {})
        assert options.status_code == 200, options.text
        # like a synced passkey: no signature counter, so the order of arrival doesn't matter
        credential = user.authn.authenticate(options.json(), sign_count=0)
        finishes.append((browser, {"credential": credential}))
    statuses = at_once(
        *[
            (lambda b=browser, body=body: b.json_post("/login/passkey/finish", body).status_code)
            for browser, body in finishes
        ]
    )
    assert statuses == [200] * 16, statuses
    for browser, _ in finishes:
        browser.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_password_change_against_signing_out_the_others(server, round_):
    """Two sessions of one account at the same moment: one changes the password (which
    ends every other session), the other signs out every other session. One of them wins
    and the other finds its own session ended; one session is left,
    and the password changed only if it is the changer's. Never a 5xx, never both."""
    username = server.create_user("race")
    changer, other = server_auth(server), server_auth(server)
    for user in (changer, other):
        assert user.login(username).status_code == 303
    new = "plum orbit lantern 1987"
    change = {"current_password": PASSWORD, "new_password": new}
    answers = at_once(
        lambda: changer.client.htmx("POST", "/account/password", change),
        lambda: other.client.htmx("POST", "/account/sessions/revoke-others"),
    )
    # the loser's session ended before its request or while it waited for the winner's
    # lock: either way htmx is sent to the sign-in page
    assert [a.status_code for a in answers] == [200, 200], [a.text[:200] for a in answers]
    ended = [a.headers.get("hx-redirect") == "/login" for a in answers]
    assert sorted(ended) == [False, True], [(a.status_code, a.headers) for a in answers]
    changer_won = not ended[0]
    if changer_won:
        assert "Your password was changed." in answers[0].text
    else:
        assert "Signed out of 1 other session." in answers[1].text

    still_in = [
        user.client.get("/account", follow_redirects=False).status_code == 200
        for user in (changer, other)
    ]
    assert still_in == [changer_won, not changer_won]
    fresh = server_auth(server)
    assert fresh.login(username, new).status_code == (303 if changer_won else 401)
    for user in (changer, other, fresh):
        user.client.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_sign_ins_over_each_others_sessions_at_once(server, round_):
    """Browser X holds a session of A and signs in as B, while browser Y, holding B's,
    signs in as A. Each sign-in ends the session it replaces, which writes that session's
    owner: both lock A and B, in one order, so both succeed (no deadlock on PostgreSQL;
    SQLite's BEGIN IMMEDIATE serialises them anyway). The interleaving that deadlocked is a
    matter of milliseconds, so this is a guard; the order itself is tested in
    tests/unit/test_sessions.py."""
    a, b = server.create_user("race"), server.create_user("race")
    x, y = server_auth(server), server_auth(server)
    assert x.login(a).status_code == 303
    assert y.login(b).status_code == 303
    for browser in (x, y):
        browser.client.page("/login")
    answers = at_once(
        lambda: x.client.form("/login", {"username": b, "password": PASSWORD}),
        lambda: y.client.form("/login", {"username": a, "password": PASSWORD}),
    )
    assert [r.status_code for r in answers] == [303, 303], [r.text[:200] for r in answers]
    assert f"Signed in as {b}" in x.client.page("/account").text
    assert f"Signed in as {a}" in y.client.page("/account").text
    assert sessions_per_user(server, a, b) == [1, 1]  # the replaced ones ended
    for browser in (x, y):
        browser.client.close()


def sessions_per_user(server, *usernames: str) -> list[int]:
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            return [
                connection.execute(
                    text(
                        "SELECT count(*) FROM auth_sessions JOIN users"
                        " ON users.id = auth_sessions.user_id WHERE users.username = :name"
                    ),
                    {"name": name},
                ).scalar_one()
                for name in usernames
            ]
    finally:
        engine.dispose()
