"""Hostile input against every endpoint (issue 6, SPEC §7 "Bad input").

Odd JSON, wrong content types, oversized bodies, nasty passkey names, foreign and
impossible ids, wrong methods, CSRF and Origin tricks, stale session cookies, abuse of the
sign-in form, and a property test throwing random JSON at every ceremony finish. Each
case: the right 4xx (never a 5xx), words for a person, and a database that did not change.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from sqlmodel import col, select, update

from models import AuthSession, Passkey, SecurityEvent, User, WebAuthnChallenge
from tests.helpers import ORIGIN, PASSWORD, Auth, Client, query, reload_user
from tests.helpers.ceremony import refused, snapshot, throwaway_credential
from tests.softauthn import SoftAuthenticator, b64url
from web.db import Database
from web.users import create_user

BIG = 65 * 1024
EVIL = "https://evil.example"
BOB_PASSWORD = "bob's password 123"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def app(module_app: Litestar) -> Litestar:
    """One app for the whole module (`module_app`, tests/unit/conftest.py)."""
    return module_app


def state(database: Database) -> dict[str, Any]:
    """snapshot() plus the ceremony challenges: a refused start must not store one."""
    facts = snapshot(database)
    facts["challenges"] = [
        (c.id, c.purpose, c.consumed_at)
        for c in query(database, select(WebAuthnChallenge).order_by(col(WebAuthnChallenge.id)))
    ]
    return facts


def page_alert(response: Any) -> str:
    """The message of a refused plain request: the page's role="alert", or htmx's text."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if response.headers["content-type"].startswith("text/plain"):
        message = response.text
    else:
        found = re.search(r'role="alert"[^>]*>([^<]+)<', response.text)
        assert found, response.text[:2000]
        message = found.group(1)
    message = message.strip()
    assert 10 <= len(message) <= 200 and message[0].isupper() and message[-1] in ".!?", message
    return message


def csrf_headers(client: Client, **extra: str) -> dict[str, str]:
    return {"X-CSRFToken": client.csrf, "Accept": "application/json", **extra}


@dataclass
class Scene:
    """Alice signed in (browser `client`) with one passkey; Bob with a passkey and a session
    in a browser of his own."""

    database: Database
    client: Client
    auth: Auth
    alice_passkey: int
    bob_passkey: int
    bob_session: int
    bob_client: Client

    def passkey_name(self, passkey_id: int) -> str:
        with self.database.session(write=False) as db:
            passkey = db.get(Passkey, passkey_id)
            assert passkey is not None
            return passkey.name

    def signed_in(self, client: Client | None = None) -> bool:
        response = (client or self.client).get("/account", follow_redirects=False)
        return response.status_code == 200


