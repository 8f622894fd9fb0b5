"""WebAuthn related origins (SPEC §5.6, §9): BARYCENTER_RELATED_ORIGINS is checked at start-up,
served at /.well-known/webauthn, and accepted wherever our own origin is: the Origin /
Sec-Fetch-Site check and the ceremonies' origin check (here with the software authenticator:
Chromium fetches the well-known file from https://<rpId> only)."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient
from sqlmodel import select

from models import AuthSession, Passkey, WebAuthnChallenge
from tests.helpers import ORIGIN, PASSWORD, Client, query
from tests.softauthn import SoftAuthenticator
from web import cli
from web.app import create_app
from web.settings import ConfigError, Settings

RELATED = "https://accounts.related.example"
UNLISTED = "https://unlisted.example"
FROM_RELATED = {"Origin": RELATED, "Sec-Fetch-Site": "cross-site"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(related_origins=(RELATED, "http://localhost:8001"))


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", ()),
        (" , ", ()),
        (RELATED, (RELATED,)),
        (f" {RELATED} ,https://b.example.org/ ", (RELATED, "https://b.example.org")),
        ("HTTPS://Login.Example.COM:443", ("https://login.example.com",)),
        ("https://login.example.com:8443", ("https://login.example.com:8443",)),
        ("http://localhost:8001", ("http://localhost:8001",)),
        ("http://localhost", ("http://localhost",)),
        (f"{RELATED},{RELATED}", (RELATED,)),
        ("https://xn--bcher-kva.example", ("https://xn--bcher-kva.example",)),
    ],
)
def test_related_origins_are_trimmed_and_normalised(value, origins):
    env = {"BARYCENTER_RELATED_ORIGINS": value, "BARYCENTER_SECRET_KEY": "k" * 32}
    assert Settings.from_env(env).related_origins == origins


@pytest.mark.parametrize(
    "entry",
    [
        "https://a.example/path",
        "https://a.example/?x=1",
        "https://a.example?x=1",
        "https://a.example#top",
        "https://user:pw@a.example",
        "http://a.example",  # https only, except localhost
        "http://127.0.0.1:8000",
        "ftp://a.example",
        "a.example",
        "//a.example",
        "https://",
        "https://a.example:99999",
        "https://a.example:port",
        "https://a b.example",
        "https://<script>.example",
        "https://-a.example",
        "https://a..example",
        "https://[::1]",
        "javascript:alert(1)",
    ],
)
def test_invalid_related_origins_stop_start_up(entry):
    env = {"BARYCENTER_RELATED_ORIGINS": f"{RELATED},{entry}", "BARYCENTER_SECRET_KEY": "k" * 32}
    with pytest.raises(ConfigError) as problem:
        Settings.from_env(env)
    assert "BARYCENTER_RELATED_ORIGINS" in str(problem.value)
    assert repr(entry) in str(problem.value)  # names the entry at fault


def test_the_command_line_says_what_is_wrong(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("BARYCENTER_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    monkeypatch.setenv("BARYCENTER_RELATED_ORIGINS", "https://ok.example, https://bad.example/x")
    assert cli.main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "'https://bad.example/x'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "db.sqlite").exists()  # nothing ran


# --------------------------------------------------------------------------------------
# /.well-known/webauthn
# --------------------------------------------------------------------------------------


def test_well_known_webauthn_lists_our_origin_and_the_related_ones(client):
    response = client.get("/.well-known/webauthn")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.json() == {"origins": [ORIGIN, RELATED, "http://localhost:8001"]}
    assert "set-cookie" not in response.headers


def test_well_known_webauthn_is_404_without_related_origins(settings, database):
    app = create_app(settings.with_(related_origins=()), database)
    with TestClient(app=app, base_url=ORIGIN) as plain:
        response = plain.get("/.well-known/webauthn")
        assert response.status_code == 404
        assert plain.get(
            "/.well-known/webauthn", headers={"Accept": "application/json"}
        ).json() == {"detail": "Not found."}


def test_well_known_webauthn_takes_no_other_method(client):
    client.page("/login")
    response = client.post("/.well-known/webauthn", headers={"X-CSRFToken": client.csrf})
    assert response.status_code == 405


# --------------------------------------------------------------------------------------
# The Origin / Sec-Fetch-Site check
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),
        ({"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}, False),
        ({"Origin": RELATED, "Sec-Fetch-Site": "cross-site"}, False),
        ({"Origin": RELATED, "Sec-Fetch-Site": "same-site"}, False),
        ({"Origin": "http://localhost:8001", "Sec-Fetch-Site": "same-site"}, False),
        ({"Origin": UNLISTED}, True),
        ({"Origin": UNLISTED, "Sec-Fetch-Site": "cross-site"}, True),
        ({"Origin": RELATED + "/"}, True),  # an origin never has a path
        ({"Origin": "https://accounts.related.example.evil.example"}, True),
        ({"Origin": "null"}, True),
        ({"Sec-Fetch-Site": "cross-site"}, True),  # cross-site with no origin to vouch for it
        ({"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"}, True),
    ],
)
def test_origin_check_accepts_related_origins(client, user, headers, refused):
    client.page("/login")
    response = client.form(
        "/login", {"username": "alice", "password": "wrong password"}, headers=headers
    )
    if refused:
        assert response.status_code == 403
        assert query(client.app.state.database, select(AuthSession)) == []
    else:
        assert response.status_code == 401  # the check let it through to the password


def test_related_origin_is_refused_when_not_configured(settings, database, user):
    app = create_app(settings.with_(related_origins=()), database)
    with Client(app=app, base_url=ORIGIN) as plain:
        plain.page("/login")
        response = plain.form(
            "/login", {"username": "alice", "password": PASSWORD}, headers=FROM_RELATED
        )
        assert response.status_code == 403


# --------------------------------------------------------------------------------------
# Ceremonies from a related origin (software authenticator)
# --------------------------------------------------------------------------------------


def sign_in_with_password(client: Client, **headers: str) -> None:
    client.page("/login")
    response = client.form("/login", {"username": "alice", "password": PASSWORD}, headers=headers)
    assert response.status_code == 303, response.text
    client.page("/account")


def register_from(client: Client, authn: SoftAuthenticator, origin: str):
    headers = {"Origin": origin, "Sec-Fetch-Site": "cross-site"} if origin != ORIGIN else {}
    options = client.json_post("/account/passkeys/start", {"name": "Key"}, **headers)
    assert options.status_code == 200, options.text
    credential = authn.register(options.json(), origin=origin)
    return client.json_post(
        "/account/passkeys/finish", {"credential": credential, "name": "Key"}, **headers
    )


def passkey_sign_in_from(client: Client, authn: SoftAuthenticator, origin: str):
    client.page("/login")
    options = client.json_post("/login/passkey/start", {})
    assert options.status_code == 200, options.text
    credential = authn.authenticate(options.json(), origin=origin)
    return client.json_post("/login/passkey/finish", {"credential": credential})


def test_registration_and_sign_in_from_a_related_origin(client, user, database):
    authn = SoftAuthenticator(rp_id="localhost", origin=RELATED)
    sign_in_with_password(client)
    assert register_from(client, authn, RELATED).status_code == 200
    (passkey,) = query(database, select(Passkey))
    client.form("/logout")
    response = passkey_sign_in_from(client, authn, RELATED)
    assert response.status_code == 200, response.text
    assert response.json()["redirect"] == "/account"
    (session,) = query(database, select(AuthSession))
    assert session.state == "full" and session.passkey_id == passkey.id


@pytest.mark.parametrize(
    "origin", [UNLISTED, "https://accounts.related.example:444", "http://accounts.related.example"]
)
def test_ceremonies_from_an_unlisted_origin_are_refused(client, user, database, origin):
    authn = SoftAuthenticator(rp_id="localhost", origin=origin)
    sign_in_with_password(client)
    # the registration's finish comes from our own page here; only clientDataJSON lies
    options = client.json_post("/account/passkeys/start", {"name": "Key"})
    credential = authn.register(options.json(), origin=origin)
    refused = client.json_post(
        "/account/passkeys/finish", {"credential": credential, "name": "Key"}
    )
    assert refused.status_code == 400
    assert query(database, select(Passkey)) == []
    # a passkey registered properly, then used from the unlisted origin
    good = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    assert register_from(client, good, ORIGIN).status_code == 200
    client.form("/logout")
    good.origin = origin
    response = passkey_sign_in_from(client, good, origin)
    assert response.status_code == 400
    assert query(database, select(AuthSession)) == []
    consumed = [c.consumed_at for c in query(database, select(WebAuthnChallenge))]
    assert all(consumed)  # every challenge used up, refused or not


def test_related_origin_ceremony_is_refused_when_not_configured(settings, database, user):
    app = create_app(settings.with_(related_origins=()), database)
    authn = SoftAuthenticator(rp_id="localhost", origin=RELATED)
    with Client(app=app, base_url=ORIGIN) as plain:
        sign_in_with_password(plain)
        options = plain.json_post("/account/passkeys/start", {"name": "Key"})
        credential = authn.register(options.json(), origin=RELATED)
        response = plain.json_post(
            "/account/passkeys/finish", {"credential": credential, "name": "Key"}
        )
        assert response.status_code == 400
    assert query(database, select(Passkey)) == []
