"""Column helpers shared by the tables. Times are aware UTC datetimes."""

from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import JSON, Column


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_column() -> Column:
    return Column(JSON, nullable=False, default=list)


class NotPersisted(RuntimeError):
    """A row's id was read before the row was flushed to the database."""


class _HasId(Protocol):
    id: int | None


class Persisted:
    """Mixin for the tables with an autoincrement ``id``: ``row.pk`` is that id typed as
    ``int``, for a row that was loaded or flushed. A plain property, not a field or a
    column: the table's schema and its pydantic fields are unchanged."""

    @property
    def pk(self: _HasId) -> int:
        if self.id is None:
            raise NotPersisted(f"{type(self).__name__} has no id yet: flush it first")
        return self.id