@pytest.fixture
def scene(database, client, authn, make_client, user) -> Scene:
    with database.session() as db:
        create_user(db, "bob", BOB_PASSWORD, "Bob", actor="admin")
    bob_client = make_client()
    bob = Auth(bob_client, SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
    bob.login("bob", BOB_PASSWORD)
    assert bob.add_passkey("Bob's key").status_code == 200
    auth = Auth(client, authn)
    auth.login()
    assert auth.add_passkey("Alice's key").status_code == 200
    client.page("/account")
    bob_user = reload_user(database, "bob")
    (bob_passkey,) = query(database, select(Passkey).where(Passkey.user_id == bob_user.id))
    (bob_session,) = query(database, select(AuthSession).where(AuthSession.user_id == bob_user.id))
    (alice_passkey,) = query(database, select(Passkey).where(Passkey.user_id == user.id))
    return Scene(
        database,
        client,
        auth,
        alice_passkey.id,
        bob_passkey.id,
        bob_session.id,
        bob_client,
    )


# ------------------------------------------------------------------ malformed / odd JSON

DEEP_ARRAY = b"[" * 30000 + b"]" * 30000
DEEP_OBJECT = b'{"credential": ' + b'{"a": ' * 6000 + b"1" + b"}" * 6000 + b"}"
ODD_JSON = [
    ("/account/passkeys/start", b"[]", 400, "array"),
    ("/account/passkeys/start", b"42", 400, "number"),
    ("/account/passkeys/start", b"null", 400, "null"),
    ("/account/passkeys/start", b'"a string"', 400, "string"),
    ("/account/passkeys/start", b"true", 400, "boolean"),
    ("/account/passkeys/start", DEEP_ARRAY, 400, "deeply-nested-array"),
    ("/account/passkeys/finish", DEEP_OBJECT, 400, "deeply-nested-object"),
    (
        "/account/two-factor/enable/start",
        b'{"mode": "new", "name": "ok", "name": 5}',
        422,
        "duplicate-keys-last-wins",
    ),
    (
        "/account/passkeys/finish",
        b'{"credential": {"id": "AA"}, "credential": null}',
        400,
        "duplicate-credential-keys",
    ),
    ("/account/passkeys/start", b'{"name": "caf\xe9"}', 400, "latin-1-bytes"),
    ("/account/passkeys/start", b"\xff\xfe\xfd\x00", 400, "binary"),
    ("/account/passkeys/start", b'{"name": NaN}', 422, "nan-name"),
    ("/account/passkeys/start", b'{"name": ["a"]}', 422, "name-array"),
    ("/account/passkeys/start", b'{"name": {"a": 1}}', 422, "name-object"),
    ("/account/passkeys/finish", b'{"credential": ' + b"1" * 5000 + b"}", 400, "huge-integer"),
    ("/account/passkeys/start", b'{"name": "a"} trailing', 400, "trailing-garbage"),
    ("/account/two-factor/enable/finish", b'{"credential": null}', 400, "credential-null"),
    ("/account/passkeys/remove/finish", b'"x"', 400, "remove-finish-string"),
    ("/login/passkey/finish", b'[{"credential": {}}]', 400, "login-finish-array"),
    (
        "/account/passkeys/finish",
        b'{"credential": {"response": []}, "name": "K"}',
        400,
        "response-array",
    ),
]


@pytest.mark.parametrize(
    ("url", "body", "status"), [c[:3] for c in ODD_JSON], ids=[c[3] for c in ODD_JSON]
)
def test_odd_json_is_refused(scene, url, body, status):
    before = state(scene.database)
    refused(scene.client.json_post(url, body), status)
    assert state(scene.database) == before
    assert scene.signed_in()


def test_control_characters_in_json_names_are_stripped_before_storing(scene):
    """A lone surrogate (JSON escape) and control characters never reach the database."""
    options = scene.client.json_post("/account/passkeys/start", b'{"name": "x"}')
    credential = SoftAuthenticator(rp_id="localhost", origin=ORIGIN).register(options.json())
    body = (
        b'{"credential": %s, "name": "\\ud800Key\\u0000\\u202e\\u0007 one"}'
        % json.dumps(credential).encode()
    )
    response = scene.client.json_post("/account/passkeys/finish", body)
    assert response.status_code == 200, response.text
    names = [p.name for p in query(scene.database, select(Passkey))]
    assert "Key one" in names
    assert all(ch.isprintable() for name in names for ch in name)


# ------------------------------------------------------------------ wrong content types


WRONG_TYPES = [
    # (url, body, content type, id) — every one with a valid CSRF token in the header
    (
        "/account/passkeys/start",
        b"name=Key",
        "application/x-www-form-urlencoded",
        "json-endpoint-given-form",
    ),
    ("/account/passkeys/start", b'{"name": "Key"}', "text/plain", "json-endpoint-text-plain"),
    ("/account/passkeys/start", b'{"name": "Key"}', None, "json-endpoint-no-type"),
    (
        "/account/two-factor/enable/finish",
        b"credential=x",
        "multipart/form-data; boundary=x",
        "json-endpoint-given-multipart",
    ),
    (
        "/login/passkey/finish",
        b"credential=x",
        "application/x-www-form-urlencoded",
        "login-finish-given-form",
    ),
    ("/login", b'{"username": "alice", "password": "x"}', "application/json", "login-given-json"),
    ("/logout", b"{}", "application/json", "logout-given-json"),
    (
        "/account/passkeys/{alice}/rename",
        b'{"name": "New"}',
        "application/json",
        "rename-given-json",
    ),
    ("/account/sessions/revoke-others", b"<revoke/>", "application/xml", "revoke-given-xml"),
    ("/account/recovery-codes/regenerate", b"please", "text/plain", "regenerate-text-plain"),
]


@pytest.mark.parametrize(
    ("url", "body", "content_type"), [c[:3] for c in WRONG_TYPES], ids=[c[3] for c in WRONG_TYPES]
)
def test_wrong_content_type_is_415(scene, url, body, content_type):
    url = url.format(alice=scene.alice_passkey)
    headers = csrf_headers(scene.client)
    if content_type:
        headers["Content-Type"] = content_type
    before = state(scene.database)
    response = scene.client.post(url, content=body, headers=headers, follow_redirects=False)
    assert refused(response, 415).startswith("This endpoint takes ")
    assert state(scene.database) == before
    assert scene.signed_in()


# ------------------------------------------------------------------------ huge bodies


def test_bodies_over_64_kib_are_413_everywhere(scene):
    client = scene.client
    before = state(scene.database)
    padding = "x" * BIG
    for url in (
        "/account/passkeys/start",
        "/account/passkeys/finish",
        "/account/two-factor/enable/finish",
        "/login/passkey/finish",
    ):
        assert "too large" in refused(client.json_post(url, {"name": padding}), 413), url
    as_form = client.post(
        "/login",
        data={"_csrf_token": client.csrf, "username": "alice", "password": padding},
        follow_redirects=False,
    )
    assert page_alert(as_form) == "The request is too large."
    assert as_form.status_code == 413
    as_htmx = client.htmx(
        "POST", f"/account/passkeys/{scene.alice_passkey}/rename", {"name": padding}
    )
    assert as_htmx.status_code == 413
    assert page_alert(as_htmx) == "The request is too large."
    assert state(scene.database) == before
    assert scene.passkey_name(scene.alice_passkey) == "Alice's key"


def test_a_body_of_exactly_64_kib_is_read(scene):
    """The cap is 64 KiB: a body of exactly that size is read (and its name refused)."""
    body = b'{"name": "' + b"x" * (64 * 1024 - 12) + b'"}'
    assert len(body) == 64 * 1024
    before = state(scene.database)
    assert "at most 64" in refused(scene.client.json_post("/account/passkeys/start", body), 422)
    assert state(scene.database) == before


# ----------------------------------------------------------------------- passkey names


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Work\u202ekey", "Workkey"),
        ("\u2066isolated\u2069 name", "isolated name"),
        ("nul\x00byte", "nulbyte"),
        ("bell\x07 and\x1b[31m escape", "bell and[31m escape"),
        ("zero\u200bwidth\u200djoiner", "zerowidthjoiner"),
        ("line\nbreak\r\ttab", "line break tab"),
        ("\u200e\u200fmarks", "marks"),
    ],
    ids=["rlo", "isolates", "nul", "bell-esc", "zero-width", "newlines", "lrm-rlm"],
)
def test_control_and_bidi_characters_in_names_are_stripped(scene, raw, stored):
    response = scene.client.htmx(
        "POST", f"/account/passkeys/{scene.alice_passkey}/rename", {"name": raw}
    )
    assert response.status_code == 200, response.text
    name = scene.passkey_name(scene.alice_passkey)
    assert name == stored
    assert all(unicodedata.category(ch)[0] != "C" for ch in name), repr(name)


