"""Rendered account pages kept in memory (web/pagecache.py): served again only while
nothing they show has changed, never to another session, and never past their time.

The database bumps `users.data_version` on each change the page shows (migration 0004);
the first tests check every trigger on its own, on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel import select

from models import AuthSession, User, utcnow
from tests.helpers import ORIGIN, Auth, Client, reload_user, statements
from tests.helpers.account import my_session, set_required
from tests.softauthn import SoftAuthenticator
from web import events, pagecache, sessions
from web.app import create_app
from web.cleanup import cleanup
from web.pagecache import MAX_AGE, Key, PageCache
from web.sessions import AtRest, Viewer
from web.settings import Settings
from web.users import create_user

CHROME_ON_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0"
FIREFOX_ON_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


def version(database) -> int:
    return reload_user(database).data_version


def run(database, sql: str, **params: object) -> None:
    with database.session() as db:
        db.exec(text(sql), params=params)  # type: ignore[call-overload]
        db.commit()


@pytest.fixture
def everything(auth: Auth) -> Auth:
    """alice signed in, with a passkey, 2FA on (recovery codes), events."""
    auth.login()
    assert auth.add_passkey("First key").status_code == 200
    assert auth.enable_2fa().status_code == 200
    return auth


def second_session(auth: Auth, make_client) -> Auth:
    """alice in another browser, signed in with her passkey (a full session with 2FA on)."""
    other = Auth(make_client(), auth.authn)
    other.client.page("/login")
    options = other.client.json_post("/login/passkey/start", {})
    credential = auth.authn.authenticate(options.json())
    assert other.client.json_post("/login/passkey/finish", {"credential": credential}).is_success
    assert other.client.page("/account").status_code == 200
    return other


# ---- the database keeps the version --------------------------------------------------

BUMPS = {
    "users: any update": "UPDATE users SET display_name = 'Alice B'",
    "passkeys: update": "UPDATE passkeys SET name = 'Renamed'",
    "passkeys: delete": "DELETE FROM passkeys",
    "recovery_codes: update": "UPDATE recovery_codes SET used_at = created_at_stand_in",
    "recovery_codes: delete": "DELETE FROM recovery_codes",
    "security_events: update": "UPDATE security_events SET ip = '192.0.2.1'",
    "security_events: delete": "DELETE FROM security_events",
    "auth_sessions: state": "UPDATE auth_sessions SET state = 'partial'",
    "auth_sessions: reauth_at": "UPDATE auth_sessions SET reauth_at = NULL",
    "auth_sessions: delete": "DELETE FROM auth_sessions",
}


@pytest.mark.parametrize("change", list(BUMPS))
def test_each_change_the_page_shows_bumps_the_version(change, everything, database):
    sql = BUMPS[change].replace("created_at_stand_in", "CURRENT_TIMESTAMP")
    before = version(database)
    run(database, sql)
    assert version(database) > before


def test_an_insert_in_each_table_bumps_the_version(everything, database, client):
    before = version(database)
    with database.session() as db:  # security_events
        events.record(db, reload_user(database).pk, "password_changed", ip="192.0.2.7")
        db.commit()
    assert version(database) == before + 1
    before = version(database)
    assert everything.add_passkey("Second key", authn=_other_device()).status_code == 200
    assert version(database) > before  # passkeys (and its event)
    before = version(database)
    Auth(Client(app=client.app, base_url=ORIGIN), everything.authn).login()
    assert version(database) > before  # auth_sessions (a new sign-in)


def _other_device() -> SoftAuthenticator:
    return SoftAuthenticator(rp_id="localhost", origin=ORIGIN)


def test_the_once_a_minute_touch_bumps_nothing(everything, database):
    before = version(database)
    run(database, "UPDATE auth_sessions SET last_seen_at = CURRENT_TIMESTAMP")
    assert version(database) == before


def test_a_change_to_another_user_leaves_the_version_alone(everything, database):
    with database.session() as db:
        create_user(db, "bob", "another long password", "Bob", actor="admin")
    before = version(database)
    run(database, "UPDATE users SET display_name = 'Bobby' WHERE username_key = 'bob'")
    assert version(database) == before


# ---- through the app ---------------------------------------------------------------


def test_an_unchanged_page_is_served_from_memory(everything, client, database):
    first = client.get("/account")
    with statements(database) as seen:
        again = client.get("/account")
    assert again.status_code == 200 and again.text == first.text
    assert len(seen) == 1 and seen[0].startswith("SELECT auth_sessions.")  # the session only
    assert again.headers["cache-control"] == "no-store"
    assert again.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Account security</h1>" in again.text


def test_every_change_shows_on_the_next_page(everything, client, database, admin, make_client):
    """Changes by this session, by another one, by the admin API (another app) and by
    anything writing to the database (the CLI, clean-up) each show on the next page."""
    assert "First key" in client.get("/account").text  # kept
    passkey_id = int(re.search(r"/account/passkeys/(\d+)/rename", client.page("/account").text)[1])
    renamed = client.form(f"/account/passkeys/{passkey_id}/rename", {"name": "Desk key"})
    assert renamed.status_code in (200, 303)
    assert "Desk key" in client.get("/account").text

    other = second_session(everything, make_client)
    renamed = other.client.form(f"/account/passkeys/{passkey_id}/rename", {"name": "Pocket key"})
    assert renamed.status_code in (200, 303) and renamed.headers.get("location") != "/login/2fa"
    page = client.get("/account").text
    assert "Pocket key" in page and page.count("This session") == 1
    assert len(set(re.findall(r"/account/sessions/\d+/revoke", page))) == 1  # the other one

    set_required(admin, True)
    assert "required by your administrator" in client.get("/account").text.lower()

    run(database, "UPDATE users SET display_name = 'Alice from the CLI'")
    assert "Signed in as Alice from the CLI" in client.get("/account").text

    run(
        database,
        "UPDATE auth_sessions SET expires_at = :past WHERE id <> :mine",
        past=utcnow() - timedelta(minutes=1),
        mine=_my_session_id(database, client),
    )
    cleanup(database, client.app.state.settings)  # the other session ends
    page = client.get("/account").text
    assert not re.search(r"/account/sessions/\d+/revoke", page)


def _my_session_id(database, client) -> int:
    return my_session(database, client).pk


def test_each_session_gets_its_own_page(everything, make_client):
    """Same user, same data: the page of one session is never another's (its "This
    session" row, its CSRF token)."""
    other = second_session(everything, make_client)
    mine, theirs = everything.client.get("/account").text, other.client.get("/account").text
    assert mine != theirs
    for page, client in ((mine, everything.client), (theirs, other.client)):
        token = CSRF_META.search(page)[1]  # type: ignore[index]
        assert token == client.cookies.get("barycenter_csrf")


