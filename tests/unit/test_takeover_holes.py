"""Regression tests for the smaller holes of issue 9 (each fails on the main before it)."""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlmodel import select, update

from models import AuthSession, Passkey, RecoveryCode, SecurityEvent, User, utcnow
from tests.helpers import PASSWORD, query, reload_user
from tests.helpers.account import enabled_with_passkey, kinds, sign_in_partial
from tests.helpers.admin_api import TOKEN, set_enabled
from web import passwords, ratelimit, twofactor
from web.admin.app import create_admin_app
from web.app import create_app
from web.cleanup import cleanup
from web.errors import Refused
from web.settings import Settings, _secret_key
from web.users import validate_new_user

# ---- return_to with any characters: never a 5xx, never a half-done sign-in ---------------

HOSTILE_RETURN_TO = [
    "/€",
    "/%E2%82%AC",
    "/\x0b/x",
    "/café?q=ü",
    "/" + "a" * 4096,
    "/x\r\nSet-Cookie: evil=1",
    "/x%0d%0aSet-Cookie:%20evil=1",
    "/x%0D%0ALocation:%20//evil.example",
    "/x\u2028y",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "/x%00y",
]


@pytest.mark.parametrize("return_to", HOSTILE_RETURN_TO)
def test_hostile_return_to_never_breaks_sign_in(client, user, database, return_to):
    signed_out = client.get("/login", params={"return_to": return_to})
    assert signed_out.status_code == 200
    client.page("/login")
    answer = client.form(
        "/login", {"username": "alice", "password": PASSWORD, "return_to": return_to}
    )
    assert answer.status_code == 303
    location = answer.headers["location"]
    location.encode("ascii")  # only ASCII in the header
    assert location.startswith("/") and not location.startswith(("//", "/\\"))
    assert "\r" not in location and "\n" not in location and "%0d" not in location.lower()
    assert len(query(database, select(AuthSession))) == 1  # the one completed session
    signed_in = client.get("/login", params={"return_to": return_to}, follow_redirects=False)
    assert signed_in.status_code < 500
    signed_in.headers.get("location", "").encode("ascii")
    # a wrong password leaves no session row behind
    client.form("/logout")
    client.page("/login")
    wrong = client.form("/login", {"username": "alice", "password": "nope", "return_to": return_to})
    assert wrong.status_code == 401
    assert query(database, select(AuthSession)) == []


def test_a_plain_non_ascii_return_to_is_kept_encoded(client, user):
    client.page("/login")
    answer = client.form(
        "/login", {"username": "alice", "password": PASSWORD, "return_to": "/café?q=ü"}
    )
    assert answer.headers["location"] == "/caf%C3%A9?q=%C3%BC"


# ---- usernames in full -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", "\nalice", "al ice", "a" * 65, ""])
def test_usernames_match_their_pattern_in_full(name):
    with pytest.raises((Refused, ValueError)):
        validate_new_user(name, "a long enough password", None)


# ---- duplicate credential IDs under concurrent registration -----------------------------


def test_a_duplicate_credential_id_racing_past_the_check_is_a_409(
    auth, client, database, monkeypatch
):
    auth.login()
    options = client.json_post("/account/passkeys/start", {"name": "Twin"})
    credential = auth.authn.register(options.json())
    raw_id = base64.urlsafe_b64decode(credential["rawId"] + "=" * (-len(credential["rawId"]) % 4))
    # another registration of the same ID committed between our check and our insert
    with database.session() as db:
        db.add(
            Passkey(
                credential_id=raw_id,
                user_id=reload_user(database).id,
                public_key=b"k",
                sign_count=0,
                transports=[],
                aaguid="",
                backup_eligible=False,
                backup_state=False,
                name="The other one",
            )
        )
        db.commit()
    monkeypatch.setattr("web.passkeys.passkey_by_credential_id", lambda db, cid: None)
    answer = client.json_post(
        "/account/passkeys/finish", {"credential": credential, "name": "Twin"}
    )
    assert answer.status_code == 409, answer.text
    assert "already registered" in answer.json()["detail"]
    assert [p.name for p in query(database, select(Passkey))] == ["The other one"]


# ---- cookies, HSTS ------------------------------------------------------------------------


def test_secure_cookies_get_host_and_secure_prefixes(settings, database):
    secure = settings.with_(origin="https://id.example.com", cookie_secure=True)
    assert secure.session_cookie == "__Host-barycenter_session"
    assert secure.csrf_cookie == "__Host-barycenter_csrf"
    assert secure.ceremony_cookie == "__Secure-barycenter_ceremony"
    assert settings.session_cookie == "barycenter_session"  # http://localhost: no prefix
    with TestClient(app=create_app(secure, database), base_url="https://id.example.com") as c:
        page = c.get("/login")
        cookies = page.headers.get_list("set-cookie")
        assert any(v.startswith("__Host-barycenter_csrf=") and "Secure" in v for v in cookies)
        assert page.headers["strict-transport-security"].startswith("max-age=")


def test_no_hsts_on_plain_http(client):
    assert "strict-transport-security" not in client.get("/login").headers


# ---- secret files, admin token -------------------------------------------------------------


def test_the_secret_key_file_is_created_owner_only(tmp_path):
    old = os.umask(0)  # even with a permissive umask
    try:
        key = _secret_key(tmp_path / "data")
    finally:
        os.umask(old)
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key
    assert _secret_key(tmp_path / "data") == key


def test_make_run_writes_the_admin_token_owner_only():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    line = next(line for line in makefile.splitlines() if "> data/admin_token" in line)
    assert "umask 077" in line