def test_a_name_of_only_invisible_characters_is_refused(scene):
    before = state(scene.database)
    response = scene.client.htmx(
        "POST", f"/account/passkeys/{scene.alice_passkey}/rename", {"name": "\u202e\u200b\x00 \t"}
    )
    assert response.status_code == 422
    assert "Give the passkey a name." in response.text
    assert state(scene.database) == before


def test_ten_thousand_character_names_are_422(scene):
    client = scene.client
    name = "n" * 10_000
    before = state(scene.database)
    renamed = client.form(f"/account/passkeys/{scene.alice_passkey}/rename", {"name": name})
    assert renamed.status_code == 422
    error = re.search(r'class="field-error" id="([^"]+)">([^<]+)<', renamed.text)
    assert error and error.group(2) == "Passkey names are at most 64 characters."
    assert f'aria-describedby="{error.group(1)}"' in renamed.text
    assert name not in renamed.text  # not echoed back whole
    assert "at most 64" in refused(client.json_post("/account/passkeys/start", {"name": name}), 422)
    enable = client.json_post("/account/two-factor/enable/start", {"mode": "new", "name": name})
    assert "at most 64" in refused(enable, 422)
    options = client.json_post("/account/passkeys/start", {"name": "fine"}).json()
    credential = SoftAuthenticator(rp_id="localhost", origin=ORIGIN).register(options)
    finish = client.json_post("/account/passkeys/finish", {"credential": credential, "name": name})
    assert "at most 64" in refused(finish, 422)
    after = state(scene.database)
    assert after["challenges"][:-1] == before["challenges"]  # only the "fine" start
    after["challenges"] = before["challenges"]
    assert after == before


SQLISH = [
    "Robert'); DROP TABLE passkeys;--",
    "x' OR '1'='1",
    '"; DELETE FROM users; --',
    "%_\\ LIKE '%'",
]


