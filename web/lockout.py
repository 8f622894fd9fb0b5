"""The lockout (SPEC §5.1, §9): one counter per user for passwords — sign-in, "Confirm it's
you", current password — and second-factor failures; at most 5 checked per window however
many arrive at once; every attempt while locked is a 429 with Retry-After."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select, update

from models import User, utcnow
from web import events, sessions, twofactor
from web.client import ClientInfo
from web.errors import Refused
from web.passwords import verify_password
from web.users import lock_user

BAD_CREDENTIALS = "Incorrect username or password."


def reserve_attempt(db: Session, user_id: int) -> int:
    """Count this password attempt BEFORE the argon2 work, in one conditional UPDATE …
    RETURNING, and commit: however many arrive at once, at most 5 per lockout window get
    past here (SPEC §5.1, §9). A locked account, or 5 attempts already in flight, is a 429
    with Retry-After and the lock message, a correct password included."""
    now = utcnow()
    reserved = db.exec(
        update(User)
        .where(
            col(User.id) == user_id,
            col(User.failed_login_count) < twofactor.MAX_FAILED_ATTEMPTS,
            or_(col(User.locked_until).is_(None), col(User.locked_until) <= now),
        )
        .values(failed_login_count=User.failed_login_count + 1)
        .returning(User.failed_login_count)
    ).first()
    if reserved is None:
        locked_until = db.exec(select(User.locked_until).where(col(User.id) == user_id)).first()
        db.rollback()
        refuse_locked(locked_until, now)
    db.commit()  # no transaction (nor SQLite write lock) is held during the argon2 work
    return int(reserved[0])  # type: ignore[index]


def refuse_locked(locked_until: Any, now: Any) -> None:
    """429, Retry-After and the lock message saying until when."""
    if not twofactor.is_locked(locked_until, now):
        locked_until = None  # 5 attempts still being checked: a short wait
    wait = int((locked_until - now).total_seconds()) + 1 if locked_until else 10
    raise Refused(429, twofactor.lock_message(locked_until), headers={"Retry-After": str(wait)})


def count_failure(db: Session, user_id: int, count: int, client: ClientInfo, kind: str) -> bool:
    """The reserved attempt failed: record it; the 5th locks the account for 15 minutes and
    ends its pending sign-ins. The caller commits. True when this failure locked it."""
    events.record(db, user_id, kind, ip=client.ip)
    locked_until = twofactor.lock_after_failure(count, utcnow())
    if locked_until is None:
        return False
    db.exec(
        update(User)
        .where(col(User.id) == user_id)
        .values(locked_until=locked_until, failed_login_count=0)
    )
    events.record(db, user_id, "locked", ip=client.ip)
    sessions.end_partial_sessions(db, user_id)
    return True


def release_attempt(db: Session, user: User, *, completed: bool) -> None:
    """The reserved attempt succeeded: a completed sign-in resets the counter; otherwise the
    reservation is given back (a pending second factor keeps counting its failures). A lock
    set meanwhile by a concurrent failure still wins: 429. The caller commits."""
    now = utcnow()
    if twofactor.is_locked(user.locked_until, now):
        db.rollback()
        refuse_locked(user.locked_until, now)
    user.failed_login_count = 0 if completed else max(0, user.failed_login_count - 1)
    user.locked_until = None  # an ended lock is forgotten
    db.add(user)


def check_password(
    db: Session, user_id: int, password: str, client: ClientInfo, *, fail_kind: str
) -> User:
    """One password attempt counted against the lockout (sign-in, "Confirm it's you", current
    password): reserve, verify (bounded pool), then the user row locked for this
    transaction. A wrong password commits its failure and raises 401."""
    count = reserve_attempt(db, user_id)
    stored = db.exec(select(User.password_hash).where(col(User.id) == user_id)).first()
    db.commit()
    if not verify_password(stored, password):
        count_failure(db, user_id, count, client, fail_kind)
        db.commit()
        raise Refused(401, BAD_CREDENTIALS)
    return lock_user(db, user_id)
