"""The shared shape of every passkey ceremony: a `start_…` stores a challenge for one
`Purpose` and returns the options; its `finish_…` (next to it, in web.account or
web.signin) comes through `finish` here: consume the challenge, verify and apply the
effect in one transaction.

The challenge is consumed whatever happens next; the effect runs in a savepoint, so a
refused ceremony commits only the consumption (and the failure's own record), never half
an effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from sqlmodel import Session

from models import WebAuthnChallenge
from models.challenge import Purpose
from web import events, passkeys
from web.errors import Refused

T = TypeVar("T")
Options = dict[str, Any]
"""What a `start_…` returns: the WebAuthn options JSON for the browser."""
NOT_JSON = "The request body must be a JSON object."


def read_json(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body, or a 400 with a plain message."""
    try:
        value = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # Recursion: too deep
        raise Refused(400, NOT_JSON) from exc
    if not isinstance(value, dict):
        raise Refused(400, NOT_JSON)
    return value


def read_credential(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """`{"credential": <toJSON()>, …fields}` → (credential, fields)."""
    payload = read_json(body)
    credential = payload.pop("credential", None)
    if not isinstance(credential, dict):
        raise Refused(400, "The request carried no passkey response.")
    return credential, payload


def finish(
    db: Session,
    credential: dict[str, Any],
    *,
    purpose: Purpose,
    binding: str,
    effect: Callable[[WebAuthnChallenge], T],
    ip: str,
    on_failure: Callable[[Refused], object] | None = None,
) -> T:
    """Consume the challenge, then apply `effect` atomically; commit either way."""
    challenge = passkeys.take_challenge(db, credential, purpose=purpose, binding=binding)
    try:
        with db.begin_nested():
            result = effect(challenge)
    except Refused as refusal:
        if isinstance(refusal, passkeys.SignCountRegression):  # possibly a cloned authenticator
            passkey = refusal.passkey
            events.record(db, passkey.user_id, "passkey_clone_suspected", ip=ip, name=passkey.name)
        if on_failure is not None:
            on_failure(refusal)
        db.commit()
        raise
    except Exception:
        # The savepoint is rolled back; keep the consumption, so the challenge stays used.
        try:
            db.commit()
        except Exception:
            db.rollback()
        raise
    db.commit()
    return result