@pytest.mark.parametrize("name", SQLISH, ids=["drop", "or-true", "delete", "like"])
def test_sql_looking_names_are_stored_literally(scene, name):
    users_before = len(query(scene.database, select(User)))
    response = scene.client.htmx(
        "POST", f"/account/passkeys/{scene.alice_passkey}/rename", {"name": name}
    )
    assert response.status_code == 200, response.text
    assert scene.passkey_name(scene.alice_passkey) == name
    assert scene.passkey_name(scene.bob_passkey) == "Bob's key"
    assert len(query(scene.database, select(User))) == users_before
    assert len(query(scene.database, select(Passkey))) == 2


@pytest.mark.parametrize(
    "name",
    ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "<b>&amp;</b>"],
    ids=["script", "attribute-break", "entity"],
)
def test_html_in_names_is_escaped_in_the_page(scene, name):
    response = scene.client.htmx(
        "POST", f"/account/passkeys/{scene.alice_passkey}/rename", {"name": name}
    )
    assert response.status_code == 200
    assert scene.passkey_name(scene.alice_passkey) == name  # stored as typed
    page = scene.client.page("/account")
    assert name not in page.text and name not in response.text
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped.replace('"', "&#34;") in page.text or escaped in page.text
    for fragment in ("<script>alert", "<img src=x", "<b>&amp;</b>"):
        assert fragment not in page.text


# --------------------------------------------------------------------------------- ids


ACTIONS = [
    ("GET", "/account/passkeys/{id}/rename"),
    ("POST", "/account/passkeys/{id}/rename"),
    ("GET", "/account/passkeys/{id}/remove"),
    ("POST", "/account/passkeys/{id}/remove"),
    ("JSON", "/account/passkeys/{id}/remove/start"),
]


@pytest.mark.parametrize(
    "which", ["bobs", "unknown", "zero", "negative", "just-over-int32", "twenty-digits"]
)
def test_foreign_and_impossible_passkey_ids_are_404(scene, which):
    passkey_id = {
        "bobs": scene.bob_passkey,
        "unknown": 999_999,
        "zero": 0,
        "negative": -1,
        "just-over-int32": 2**31,
        "twenty-digits": 10**20,
    }[which]
    client = scene.client
    before = state(scene.database)
    for method, pattern in ACTIONS:
        url = pattern.format(id=passkey_id)
        if method == "GET":
            response = client.get(url, headers={"HX-Request": "true"})
        elif method == "POST":
            response = client.htmx("POST", url, {"name": "Mine now"})
        else:
            response = client.json_post(url, {})
        assert response.status_code == 404, (url, response.status_code, response.text[:300])
        if method == "JSON":
            refused(response, 404)
        else:
            assert page_alert(response) in ("That passkey was not found.", "Not found.")
    assert state(scene.database) == before
    assert scene.passkey_name(scene.bob_passkey) == "Bob's key"


@pytest.mark.parametrize("which", ["bobs", "unknown", "just-over-int32", "twenty-digits"])
def test_foreign_and_impossible_session_ids_are_404(scene, which):
    session_id = {
        "bobs": scene.bob_session,
        "unknown": 999_999,
        "just-over-int32": 2**31,
        "twenty-digits": 10**20,
    }[which]
    before = state(scene.database)
    response = scene.client.htmx("POST", f"/account/sessions/{session_id}/revoke")
    assert response.status_code == 404
    assert page_alert(response) == "That session was not found."
    assert state(scene.database) == before
    assert scene.signed_in(scene.bob_client)


def test_unknown_credential_id_at_passkey_sign_in_is_refused(scene, make_client):
    alice = reload_user(scene.database)
    authn = scene.auth.authn
    stranger = make_client()
    stranger.page("/login")
    options = stranger.json_post("/login/passkey/start", {}).json()
    unknown = throwaway_credential(authn, alice.webauthn_handle)
    credential = authn.authenticate(options, credential_id=unknown)
    before = state(scene.database)
    detail = refused(stranger.json_post("/login/passkey/finish", {"credential": credential}), 400)
    assert detail == "That passkey is not registered with this account."
    after = state(scene.database)
    assert after.pop("challenges")[-1][2] is not None  # the challenge is used up
    before.pop("challenges")
    assert after == before


# ------------------------------------------------------------------------------ methods


STATE_CHANGING = [
    "/logout",
    "/login/passkey/start",
    "/login/passkey/finish",
    "/login/2fa/passkey/finish",
    "/account/passkeys/start",
    "/account/passkeys/finish",
    "/account/passkeys/remove/finish",
    "/account/passkeys/{alice}/remove/start",
    "/account/two-factor/enable/start",
    "/account/two-factor/enable/finish",
    "/account/two-factor/disable/finish",
    "/account/recovery-codes/finish",
    "/account/sessions/revoke-others",
    "/account/sessions/{bob_session}/revoke",
]


