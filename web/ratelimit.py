"""Per-IP limits on sign-in attempts and ceremony starts, counted in the database so every
process shares them. A fixed one-minute window per key; over the limit answers 429."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, update

from models import RateCounter, utcnow
from web.db import Database
from web.errors import Refused

WINDOW = timedelta(minutes=1)


def hit(database: Database, key: str, limit: int) -> None:
    """Count one attempt for `key`; refuse with 429 and Retry-After past `limit` a minute.
    Runs and commits in its own short transaction (the database is the only shared state)."""
    if limit <= 0:
        return
    with database.session() as db:
        count, retry = _count(db, key)
    if count > limit:
        raise Refused(
            429,
            "Too many attempts from your network. Please wait a minute and try again.",
            headers={"Retry-After": str(retry)},
        )


def _count(db: Session, key: str) -> tuple[int, int]:
    now = utcnow()
    window_start = now.replace(second=0, microsecond=0)
    for _ in range(3):
        bumped = db.exec(
            update(RateCounter)
            .where(col(RateCounter.key) == key, col(RateCounter.window_start) == window_start)
            .values(count=RateCounter.count + 1)
            .returning(col(RateCounter.count))
        ).first()
        if bumped is not None:
            count = bumped[0]
            break
        reset = db.exec(
            update(RateCounter)
            .where(col(RateCounter.key) == key, col(RateCounter.window_start) < window_start)
            .values(window_start=window_start, count=1)
        )
        if reset.rowcount == 1:  # type: ignore[attr-defined]
            count = 1
            break
        try:
            with db.begin_nested():
                db.add(RateCounter(key=key, window_start=window_start, count=1))
            count = 1
            break
        except IntegrityError:
            continue  # another process created it first; count again
    else:
        count = 1 << 30  # could not count: treat as over the limit
    db.commit()
    return count, max(int((window_start + WINDOW - now).total_seconds()) + 1, 1)
