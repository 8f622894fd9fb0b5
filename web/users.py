"""Creating users and locking a user's row for a change that the rules must see whole."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from models import UnknownNameCounter, User
from models.user import USERNAME_RE, normalize_username, user_by_username
from web import events, tokens
from web.addresses import normalize_email
from web.errors import Refused
from web.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password

MAX_DISPLAY_NAME = 128


def lock_user(db: Session, user_id: int) -> User:
    """Re-read the user under a row lock (SQLite's BEGIN IMMEDIATE already serialises
    writers), so concurrent changes decide on fresh flags, one after another. PostgreSQL:
    FOR NO KEY UPDATE, which waits for another such lock but not for the rows a concurrent
    transaction inserts that reference the user (events, sessions: FOR KEY SHARE) — with
    FOR UPDATE, two sign-ins that had each inserted an event deadlocked on it."""
    user = db.exec(
        select(User)
        .where(User.id == user_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one()
    return user


def unknown_name_key(username: str) -> str:
    """The lockout counter's key of a username no account has: a digest of the name as
    sign-in compares it (never the name itself)."""
    return tokens.digest(normalize_username(username))


def validate_new_user(username: str, password: str, display_name: str | None) -> None:
    if not USERNAME_RE.match(username):
        raise Refused(422, "Usernames are 1–64 letters, digits, dots, underscores or hyphens.")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise Refused(
            422, f"Passwords are {MIN_PASSWORD_LENGTH}–{MAX_PASSWORD_LENGTH} characters long."
        )
    if display_name is not None and len(display_name) > MAX_DISPLAY_NAME:
        raise Refused(422, f"Display names are at most {MAX_DISPLAY_NAME} characters.")


def create_user(
    db: Session,
    username: str,
    password: str,
    display_name: str | None = None,
    *,
    actor: str,
    email: str | None = None,
) -> User:
    """Validate, hash and store a new user (commits). A taken username is a 409; an invalid
    email address a 422 (stored normalised, see web.addresses). Failed sign-ins counted
    while no account had the name are forgotten: a new account does not start locked."""
    validate_new_user(username, password, display_name)
    address = normalize_email(email) if email is not None else None
    if user_by_username(db, username) is not None:
        raise Refused(409, f"Username already taken: {username}")
    user = User(
        username=username,
        username_key=normalize_username(username),
        display_name=display_name or username,
        password_hash=hash_password(password),
        email=address,
    )
    db.add(user)
    try:
        db.flush()
        events.record(db, user.pk, "user_created", actor=actor)
        key = unknown_name_key(username)
        db.exec(delete(UnknownNameCounter).where(col(UnknownNameCounter.key) == key))
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise Refused(409, f"Username already taken: {username}") from exc
    return user


def set_email(db: Session, user_id: int, email: str | None, *, actor: str, ip: str = "") -> User:
    """Set (or with None, clear) the address for notifications; the event mails both the old
    and the new address. Commits. An invalid address is a 422 and changes nothing."""
    address = normalize_email(email) if email is not None else None
    user = lock_user(db, user_id)
    if user.email != address:
        old = user.email
        user.email = address
        db.add(user)
        events.record(db, user_id, "email_changed", actor=actor, ip=ip, old=old, new=address)
    db.commit()
    return user