def test_a_signed_out_session_never_gets_its_kept_page(everything, client, make_client):
    cookie = client.cookies.get("barycenter_session")
    assert client.get("/account").status_code == 200  # kept
    other = second_session(everything, make_client)
    ended = other.client.form("/account/sessions/revoke-others")
    assert ended.status_code in (200, 303) and ended.headers.get("location") != "/login/2fa"
    stolen = make_client()
    stolen.cookies.set("barycenter_session", cookie)
    stolen.cookies.set("barycenter_csrf", client.cookies.get("barycenter_csrf"))
    response = stolen.get("/account", follow_redirects=False)
    assert response.status_code in (303, 401) and "Account security</h1>" not in response.text
    assert client.get("/account", follow_redirects=False).status_code in (303, 401)


def test_each_browser_gets_its_own_suggested_passkey_name(auth, client):
    auth.login()
    windows = client.get("/account", headers={"user-agent": CHROME_ON_WINDOWS}).text
    linux = client.get("/account", headers={"user-agent": FIREFOX_ON_LINUX}).text
    assert 'value="Chrome on Windows"' in windows and "Firefox on Linux" not in windows
    assert 'value="Firefox on Linux"' in linux and "Chrome on Windows" not in linux


def test_a_hostile_browser_string_is_only_a_key(auth, client):
    auth.login()
    hostile = "<script>alert(1)</script>\"'&" * 300  # 8 KB
    for _ in range(2):
        page = client.get("/account", headers={"user-agent": hostile})
        assert page.status_code == 200 and "<script>alert(1)" not in page.text


def test_twelve_identical_requests_at_once_get_the_same_page(everything, client):
    client.get("/account")
    with ThreadPoolExecutor(12) as pool:
        pages = list(pool.map(lambda _: client.get("/account"), range(12)))
    assert {p.status_code for p in pages} == {200}
    assert len({p.text for p in pages}) == 1


def test_a_grace_period_that_starts_ends_the_kept_page(everything, database, admin, client):
    set_required(admin, True)
    starts = utcnow() + timedelta(seconds=5)
    run(database, "UPDATE users SET requires_2fa_from = :starts", starts=starts)
    viewer = _viewer(database)
    now = utcnow()
    assert pagecache.fresh_until(viewer.user, now) == pytest.approx(starts.timestamp())
    run(database, "UPDATE users SET requires_2fa_from = NULL")
    assert pagecache.fresh_until(_viewer(database).user, now) == now.timestamp() + MAX_AGE


