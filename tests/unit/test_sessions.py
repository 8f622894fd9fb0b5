"""Server-side sessions (SPEC §3 AuthSession, §5.1, §7): the cookie, what is stored, new
tokens, expiry from database timestamps, sign-out, lockout and return_to."""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlmodel import delete, select, update

from models import AuthSession, SecurityEvent, User, utcnow
from tests.helpers import ORIGIN, PASSWORD, Client, query, reload_user, statements
from tests.helpers.client import Auth
from web import sessions
from web.app import create_app
from web.errors import RedirectTo
from web.passwords import hash_password
from web.sessions import COOKIE
from web.signin import BAD_CREDENTIALS, LOCKED
from web.users import create_user


def sign_in(client: Client, username: str = "alice", password: str = PASSWORD, **extra: str):
    client.page("/login")
    return client.form("/login", {"username": username, "password": password, **extra})


def session_cookie(response) -> str:
    """The Set-Cookie header that carries the session token."""
    names = (f"{COOKIE}=", f"__Host-{COOKIE}=")  # __Host- when Secure (SPEC §7, rev 2)
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(names)]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


def attributes(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1) + [""])[1] for p in parts[1:]}


def rows(database) -> list[AuthSession]:
    return query(database, select(AuthSession).order_by(AuthSession.id))


def shift(database, **ago: timedelta) -> None:
    """Move session timestamps into the past: shift(db, last_seen_at=timedelta(hours=2))."""
    now = utcnow()
    with database.session() as db:
        db.exec(update(AuthSession).values(**{name: now - delta for name, delta in ago.items()}))
        db.commit()


def stranger(app, token: str) -> Client:
    """Another browser that presents `token` as its session cookie (no lifespan of its own,
    like conftest's make_client)."""
    other = Client(app=app, base_url=ORIGIN)
    other.cookies.set(COOKIE, token, domain="localhost")
    return other


def turn_on_2fa(database) -> None:
    with database.session() as db:
        db.exec(update(User).values(user_2fa_enabled=True, user_2fa_enabled_at=utcnow()))
        db.commit()


# --------------------------------------------------------------------------------------
# The cookie and what is stored
# --------------------------------------------------------------------------------------


def test_session_cookie_on_localhost(client, user, database):
    response = sign_in(client)
    assert response.status_code == 303
    cookie = session_cookie(response)
    attrs = attributes(cookie)
    assert "httponly" in attrs
    assert attrs["samesite"].lower() == "lax"
    assert attrs["path"] == "/"
    assert "secure" not in attrs  # http://localhost: the browser would drop a Secure cookie
    assert "max-age" not in attrs and "expires" not in attrs  # expiry lives in the database
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == 32  # 256 bits


@pytest.mark.parametrize(
    ("origin", "cookie_secure", "secure"),
    [
        ("https://id.example.com", None, True),
        ("https://id.example.com", False, False),
        ("http://localhost:8000", True, True),
    ],
    ids=["https-default", "https-forced-off", "localhost-forced-on"],
)
def test_session_cookie_secure_flag(settings, database, user, origin, cookie_secure, secure):
    app = create_app(settings.with_(origin=origin, cookie_secure=cookie_secure), database)
    # the test browser talks https so that it sends Secure cookies back; the Origin header
    # is what the app compares
    base = "https://" + origin.split("://", 1)[1]
    with Client(app=app, base_url=base) as browser:
        page = browser.get("/login")
        csrf_cookie = [c for c in page.headers.get_list("set-cookie") if "csrf" in c]
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        response = browser.post(
            "/login",
            data={"_csrf_token": token, "username": "alice", "password": PASSWORD},
            headers={"Origin": origin},
            follow_redirects=False,
        )
    assert response.status_code == 303, response.text
    assert ("secure" in attributes(session_cookie(response))) is secure
    assert session_cookie(response).startswith("__Host-") is secure
    assert all(("secure" in attributes(c)) is secure for c in csrf_cookie)


def test_only_the_sha256_of_the_token_is_stored(client, user, database):
    sign_in(client)
    token = client.cookies.get(COOKIE)
    [row] = rows(database)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = " ".join(str(value) for value in row.model_dump().values())
    assert token not in stored


def test_password_session_facts(client, user, database):
    client.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
    before = utcnow()
    sign_in(client)
    [row] = rows(database)
    assert row.state == "full" and row.amr == ["pwd"] and row.acr == "aal1"
    assert not row.mfa_verified
    assert before <= row.auth_time <= utcnow()
    assert (
        timedelta(hours=23, minutes=59) < row.expires_at - before <= timedelta(hours=24, seconds=5)
    )
    assert "Firefox" in row.user_agent
    assert row.ip
    assert row.reauth_at == row.auth_time  # a completed sign-in is recent (§4.1)


