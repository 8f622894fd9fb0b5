from datetime import datetime

from sqlalchemy import Column, LargeBinary
from sqlmodel import JSON, Field, SQLModel

from models.base import Persisted, json_column, utcnow

PURPOSES = (
    "register",
    "login",
    "second-factor",
    "enable-2fa",
    "disable-2fa",
    "recovery-codes",
    "enroll-at-login",
    "remove-passkey",
    "reauth",
)


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