def _viewer(database) -> Viewer:
    """alice and her (first) session, as the session lookup gives them."""
    with database.session(write=False) as db:
        row = db.exec(select(AuthSession, User).join(User).order_by(AuthSession.id)).first()
    assert row is not None
    return Viewer(user=row[1], session=row[0])


# ---- the cache itself ------------------------------------------------------------------


def key(n: int) -> Key:
    return Key(session=f"hash {n}", data_version=0, csrf_token="t", browser=b"b")


def test_a_kept_page_ends_at_its_time():
    now = [1000.0]
    pages = PageCache(1024, clock=lambda: now[0])
    pages.put(key(1), b"page", until=1000.0 + MAX_AGE)
    assert pages.get(key(1)) == b"page"
    now[0] += MAX_AGE - 1
    assert pages.get(key(1)) == b"page"
    now[0] += 1
    assert pages.get(key(1)) is None


def test_memory_is_bounded_least_recently_used_first():
    pages = PageCache(100, clock=lambda: 0.0)
    for n in (1, 2):
        pages.put(key(n), b"x" * 40, until=60.0)
    assert pages.get(key(1))  # 1 is now the more recent
    pages.put(key(3), b"x" * 40, until=60.0)
    assert pages.get(key(2)) is None and pages.get(key(1)) and pages.get(key(3))
    pages.put(key(4), b"x" * 101, until=60.0)  # larger than all of it: never kept
    assert pages.get(key(4)) is None and len(pages) == 2


def test_the_key_is_the_session_the_version_the_token_and_the_browser():
    base = pagecache.key("a", 7, "token", CHROME_ON_WINDOWS)
    assert base == pagecache.key("a", 7, "token", CHROME_ON_WINDOWS)
    assert base != pagecache.key("b", 7, "token", CHROME_ON_WINDOWS)
    assert base != pagecache.key("a", 8, "token", CHROME_ON_WINDOWS)
    assert base != pagecache.key("a", 7, "other token", CHROME_ON_WINDOWS)
    assert base != pagecache.key("a", 7, "token", FIREFOX_ON_LINUX)


@pytest.mark.parametrize(
    ("changes", "kept"),
    [({}, True), ({"page_cache_mb": 0}, False), ({"dev": True}, False)],
)
def test_the_cache_can_be_turned_off(changes, kept, settings, database):
    app = create_app(settings.with_(**changes), database)
    assert (app.state.pages is not None) is kept


