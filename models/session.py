from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from models.base import Persisted, json_column, utcnow

PARTIAL = "partial"
FULL = "full"


class AuthSession(Persisted, SQLModel, table=True):
    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_user_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, max_length=64)
    """SHA-256 of the session token; the token itself is only in the cookie."""
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    state: str = Field(max_length=16)
    amr: list[str] = Field(default_factory=list, sa_column=json_column())
    acr: str = Field(default="aal1", max_length=8)
    mfa_verified: bool = Field(default=False)
    auth_time: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    """Absolute end of this session; idle expiry is counted from last_seen_at."""
    passkey_id: int | None = None
    """The passkey this session was signed in (or upgraded) with."""
    reauth_at: datetime | None = None
    """Recent authentication (SPEC §4.1, §9): the latest completed sign-in, second factor,
    assertion with an existing passkey, or password confirmation in this session."""
    confirmed_passkey_ids: list[int] = Field(default_factory=list, sa_column=json_column())
    """Passkeys this session later confirmed the user's identity with (removing one of them
    ends the session, like removing the one it signed in with)."""
    partial_reason: str = Field(default="", max_length=32)
    """Why a session waits at /login/2fa: "" (password sign-in) or "admin-required"
    (a full session demoted because an administrator's requirement now applies)."""
    user_agent: str = Field(default="", max_length=512)
    ip: str = Field(default="", max_length=64)
