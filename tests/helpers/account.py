"""Account-page helpers the unit tests share: the recovery codes and codes version on a
page, the security events and the session on record, the step-up time, 2FA turned on with a
passkey, a second passkey, a sign-in that stops at the second factor, and the admin flags
set through the `admin` fixture (tests/unit/conftest.py)."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import select, update

from models import AuthSession, RecoveryCode, SecurityEvent, utcnow
from tests.helpers import admin_api
from tests.helpers.client import PASSWORD
from tests.helpers.database import query
from web.sessions import COOKIE
from web.tokens import digest

CODE_RE = re.compile(r"<code>([A-Z0-9-]+)</code>")
VERSION_RE = re.compile(r'name="codes_version" value="(\w+)"')


def set_required(admin, required: bool, username: str = "alice") -> None:
    assert admin(admin_api.set_required(username, required))["r"]["success"]


def set_enabled(admin, enabled: bool, username: str = "alice") -> None:
    assert admin(admin_api.set_enabled(username, enabled))["r"]["success"]


def codes_in(text: str) -> list[str]:
    return CODE_RE.findall(text)


def kinds(database) -> list[str]:
    rows = query(database, select(SecurityEvent).order_by(SecurityEvent.id))
    return [e.kind for e in rows]


def my_session(database, client) -> AuthSession:
    token = client.cookies.get(COOKIE)
    assert token, "no session cookie"
    rows = query(database, select(AuthSession).where(AuthSession.token_hash == digest(token)))
    assert rows, "the cookie names no session"
    return rows[0]


def move_step_up(database, minutes_ago: float | None) -> None:
    value = None if minutes_ago is None else utcnow() - timedelta(minutes=minutes_ago)
    with database.session() as db:
        db.exec(update(AuthSession).values(reauth_at=value))
        db.commit()


def unused_codes(database) -> int:
    rows = query(database, select(RecoveryCode))
    return sum(1 for r in rows if r.used_at is None)


def enabled_with_passkey(auth, name: str = "Work key") -> list[str]:
    """Sign in, add a passkey, turn 2FA on with it; returns the recovery codes."""
    auth.login()
    assert auth.add_passkey(name).status_code == 200
    response = auth.enable_2fa()
    assert response.status_code == 200, response.text
    codes = codes_in(response.text)
    assert len(codes) == 10
    auth.client.page("/account")
    return codes


def add_key(auth, name: str):
    """Another passkey in the same authenticator (as a password manager holds several)."""
    options = auth.client.json_post("/account/passkeys/start", {"name": name})
    assert options.status_code == 200, options.text
    creation = {**options.json(), "excludeCredentials": []}
    credential = auth.authn.register(creation)
    response = auth.client.json_post(
        "/account/passkeys/finish", {"credential": credential, "name": name}
    )
    assert response.status_code == 200, response.text
    return response


def sign_in_partial(auth) -> None:
    auth.logout()
    auth.client.page("/login")
    response = auth.client.form("/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["location"] == "/login/2fa"
    auth.client.page("/login/2fa")


def version_in(text: str) -> str:
    found = VERSION_RE.search(text) or re.search(r"codes_version=(\w+)", text)
    assert found, text
    return found.group(1)