def test_the_setting_is_read_from_the_environment(tmp_path):
    env = {"BARYCENTER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "BARYCENTER_SECRET_KEY": "k"}
    assert Settings.from_env(env).page_cache_mb == 32
    assert Settings.from_env({**env, "BARYCENTER_PAGE_CACHE_MB": "0"}).page_cache_mb == 0
    with pytest.raises(ValueError, match="BARYCENTER_PAGE_CACHE_MB"):
        Settings.from_env({**env, "BARYCENTER_PAGE_CACHE_MB": "-1"})
    with pytest.raises(ValueError, match="BARYCENTER_PAGE_CACHE_MB"):
        Settings.from_env({**env, "BARYCENTER_PAGE_CACHE_MB": "lots"})


# ---- which requests may be served from memory: sessions.settled ------------------------

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def at_rest_facts(**changes: object) -> AtRest:
    facts = AtRest(
        session_id=1,
        token_hash="hash",
        user_id=1,
        state="full",
        mfa_verified=False,
        reauth_at=None,
        expires_at=NOW + timedelta(hours=1),
        last_seen_at=NOW - timedelta(seconds=30),
        requires_2fa=False,
        user_2fa_enabled=False,
        requires_2fa_from=None,
        data_version=3,
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


@pytest.mark.parametrize(
    ("changes", "settled"),
    [
        ({}, True),
        ({"user_2fa_enabled": True, "mfa_verified": True}, True),
        ({"state": "partial"}, False),  # waiting for its second factor
        ({"last_seen_at": NOW - timedelta(seconds=61)}, False),  # the touch is due (a write)
        ({"expires_at": NOW - timedelta(seconds=1)}, False),  # over
        ({"user_2fa_enabled": True}, False),  # 2FA on, this session without it: demoted
        ({"requires_2fa": True}, False),  # an administrator's requirement, in force
        ({"requires_2fa": True, "requires_2fa_from": NOW - timedelta(seconds=1)}, False),
        ({"requires_2fa": True, "requires_2fa_from": NOW + timedelta(days=1)}, True),  # grace
        # the boundaries, to the instant
        ({"last_seen_at": NOW - timedelta(seconds=60)}, True),  # touched a minute ago: not yet
        ({"expires_at": NOW}, False),  # ends now
        ({"expires_at": NOW + timedelta(microseconds=1)}, True),
        ({"requires_2fa": True, "requires_2fa_from": NOW}, False),  # the grace ends now
        ({"requires_2fa": True, "requires_2fa_from": NOW + timedelta(microseconds=1)}, True),
    ],
)
def test_only_a_session_with_nothing_to_write_or_refuse_is_settled(changes, settled, settings):
    facts = at_rest_facts(**changes)
    assert sessions.settled(facts, facts, settings, NOW) is settled


def test_a_kept_page_is_never_served_past_the_rules(everything, client, database):
    """A session that ended, or that the rules no longer let in, takes the whole path
    (sign-in, /login/2fa) however recently its page was kept."""
    assert client.get("/account").status_code == 200  # kept
    run(database, "UPDATE auth_sessions SET state = 'partial'")
    answer = client.get("/account", follow_redirects=False)
    assert answer.status_code in (303, 401) and "/login/2fa" in answer.headers["location"]
    past = utcnow() - timedelta(minutes=1)
    run(database, "UPDATE auth_sessions SET state = 'full', expires_at = :past", past=past)
    answer = client.get("/account", follow_redirects=False)
    assert answer.status_code in (303, 401) and answer.headers["location"].startswith("/login")


def test_a_session_id_given_again_never_gets_the_page_of_the_one_before(
    everything, client, database
):
    """SQLite gives the id of the newest session, once ended, to the next one: the kept page
    of alice's ended session must never reach bob's session with that id, the same browser
    (CSRF cookie and User-Agent) and, as it happens, the same data version."""
    assert "Signed in as Alice" in client.get("/account").text  # kept
    alice_session = _my_session_id(database, client)
    alice_version = version(database)
    everything.logout()
    with database.session() as db:
        create_user(db, "bob", "another long password", "Bob Builder", actor="admin")
    client.page("/login")
    client.form("/login", {"username": "bob", "password": "another long password"})
    bob_session = _my_session_id(database, client)
    run(
        database,
        "UPDATE auth_sessions SET id = :old WHERE id = :new",
        old=alice_session,
        new=bob_session,
    )
    run(database, "UPDATE users SET data_version = :v WHERE username_key = 'bob'", v=alice_version)
    page = client.get("/account").text
    assert "Signed in as Bob Builder" in page and "Alice" not in page


def test_every_column_of_a_session_but_last_seen_bumps_the_version():
    """Migration 0004 names the columns of auth_sessions whose change the page shows: all
    but the id and the once-a-minute touch. A column added later must be added there."""
    from importlib import import_module

    migration = import_module("migrations.versions.0004_user_data_version")
    named = {c.strip() for c in migration.SESSION_COLUMNS.split(",")}
    columns = {c.name for c in AuthSession.__table__.columns}  # type: ignore[attr-defined]
    assert named == columns - {"id", "last_seen_at"}


def test_a_read_the_loop_cannot_make_takes_the_thread_path(everything, app, client, database):
    """Busy or unreachable (db.LOOP_WAIT_MS): the page is still served, through a thread."""
    from dataclasses import replace

    from sqlalchemy import create_engine

    from tests.helpers import on_postgresql

    broken = (
        create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        if on_postgresql()
        else create_engine("sqlite:////nonexistent-folder/none.db")
    )
    app.state.database = replace(database, loop=broken)
    page = client.get("/account", follow_redirects=False)
    assert page.status_code == 200 and "Signed in as Alice" in page.text


def test_a_browser_without_its_csrf_cookie_fills_no_memory(everything, app, client):
    """Each such request gets a new CSRF token, so its page could never be asked for
    again: it is rendered and not kept."""
    app.state.pages = PageCache(32 * 2**20)
    client.cookies.delete("barycenter_csrf")
    for _ in range(3):
        assert client.get("/account").status_code == 200
        client.cookies.delete("barycenter_csrf")
    assert len(app.state.pages) == 0
    client.get("/account")  # the cookie it was just given
    assert client.get("/account").status_code == 200 and len(app.state.pages) == 1
