"""Column helpers shared by the tables. Times are aware UTC datetimes."""

from datetime import UTC, datetime

from sqlalchemy import JSON, Column


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_column() -> Column:
    return Column(JSON, nullable=False, default=list)
