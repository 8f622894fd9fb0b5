from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, LargeBinary
from sqlmodel import JSON, Field, SQLModel

from models.base import Persisted, json_column, utcnow


class Purpose(StrEnum):
    """What a WebAuthn challenge was started for: a finish accepts only its own purpose.
    (The column stays a string column; these are its values.)"""

    LOGIN = "login"  # sign in with a passkey (discoverable)
    SECOND_FACTOR = "second-factor"  # /login/2fa: verify with a passkey
    ENROLL_AT_LOGIN = "enroll-at-login"  # /login/2fa: register the first passkey
    ENABLE_2FA = "enable-2fa"  # turn 2FA on, with a new passkey or an existing one
    DISABLE_2FA = "disable-2fa"
    REGISTER = "register"  # add a passkey on the account page
    REMOVE_PASSKEY = "remove-passkey"  # "Confirm it's you" that also removes the passkey
    RECOVERY_CODES = "recovery-codes"  # "Confirm it's you" that also regenerates codes
    REAUTH = "reauth"  # "Confirm it's you" with a passkey


class WebAuthnChallenge(Persisted, SQLModel, table=True):
    __tablename__ = "webauthn_challenges"

    id: int | None = Field(default=None, primary_key=True)
    challenge: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    binding_hash: str = Field(max_length=64)
    """SHA-256 of the browser secret it is bound to: the session token, or a sign-in nonce."""
    session_id: int | None = None
    user_id: int | None = None
    purpose: str = Field(max_length=32)
    allow_credentials: list[str] = Field(default_factory=list, sa_column=json_column())
    """Base64url credential IDs the ceremony may use (empty: discoverable)."""
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict))
    """What the ceremony acts on (a passkey id, a name)."""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    consumed_at: datetime | None = None
