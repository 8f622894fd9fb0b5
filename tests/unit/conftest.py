"""Unit fixtures in the flaskr manner: settings → app → client, plus `auth` and `authn`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlmodel import Session, select

from models import User
from tests.softauthn import SoftAuthenticator
from web.app import create_app
from web.db import Database, connect
from web.settings import Settings
from web.users import create_user

ORIGIN = "http://localhost:8000"
PASSWORD = "correct horse battery"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key="test-secret-key-" * 3,
        admin_token="admin-token-for-tests-0123456789abcdef",
        ip_limit_per_minute=0,
        port=8000,
    )


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = connect(settings.database_url)
    yield db
    db.dispose()


@pytest.fixture
def app(settings: Settings, database: Database):  # type: ignore[no-untyped-def]
    return create_app(settings, database)


class Client(TestClient):
    """A browser-like test client: keeps cookies, knows the CSRF token of the last page."""

    csrf: str = ""

    def page(self, url: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        response = self.get(url, **kwargs)
        found = re.search(r'name="csrf-token" content="([^"]+)"', response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def form(self, url: str, data: dict[str, str] | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        if not self.csrf:
            self.page("/login")
        body = {"_csrf_token": self.csrf, **(data or {})}
        return self.post(url, data=body, follow_redirects=False, **kwargs)

    def htmx(self, method: str, url: str, data: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        headers = {"HX-Request": "true", "X-CSRFToken": self.csrf}
        if method == "GET":
            return self.get(url, headers=headers)
        return self.post(url, data=data or {}, headers=headers, follow_redirects=False)

    def json_post(self, url: str, payload: Any, **headers: str):  # type: ignore[no-untyped-def]
        if not self.csrf:
            self.page("/login")
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-CSRFToken": self.csrf,
                **headers,
            },
            follow_redirects=False,
        )


@pytest.fixture
def client(app) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    with Client(app=app, base_url=ORIGIN) as c:
        yield c


@pytest.fixture
def make_client(app):  # type: ignore[no-untyped-def]
    """More browsers for the same app (other sessions). They do not run the app's lifespan
    again (the `client` fixture does): with two or more extra clients entered, Litestar's
    lifespan shutdown hung at teardown. Nothing to release afterwards."""

    def make() -> Client:
        return Client(app=app, base_url=ORIGIN)

    return make


@pytest.fixture
def user(database: Database) -> User:
    with database.session() as db:
        return create_user(db, "alice", PASSWORD, "Alice Example", actor="admin")


def reload_user(database: Database, username: str = "alice") -> User:
    with database.session(write=False) as db:
        return db.exec(select(User).where(User.username_key == username)).one()


def query(database: Database, statement):  # type: ignore[no-untyped-def]
    with database.session(write=False) as db:
        return db.exec(statement).all()


@dataclass
class Auth:
    """Sign in and out as a test user, with a software authenticator at hand."""

    client: Client
    authn: SoftAuthenticator

    def login(self, username: str = "alice", password: str = PASSWORD):  # type: ignore[no-untyped-def]
        self.client.page("/login")
        response = self.client.form("/login", {"username": username, "password": password})
        self.client.page("/account")
        return response

    def logout(self):  # type: ignore[no-untyped-def]
        return self.client.form("/logout")

    def add_passkey(self, name: str = "Test key", **overrides: Any):  # type: ignore[no-untyped-def]
        options = self.client.json_post("/account/passkeys/start", {"name": name})
        assert options.status_code == 200, options.text
        credential = self.authn.register(options.json(), **overrides)
        return self.client.json_post(
            "/account/passkeys/finish", {"credential": credential, "name": name}
        )

    def assertion(self, start_url: str, body: Any = None, **overrides: Any) -> dict:
        options = self.client.json_post(start_url, body or {})
        assert options.status_code == 200, options.text
        return self.authn.authenticate(options.json(), **overrides)

    def enable_2fa(self):  # type: ignore[no-untyped-def]
        """Enable with an existing passkey; returns the finish response."""
        credential = self.assertion("/account/two-factor/enable/start", {"mode": "existing"})
        return self.client.json_post(
            "/account/two-factor/enable/finish", {"credential": credential}
        )


@pytest.fixture
def authn() -> SoftAuthenticator:
    return SoftAuthenticator(rp_id="localhost", origin=ORIGIN)


@pytest.fixture
def auth(client: Client, authn: SoftAuthenticator, user: User) -> Auth:
    return Auth(client, authn)


def session_of(database: Database) -> Session:
    return database.session(write=False)