def test_get_on_state_changing_urls_is_405(scene):
    before = state(scene.database)
    for pattern in STATE_CHANGING:
        url = pattern.format(alice=scene.alice_passkey, bob_session=scene.bob_session)
        response = scene.client.get(url, headers={"Accept": "application/json"})
        assert refused(response, 405) == "That action is not allowed here.", url
        html = scene.client.get(url)
        assert html.status_code == 405 and page_alert(html) == "That action is not allowed here."
    for method in ("PUT", "DELETE", "PATCH"):
        url = f"/account/passkeys/{scene.alice_passkey}/rename"
        response = scene.client.request(method, url, headers=csrf_headers(scene.client))
        refused(response, 405)
    assert state(scene.database) == before
    assert scene.signed_in() and scene.signed_in(scene.bob_client)


def test_gets_that_lead_to_a_step_change_nothing(scene):
    """Rev 2: GET /login/2fa/recovery leads to /login/2fa (a reload of the code form);
    GET /account/recovery-codes/regenerate is the question asked before regenerating."""
    before = state(scene.database)
    reloaded = scene.client.get("/login/2fa/recovery", follow_redirects=False)
    assert reloaded.status_code == 303 and reloaded.headers["location"] == "/login/2fa"
    for query_string in ("", "?codes_version=0", "?codes_version=%00%3Cscript%3E" + "x" * 500):
        asked = scene.client.get("/account/recovery-codes/regenerate" + query_string)
        assert asked.status_code in (200, 409), asked.text
        assert "<script>" not in asked.text.replace('<script src="', "")
    assert state(scene.database) == before
    assert scene.signed_in() and scene.signed_in(scene.bob_client)


# ------------------------------------------------------------------------ CSRF, Origin


def _post_rename(client: Client, passkey_id: int, *, token: str | None, **headers: str):
    data = {"name": "Hijacked"}
    if token is not None:
        data["_csrf_token"] = token
    return client.post(
        f"/account/passkeys/{passkey_id}/rename",
        data=data,
        headers=headers,
        follow_redirects=False,
    )


FORGERIES: list[tuple[str, Callable[[Scene], Any]]] = [
    ("form-without-token", lambda s: _post_rename(s.client, s.alice_passkey, token=None)),
    (
        "form-with-tampered-token",
        lambda s: _post_rename(s.client, s.alice_passkey, token=s.client.csrf[:-4] + "AAAA"),
    ),
    ("form-with-empty-token", lambda s: _post_rename(s.client, s.alice_passkey, token="")),
    (
        "form-with-token-of-another-browser",
        lambda s: _post_rename(s.client, s.alice_passkey, token=s.bob_client.csrf),
    ),
    (
        "htmx-without-header",
        lambda s: s.client.post(
            f"/account/passkeys/{s.alice_passkey}/rename",
            data={"name": "Hijacked"},
            headers={"HX-Request": "true"},
        ),
    ),
    (
        "json-without-header",
        lambda s: s.client.post(
            "/account/passkeys/start",
            content=b'{"name": "x"}',
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        ),
    ),
    (
        "json-with-tampered-header",
        lambda s: s.client.json_post(
            "/account/passkeys/start", {"name": "x"}, **{"X-CSRFToken": "A" + s.client.csrf[1:]}
        ),
    ),
    (
        "foreign-origin-valid-token",
        lambda s: _post_rename(s.client, s.alice_passkey, token=s.client.csrf, Origin=EVIL),
    ),
    (
        "null-origin-valid-token",
        lambda s: _post_rename(s.client, s.alice_passkey, token=s.client.csrf, Origin="null"),
    ),
    (
        "other-port-origin-valid-token",
        lambda s: _post_rename(
            s.client, s.alice_passkey, token=s.client.csrf, Origin="http://localhost:8001"
        ),
    ),
    (
        "https-origin-valid-token",
        lambda s: _post_rename(
            s.client, s.alice_passkey, token=s.client.csrf, Origin="https://localhost:8000"
        ),
    ),
    (
        "cross-site-fetch-valid-token",
        lambda s: _post_rename(
            s.client, s.alice_passkey, token=s.client.csrf, **{"Sec-Fetch-Site": "cross-site"}
        ),
    ),
    (
        "foreign-origin-json",
        lambda s: s.client.json_post("/account/passkeys/start", {"name": "x"}, Origin=EVIL),
    ),
    (
        "cross-site-json",
        lambda s: s.client.json_post(
            "/account/passkeys/start", {"name": "x"}, **{"Sec-Fetch-Site": "cross-site"}
        ),
    ),
    ("logout-without-token", lambda s: s.client.post("/logout", follow_redirects=False)),
    (
        "logout-from-foreign-origin",
        lambda s: s.client.post(
            "/logout",
            data={"_csrf_token": s.client.csrf},
            headers={"Origin": EVIL},
            follow_redirects=False,
        ),
    ),
    (
        "revoke-others-cross-site",
        lambda s: s.client.post(
            "/account/sessions/revoke-others",
            data={"_csrf_token": s.client.csrf},
            headers={"Sec-Fetch-Site": "cross-site"},
            follow_redirects=False,
        ),
    ),
]


