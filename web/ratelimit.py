"""Per-IP limits on sign-in attempts and ceremony starts, counted in the database so every
process shares them. A fixed one-minute window per key; over the limit answers 429."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, update

from models import RateCounter, utcnow
from web.db import Database
from web.errors import Refused

WINDOW = timedelta(minutes=1)


def ip_key(ip: str) -> str:
    """Per-IP counting groups IPv6 addresses by /64 (one host's whole allocation); IPv4
    addresses (also IPv4-mapped ones) count alone. Unparsable text counts as itself."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


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
        if reset.rowcount == 1:
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
