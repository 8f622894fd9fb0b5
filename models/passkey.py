from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, bindparam
from sqlmodel import Field, Session, SQLModel, col, func, select

from models.base import Persisted, json_column, utcnow


class Passkey(Persisted, SQLModel, table=True):
    __tablename__ = "passkeys"
    __table_args__ = (Index("ix_passkeys_user_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    credential_id: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    public_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sign_count: int = Field(default=0)
    transports: list[str] = Field(default_factory=list, sa_column=json_column())
    aaguid: str = Field(default="", max_length=36)
    backup_eligible: bool = Field(default=False)
    backup_state: bool = Field(default=False)
    name: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None

    @property
    def synced(self) -> bool:
        return self.backup_eligible


# Built once (statement construction and its cache key cost more than the query itself).
_OF_USER = (
    select(Passkey).where(Passkey.user_id == bindparam("user_id")).order_by(col(Passkey.created_at))
)


def passkeys_of(db: Session, user_id: int) -> list[Passkey]:
    return list(db.exec(_OF_USER, params={"user_id": user_id}))


def passkey_count(db: Session, user_id: int) -> int:
    return db.exec(select(func.count()).where(Passkey.user_id == user_id)).one()


def passkey_by_credential_id(db: Session, credential_id: bytes) -> Passkey | None:
    return db.exec(select(Passkey).where(Passkey.credential_id == credential_id)).first()
