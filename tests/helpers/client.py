"""One browser-like client for both kinds of test: `Client` drives the app in-process
(Litestar's TestClient), `ServerClient` a real server over HTTP. Both are httpx clients
that keep cookies and the CSRF token of the last page, with the same verbs (page, form,
htmx, json_post); `Auth` signs in and runs ceremonies through either."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
from litestar.testing import TestClient

from tests.softauthn import SoftAuthenticator

ORIGIN = "http://localhost:8000"
PASSWORD = "correct horse battery"
CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


class BrowserVerbs:
    """What a page does, over an httpx client's get/post: follow no redirects on a post,
    send the CSRF token of the last page read. `origin` headers go with every post (a real
    browser sends Origin; the in-process client leaves it to each test)."""

    csrf: str = ""
    origin: dict[str, str] = {}

    get: Any
    post: Any

    def page(self, url: str, **kwargs: Any) -> httpx.Response:
        response = self.get(url, **kwargs)
        found = CSRF_META.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def form(self, url: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        if not self.csrf:
            self.page("/login")
        body = {"_csrf_token": self.csrf, **(data or {})}
        headers = {**self.origin, **kwargs.pop("headers", {})}
        return self.post(url, data=body, headers=headers, follow_redirects=False, **kwargs)

    def htmx(self, method: str, url: str, data: dict[str, str] | None = None) -> httpx.Response:
        headers = {"HX-Request": "true", "X-CSRFToken": self.csrf}
        if method == "GET":
            return self.get(url, headers=headers)
        return self.post(
            url, data=data or {}, headers={**self.origin, **headers}, follow_redirects=False
        )

    def json_post(self, url: str, payload: Any, **headers: str) -> httpx.Response:
        if not self.csrf:
            self.page("/login")
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.post(
            url,
            content=body,
            headers={
                **self.origin,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-CSRFToken": self.csrf,
                **headers,
            },
            follow_redirects=False,
        )


class Client(BrowserVerbs, TestClient):
    """The app in-process: keeps cookies, knows the CSRF token of the last page."""


class ServerClient(BrowserVerbs, httpx.Client):
    """A real server over HTTP (race and cross-process tests), sending Origin as a browser
    does. `clone()` is the same browser on another connection (a parallel request)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url=base_url, timeout=30, follow_redirects=False)
        self.origin = {"Origin": base_url}

    def clone(self, base_url: str | None = None) -> ServerClient:
        other = ServerClient(base_url or str(self.base_url).rstrip("/"))
        other.cookies = httpx.Cookies(self.cookies)
        other.csrf = self.csrf
        return other


@dataclass
class Auth:
    """Sign in and out as a test user, with a software authenticator at hand; the same for
    the in-process `Client` and a `ServerClient`."""

    client: BrowserVerbs
    authn: SoftAuthenticator

    def login(self, username: str = "alice", password: str = PASSWORD) -> httpx.Response:
        self.client.page("/login")
        response = self.client.form("/login", {"username": username, "password": password})
        self.client.page("/account")
        return response

    def logout(self) -> httpx.Response:
        return self.client.form("/logout")

    def add_passkey(
        self, name: str = "Test key", authn: SoftAuthenticator | None = None, **overrides: Any
    ) -> httpx.Response:
        """Register a passkey (on another authenticator when given: one device holds one)."""
        options = self.client.json_post("/account/passkeys/start", {"name": name})
        assert options.status_code == 200, options.text
        credential = (authn or self.authn).register(options.json(), **overrides)
        return self.client.json_post(
            "/account/passkeys/finish", {"credential": credential, "name": name}
        )

    def assertion(self, start_url: str, body: Any = None, **overrides: Any) -> dict[str, Any]:
        options = self.client.json_post(start_url, body or {})
        assert options.status_code == 200, options.text
        return self.authn.authenticate(options.json(), **overrides)

    def enable_2fa(self) -> httpx.Response:
        """Enable with an existing passkey; returns the finish response."""
        credential = self.assertion("/account/two-factor/enable/start", {"mode": "existing"})
        return self.client.json_post(
            "/account/two-factor/enable/finish", {"credential": credential}
        )
