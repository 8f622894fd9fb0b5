from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from models.base import Persisted, utcnow


class Notification(Persisted, SQLModel, table=True):
    """The outbox (SPEC §3, §5.8): a message is written in the same transaction as the change
    it reports, and delivered later by the sender in `serve` or `send-mail`."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "sent_at", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    kind: str = Field(max_length=48)
    """What it reports (the security event kind, or "requirement_reminder")."""
    recipient: str = Field(max_length=320)
    subject: str = Field(max_length=255)
    body_text: str = Field(sa_column=Column(Text, nullable=False))
    body_html: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow)
    claimed_until: datetime | None = None
    """A sender's lease: another process leaves the message alone until then."""
    sent_at: datetime | None = None
    gave_up_at: datetime | None = None
    """Set when retries stopped (24 h after the first attempt); last_error says why."""
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
