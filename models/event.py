from datetime import datetime

from sqlalchemy import Column, Index
from sqlmodel import JSON, Field, SQLModel

from models.base import Persisted, utcnow


class SecurityEvent(Persisted, SQLModel, table=True):
    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_user_time", "user_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    kind: str = Field(max_length=48)
    actor: str = Field(default="user", max_length=8)
    created_at: datetime = Field(default_factory=utcnow)
    ip: str = Field(default="", max_length=64)
    detail: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict))
