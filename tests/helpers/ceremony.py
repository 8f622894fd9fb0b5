"""What the ceremony tests share: a 4xx refusal in words, a snapshot of everything a
ceremony may change, and a credential the server never saw."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from sqlmodel import col, select

from models import AuthSession, Passkey, RecoveryCode, SecurityEvent, User
from tests.softauthn import SoftAuthenticator, b64url
from web.db import Database


def refused(response: Any, status: int | None = None) -> str:
    """A 4xx JSON refusal with a sentence for a person in "detail"; returns the sentence."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    detail = response.json()["detail"]
    assert isinstance(detail, str), detail
    assert 10 <= len(detail) <= 200, detail
    assert detail[0].isupper() and detail.rstrip()[-1] in ".!?", detail
    for leak in ("Traceback", "Exception", "Error", "webauthn", "{", "None", "b'"):
        assert leak not in detail, detail
    return detail


def snapshot(database: Database) -> dict[str, Any]:
    """Everything a ceremony may change (challenges and last-seen times aside)."""
    with database.session(write=False) as db:
        return {
            "users": [
                (
                    u.id,
                    u.requires_2fa,
                    u.user_2fa_enabled,
                    u.user_2fa_enabled_at,
                    u.failed_login_count,
                    u.locked_until,
                )
                for u in db.exec(select(User).order_by(col(User.id)))
            ],
            "passkeys": [
                (
                    p.id,
                    p.user_id,
                    p.credential_id,
                    p.public_key,
                    p.sign_count,
                    p.backup_eligible,
                    p.backup_state,
                    p.name,
                    p.last_used_at,
                )
                for p in db.exec(select(Passkey).order_by(col(Passkey.id)))
            ],
            "sessions": [
                (
                    s.id,
                    s.user_id,
                    s.token_hash,
                    s.state,
                    tuple(s.amr),
                    s.acr,
                    s.mfa_verified,
                    s.passkey_id,
                    s.reauth_at,
                    s.expires_at,
                )
                for s in db.exec(select(AuthSession).order_by(col(AuthSession.id)))
            ],
            "codes": [
                (c.id, c.user_id, c.code_hash, c.used_at)
                for c in db.exec(select(RecoveryCode).order_by(col(RecoveryCode.id)))
            ],
            "events": [
                (e.id, e.user_id, e.kind)
                for e in db.exec(select(SecurityEvent).order_by(col(SecurityEvent.id)))
            ],
        }


def throwaway_credential(authn: SoftAuthenticator, handle: bytes = b"nobody") -> bytes:
    """A credential the authenticator holds but the server never saw."""
    options = {
        "challenge": b64url(secrets.token_bytes(32)),
        "rp": {"id": "localhost"},
        "user": {"id": b64url(handle)},
    }
    return base64.urlsafe_b64decode(authn.register(options)["rawId"] + "==")