# --------------------------------------------------------------------------------------
# New tokens
# --------------------------------------------------------------------------------------


def test_new_token_at_sign_in_ignores_a_planted_cookie(client, user, database):
    client.cookies.set(COOKIE, "planted-by-an-attacker", domain="localhost")
    response = sign_in(client)
    token = session_cookie(response).split(";")[0].split("=", 1)[1]
    assert token and token != "planted-by-an-attacker"
    assert [r.token_hash for r in rows(database)] == [hashlib.sha256(token.encode()).hexdigest()]


def test_signing_in_again_replaces_the_session(client, app, user, database):
    sign_in(client)
    first = client.cookies.get(COOKIE)
    sign_in(client)
    second = client.cookies.get(COOKIE)
    assert first != second
    assert len(rows(database)) == 1
    old = stranger(app, first)
    assert old.get("/account", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/account", follow_redirects=False).status_code == 200


def test_new_token_at_upgrade(auth, client, app, database):
    auth.login()
    assert auth.add_passkey("Work key").status_code == 200
    turn_on_2fa(database)
    auth.logout()
    response = sign_in(client)
    assert response.headers["location"] == "/login/2fa"
    partial = client.cookies.get(COOKIE)
    [row] = rows(database)
    assert row.state == "partial" and row.amr == ["pwd"] and row.acr == "aal1"
    assert timedelta(minutes=9) < row.expires_at - utcnow() <= timedelta(minutes=10)

    client.page("/login/2fa")
    credential = auth.assertion("/login/2fa/passkey/start")
    finished = client.json_post("/login/2fa/passkey/finish", {"credential": credential})

    assert finished.status_code == 200
    attrs = attributes(session_cookie(finished))
    assert "httponly" in attrs and attrs["samesite"].lower() == "lax" and attrs["path"] == "/"
    upgraded = client.cookies.get(COOKIE)
    assert upgraded != partial
    [row] = rows(database)
    assert row.token_hash == hashlib.sha256(upgraded.encode()).hexdigest()
    assert row.state == "full" and row.acr == "aal2" and row.mfa_verified
    old = stranger(app, partial)
    assert old.get("/login/2fa", follow_redirects=False).headers["location"] == "/login"
    assert old.get("/account", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/account", follow_redirects=False).status_code == 200


# --------------------------------------------------------------------------------------
# Expiry, from database timestamps
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [3600, 120])
def test_idle_expiry(settings, database, user, ttl):
    app = create_app(settings.with_(session_ttl=ttl), database)
    with Client(app=app, base_url=ORIGIN) as browser:
        sign_in(browser)
        shift(database, last_seen_at=timedelta(seconds=ttl - 30))
        alive = browser.get("/account", follow_redirects=False)
        assert alive.status_code == 200
        [row] = rows(database)
        assert utcnow() - row.last_seen_at < timedelta(seconds=10)  # seen again: touched

        shift(database, last_seen_at=timedelta(seconds=ttl + 5))
        expired = browser.get("/account", follow_redirects=False)
        assert expired.status_code == 303 and expired.headers["location"] == "/login"
        assert rows(database) == []


def test_absolute_expiry_after_24_hours(client, user, database):
    sign_in(client)
    # active all along (seen a minute ago), but signed in 23 h 58 min ago: still fine
    shift(
        database,
        created_at=timedelta(hours=23, minutes=58),
        auth_time=timedelta(hours=23, minutes=58),
        expires_at=timedelta(minutes=-2),
        last_seen_at=timedelta(minutes=1),
    )
    assert client.get("/account", follow_redirects=False).status_code == 200
    # 24 h and a minute after sign-in: over, however recently it was used
    shift(
        database,
        created_at=timedelta(hours=24, minutes=1),
        auth_time=timedelta(hours=24, minutes=1),
        expires_at=timedelta(minutes=1),
        last_seen_at=timedelta(seconds=5),
    )
    expired = client.get("/account", follow_redirects=False)
    assert expired.status_code == 303 and expired.headers["location"] == "/login"
    assert rows(database) == []


def test_a_step_up_does_not_restart_the_24_hours(auth, client, database):
    auth.login()
    assert auth.add_passkey("Key").status_code == 200
    before = query(database, select(AuthSession))[0].expires_at
    assert auth.enable_2fa().status_code == 200  # a passkey assertion: step-up, new token
    (session,) = query(database, select(AuthSession))
    assert session.acr == "aal2" and session.reauth_at is not None
    assert session.expires_at == before


def test_partial_session_expires_after_10_minutes(client, user, database):
    turn_on_2fa(database)
    assert sign_in(client).headers["location"] == "/login/2fa"
    shift(
        database,
        created_at=timedelta(minutes=9),
        auth_time=timedelta(minutes=9),
        last_seen_at=timedelta(minutes=9),
        expires_at=timedelta(minutes=-1),
    )
    assert client.get("/login/2fa", follow_redirects=False).status_code == 200
    shift(
        database,
        created_at=timedelta(minutes=10, seconds=5),
        auth_time=timedelta(minutes=10, seconds=5),
        last_seen_at=timedelta(seconds=30),
        expires_at=timedelta(seconds=5),
    )
    expired = client.get("/login/2fa", follow_redirects=False)
    assert expired.status_code == 303 and expired.headers["location"] == "/login"
    assert rows(database) == []
    page = client.page("/login/2fa")
    assert "Sign in" in page.text


# --------------------------------------------------------------------------------------
# Sign-out
# --------------------------------------------------------------------------------------


def test_logout_deletes_the_row(client, app, user, database, make_client):
    other = make_client()
    sign_in(other)
    sign_in(client)
    token = client.cookies.get(COOKIE)
    assert len(rows(database)) == 2

    response = client.form("/logout")

    assert response.status_code == 303 and response.headers["location"] == "/login"
    cleared = session_cookie(response)
    attrs = attributes(cleared)
    assert cleared.startswith(f'{COOKIE}="";') or cleared.startswith(f"{COOKIE}=;")
    assert attrs.get("max-age") == "0" or "expires" in attrs
    assert len(rows(database)) == 1  # only this browser's session ended
    old = stranger(app, token)
    assert old.get("/account", follow_redirects=False).headers["location"] == "/login"
    assert other.get("/account", follow_redirects=False).status_code == 200


def test_logout_with_htmx(client, user, database):
    sign_in(client)
    client.page("/account")
    response = client.htmx("POST", "/logout")
    assert response.headers["hx-redirect"] == "/login"
    assert rows(database) == []


def test_logout_without_session_is_harmless(client, user, database):
    client.page("/login")
    response = client.form("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"


# --------------------------------------------------------------------------------------
# Lockout and the same message for every wrong guess
# --------------------------------------------------------------------------------------


def alert_of(response) -> str:
    text = html.unescape(response.text)
    start = text.index('role="alert">') + len('role="alert">')
    return text[start : text.index("</div>", start)].strip()


def test_lockout_after_five_failures_for_fifteen_minutes(client, user, database):
    for attempt in range(1, 6):
        wrong = sign_in(client, password=f"wrong password {attempt}")
        assert wrong.status_code == 401, attempt
        assert alert_of(wrong) == BAD_CREDENTIALS
    locked_user = reload_user(database)
    assert locked_user.locked_until is not None
    remaining = locked_user.locked_until - utcnow()
    assert timedelta(minutes=14) < remaining <= timedelta(minutes=15)

    refused = sign_in(client)  # the right password, but locked

    assert refused.status_code == 429
    # the lock message says until when (SPEC §9)
    until = f"{locked_user.locked_until:%H:%M}"
    assert alert_of(refused) == f"{LOCKED} Try again after {until} UTC."
    assert 800 < int(refused.headers["retry-after"]) <= 901
    assert client.cookies.get(COOKIE) is None and rows(database) == []
    assert sign_in(client, password="still wrong").status_code == 429
    assert reload_user(database).locked_until == locked_user.locked_until  # not extended
    kinds = [e.kind for e in query(database, select(SecurityEvent).order_by(SecurityEvent.id))]
    assert kinds.count("sign_in_failed") == 5 and kinds.count("locked") == 1

    # 15 minutes later: allowed again
    with database.session() as db:
        db.exec(update(User).values(locked_until=utcnow() - timedelta(seconds=1)))
        db.commit()
    allowed = sign_in(client)
    assert allowed.status_code == 303 and allowed.headers["location"] == "/account"
    after = reload_user(database)
    assert after.failed_login_count == 0 and after.locked_until is None


def test_success_resets_the_failure_count(client, user, database):
    for _ in range(4):
        assert sign_in(client, password="wrong password").status_code == 401
    assert sign_in(client).status_code == 303
    assert reload_user(database).failed_login_count == 0
    for _ in range(4):
        assert sign_in(client, password="wrong password").status_code == 401
    assert reload_user(database).locked_until is None
    assert sign_in(client).status_code == 303


def test_lockout_counts_per_account(client, user, database):
    with database.session() as db:
        from web.users import create_user

        create_user(db, "bob", PASSWORD, actor="admin")
    for _ in range(5):
        sign_in(client, username="bob", password="wrong password")
    assert sign_in(client, username="bob").status_code == 429
    assert sign_in(client).status_code == 303  # alice is not affected


def test_unknown_user_and_wrong_password_look_the_same(client, user, database):
    events_before = len(query(database, select(SecurityEvent)))
    unknown = sign_in(client, username="nobody", password="some password")
    wrong = sign_in(client, username="alice", password="some password")
    assert unknown.status_code == wrong.status_code == 401
    assert alert_of(unknown) == alert_of(wrong) == BAD_CREDENTIALS
    assert 'value="nobody"' in unknown.text and 'value="alice"' in wrong.text  # kept to retry
    assert rows(database) == []
    assert len(query(database, select(User))) == 1
    assert len(query(database, select(SecurityEvent))) == events_before + 1  # alice's failure


def test_unusable_credentials_are_refused_without_counting(client, user, database):
    for username, password, status in [
        ("", PASSWORD, 422),
        ("alice", "", 422),
        ("a" * 65, PASSWORD, 401),
        ("alice", "p" * 1025, 401),
    ]:
        response = sign_in(client, username=username, password=password)
        assert response.status_code == status, (username[:5], password[:5])
        assert 'role="alert"' in response.text
    assert reload_user(database).failed_login_count == 0
    assert rows(database) == []


# --------------------------------------------------------------------------------------
# return_to: local paths only
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("return_to", "location"),
    [
        ("/account", "/account"),
        ("/account/sessions", "/account/sessions"),
        ("/account/passkeys/1/rename", "/account"),  # rev 2: never a step or a POST route
        ("/account/recovery-codes/regenerate", "/account"),
        ("/login/2fa/recovery", "/account"),
        ("/logout", "/account"),
        ("//evil", "/account"),
        ("/\\evil", "/account"),
        ("https://evil", "/account"),
        ("javascript:alert(1)", "/account"),
        ("", "/account"),
        ("/account\r\nSet-Cookie: x=1", "/account"),
    ],
    ids=[
        "account",
        "section",
        "rename-step",
        "post-route",
        "login-post-route",
        "logout",
        "scheme-relative",
        "backslash",
        "absolute",
        "javascript",
        "empty",
        "crlf",
    ],
)
def test_return_to_only_local_paths(client, user, return_to, location):
    response = sign_in(client, return_to=return_to)
    assert response.status_code == 303
    assert response.headers["location"] == location


def test_return_to_on_the_login_page_and_when_signed_in(client, user):
    foreign = ["//evil", "https://evil", "javascript:alert(1)"]
    for return_to in foreign:
        page = client.page(f"/login?return_to={return_to}")
        assert return_to not in html.unescape(page.text)
    sign_in(client)
    for return_to in foreign:
        again = client.get(f"/login?return_to={return_to}", follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == "/account"


def test_return_to_kept_by_the_login_page(client, user):
    page = client.page("/login?return_to=/account/sessions")
    assert 'name="return_to" value="/account/sessions"' in page.text


def test_signed_out_elsewhere_is_told_on_the_sign_in_page(client, user, make_client):
    sign_in(client)
    other = make_client()
    other.page("/login")
    assert sign_in(other).status_code == 303
    other.page("/account")
    revoke = other.form("/account/sessions/revoke-others")
    assert revoke.status_code == 303 or revoke.status_code == 200
    landed = client.get("/account", follow_redirects=True)
    assert "You were signed out from another session." in html.unescape(landed.text)
    again = client.page("/login")  # said once: the stale cookie is gone
    assert "signed out from another session" not in again.text
    fresh = make_client().page("/login")
    assert "signed out from another session" not in fresh.text


def test_return_to_survives_the_second_factor(auth, client, database):
    auth.login()
    assert auth.add_passkey("Key").status_code == 200
    assert auth.enable_2fa().status_code == 200
    auth.logout()
    client.page("/login?return_to=/account/sessions")
    response = client.form(
        "/login", {"username": "alice", "password": PASSWORD, "return_to": "/account/sessions"}
    )
    assert response.headers["location"] == "/login/2fa?return_to=/account/sessions"
    page = client.page(response.headers["location"])
    assert 'name="return_to" value="/account/sessions"' in page.text
    credential = auth.assertion("/login/2fa/passkey/start")
    finished = client.json_post(
        "/login/2fa/passkey/finish", {"credential": credential, "return_to": "//evil.example"}
    )
    assert finished.headers["hx-redirect"] == "/account"  # only local paths


@contextmanager
def user_locks(database, monkeypatch) -> Iterator[list[object]]:
    """What the block does to users' rows, in order: the id each `lock_user` of the sign-in
    locks, and "end" where a session is deleted (whose trigger writes its owner's row)."""
    real = sessions.lock_user
    with statements(database) as seen:

        def lock_user(db, user_id):
            seen.append(f"lock {user_id}")
            return real(db, user_id)

        monkeypatch.setattr(sessions, "lock_user", lock_user)
        found: list[object] = []
        yield found
        monkeypatch.undo()
    for step in seen:
        if step.startswith("lock "):
            found.append(int(step.removeprefix("lock ")))
        elif step.startswith("DELETE FROM auth_sessions"):
            found.append("end")


def test_a_sign_in_replacing_another_accounts_session_locks_both_in_id_order(
    client, user, database, authn, monkeypatch
):
    """The browser's old session may be another account's; ending it writes that account's
    row too (users.data_version). Both are locked first, lower id first, whichever signs in:
    two such sign-ins at once cannot each hold the lock the other waits for."""
    with database.session() as db:
        bob = create_user(db, "bob", PASSWORD, actor="admin")
        assert bob.pk > user.pk
    sign_in(client, "bob")
    with user_locks(database, monkeypatch) as locks:
        assert sign_in(client, "alice").status_code == 303
    assert locks == [user.pk, bob.pk, "end"], locks

    # by passkey: alice's passkey, signing in over alice's own session first, then bob's
    auth = Auth(client, authn)
    assert auth.add_passkey("Key").status_code == 200
    sign_in(client, "bob")
    credential = auth.assertion("/login/passkey/start")
    with user_locks(database, monkeypatch) as locks:
        finish = client.json_post("/login/passkey/finish", {"credential": credential})
    assert finish.status_code == 200, finish.text
    assert locks == [user.pk, bob.pk, "end"], locks
    assert [row.user_id for row in rows(database)] == [user.pk]


def test_a_session_ended_while_a_change_waited_sends_the_browser_to_sign_in(client, user, database):
    """`reread` finds the session gone (another request ended it while this one waited for
    the lock): the same answer as if that request had come first, never a bare 401."""
    sign_in(client)
    client.page("/account")
    [row] = rows(database)
    with database.session() as db:
        db.exec(delete(AuthSession))
        db.commit()
        with pytest.raises(RedirectTo) as sent:
            sessions.reread(db, row.id)
    assert (sent.value.location, sent.value.status) == ("/login", 401)
    assert "Your session ended" in sent.value.message


def _set_password_hash(database, new_hash: str) -> None:
    with database.session() as db:
        db.exec(update(User).where(User.username == "alice").values(password_hash=new_hash))
        db.commit()


@pytest.mark.parametrize("window", ["while it is verified", "before the session is made"])
def test_a_password_changed_during_a_sign_in_ends_the_old_one(
    client, user, database, monkeypatch, window
):
    """A sign-in with the old password, while a password change commits (argon2 runs
    unlocked, and the lock is given up once between the check and the new session): the
    password stored when the session is made decides. No session, 401."""
    from web import lockout

    new_hash = hash_password("plum orbit lantern 1987")
    if window == "while it is verified":
        real = lockout.verify_password
        calls = []

        def verify_then_change(stored, password):
            calls.append(1)
            answer = real(stored, password)
            if len(calls) == 1:
                _set_password_hash(database, new_hash)
            return answer

        monkeypatch.setattr(lockout, "verify_password", verify_then_change)
    else:
        real_lock = sessions.lock_for_sign_in

        def change_then_lock(db, user_id, replaces):
            _set_password_hash(database, new_hash)
            return real_lock(db, user_id, replaces)

        monkeypatch.setattr(sessions, "lock_for_sign_in", change_then_lock)
    answer = sign_in(client)
    assert answer.status_code == 401, answer.text[:300]
    assert BAD_CREDENTIALS in answer.text
    assert rows(database) == []


def test_a_rehash_of_the_same_password_during_a_sign_in_still_signs_in(
    client, user, database, monkeypatch
):
    """Another sign-in may store the same password hashed anew (needs_rehash): the check
    after the lock verifies against it, and this sign-in goes on."""
    real_lock = sessions.lock_for_sign_in

    def rehash_then_lock(db, user_id, replaces):
        _set_password_hash(database, hash_password(PASSWORD))
        return real_lock(db, user_id, replaces)

    monkeypatch.setattr(sessions, "lock_for_sign_in", rehash_then_lock)
    assert sign_in(client).status_code == 303
    assert len(rows(database)) == 1