@pytest.mark.parametrize("forge", [f for _, f in FORGERIES], ids=[i for i, _ in FORGERIES])
def test_forged_requests_are_403(scene, forge):
    scene.bob_client.page("/account")  # Bob's browser has a CSRF token of its own
    scene.client.page("/account")
    before = state(scene.database)
    response = forge(scene)
    assert response.status_code == 403, (response.status_code, response.text[:300])
    if response.headers["content-type"].startswith("application/json"):
        refused(response, 403)
    else:
        page_alert(response)
    assert state(scene.database) == before
    assert scene.passkey_name(scene.alice_passkey) == "Alice's key"
    assert scene.signed_in() and scene.signed_in(scene.bob_client)


# ---------------------------------------------------------------- stale session cookies


COOKIE = "barycenter_session"


def _with_cookie(make_client: Callable[[], Client], token: str) -> Client:
    browser = make_client()
    browser.cookies.set(COOKIE, token)
    return browser


def _treated_as_signed_out(browser: Client) -> None:
    account = browser.get("/account", follow_redirects=False)
    assert account.status_code == 303 and account.headers["location"] == "/login"
    assert browser.get("/login/2fa", follow_redirects=False).headers["location"] == "/login"
    browser.page("/login")
    api = browser.json_post("/account/passkeys/start", {"name": "x"})
    assert api.status_code == 401 and api.json()["redirect"] == "/login"
    assert api.json()["detail"] == "Please sign in."


def test_cookie_after_sign_out_is_signed_out(scene, make_client):
    old = scene.client.cookies[COOKIE]
    scene.auth.logout()
    before = state(scene.database)
    _treated_as_signed_out(_with_cookie(make_client, old))
    assert state(scene.database) == before


def test_cookie_replaced_by_a_new_sign_in_is_signed_out(scene, make_client):
    old = scene.client.cookies[COOKIE]
    scene.auth.login()
    assert scene.client.cookies[COOKIE] != old
    assert scene.signed_in()
    _treated_as_signed_out(_with_cookie(make_client, old))


