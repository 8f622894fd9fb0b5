"""Every check SPEC §7 asks of a passkey ceremony, at every ceremony endpoint.

The ceremonies: registration (/account/passkeys/*), enabling 2FA with a new passkey or an
existing one, disabling 2FA, passkey sign-in (/login/passkey/*) and the second factor
(/login/2fa/passkey/*). For each: success, and a table of hostile responses made by the
software authenticator (tests/softauthn.py: each override changes one property of an
otherwise valid, correctly signed response). Every refusal must be a 4xx with a
plain-language {"detail"} and must change nothing in the database: passkeys, sessions,
user flags, recovery codes and events are compared before and after (the only accepted
difference is the failure record of a refused second factor, and the clone warning of a
sign-count regression).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Litestar
from sqlmodel import col, select, update
from webauthn.helpers import bytes_to_base64url

from models import (
    AuthSession,
    Passkey,
    SecurityEvent,
    User,
    WebAuthnChallenge,
    utcnow,
)
from tests.helpers import ORIGIN, PASSWORD, Auth, Client, query, reload_user
from tests.helpers.ceremony import refused, snapshot, throwaway_credential
from tests.softauthn import SoftAuthenticator, b64url, b64url_decode
from web.db import Database
from web.users import create_user

EVIL = "https://evil.example"
EXPIRED = "expired or was already used"
BIG = 65 * 1024


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def app(module_app: Litestar) -> Litestar:
    """One app for the whole module (`module_app`, tests/unit/conftest.py)."""
    return module_app


def assert_unchanged(
    before: dict[str, Any], after: dict[str, Any], *, new_events: tuple[str, ...] = ()
) -> None:
    """Nothing changed, except exactly `new_events` recorded; a counted second-factor
    failure also adds one to that user's failed_login_count."""
    assert after["events"][: len(before["events"])] == before["events"]
    added = after["events"][len(before["events"]) :]
    assert sorted(kind for _, _, kind in added) == sorted(new_events), added
    failures = [uid for _, uid, kind in added if kind == "second_factor_failed"]
    expected_users = [(*u[:4], u[4] + failures.count(u[0]), u[5]) for u in before["users"]]
    assert after["users"] == expected_users
    for table in ("passkeys", "sessions", "codes"):
        assert after[table] == before[table], table


# --------------------------------------------------------------------------- ceremonies


@dataclass(frozen=True)
class Ceremony:
    name: str
    registers: bool
    """navigator.credentials.create() (True) or .get() (False)."""
    start: str
    finish: str
    purpose: str
    start_body: dict[str, Any] = field(default_factory=dict)
    finish_fields: dict[str, Any] = field(default_factory=dict)
    counts_failures: bool = False
    """A refused assertion is a failed second factor (recorded, counted)."""


CEREMONIES = {
    c.name: c
    for c in (
        Ceremony(
            "register",
            True,
            "/account/passkeys/start",
            "/account/passkeys/finish",
            "register",
            {"name": "New key"},
            {"name": "New key"},
        ),
        Ceremony(
            "enable-new",
            True,
            "/account/two-factor/enable/start",
            "/account/two-factor/enable/finish",
            "enable-2fa",
            {"mode": "new", "name": "New key"},
        ),
        Ceremony("login", False, "/login/passkey/start", "/login/passkey/finish", "login"),
        Ceremony(
            "second-factor",
            False,
            "/login/2fa/passkey/start",
            "/login/2fa/passkey/finish",
            "second-factor",
            counts_failures=True,
        ),
        Ceremony(
            "enable-existing",
            False,
            "/account/two-factor/enable/start",
            "/account/two-factor/enable/finish",
            "enable-2fa",
            {"mode": "existing"},
        ),
        Ceremony(
            "disable",
            False,
            "/account/two-factor/disable/start",
            "/account/two-factor/disable/finish",
            "disable-2fa",
        ),
    )
}
REGISTRATIONS = [n for n, c in CEREMONIES.items() if c.registers]
ASSERTIONS = [n for n, c in CEREMONIES.items() if not c.registers]


