"""Settings (SPEC §2), password hashing, CSRF and foreign origins, security headers, caching
and the page-or-partial answer for htmx (SPEC §5, §7)."""

from __future__ import annotations

import stat

import pytest
from argon2 import PasswordHasher
from sqlmodel import select

from models import AuthSession, SecurityEvent
from tests.helpers import ORIGIN, PASSWORD, query, reload_user
from web.passwords import hash_password, verify_password
from web.settings import DEFAULT_DATABASE_URL, Settings

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def assert_security_headers(response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


# --------------------------------------------------------------------------------------
# Settings.from_env
# --------------------------------------------------------------------------------------


def test_settings_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///./data/barycenter.db"
    assert settings.rp_id == "localhost"
    assert settings.rp_name == "Barycenter"
    assert settings.effective_origin == "http://localhost:8000"
    assert settings.admin_token is None
    assert settings.secure_cookies is False  # http://localhost
    assert settings.session_ttl == 3600
    assert settings.session_absolute_ttl == 24 * 3600
    assert settings.partial_session_ttl == 600
    assert settings.ip_limit_per_minute == 30
    assert settings.trusted_proxies == ()
    assert settings.dev is False
    # the secret key is generated once into the data folder, private, and reused
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.read_text().strip() == settings.secret_key
    assert len(settings.secret_key) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Settings.from_env({}).secret_key == settings.secret_key


def test_settings_secret_key_beside_a_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path}/elsewhere/app.db"
    settings = Settings.from_env({"BARYCENTER_DATABASE_URL": url})
    assert (tmp_path / "elsewhere" / "secret_key").read_text().strip() == settings.secret_key