def test_cookie_planted_before_sign_in_is_not_adopted(database, make_client, user):
    planted = "attacker-chosen-token-value-0123456789"
    victim = _with_cookie(make_client, planted)
    victim.page("/login")
    response = victim.form("/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 303
    assert response.cookies[COOKIE] != planted
    _treated_as_signed_out(_with_cookie(make_client, planted))


def test_partial_cookie_after_second_factor_is_signed_out(scene, make_client):
    assert scene.auth.enable_2fa().status_code == 200
    scene.auth.logout()
    scene.auth.login()
    partial = scene.client.cookies[COOKIE]
    scene.client.page("/login/2fa")
    credential = scene.auth.assertion("/login/2fa/passkey/start")
    upgraded = scene.client.json_post("/login/2fa/passkey/finish", {"credential": credential})
    assert upgraded.status_code == 200
    assert scene.client.cookies[COOKIE] != partial
    _treated_as_signed_out(_with_cookie(make_client, partial))
    assert scene.signed_in()


def test_cookie_before_enabling_two_factor_is_signed_out(scene, make_client):
    before_enable = scene.client.cookies[COOKIE]
    assert scene.auth.enable_2fa().status_code == 200
    assert scene.client.cookies[COOKIE] != before_enable
    _treated_as_signed_out(_with_cookie(make_client, before_enable))
    assert scene.signed_in()


@pytest.mark.parametrize(
    "token", ["x" * 129, "", "not-a-session", "%00%ff", "a" * 43], ids=lambda t: t[:12] or "empty"
)
def test_garbage_cookies_are_signed_out(database, make_client, user, token):
    _treated_as_signed_out(_with_cookie(make_client, token))


# --------------------------------------------------------------------------- /login abuse


def _login(client: Client, **fields: str):
    client.page("/login")
    return client.form("/login", fields)


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"username": "a" * 10_000, "password": PASSWORD}, 401, "Incorrect username or password."),
        ({"username": "alice", "password": "p" * 10_000}, 401, "Incorrect username or password."),
        ({"username": "alice\x00", "password": PASSWORD}, 401, "Incorrect username or password."),
        ({"username": "", "password": ""}, 422, "Enter your username and password."),
        ({"username": "alice"}, 422, "Enter your username and password."),
        ({"username": " \t ", "password": PASSWORD}, 422, "Enter your username and password."),
    ],
    ids=["long-username", "long-password", "nul-username", "empty", "no-password", "blank"],
)
def test_odd_sign_in_forms_are_refused_with_a_message(
    client, database, user, fields, status, message
):
    before = state(database)
    response = _login(client, **fields)
    assert response.status_code == status
    assert page_alert(response) == message
    assert "a" * 65 not in response.text  # an over-long username is not echoed whole
    assert state(database) == before
    assert reload_user(database).failed_login_count == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"username": "alice", "password": "x"}', "application/json", 415),
        (b"username=alice&password=x", "text/plain", 415),
        (b"\xff\xfe\x00\x01", None, 422),
        (b"username=alice&username=bob&password=x", "application/x-www-form-urlencoded", 400),
        (
            b'--x\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
            422,
        ),
    ],
    ids=["json", "text-plain", "binary", "repeated-field", "multipart-without-password"],
)
def test_non_form_bodies_at_sign_in_are_refused(client, database, user, body, content_type, status):
    client.page("/login")
    headers = {"X-CSRFToken": client.csrf}
    if content_type:
        headers["Content-Type"] = content_type
    before = state(database)
    response = client.post("/login", content=body, headers=headers, follow_redirects=False)
    assert response.status_code == status, response.text[:300]
    if content_type == "application/json":  # a JSON body: the refusal is JSON too
        refused(response, status)
    else:
        page_alert(response)
    assert COOKIE not in response.cookies
    assert state(database) == before


# ------------------------------------------------------------- property: random JSON


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "AAAA", "public-key", "webauthn.get", "webauthn.create", ORIGIN])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
RESPONSE_KEYS = [
    "clientDataJSON",
    "attestationObject",
    "authenticatorData",
    "signature",
    "userHandle",
    "publicKey",
    "transports",
]


@st.composite
def credential_like(draw: st.DrawFn, challenge: str) -> dict[str, Any]:
    """A PublicKeyCredential-shaped body: the real challenge in a well-formed clientDataJSON
    (so the request reaches the verification code) and random values elsewhere."""
    client_data = {
        "type": draw(st.sampled_from(["webauthn.get", "webauthn.create", "other"])),
        "challenge": challenge,
        "origin": draw(st.sampled_from([ORIGIN, EVIL])),
        "crossOrigin": draw(st.sampled_from([False, True, "yes", None])),
    }
    response: dict[str, Any] = {"clientDataJSON": b64url(json.dumps(client_data).encode())}
    for key in draw(st.lists(st.sampled_from(RESPONSE_KEYS[1:]), unique=True)):
        response[key] = draw(
            JSON_VALUES | st.binary(max_size=80).map(b64url) | st.sampled_from(["", "!!!", "A" * 5])
        )
    raw_id = draw(st.binary(min_size=0, max_size=40).map(b64url) | JSON_VALUES)
    return {
        "id": draw(st.sampled_from([raw_id, "AAAA"])) if draw(st.booleans()) else raw_id,
        "rawId": raw_id,
        "type": draw(st.sampled_from(["public-key", "x", None])),
        "response": response if draw(st.booleans()) else draw(JSON_VALUES),
        "clientExtensionResults": draw(JSON_VALUES),
    }


@dataclass(frozen=True)
class Finish:
    name: str
    start: str | None
    start_body: dict[str, Any]
    finish: str
    browser: str


FINISHES = [
    Finish("login", "/login/passkey/start", {}, "/login/passkey/finish", "anonymous"),
    Finish("second-factor", "/login/2fa/passkey/start", {}, "/login/2fa/passkey/finish", "partial"),
    Finish(
        "enroll-at-login",
        "/login/2fa/enroll/start",
        {"name": "K"},
        "/login/2fa/enroll/finish",
        "enrolling",
    ),
    Finish(
        "register", "/account/passkeys/start", {"name": "K"}, "/account/passkeys/finish", "alice"
    ),
    Finish(
        "enable-2fa",
        "/account/two-factor/enable/start",
        {"mode": "existing"},
        "/account/two-factor/enable/finish",
        "alice",
    ),
    Finish(
        "remove-passkey",
        "/account/passkeys/{carol_passkey}/remove/start",
        {},
        "/account/passkeys/remove/finish",
        "carol",
    ),
    Finish(
        "recovery-codes",
        "/account/recovery-codes/start",
        {},
        "/account/recovery-codes/finish",
        "carol",
    ),
    Finish(
        "disable-2fa",
        "/account/two-factor/disable/start",
        {},
        "/account/two-factor/disable/finish",
        "carol",
    ),
]


