import re
import secrets
import uuid
from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select

from models.base import Persisted, utcnow

USERNAME_RE = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
r"""In full: `\Z`, so no trailing newline slips through (`$` allows one)."""


class User(Persisted, SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(default_factory=lambda: str(uuid.uuid4()), unique=True, max_length=36)
    username: str = Field(max_length=64)
    username_key: str = Field(unique=True, max_length=64)
    """The username lower-cased: usernames compare case-insensitively."""
    display_name: str = Field(default="", max_length=128)
    password_hash: str = Field(max_length=255)
    webauthn_handle: bytes = Field(default_factory=lambda: secrets.token_bytes(32), unique=True)
    """WebAuthn user.id: random, stable, free of personal data."""
    requires_2fa: bool = Field(default=False)
    """Set only by an administrator."""
    user_2fa_enabled: bool = Field(default=False)
    """The user's own preference; an administrator may override it."""
    user_2fa_enabled_at: datetime | None = None
    failed_login_count: int = Field(default=0)
    locked_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    email: str | None = Field(default=None, max_length=320)
    """Where security notifications go (set by an administrator), stored normalised."""
    requires_2fa_from: datetime | None = None
    """When an admin requirement with a grace period starts to apply; None = at once."""
    requirement_reminded_at: datetime | None = None
    """When the day-before reminder of the pending requirement was queued (sent once)."""
    password_changed_at: datetime | None = None
    data_version: int = Field(default=0)
    """Bumped by the database on every change the account page shows (migration 0004):
    a rendered page is reused while it is unchanged (web/pagecache.py)."""


def normalize_username(username: str) -> str:
    return username.strip().lower()


def user_by_username(db: Session, username: str) -> User | None:
    if "\x00" in username:  # no username has one (and PostgreSQL text can't hold it)
        return None
    return db.exec(select(User).where(User.username_key == normalize_username(username))).first()


def user_by_handle(db: Session, handle: bytes) -> User | None:
    return db.exec(select(User).where(User.webauthn_handle == handle)).first()
