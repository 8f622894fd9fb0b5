"""The lockout (SPEC §5.1, §9): one counter per user for passwords — sign-in, "Confirm it's
you", current password — and second-factor failures; at most 5 checked per window however
many arrive at once; every attempt while locked is a 429 with Retry-After. A username no
account has is counted and held by the same rules (its own counter, keyed by a digest of
the name), so the answers never tell which usernames exist."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import Update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from models import UnknownNameCounter, User, utcnow
from web import events, sessions, twofactor
from web.client import ClientInfo
from web.errors import Refused
from web.passwords import verify_password
from web.users import lock_user, unknown_name_key

BAD_CREDENTIALS = "Incorrect username or password."
log = logging.getLogger("barycenter")


def reserve_attempt(db: Session, user_id: int) -> int:
    """Count this password attempt BEFORE the argon2 work, under the user's row lock
    (PostgreSQL FOR UPDATE; SQLite's BEGIN IMMEDIATE), and commit: however many arrive at
    once, at most 5 per window get past here (SPEC §5.1, §9; twofactor.reserve_attempt). A
    locked account, or 5 attempts in flight, is a 429 with Retry-After and the lock message,
    a correct password included."""
    now = utcnow()
    user = lock_user(db, user_id)
    reserved = twofactor.reserve_attempt(user.failed_login_count, user.locked_until, now)
    if reserved is None:
        count, locked_until = user.failed_login_count, user.locked_until
        db.rollback()
        refuse_locked(count, locked_until, now)
    count, hold = reserved
    db.exec(
        update(User)
        .where(col(User.id) == user_id)
        .values(failed_login_count=count, locked_until=hold)
    )
    db.commit()  # no transaction (nor SQLite write lock) is held during the argon2 work
    return count


def refuse_locked(failed_count: int, locked_until: Any, now: Any) -> NoReturn:
    """429, Retry-After and the lock message saying until when (or "in a minute" while 5
    attempts are being checked)."""
    if twofactor.lock_in_force(failed_count, locked_until, now):
        wait = int((locked_until - now).total_seconds()) + 1
    else:
        wait = 10
    message = twofactor.hold_message(failed_count, locked_until, now)
    raise Refused(429, message, headers={"Retry-After": str(wait)})


def give_back(db: Session, user_id: int) -> None:
    """An attempt that ended without a verdict (an error while checking it): its reservation
    is given back in a transaction of its own. Should even that fail, the busy window
    (twofactor.BUSY) bounds what is left."""
    taken = col(User.failed_login_count) > 0
    statement = update(User).where(col(User.id) == user_id, taken)
    count_down = User.failed_login_count - 1
    _give_back(db, statement.values(failed_login_count=count_down), f"user {user_id}")


def _give_back(db: Session, statement: Update, whose: str) -> None:
    try:
        db.rollback()
        db.exec(statement)
        db.commit()
    except Exception:  # the original error matters more; the window ends the hold anyway
        db.rollback()
        log.warning("could not give back a lockout reservation of %s", whose)


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
    set meanwhile by a concurrent failure still wins: 429. Committed at once, in the
    transaction of the check (so nothing that fails later can leak the reservation)."""
    now = utcnow()
    if twofactor.lock_in_force(user.failed_login_count, user.locked_until, now):
        count, locked_until = user.failed_login_count, user.locked_until
        db.rollback()
        refuse_locked(count, locked_until, now)
    user.failed_login_count = 0 if completed else max(0, user.failed_login_count - 1)
    user.locked_until = None  # an ended lock, or the busy window, is forgotten
    db.add(user)
    db.commit()


def check_password(
    db: Session, user_id: int, password: str, client: ClientInfo, *, fail_kind: str
) -> User:
    """One password attempt counted against the lockout (sign-in, "Confirm it's you", current
    password): reserve, verify (bounded pool), then the user row locked for this
    transaction, and the password checked again if it changed meanwhile. A wrong password
    commits its failure and raises 401; any other error gives the reservation back. The
    caller calls release_attempt next."""
    count = reserve_attempt(db, user_id)
    try:
        stored = db.exec(select(User.password_hash).where(col(User.id) == user_id)).first()
        db.commit()
        correct = verify_password(stored, password)
        if correct:
            user = lock_user(db, user_id)
            if user.password_hash != stored:  # changed while this one was verified: the
                # password now stored decides (a change ends the old one; a rehash of the
                # same password by another sign-in still matches)
                correct = verify_password(user.password_hash, password)
        if not correct:
            count_failure(db, user_id, count, client, fail_kind)
            db.commit()
    except BaseException:
        give_back(db, user_id)
        raise
    if not correct:
        raise Refused(401, BAD_CREDENTIALS)
    return user


# ---- a username no account has ---------------------------------------------------------


def refuse_unknown_name(db: Session, username: str, password: str) -> NoReturn:
    """A password sign-in with a username no account has, answered as a wrong password of a
    known one: reserved under the name's counter row lock, the same argon2 work, the 5th
    failure holds it for 15 minutes (twofactor's rules, like reserve_attempt and
    count_failure); 401, or 429 with Retry-After while held."""
    key = unknown_name_key(username)
    count = _reserve_unknown_name(db, key)
    try:
        verify_password(None, password)
        locked_until = twofactor.lock_after_failure(count, utcnow())
        if locked_until is not None:
            db.exec(
                update(UnknownNameCounter)
                .where(col(UnknownNameCounter.key) == key)
                .values(locked_until=locked_until, failed_login_count=0)
            )
        db.commit()
    except BaseException:
        taken = col(UnknownNameCounter.failed_login_count) > 0
        statement = update(UnknownNameCounter).where(col(UnknownNameCounter.key) == key, taken)
        count_down = UnknownNameCounter.failed_login_count - 1
        _give_back(db, statement.values(failed_login_count=count_down), "an unknown name")
        raise
    raise Refused(401, BAD_CREDENTIALS)


def _reserve_unknown_name(db: Session, key: str) -> int:
    """reserve_attempt for the counter of an unknown name (created on its first attempt)."""
    now = utcnow()
    row = _lock_unknown_name(db, key, now)
    reserved = twofactor.reserve_attempt(row.failed_login_count, row.locked_until, now)
    if reserved is None:
        count, locked_until = row.failed_login_count, row.locked_until
        db.rollback()
        refuse_locked(count, locked_until, now)
    row.failed_login_count, row.locked_until = reserved
    row.last_attempt_at = now
    db.add(row)
    db.commit()  # no transaction (nor SQLite write lock) is held during the argon2 work
    return row.failed_login_count


def _lock_unknown_name(db: Session, key: str, now: datetime) -> UnknownNameCounter:
    """The name's counter row, inserted if missing (a concurrent insert wins: its row is
    used), then re-read FOR UPDATE like lock_user, so concurrent attempts queue on it."""
    fresh = select(UnknownNameCounter).where(col(UnknownNameCounter.key) == key)
    if db.exec(fresh).first() is None:
        try:
            with db.begin_nested():
                db.add(UnknownNameCounter(key=key, last_attempt_at=now))
        except IntegrityError:
            pass  # another attempt created it first; its row lock is waited for below
    return db.exec(fresh.with_for_update().execution_options(populate_existing=True)).one()