def test_settings_every_variable(tmp_path):
    env = {
        "BARYCENTER_DATABASE_URL": "postgresql+psycopg://app@db.internal:5432/barycenter",
        "BARYCENTER_RP_ID": "id.example.com",
        "BARYCENTER_RP_NAME": "Example ID",
        "BARYCENTER_ORIGIN": "https://id.example.com/",
        "BARYCENTER_ADMIN_TOKEN": "s3cret-admin-token-0123456789abcdef",
        "BARYCENTER_SECRET_KEY": "k" * 48,
        "BARYCENTER_COOKIE_SECURE": "false",
        "BARYCENTER_SESSION_TTL": "900",
        "BARYCENTER_IP_LIMIT_PER_MINUTE": "0",
        "BARYCENTER_TRUSTED_PROXIES": " 10.0.0.1 , 10.0.0.2,,",
        "BARYCENTER_DEV": "1",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == env["BARYCENTER_DATABASE_URL"]
    assert settings.rp_id == "id.example.com"
    assert settings.rp_name == "Example ID"
    assert settings.origin == settings.effective_origin == "https://id.example.com"
    assert settings.admin_token == "s3cret-admin-token-0123456789abcdef"
    assert settings.secret_key == "k" * 48
    assert settings.cookie_secure is False and settings.secure_cookies is False
    assert settings.session_ttl == 900
    assert settings.ip_limit_per_minute == 0
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.2")
    assert settings.dev is True
    assert "k" * 48 not in repr(settings)  # the key stays out of logs


@pytest.mark.parametrize(
    ("origin", "flag", "secure"),
    [
        ("", "", False),
        ("http://localhost:9000", "", False),
        ("https://id.example.com", "", True),
        ("https://id.example.com", "0", False),
        ("http://localhost:8000", "true", True),
        ("http://localhost:8000", "YES", True),
        ("https://id.example.com", "off", False),
    ],
)
def test_settings_cookie_secure(origin, flag, secure):
    env = {"BARYCENTER_SECRET_KEY": "k" * 48, "BARYCENTER_ORIGIN": origin}
    if flag:
        env["BARYCENTER_COOKIE_SECURE"] = flag
    assert Settings.from_env(env).secure_cookies is secure


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BARYCENTER_SESSION_TTL", "abc"),
        ("BARYCENTER_SESSION_TTL", "0"),
        ("BARYCENTER_SESSION_TTL", "-60"),
        ("BARYCENTER_SESSION_TTL", "1.5"),
        ("BARYCENTER_IP_LIMIT_PER_MINUTE", "-1"),
        ("BARYCENTER_IP_LIMIT_PER_MINUTE", "lots"),
        ("BARYCENTER_COOKIE_SECURE", "maybe"),
        ("BARYCENTER_DEV", "sometimes"),
    ],
)
def test_settings_bad_values(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({"BARYCENTER_SECRET_KEY": "k" * 48, name: value})


def test_settings_overrides_win():
    settings = Settings.from_env({"BARYCENTER_SECRET_KEY": "k" * 48}, port=9123, dev=True)
    assert settings.effective_origin == "http://localhost:9123"
    assert settings.dev is True


# --------------------------------------------------------------------------------------
# Password hashing
# --------------------------------------------------------------------------------------


def test_password_hashing(product_hashing):
    hashed = hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed
    assert hash_password(PASSWORD) != hashed  # salted
    assert verify_password(hashed, PASSWORD)
    assert not verify_password(hashed, PASSWORD + " ")
    assert not verify_password(hashed, "")
    assert not verify_password(None, PASSWORD)  # unknown user: the same work, then no
    assert not verify_password("not a hash", PASSWORD)
    parameters = PasswordHasher().check_needs_rehash(hashed)
    assert parameters is False  # the library's current recommended parameters


def test_stored_password_is_argon2id(product_hashing, settings, database):
    with database.session() as db:
        from web.users import create_user

        create_user(db, "alice", PASSWORD, actor="admin")
    stored = reload_user(database).password_hash
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert verify_password(stored, PASSWORD)


# --------------------------------------------------------------------------------------
# CSRF and foreign origins
# --------------------------------------------------------------------------------------


def test_form_post_without_csrf_token_is_403(client, user, database):
    client.page("/login")
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 403
    assert 'role="alert"' in response.text
    assert "Reload the page and try again." in response.text  # plain words, no jargon
    assert "CSRF token verification failed" not in response.text
    assert_security_headers(response)
    assert query(database, select(AuthSession)) == []


def test_form_post_with_a_wrong_csrf_token_is_403(client, user, database):
    client.page("/login")
    response = client.post(
        "/login",
        data={"_csrf_token": client.csrf[:-4] + "AAAA", "username": "alice", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert query(database, select(AuthSession)) == []


def test_csrf_token_of_another_browser_is_refused(client, make_client, user, database):
    other = make_client()
    other.page("/login")
    client.page("/login")
    response = client.post(
        "/login",
        data={"_csrf_token": other.csrf, "username": "alice", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert query(database, select(AuthSession)) == []


def test_json_and_htmx_requests_without_token_are_403(auth, client, database):
    auth.login()
    no_header = client.post(
        "/account/passkeys/start",
        json={"name": "Key"},
        headers={"Accept": "application/json"},
        follow_redirects=False,
    )
    assert no_header.status_code == 403
    htmx = client.post(
        "/account/sessions/revoke-others", headers={"HX-Request": "true"}, follow_redirects=False
    )
    assert htmx.status_code == 403
    logout = client.post("/logout", follow_redirects=False)
    assert logout.status_code == 403
    assert len(query(database, select(AuthSession))) == 1
    assert client.get("/account", follow_redirects=False).status_code == 200


FOREIGN_ORIGINS = [
    "https://evil.example",
    "null",
    "http://localhost:8001",
    "http://127.0.0.1:8000",
    "http://localhost",
    "https://localhost:8000",
]


def test_foreign_origin_is_403_even_with_a_valid_token(client, user, database):
    client.page("/login")
    for origin in FOREIGN_ORIGINS:
        response = client.form(
            "/login", {"username": "alice", "password": PASSWORD}, headers={"Origin": origin}
        )
        assert response.status_code == 403, origin
        assert "other sites" in response.text
    assert query(database, select(AuthSession)) == []
    assert reload_user(database).failed_login_count == 0


def test_foreign_origin_refused_on_json_and_htmx(auth, client, database):
    auth.login()
    start = client.json_post(
        "/account/passkeys/start", {"name": "Key"}, Origin="https://evil.example"
    )
    assert start.status_code == 403
    assert start.json() == {"detail": "Requests from other sites are refused."}
    logout = client.post(
        "/logout",
        headers={
            "X-CSRFToken": client.csrf,
            "HX-Request": "true",
            "Origin": "https://evil.example",
        },
        follow_redirects=False,
    )
    assert logout.status_code == 403
    assert len(query(database, select(AuthSession))) == 1


def test_cross_site_fetch_metadata_is_403(client, user, database):
    client.page("/login")
    response = client.form(
        "/login",
        {"username": "alice", "password": PASSWORD},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403
    assert query(database, select(AuthSession)) == []


def test_own_origin_and_same_origin_fetch_metadata_pass(client, user):
    client.page("/login")
    response = client.form(
        "/login",
        {"username": "alice", "password": PASSWORD},
        headers={"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 303 and response.headers["location"] == "/account"


def test_get_never_changes_state(auth, client, database):
    auth.login()
    events_before = len(query(database, select(SecurityEvent)))
    for url in ("/logout", "/account/sessions/revoke-others"):
        response = client.get(url, follow_redirects=False)
        assert response.status_code in (404, 405), url
    # rev 2: a GET here is the question asked before regenerating; it changes nothing
    asked = client.get("/account/recovery-codes/regenerate", follow_redirects=False)
    assert asked.status_code == 409  # (2FA is off: no codes to regenerate)
    assert len(query(database, select(AuthSession))) == 1
    assert len(query(database, select(SecurityEvent))) == events_before


# --------------------------------------------------------------------------------------
# Headers on every kind of response
# --------------------------------------------------------------------------------------


def test_headers_on_pages(auth, client):
    login = client.get("/login")
    assert login.status_code == 200
    assert_security_headers(login)
    auth.login()
    account = client.get("/account")
    assert account.status_code == 200
    assert_security_headers(account)
    assert "<script>" not in account.text and " onclick=" not in account.text


def test_headers_on_static_files(client):
    for path in ("/static/css/app.css", "/static/js/passkeys.js", "/static/js/htmx-2.0.11.min.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_security_headers(response)


def test_headers_on_json(auth, client):
    health = client.get("/healthz")
    assert health.json() == {"status": "ok"}
    assert_security_headers(health)
    auth.login()
    options = client.json_post("/account/passkeys/start", {"name": "Key"})
    assert options.status_code == 200
    assert_security_headers(options)
    assert options.headers["cache-control"] == "no-store"


def test_headers_on_errors(client, user):
    responses = {
        "404 page": client.get("/no-such-page"),
        "404 static": client.get("/static/js/nothing.js"),
        "405": client.get("/logout"),
        "403 csrf": client.post("/login", data={}, follow_redirects=False),
        "401 json": client.json_post("/account/passkeys/start", {"name": "Key"}),
        "413": client.post(
            "/login",
            content=b"x" * (65 * 1024),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        "415": client.json_post("/account/passkeys/start", b"{}", **{"Content-Type": "text/plain"}),
        "303": client.get("/account", follow_redirects=False),
    }
    for name, response in responses.items():
        assert response.status_code >= 300, name
        assert_security_headers(response)
        assert "Traceback" not in response.text, name
    assert responses["404 page"].status_code == 404
    assert 'role="alert"' in responses["404 page"].text
    assert responses["401 json"].status_code == 401
    assert responses["401 json"].json()["detail"]


def test_headers_on_the_second_factor_page(auth, client, database):
    auth.login()
    auth.add_passkey("Work key")
    from sqlmodel import update

    from models import User

    with database.session() as db:
        db.exec(update(User).values(user_2fa_enabled=True))
        db.commit()
    auth.logout()
    auth.login()
    page = client.get("/login/2fa")
    assert page.status_code == 200
    assert_security_headers(page)
    assert page.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------------------
# Caching and the page-or-partial answer
# --------------------------------------------------------------------------------------

SECTIONS = ["two-factor", "passkeys", "recovery-codes", "sessions", "activity"]


def test_account_pages_are_not_cached(auth, client):
    auth.login()
    for path in ["/account", *[f"/account/{s}" for s in SECTIONS]]:
        for headers in ({}, {"HX-Request": "true"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 200, path
            assert response.headers["cache-control"] == "no-store", path
            assert "HX-Request" in response.headers.get("vary", ""), path


def test_partial_for_htmx_page_otherwise(auth, client):
    auth.login()
    for section in ("two-factor", "passkeys", "sessions", "activity"):
        partial = client.get(f"/account/{section}", headers={"HX-Request": "true"})
        page = client.get(f"/account/{section}")
        restore = client.get(
            f"/account/{section}",
            headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
        )
        assert partial.text.lstrip().startswith(f'<section id="{section}"'), section
        assert "<html" not in partial.text
        for whole in (page, restore):
            assert whole.text.lstrip().lower().startswith("<!doctype html>"), section
            assert f'<section id="{section}"' in whole.text
            assert "Account security" in whole.text


def test_htmx_step_is_a_partial_and_a_page_without_javascript(auth, client):
    auth.login()
    auth.add_passkey("Work key")
    partial = client.get("/account/two-factor/enable", headers={"HX-Request": "true"})
    page = client.get("/account/two-factor/enable")
    assert "<html" not in partial.text and "Verify with a passkey" in partial.text
    assert "<html" in page.text and "Verify with a passkey" in page.text
    assert page.headers["vary"] == partial.headers["vary"]


def test_redirect_is_hx_redirect_for_htmx_and_303_for_a_form(auth, client, database):
    """web.routes.common.redirect(); the passkey shim's JSON answer (HX-Redirect and
    {"redirect": …}) is checked with the ceremonies (test_smoke_flows, test_ceremony_checks)."""
    auth.login()
    plain = client.form("/logout")
    assert plain.status_code == 303 and plain.headers["location"] == "/login"
    assert "hx-redirect" not in plain.headers
    auth.login()
    client.page("/account")
    hx = client.htmx("POST", "/logout")
    assert hx.status_code == 200 and hx.headers["hx-redirect"] == "/login"
    assert "location" not in hx.headers
    for answer in (plain, hx):
        assert answer.headers["cache-control"] == "no-store"
    assert query(database, select(AuthSession)) == []


def test_htmx_errors_are_plain_text_not_json(auth, client):
    auth.login()
    response = client.get("/account/passkeys/9999/rename", headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "That passkey was not found."
