from datetime import datetime

from sqlmodel import Field, SQLModel


class RateCounter(SQLModel, table=True):
    """A fixed-window counter shared by every process (per-IP limits)."""

    __tablename__ = "rate_counters"

    key: str = Field(primary_key=True, max_length=128)
    window_start: datetime
    count: int = Field(default=0)


class UnknownNameCounter(SQLModel, table=True):
    """The lockout counter of a username no account has (SPEC §5.1, §9): the same counter and
    hold as a user's (failed_login_count, locked_until), so that the answers do not tell
    known usernames from unknown ones. Keyed by a digest of the normalised name, never the
    name itself."""

    __tablename__ = "unknown_name_counters"

    key: str = Field(primary_key=True, max_length=64)
    failed_login_count: int = Field(default=0)
    locked_until: datetime | None = None
    last_attempt_at: datetime
