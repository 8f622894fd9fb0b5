from datetime import datetime

from sqlalchemy import Index, bindparam
from sqlmodel import Field, Session, SQLModel, col, func, select

from models.base import Persisted


class RecoveryCode(Persisted, SQLModel, table=True):
    __tablename__ = "recovery_codes"
    __table_args__ = (Index("ix_recovery_codes_user_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    code_hash: str = Field(max_length=255)
    """argon2id of the normalised code; the code itself is never stored."""
    used_at: datetime | None = None


# Built once (statement construction and its cache key cost more than the query itself).
_REMAINING = select(func.count()).where(
    RecoveryCode.user_id == bindparam("user_id"),
    col(RecoveryCode.used_at).is_(None),
)


def recovery_codes_remaining(db: Session, user_id: int) -> int:
    return db.exec(_REMAINING, params={"user_id": user_id}).one()
