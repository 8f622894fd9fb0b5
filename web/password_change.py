"""Changing a password (SPEC §5.7): from the account page, and `set-password` for operators.

Success is one transaction: the new argon2id hash, `password_changed_at`, every other
session of the user ended, this session's token rotated, the event and its email.
"""

from __future__ import annotations

from sqlmodel import Session

from models import User, utcnow
from models.passkey import passkey_count
from web import events, lockout, sessions, twofactor
from web.account import Changed
from web.db import transaction
from web.errors import Refused
from web.passwords import (
    MAX_PASSWORD_LENGTH,
    hash_password,
    new_password_problem,
    verify_password,
)
from web.sessions import Actor, Viewer
from web.tokens import digest, new_token
from web.users import lock_user

WRONG_CURRENT = "Your current password is not correct."
CHANGED_MEANWHILE = "Your password was changed in another window. Reload the page and try again."


class PasswordRefused(Refused):
    """A 422 about one field of the form: "current" or "new"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(422, message)
        self.field = field


def _hints(user: User) -> tuple[str, ...]:
    return tuple(w for w in (user.display_name, (user.email or "").partition("@")[0]) if w)


def _may_change_now(db: Session, actor: Actor) -> twofactor.Decision:
    keys = passkey_count(db, actor.user.pk)
    now, seconds = utcnow(), actor.settings.reauth_seconds
    return twofactor.can_change_password_now(actor.session, keys, now, seconds)


def needs_confirmation(db: Session, actor: Actor) -> bool:
    """The form is "Confirm it's you" first (a passkey on the account, a stale session)."""
    return _may_change_now(db, actor).code == twofactor.REAUTH_REQUIRED


def change_password(db: Session, actor: Actor, current: str, new: str) -> Changed:
    """Recent authentication (a passkey confirmation first when the account has a passkey and
    the session is stale), then judge the new password, then check the current one (a wrong
    one counts toward the lockout), then apply the change, with this session's new token."""
    with transaction(db):
        return _change_password(db, actor, current, new)


def _change_password(db: Session, actor: Actor, current: str, new: str) -> Changed:
    client = actor.client
    user_id = actor.user.pk
    keys = passkey_count(db, user_id)
    _may_change_now(db, actor).require()
    if not current:
        raise PasswordRefused("current", "Enter your current password.")
    if not new:
        raise PasswordRefused("new", "Enter a new password.")
    problem = new_password_problem(
        new, username=actor.user.username, current=current, hints=_hints(actor.user)
    )
    if problem:
        raise PasswordRefused("new", problem)
    if len(current) > MAX_PASSWORD_LENGTH:
        raise PasswordRefused("current", WRONG_CURRENT)
    old_hash = actor.user.password_hash
    db.commit()  # no transaction (nor SQLite write lock) is held during the argon2 work
    new_hash = hash_password(new)
    try:
        user = lockout.check_password(
            db,
            user_id,
            current,
            client,
            fail_kind="password_change_failed",
        )
    except Refused as refusal:
        if refusal.status_code != 401:
            raise
        found = db.get(User, user_id, populate_existing=True)
        locked_until = found.locked_until if found else None
        count = found.failed_login_count if found else 0
        db.rollback()
        now = utcnow()
        if twofactor.lock_in_force(count, locked_until, now):  # this failure locked the account
            lockout.refuse_locked(count, locked_until, now)
        raise PasswordRefused("current", WRONG_CURRENT) from None
    lockout.release_attempt(db, user, completed=False)  # commits (the row lock ends)
    user = lock_user(db, user_id)
    if user.password_hash != old_hash:  # another change won the race meanwhile
        db.rollback()
        raise Refused(409, CHANGED_MEANWHILE)
    now = utcnow()
    user.password_hash = new_hash
    user.password_changed_at = now
    db.add(user)
    sessions.end_other_sessions(db, user.pk, keep_id=actor.session.id)
    session = sessions.reread(db, actor.session.pk)
    if keys == 0:  # the current password was this session's confirmation (SPEC §9)
        token = sessions.confirm_identity(db, session, factor=None, passkey_id=None)
    else:
        token = new_token()
        session.token_hash = digest(token)
        session.last_seen_at = now
        db.add(session)
    events.record(db, user.pk, "password_changed", ip=client.ip, user_agent=client.user_agent)
    return Changed(Viewer(user, session), token=token)


def set_password(db: Session, target: User, new: str) -> None:
    """`barycenter-account set-password`: the same rules (the current password may not be
    reused), every session ended, event with actor admin. Commits. Raises Refused."""
    problem = new_password_problem(new, username=target.username, hints=_hints(target))
    if problem is None and verify_password(target.password_hash, new):
        problem = "Choose a password different from the current one."
    if problem:
        raise Refused(422, problem)
    new_hash = hash_password(new)
    user = lock_user(db, target.pk)
    user.password_hash = new_hash
    user.password_changed_at = utcnow()
    user.failed_login_count = 0
    user.locked_until = None
    db.add(user)
    sessions.end_other_sessions(db, user.pk, keep_id=None)
    events.record(db, user.pk, "password_changed", actor="admin")
    db.commit()
