"""A browser-less client of the real server for race and cross-process tests: httpx with
cookies, the CSRF token of the last page, and the software authenticator."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.e2e.conftest import PASSWORD
from tests.softauthn import SoftAuthenticator


class HttpUser:
    def __init__(self, base_url: str, authn: SoftAuthenticator | None = None) -> None:
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
        self.authn = authn or SoftAuthenticator(rp_id="localhost", origin=base_url)
        self.csrf = ""

    def clone(self, base_url: str | None = None) -> HttpUser:
        """Another connection with the same cookies (the same browser, a parallel request)."""
        other = HttpUser(base_url or self.base_url, self.authn)
        other.client.cookies = httpx.Cookies(self.client.cookies)
        other.csrf = self.csrf
        return other

    def page(self, path: str) -> httpx.Response:
        response = self.client.get(path)
        found = re.search(r'name="csrf-token" content="([^"]+)"', response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def form(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(
            path,
            data={"_csrf_token": self.csrf, **(data or {})},
            headers={"Origin": self.base_url},
        )

    def json(self, path: str, payload: Any) -> httpx.Response:
        return self.client.post(
            path,
            json=payload,
            headers={
                "X-CSRFToken": self.csrf,
                "Origin": self.base_url,
                "Accept": "application/json",
                "HX-Request": "true",
            },
        )

    def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        self.page("/login")
        response = self.form("/login", {"username": username, "password": password})
        assert response.status_code == 303, response.text
        return response

    def add_passkey(self, name: str, authn: SoftAuthenticator | None = None) -> httpx.Response:
        """Register a passkey (on another authenticator when given: one device holds one)."""
        options = self.json("/account/passkeys/start", {"name": name})
        assert options.status_code == 200, options.text
        credential = (authn or self.authn).register(options.json())
        return self.json("/account/passkeys/finish", {"credential": credential, "name": name})

    def assertion(self, start: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        options = self.json(start, body or {})
        assert options.status_code == 200, options.text
        return self.authn.authenticate(options.json())

    def enable_2fa(self) -> httpx.Response:
        credential = self.assertion("/account/two-factor/enable/start", {"mode": "existing"})
        return self.json("/account/two-factor/enable/finish", {"credential": credential})

    def close(self) -> None:
        self.client.close()