@dataclass
class World:
    """Alice (the `user` fixture) in the browser `client`, Bob next door when needed."""

    database: Database
    client: Client
    authn: SoftAuthenticator
    make_client: Callable[[], Client]
    _bob: tuple[SoftAuthenticator, bytes, User] | None = None

    @property
    def auth(self) -> Auth:
        return Auth(self.client, self.authn)

    def alice(self) -> User:
        return reload_user(self.database)

    def bob(self) -> tuple[SoftAuthenticator, bytes, User]:
        """Bob, signed up with a passkey of his own (his own authenticator)."""
        if self._bob is None:
            with self.database.session() as db:
                create_user(db, "bob", "bob's password 123", "Bob", actor="admin")
            bob_authn = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
            bob_auth = Auth(self.make_client(), bob_authn)
            bob_auth.login("bob", "bob's password 123")
            assert bob_auth.add_passkey("Bob's key").status_code == 200
            (credential_id,) = bob_authn.credentials
            self._bob = (bob_authn, credential_id, reload_user(self.database, "bob"))
        return self._bob

    def set_passkeys(self, **values: Any) -> None:
        """Edit Alice's stored passkeys directly (sign count, backup eligibility)."""
        alice = self.alice()
        with self.database.session() as db:
            db.exec(update(Passkey).where(col(Passkey.user_id) == alice.id).values(**values))
            db.commit()

    def passkey_facts(self) -> list[tuple[int, int, bool]]:
        return [
            (p.id, p.sign_count, p.backup_eligible) for p in query(self.database, select(Passkey))
        ]

    def restore_passkey_facts(self, facts: list[tuple[int, int, bool]]) -> None:
        with self.database.session() as db:
            for passkey_id, sign_count, backup_eligible in facts:
                db.exec(
                    update(Passkey)
                    .where(col(Passkey.id) == passkey_id)
                    .values(sign_count=sign_count, backup_eligible=backup_eligible)
                )
            db.commit()

    def reset_failures(self) -> None:
        """Five failed second factors end the partial session; start each case at zero."""
        with self.database.session() as db:
            db.exec(update(User).values(failed_login_count=0))
            db.commit()

    # ---- getting a browser to the point where the ceremony starts

    def arrange(self, ceremony: Ceremony) -> None:
        """Alice's account and the main browser, ready for `ceremony`."""
        auth = self.auth
        auth.login()
        if ceremony.name in ("register", "enable-new"):
            return
        assert auth.add_passkey("Alice's key").status_code == 200
        if ceremony.name in ("second-factor", "disable"):
            assert auth.enable_2fa().status_code == 200
        if ceremony.name in ("login", "second-factor"):
            auth.logout()
            self.enter(self.client, ceremony)
        else:
            self.client.page("/account")

    def enter(self, client: Client, ceremony: Ceremony) -> None:
        """Another browser of Alice's, in the state the ceremony needs (Alice arranged)."""
        auth = Auth(client, self.authn)
        if ceremony.name == "login":
            client.page("/login")
            return
        client.page("/login")
        response = client.form("/login", {"username": "alice", "password": PASSWORD})
        assert response.status_code == 303, response.text
        if ceremony.name == "second-factor":
            assert response.headers["location"] == "/login/2fa"
            client.page("/login/2fa")
        elif ceremony.name == "disable":
            assert response.headers["location"] == "/login/2fa"
            client.page("/login/2fa")
            credential = auth.assertion("/login/2fa/passkey/start")
            upgraded = client.json_post("/login/2fa/passkey/finish", {"credential": credential})
            assert upgraded.status_code == 200, upgraded.text
            client.page("/account")
        else:
            client.page("/account")

    # ---- the ceremony itself

    def start(self, ceremony: Ceremony, client: Client | None = None) -> dict[str, Any]:
        response = (client or self.client).json_post(ceremony.start, ceremony.start_body)
        assert response.status_code == 200, response.text
        return response.json()

    def respond(
        self,
        ceremony: Ceremony,
        options: dict[str, Any],
        authn: SoftAuthenticator | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        authn = authn or self.authn
        if ceremony.registers:
            return authn.register(options, **overrides)
        return authn.authenticate(options, **overrides)

    def finish(
        self, ceremony: Ceremony, credential: Any, client: Client | None = None, **fields: Any
    ):
        body = {"credential": credential, **ceremony.finish_fields, **fields}
        return (client or self.client).json_post(ceremony.finish, body)

    def signed_out(self, client: Client | None = None) -> bool:
        response = (client or self.client).get("/account", follow_redirects=False)
        return response.status_code == 303 and response.headers["location"].startswith("/login")


@pytest.fixture
def world(database, client, authn, make_client, user) -> World:
    return World(database, client, authn, make_client)


def check_effect(world: World, ceremony: Ceremony, response: Any, before: dict) -> None:
    """What a successful ceremony must have done."""
    assert response.status_code == 200, response.text
    after = snapshot(world.database)
    alice = world.alice()
    if ceremony.name == "register":
        assert len(after["passkeys"]) == len(before["passkeys"]) + 1
        assert after["passkeys"][-1][7] == "New key"
        assert "passkey_added" in [kind for _, _, kind in after["events"]]
    elif ceremony.name in ("enable-new", "enable-existing"):
        assert alice.user_2fa_enabled and alice.user_2fa_enabled_at is not None
        assert len(after["codes"]) == 10
        assert "Save your recovery codes" in response.text
        grew = 1 if ceremony.name == "enable-new" else 0
        assert len(after["passkeys"]) == len(before["passkeys"]) + grew
    elif ceremony.name == "disable":
        assert not alice.user_2fa_enabled
        assert after["codes"] == []
    elif ceremony.name == "login":
        answer = response.json()
        assert answer["redirect"] == "/account"
        # rev 2 §5.6: the account's current passkeys, for the shim's Signal API call
        assert answer["signal"]["rpId"] == "localhost"
        assert answer["signal"]["allAcceptedCredentialIds"] == [
            bytes_to_base64url(p[2]) for p in after["passkeys"] if p[1] == alice.id
        ]
        (session,) = query(world.database, select(AuthSession))
        assert session.state == "full" and session.amr == ["hwk"] and session.acr == "aal2"
        assert session.mfa_verified
        (passkey,) = query(world.database, select(Passkey))
        assert passkey.sign_count == 1 and passkey.last_used_at is not None
        assert world.client.page("/account").status_code == 200
    elif ceremony.name == "second-factor":
        answer = response.json()
        assert answer["redirect"] == "/account"
        # rev 2 §5.6: the account's current passkeys, for the shim's Signal API call
        assert answer["signal"]["rpId"] == "localhost"
        assert answer["signal"]["allAcceptedCredentialIds"] == [
            bytes_to_base64url(p[2]) for p in after["passkeys"] if p[1] == alice.id
        ]
        (session,) = query(world.database, select(AuthSession))
        assert session.amr == ["pwd", "hwk"] and session.acr == "aal2"
        assert world.client.page("/account").status_code == 200
    consumed = query(world.database, select(WebAuthnChallenge))
    assert consumed and all(c.consumed_at is not None for c in consumed)


# ------------------------------------------------------------------------------ success


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_success(world, name):
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    before = snapshot(world.database)
    options = world.start(ceremony)
    response = world.finish(ceremony, world.respond(ceremony, options))
    check_effect(world, ceremony, response, before)


@pytest.mark.parametrize("name", REGISTRATIONS)
def test_credential_id_of_1023_bytes_is_accepted(world, name):
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    before = snapshot(world.database)
    options = world.start(ceremony)
    credential_id = secrets.token_bytes(1023)
    response = world.finish(ceremony, world.respond(ceremony, options, credential_id=credential_id))
    check_effect(world, ceremony, response, before)
    assert query(world.database, select(Passkey))[-1].credential_id == credential_id


# ------------------------------------------------------------- one bad property at a time


@dataclass(frozen=True)
class Case:
    id: str
    applies: tuple[str, ...]
    make: Callable[[World, Ceremony], dict[str, Any]]
    """Returns the overrides (and may prepare the database, e.g. a stored sign count)."""
    status: int = 400
    at_challenge: bool = False
    """Refused before verification (a second factor is then not counted as a failure)."""
    events: tuple[str, ...] = ()


ALL = tuple(CEREMONIES)


def _other_users_credential(world: World, ceremony: Ceremony) -> dict[str, Any]:
    bob_authn, credential_id, _ = world.bob()
    overrides: dict[str, Any] = {"authn": bob_authn, "credential_id": credential_id}
    if ceremony.name == "login":  # Bob's passkey, claiming to be Alice's
        overrides["user_handle"] = world.alice().webauthn_handle
    return overrides


def _unknown_credential(world: World, ceremony: Ceremony) -> dict[str, Any]:
    overrides: dict[str, Any] = {"credential_id": throwaway_credential(world.authn)}
    if ceremony.name == "login":
        overrides["user_handle"] = world.alice().webauthn_handle
    return overrides


def _sign_count(stored: int, reported: int) -> Callable[[World, Ceremony], dict[str, Any]]:
    def make(world: World, ceremony: Ceremony) -> dict[str, Any]:
        world.set_passkeys(sign_count=stored)
        return {"sign_count": reported}

    return make


def _stored_synced(world: World, ceremony: Ceremony) -> dict[str, Any]:
    world.set_passkeys(backup_eligible=True)  # stored synced; the response says device-bound
    return {}


def _duplicate_of_bob(world: World, ceremony: Ceremony) -> dict[str, Any]:
    _, credential_id, _ = world.bob()
    return {"credential_id": credential_id}


def _bobs_handle(world: World, ceremony: Ceremony) -> dict[str, Any]:
    _, _, bob = world.bob()
    return {"user_handle": bob.webauthn_handle}


def _wrong_type(world: World, ceremony: Ceremony) -> dict[str, Any]:
    return {"type": "webauthn.get" if ceremony.registers else "webauthn.create"}


CLONE = ("passkey_clone_suspected",)
CASES = [
    Case("wrong-origin", ALL, lambda w, c: {"origin": EVIL}),
    Case("wrong-origin-port", ALL, lambda w, c: {"origin": "http://localhost:8001"}),
    Case("wrong-origin-scheme", ALL, lambda w, c: {"origin": "https://localhost:8000"}),
    Case("wrong-rp-id", ALL, lambda w, c: {"rp_id": "evil.example"}),
    Case("cross-origin-true", ALL, lambda w, c: {"cross_origin": True}),
    Case("top-origin-foreign", ALL, lambda w, c: {"top_origin": EVIL}),
    Case("top-origin-present", ALL, lambda w, c: {"top_origin": ORIGIN}),
    Case("wrong-type", ALL, _wrong_type),
    Case("user-not-present", ALL, lambda w, c: {"user_present": False}),
    Case("backup-state-without-eligible", ALL, lambda w, c: {"backup_state": True}),
    Case(
        "unknown-challenge",
        ALL,
        lambda w, c: {"challenge": secrets.token_bytes(32)},
        at_challenge=True,
    ),
    # registrations only
    Case(
        "credential-id-1024-bytes",
        tuple(REGISTRATIONS),
        lambda w, c: {"credential_id": secrets.token_bytes(1024)},
    ),
    Case("duplicate-credential-id", tuple(REGISTRATIONS), _duplicate_of_bob, status=409),
    Case(
        "malformed-cose-key",
        tuple(REGISTRATIONS),
        lambda w, c: {"malformed_public_key": True},
    ),
    # assertions only
    Case("other-users-credential", tuple(ASSERTIONS), _other_users_credential),
    Case("unknown-credential", tuple(ASSERTIONS), _unknown_credential),
    Case(
        "bad-signature",
        tuple(ASSERTIONS),
        lambda w, c: {"signature": b"\x30\x06\x02\x01\x01\x02\x01\x01"},
    ),
    Case("garbage-signature", tuple(ASSERTIONS), lambda w, c: {"signature": b"not a signature"}),
    Case("backup-eligible-flipped-on", tuple(ASSERTIONS), lambda w, c: {"backup_eligible": True}),
    Case("backup-eligible-flipped-off", tuple(ASSERTIONS), _stored_synced),
    Case("sign-count-regression", tuple(ASSERTIONS), _sign_count(10, 5), events=CLONE),
    Case("sign-count-repeated", tuple(ASSERTIONS), _sign_count(10, 10), events=CLONE),
    # passkey sign-in only: user verification required, userHandle names the owner
    Case("user-not-verified", ("login",), lambda w, c: {"user_verified": False}),
    Case("user-handle-missing", ("login",), lambda w, c: {"user_handle": None}),
    Case("user-handle-empty", ("login",), lambda w, c: {"user_handle": b""}),
    Case("user-handle-of-another-user", ("login",), _bobs_handle),
    Case("user-handle-unknown", ("login",), lambda w, c: {"user_handle": secrets.token_bytes(32)}),
]


def run_case(world: World, ceremony: Ceremony, case: Case) -> None:
    """One hostile response at the finish: refused, and nothing changed."""
    world.reset_failures()
    stored = world.passkey_facts()
    options = world.start(ceremony)
    overrides = case.make(world, ceremony)
    before = snapshot(world.database)
    credential = world.respond(ceremony, options, **overrides)
    try:
        response = world.finish(ceremony, credential)
        refused(response, case.status)
        counted = ceremony.counts_failures and not case.at_challenge
        expected = case.events + (("second_factor_failed",) if counted else ())
        assert_unchanged(before, snapshot(world.database), new_events=expected)
        if ceremony.name == "login":
            assert world.signed_out()
    finally:
        world.restore_passkey_facts(stored)


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_refused_and_nothing_changed(world, name):
    """Every case of CASES that applies to the ceremony, one after another in one arranged
    account (a refusal changes nothing, so each case starts from the same state; the
    stored counters a case edits are put back). Failures are collected per case."""
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    problems: dict[str, str] = {}
    cases = [case for case in CASES if name in case.applies]
    for case in cases:
        try:
            run_case(world, ceremony, case)
        except AssertionError as exc:
            problems[case.id] = str(exc)[:800]
    assert not problems, json.dumps(problems, indent=1)
    assert len(cases) >= 11


# ------------------------------------------------------------- challenge: single use etc.


def _expire(world: World) -> None:
    with world.database.session() as db:
        db.exec(
            update(WebAuthnChallenge)
            .where(col(WebAuthnChallenge.consumed_at).is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_replayed_response_is_refused(world, name):
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    options = world.start(ceremony)
    credential = world.respond(ceremony, options)
    assert world.finish(ceremony, credential).status_code == 200
    before = snapshot(world.database)

    replay = world.finish(ceremony, credential)

    refused(replay)
    assert_unchanged(before, snapshot(world.database))


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_expired_challenge_is_refused(world, name):
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    options = world.start(ceremony)
    credential = world.respond(ceremony, options)
    _expire(world)
    before = snapshot(world.database)

    response = world.finish(ceremony, credential)

    assert EXPIRED in refused(response, 400)
    assert_unchanged(before, snapshot(world.database))


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_challenge_of_another_browser_is_refused(world, name):
    """Another browser of the same person started the ceremony; this one can't finish it,
    and the challenge stays usable by the browser it belongs to."""
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    other = world.make_client()
    world.enter(other, ceremony)
    if name == "login":
        world.start(ceremony)  # this browser has a sign-in nonce of its own
    options = world.start(ceremony, other)
    credential = world.respond(ceremony, options)
    before = snapshot(world.database)

    response = world.finish(ceremony, credential)

    assert EXPIRED in refused(response, 400)
    assert_unchanged(before, snapshot(world.database))
    assert world.finish(ceremony, credential, other).status_code == 200


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_challenge_of_another_purpose_is_refused(world, name):
    """The same browser's challenge, stored for another purpose (the row is relabelled, so
    that only the purpose differs)."""
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    options = world.start(ceremony)
    other_purpose = {"login": "second-factor", "second-factor": "login"}.get(
        name, "register" if ceremony.purpose != "register" else "enable-2fa"
    )
    with world.database.session() as db:
        db.exec(update(WebAuthnChallenge).values(purpose=other_purpose))
        db.commit()
    credential = world.respond(ceremony, options)
    before = snapshot(world.database)

    response = world.finish(ceremony, credential)

    assert EXPIRED in refused(response, 400)
    assert_unchanged(before, snapshot(world.database))


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_challenge_burnt_by_a_failed_attempt_cannot_be_reused(world, name):
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    options = world.start(ceremony)
    before = snapshot(world.database)
    failed = world.finish(ceremony, world.respond(ceremony, options, origin=EVIL))
    refused(failed, 400)

    valid = world.finish(ceremony, world.respond(ceremony, options))

    assert EXPIRED in refused(valid, 400)
    counted = ("second_factor_failed",) if ceremony.counts_failures else ()
    assert_unchanged(before, snapshot(world.database), new_events=counted)


# Real challenges of one endpoint posted to another (same browser unless noted).
CROSS = [
    # (arranged as, started at, body, answered as registration?, posted to)
    (
        "register",
        "/account/two-factor/enable/start",
        {"mode": "new", "name": "K"},
        True,
        "/account/passkeys/finish",
    ),
    (
        "register",
        "/account/passkeys/start",
        {"name": "K"},
        True,
        "/account/two-factor/enable/finish",
    ),
    ("register", "/account/passkeys/start", {"name": "K"}, True, "/login/passkey/finish"),
    (
        "enable-existing",
        "/account/passkeys/{passkey}/remove/start",
        {},
        False,
        "/account/two-factor/enable/finish",
    ),
    ("disable", "/account/recovery-codes/start", {}, False, "/account/two-factor/disable/finish"),
    ("disable", "/account/two-factor/disable/start", {}, False, "/account/recovery-codes/finish"),
    ("second-factor", "/login/passkey/start", {}, False, "/login/2fa/passkey/finish"),
    ("second-factor", "/login/2fa/passkey/start", {}, False, "/login/passkey/finish"),
]


@pytest.mark.parametrize(
    ("arranged", "start", "body", "registers", "finish"),
    CROSS,
    ids=[f"{c[1]}->{c[4]}" for c in CROSS],
)
def test_challenge_of_another_endpoint_is_refused(world, arranged, start, body, registers, finish):
    world.arrange(CEREMONIES[arranged])
    if finish == "/login/passkey/finish":
        world.client.json_post("/login/passkey/start", {})  # a sign-in nonce of its own
    if "{passkey}" in start:
        (passkey,) = query(world.database, select(Passkey))
        start = start.format(passkey=passkey.id)
    options = world.client.json_post(start, body)
    assert options.status_code == 200, options.text
    if registers:
        credential = world.authn.register(options.json())
    else:
        credential = world.authn.authenticate(options.json())
    before = snapshot(world.database)

    response = world.client.json_post(finish, {"credential": credential, "name": "K"})

    refused(response, 400)
    assert_unchanged(before, snapshot(world.database))


# ------------------------------------------------------------------ bodies and duplicates


BODIES = [
    ("not-json", b"this is not json", 400),
    ("empty", b"", 400),
    ("array", b"[]", 400),
    ("credential-not-an-object", b'{"credential": "abc", "name": "K"}', 400),
    ("no-credential", b'{"name": "K"}', 400),
    ("credential-empty", b'{"credential": {}, "name": "K"}', 400),
    (
        "credential-without-response",
        b'{"credential": {"id": "AAAA", "rawId": "AAAA"}, "name": "K"}',
        400,
    ),
    (
        "client-data-not-base64",
        b'{"credential": {"response": {"clientDataJSON": "%%%"}}, "name": "K"}',
        400,
    ),
    ("huge", json.dumps({"credential": {"id": "x"}, "padding": "x" * BIG}).encode(), 413),
]


@pytest.mark.parametrize("name", list(CEREMONIES))
def test_bad_body_is_refused(world, name):
    """Each body of BODIES at the finish, one after another: refused, nothing changed."""
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    world.start(ceremony)
    problems: dict[str, str] = {}
    for case_id, body, status in BODIES:
        before = snapshot(world.database)
        try:
            refused(world.client.json_post(ceremony.finish, body), status)
            assert_unchanged(before, snapshot(world.database))
        except AssertionError as exc:
            problems[case_id] = str(exc)[:800]
    assert not problems, json.dumps(problems, indent=1)


def test_registering_ones_own_passkey_again_is_409(world):
    ceremony = CEREMONIES["register"]
    world.arrange(ceremony)
    assert world.auth.add_passkey("First").status_code == 200
    (credential_id,) = world.authn.credentials
    options = world.start(ceremony)
    assert [e["id"] for e in options["excludeCredentials"]] == [b64url(credential_id)]
    options.pop("excludeCredentials")  # a browser that ignores it
    before = snapshot(world.database)

    response = world.finish(ceremony, world.respond(ceremony, options, credential_id=credential_id))

    assert "already registered" in refused(response, 409)
    assert_unchanged(before, snapshot(world.database))


def test_duplicate_credential_id_registers_once_for_two_accounts(world):
    """Bob holds the id; Alice's attempt is a 409 and leaves Bob's passkey as it was."""
    ceremony = CEREMONIES["register"]
    world.arrange(ceremony)
    _, credential_id, bob = world.bob()
    options = world.start(ceremony)
    before = snapshot(world.database)

    response = world.finish(ceremony, world.respond(ceremony, options, credential_id=credential_id))

    refused(response, 409)
    assert_unchanged(before, snapshot(world.database))
    (stored,) = query(world.database, select(Passkey))
    assert stored.user_id == bob.id


def test_sign_count_regression_at_sign_in_is_logged_in_words(world):
    """The clone warning is in Alice's activity, in words."""
    ceremony = CEREMONIES["login"]
    world.arrange(ceremony)
    options = world.start(ceremony)
    world.set_passkeys(sign_count=7)
    refused(world.finish(ceremony, world.respond(ceremony, options, sign_count=3)))
    (event,) = query(
        world.database,
        select(SecurityEvent).where(SecurityEvent.kind == "passkey_clone_suspected"),
    )
    assert event.user_id == world.alice().id
    assert event.detail["name"] == "Alice's key"
    (passkey,) = query(world.database, select(Passkey))
    assert passkey.sign_count == 7


@pytest.mark.parametrize(
    ("transports", "stored"),
    [
        (5, []),
        ("usb", []),
        ([1, "usb", {}, ["nfc"], "warp-drive", "internal"], ["usb", "internal"]),
    ],
    ids=["number", "string", "mixed-list"],
)
def test_odd_transports_are_not_trusted(world, transports, stored):
    """`transports` is outside the signed data: whatever the client claims, only known
    transport names are kept, and nothing else about it can fail the registration."""
    ceremony = CEREMONIES["register"]
    world.arrange(ceremony)
    credential = world.respond(ceremony, world.start(ceremony))
    credential["response"]["transports"] = transports
    response = world.finish(ceremony, credential)
    assert response.status_code == 200, response.text
    (passkey,) = query(world.database, select(Passkey))
    assert passkey.transports == stored


def _with_public_key(credential: dict[str, Any], cose_key: bytes) -> dict[str, Any]:
    """The same registration with another COSE key in its attested credential data ("none"
    attestation signs nothing, so the response stays otherwise valid)."""
    attestation = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))
    auth_data = attestation["authData"]
    id_length = int.from_bytes(auth_data[53:55], "big")
    auth_data = auth_data[: 55 + id_length] + cose_key
    attestation["authData"] = auth_data
    credential["response"]["attestationObject"] = b64url(cbor2.dumps(attestation))
    credential["response"]["authenticatorData"] = b64url(auth_data)
    credential["response"].pop("publicKey", None)
    return credential


def _p256() -> tuple[bytes, bytes]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")


X, Y = _p256()
UNUSABLE_KEYS = {
    "not-on-the-curve": {1: 2, 3: -7, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32},
    "short-coordinate": {1: 2, 3: -7, -1: 1, -2: X[:5], -3: Y},
    "coordinates-as-numbers": {1: 2, 3: -7, -1: 1, -2: 5, -3: 6},
    "es256-on-p384": {1: 2, 3: -7, -1: 2, -2: X, -3: Y},
    "eddsa-alg-on-an-ec2-key": {1: 2, 3: -8, -1: 1, -2: X, -3: Y},
    "rs256-alg-on-an-ec2-key": {1: 2, 3: -257, -1: 1, -2: X, -3: Y},
    "ed25519-of-3-bytes": {1: 1, 3: -8, -1: 6, -2: b"\x01" * 3},
    "rsa-of-one-byte": {1: 3, 3: -257, -1: b"\x00", -2: b"\x01"},
    "unoffered-algorithm": {1: 2, 3: -36, -1: 1, -2: X, -3: Y},
    "not-cbor": b"\xff\xff\xff",
}


@pytest.mark.parametrize("name", REGISTRATIONS)
def test_unusable_public_keys_are_refused_at_registration(world, name):
    """A key that could never verify a signature is refused before it is stored (else
    2FA could be turned on with a passkey that can never sign in)."""
    ceremony = CEREMONIES[name]
    world.arrange(ceremony)
    problems: dict[str, str] = {}
    for key_id, key in UNUSABLE_KEYS.items():
        options = world.start(ceremony)
        cose = key if isinstance(key, bytes) else cbor2.dumps(key)
        credential = _with_public_key(world.respond(ceremony, options), cose)
        before = snapshot(world.database)
        try:
            refused(world.finish(ceremony, credential), 400)
            assert_unchanged(before, snapshot(world.database))
        except AssertionError as exc:
            problems[key_id] = str(exc)[:500]
    assert not problems, json.dumps(problems, indent=1)
    # the same surgery with a good key still registers: the test's tool is sound
    options = world.start(ceremony)
    good = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: X, -3: Y})
    response = world.finish(ceremony, _with_public_key(world.respond(ceremony, options), good))
    assert response.status_code == 200, response.text
