"""Changing a password (SPEC §5.7): from the account page, and `set-password` for operators.

Success is one transaction: the new argon2id hash, `password_changed_at`, every other
session of the user ended, this session's token rotated, the event and its email.
"""

from __future__ import annotations

from sqlmodel import Session

from models import User, utcnow
from models.passkey import passkey_count
from web import events, lockout, sessions, twofactor
from web.client import ClientInfo
from web.errors import Refused
from web.passwords import (
    MAX_PASSWORD_LENGTH,
    hash_password,
    new_password_problem,
    verify_password,
)
from web.settings import Settings
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


def change_password(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    current: str,
    new: str,
) -> str:
    """Recent authentication (a passkey confirmation first when the account has a passkey and
    the session is stale), then judge the new password, then check the current one (a wrong
    one counts toward the lockout), then apply the change. Returns this session's new token."""
    user_id = viewer.user.pk
    keys = passkey_count(db, user_id)
    decision = twofactor.can_change_password_now(
        viewer.session, keys, utcnow(), settings.reauth_seconds
    )
    if not decision.allowed:
        raise Refused(decision.status, decision.message)
    if not current:
        raise PasswordRefused("current", "Enter your current password.")
    if not new:
        raise PasswordRefused("new", "Enter a new password.")
    problem = new_password_problem(
        new, username=viewer.user.username, current=current, hints=_hints(viewer.user)
    )
    if problem:
        raise PasswordRefused("new", problem)
    if len(current) > MAX_PASSWORD_LENGTH:
        raise PasswordRefused("current", WRONG_CURRENT)
    old_hash = viewer.user.password_hash
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
    sessions.end_other_sessions(db, user.pk, keep_id=viewer.session.id)
    session = sessions.reread(db, viewer.session.pk)
    if keys == 0:  # the current password was this session's confirmation (SPEC §9)
        token = sessions.confirm_identity(db, session, factor=None, passkey_id=None)
    else:
        token = new_token()
        session.token_hash = digest(token)
        session.last_seen_at = now
        db.add(session)
    events.record(db, user.pk, "password_changed", ip=client.ip, user_agent=client.user_agent)
    db.commit()
    viewer.user, viewer.session = user, session
    return token


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