@pytest.mark.parametrize("token", ["short", "x" * 31])
def test_a_short_admin_token_stops_start_up(token):
    env = {"BARYCENTER_SECRET_KEY": "k" * 48, "BARYCENTER_ADMIN_TOKEN": token}
    with pytest.raises(ValueError, match="at least 32 characters"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "BARYCENTER_ADMIN_TOKEN": "x" * 32}).admin_token


def test_reauth_seconds_from_the_environment():
    env = {"BARYCENTER_SECRET_KEY": "k" * 48}
    assert Settings.from_env(env).reauth_seconds == 600
    assert Settings.from_env({**env, "BARYCENTER_REAUTH_SECONDS": "30"}).reauth_seconds == 30
    with pytest.raises(ValueError):
        Settings.from_env({**env, "BARYCENTER_REAUTH_SECONDS": "-1"})


def test_a_graphql_query_that_fails_validation_is_not_logged(settings, database, caplog):
    secret = "hunter2-Secret-Password"  # noqa: S105
    document = f'mutation {{ createUser(username: "bob", password: "{secret}", nope: 1) {{ x }} }}'
    with (
        TestClient(app=create_admin_app(settings, database)) as api,
        caplog.at_level(logging.DEBUG),
    ):
        answer = api.post(
            "/graphql", json={"query": document}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code in (200, 400)
    assert secret not in caplog.text
    assert all(secret not in str(r.args) for r in caplog.records)


# ---- per-IP counting, passkey limit, hashing pool -------------------------------------------


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_ipv6_addresses_count_by_64(ip, key):
    assert ratelimit.ip_key(ip) == key


def test_at_most_32_passkeys(auth, client, database):
    auth.login()
    user = reload_user(database)
    with database.session() as db:
        for n in range(32):
            db.add(
                Passkey(
                    credential_id=n.to_bytes(4, "big") * 4,
                    user_id=user.id,
                    public_key=b"k",
                    sign_count=0,
                    transports=[],
                    aaguid="",
                    backup_eligible=False,
                    backup_state=False,
                    name=f"Key {n}",
                )
            )
        db.commit()
    refused = client.json_post("/account/passkeys/start", {"name": "One more"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == twofactor.TOO_MANY_PASSKEYS
    page = client.page("/account")
    assert "the most an account can have" in page.text
    assert 'data-start="/account/passkeys/start"' not in page.text  # no ceremony offered
    assert len(query(database, select(Passkey))) == 32


def test_password_hashing_runs_in_a_bounded_pool(monkeypatch):
    running = 0
    most = 0
    lock = threading.Lock()

    class Slow:
        def verify(self, stored, password):
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.05)
            with lock:
                running -= 1
            return True

    monkeypatch.setattr(passwords, "_hasher", Slow())
    threads = [
        threading.Thread(target=passwords.verify_password, args=("hash", "pw")) for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= most <= passwords.POOL_SIZE < 16


# ---- "Password entered; sign-in not completed" ------------------------------------------------


def test_a_pending_second_factor_that_ends_is_recorded(auth, client, database, settings):
    enabled_with_passkey(auth)
    sign_in_partial(auth)
    assert "sign_in_incomplete" not in kinds(database)
    client.form("/logout")
    assert kinds(database)[-1] == "sign_in_incomplete"
    # one that expires is recorded by the clean-up
    sign_in_partial(auth)
    with database.session() as db:
        db.exec(update(AuthSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.commit()
    cleanup(database, settings)
    assert kinds(database).count("sign_in_incomplete") == 2
    page = client.page("/account")  # signed out now: sign in to see the activity list
    assert page.status_code in (200, 303, 401)


def test_a_completed_second_factor_is_not_recorded_as_incomplete(auth, client, database):
    codes = enabled_with_passkey(auth)
    sign_in_partial(auth)
    assert client.form("/login/2fa/recovery", {"code": codes[0]}).status_code == 303
    assert "sign_in_incomplete" not in kinds(database)
    text = client.page("/account").text
    assert "Password entered; sign-in not completed" not in text


# ---- admin overrides ---------------------------------------------------------------------------


def test_an_admin_turning_2fa_off_deletes_the_recovery_codes(auth, settings, database):
    enabled_with_passkey(auth)
    assert len(query(database, select(RecoveryCode))) == 10
    with TestClient(app=create_admin_app(settings, database)) as api:
        answer = api.post(
            "/graphql",
            json={"query": set_enabled("alice", False)},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    assert query(database, select(RecoveryCode)) == []
    assert not twofactor.effective(reload_user(database))


def test_enroll_at_login_ends_other_sessions_with_its_event(auth, client, database, make_client):
    other = make_client()
    other.page("/login")
    other.form("/login", {"username": "alice", "password": PASSWORD})
    assert len(query(database, select(AuthSession))) == 1
    with database.session() as db:
        db.exec(update(User).values(requires_2fa=True))
        db.commit()
    client.page("/login")
    client.form("/login", {"username": "alice", "password": PASSWORD})
    client.page("/login/2fa")
    options = client.json_post("/login/2fa/enroll/start", {"name": "Phone"})
    assert options.status_code == 200, options.text
    credential = auth.authn.register(options.json())
    done = client.json_post("/login/2fa/enroll/finish", {"credential": credential, "name": "Phone"})
    assert done.status_code == 200, done.text
    assert len(query(database, select(AuthSession))) == 1  # only this one
    assert "enrolled_at_login" in kinds(database)
    events = query(database, select(SecurityEvent).where(SecurityEvent.kind == "enrolled_at_login"))
    assert events[0].detail["name"] == "Phone"
