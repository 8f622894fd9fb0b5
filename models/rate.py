from datetime import datetime

from sqlmodel import Field, SQLModel


class RateCounter(SQLModel, table=True):
    """A fixed-window counter shared by every process (per-IP limits)."""

    __tablename__ = "rate_counters"

    key: str = Field(primary_key=True, max_length=128)
    window_start: datetime
    count: int = Field(default=0)