def test_random_json_at_every_ceremony_finish_never_500(database, client, make_client, user):
    """Hypothesis throws JSON values, credential-shaped objects with random members, and
    credential-shaped objects carrying a real challenge at every finish endpoint, each from
    a browser in the state the endpoint expects. No answer may be a 5xx, nor a success."""
    browsers = _browsers_for_every_finish(database, client, make_client)
    before = snapshot(database)
    carol_passkey = browsers.pop("carol_passkey")

    @hypothesis_settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(data=st.data())
    def throw(data: st.DataObject) -> None:
        finish = data.draw(st.sampled_from(FINISHES), label="endpoint")
        browser: Client = browsers[finish.browser]
        _reset_failures(database)
        kind = data.draw(st.sampled_from(["json", "wrapped", "shaped"]), label="kind")
        if kind == "json":
            body: Any = data.draw(JSON_VALUES, label="body")
        elif kind == "wrapped":
            body = {"credential": data.draw(JSON_VALUES), "name": data.draw(JSON_VALUES)}
        else:
            assert finish.start is not None
            started = browser.json_post(
                finish.start.format(carol_passkey=carol_passkey), finish.start_body
            )
            assert started.status_code == 200, (finish.name, started.text)
            credential = data.draw(credential_like(started.json()["challenge"]), label="cred")
            body = {"credential": credential, "name": "K"}
        response = browser.json_post(finish.finish, json.dumps(body))
        assert response.status_code < 500, (finish.name, body, response.text[:300])
        assert response.status_code >= 400, (finish.name, body, response.text[:300])

    throw()
    after = snapshot(database)
    # refused second factors and clone warnings are the only traces allowed
    assert after["passkeys"] == before["passkeys"]
    assert after["codes"] == before["codes"]
    assert {kind for _, _, kind in after["events"][len(before["events"]) :]} <= {
        "second_factor_failed",
    }


def _reset_failures(database: Database) -> None:
    with database.session() as db:
        db.exec(update(User).values(failed_login_count=0, locked_until=None))
        db.commit()


def _browsers_for_every_finish(database: Database, client: Client, make_client) -> dict[str, Any]:
    """anonymous (at /login), alice (full, one passkey, 2FA off), carol (full, 2FA on, two
    passkeys), partial (dave: password done, second factor pending), enrolling (erin: 2FA
    required by the administrator, no passkey yet)."""
    with database.session() as db:
        for name in ("carol", "dave", "erin"):
            create_user(db, name, PASSWORD, name.title(), actor="admin")
        db.exec(update(User).where(col(User.username_key) == "erin").values(requires_2fa=True))
        db.commit()

    alice = Auth(client, SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
    alice.login()
    assert alice.add_passkey("Alice's key").status_code == 200
    client.page("/account")

    carol = Auth(make_client(), SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
    carol.login("carol")
    assert carol.add_passkey("One").status_code == 200
    second = Auth(carol.client, SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
    assert second.add_passkey("Two").status_code == 200
    assert carol.enable_2fa().status_code == 200
    carol.client.page("/account")
    carol_user = reload_user(database, "carol")
    carol_passkey = query(database, select(Passkey).where(Passkey.user_id == carol_user.id))[0]

    dave = Auth(make_client(), SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
    dave.login("dave")
    assert dave.add_passkey("Dave's key").status_code == 200
    assert dave.enable_2fa().status_code == 200
    dave.logout()
    dave.login("dave")
    dave.client.page("/login/2fa")

    erin = Auth(make_client(), SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
    erin.login("erin")
    erin.client.page("/login/2fa")

    anonymous = make_client()
    anonymous.page("/login")
    anonymous.json_post("/login/passkey/start", {})  # the sign-in nonce cookie
    assert len(query(database, select(SecurityEvent))) > 0
    return {
        "anonymous": anonymous,
        "alice": client,
        "carol": carol.client,
        "partial": dave.client,
        "enrolling": erin.client,
        "carol_passkey": carol_passkey.id,
    }
