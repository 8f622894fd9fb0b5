"""Signing in: password, passkey, the second factor at /login/2fa, enroll-at-login.

Each function does one whole step in one transaction and returns the new session token
(the handler puts it in the cookie).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, update

from models import User, utcnow
from models.passkey import passkey_count
from models.recovery import recovery_codes_remaining
from models.user import user_by_handle, user_by_username
from web import ceremony, events, lockout, passkeys, recovery, sessions, twofactor
from web.account import register_passkey
from web.client import ClientInfo
from web.errors import Refused
from web.lockout import BAD_CREDENTIALS, check_password, release_attempt
from web.passwords import MAX_PASSWORD_LENGTH, hash_password, needs_rehash, verify_password
from web.settings import Settings
from web.users import lock_user

LOCKED = twofactor.LOCKED
TOO_MANY_SECOND_FACTOR = twofactor.TOO_MANY_SECOND_FACTOR
WRONG_CODE = "That recovery code is not valid or was already used."
WRONG_PASSWORD = "That password is not right. Try again."  # noqa: S105 (a message)


@dataclass(frozen=True)
class SignedIn:
    token: str
    partial: bool


@dataclass(frozen=True)
class Completed:
    """A completed sign-in: the new session token, and the recovery codes it created (to be
    shown once before going on) when 2FA had come on without any (SPEC §4.1b)."""

    token: str
    codes: list[str]
    username: str = ""


def _codes_if_none(db: Session, user_id: int, client: ClientInfo) -> list[str]:
    """Effective 2FA without recovery codes (an administrator required it of a passkey
    holder): create them now, in the sign-in's own transaction (the caller commits)."""
    user = lock_user(db, user_id)
    if not twofactor.issues_codes_at_sign_in(user, recovery.on_record(db, user_id)):
        return []
    codes = recovery.issue(db, user_id)
    events.record(db, user_id, "recovery_codes_created", ip=client.ip)
    return codes


def password_sign_in(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    username: str,
    password: str,
    *,
    replaces: str | None = None,
) -> SignedIn:
    """Unknown user and wrong password: the same message, the same argon2 work.
    `replaces` is the browser's previous session token: signing in ends it."""
    if not username or not password:
        raise Refused(422, "Enter your username and password.")
    if len(username) > 64 or len(password) > MAX_PASSWORD_LENGTH:
        raise Refused(401, BAD_CREDENTIALS)
    found = user_by_username(db, username)
    db.commit()
    if found is None:
        verify_password(None, password)  # the same argon2 work as a wrong password
        raise Refused(401, BAD_CREDENTIALS)
    user = check_password(db, found.pk, password, client, fail_kind="sign_in_failed")
    partial = twofactor.password_sign_in_needs_second_factor(user)
    release_attempt(db, user, completed=not partial)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    db.add(user)
    sessions.end_session_by_token(db, replaces)
    token = sessions.start_session(
        db, user, settings, client, amr=["pwd"], mfa_verified=False, partial=partial
    )
    if not partial:
        events.record(db, user.pk, "sign_in", ip=client.ip, method="pwd")
    db.commit()
    return SignedIn(token=token, partial=partial)


def passkey_sign_in(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    credential: dict[str, Any],
    binding: str,
    *,
    replaces: str | None = None,
) -> Completed:
    """A user-verified discoverable passkey: a full aal2 session, no second prompt."""
    handle = passkeys.user_handle_of(credential)
    owner = user_by_handle(db, handle) if handle else None

    def effect(challenge: Any) -> Completed:
        passkeys.refuse_unknown_credential(db, credential)  # the shim signals it (SPEC §9)
        if owner is None:
            raise Refused(400, "That passkey does not belong to an account here.")
        passkey = passkeys.verify_authentication(db, settings, challenge, credential, owner=owner)
        factor = twofactor.amr_for_passkey(passkey.backup_eligible)
        events.record(db, owner.pk, "sign_in", ip=client.ip, method="passkey", name=passkey.name)
        sessions.end_session_by_token(db, replaces)
        token = sessions.start_session(
            db, owner, settings, client, amr=[factor], mfa_verified=True, passkey_id=passkey.id
        )
        return Completed(token, _codes_if_none(db, owner.pk, client), owner.username)

    return ceremony.finish(
        db,
        credential,
        purposes=("login",),
        binding=binding,
        effect=effect,
        ip=client.ip,
    )


def _fail_second_factor(db: Session, viewer: sessions.Viewer, client: ClientInfo) -> bool:
    """Count a failed second factor; the 5th ends the partial session. True when it ended."""
    count = db.exec(
        update(User)
        .where(col(User.id) == viewer.user.id)
        .values(failed_login_count=User.failed_login_count + 1)
        .returning(col(User.failed_login_count))
    ).one()[0]
    events.record(db, viewer.user.pk, "second_factor_failed", ip=client.ip)
    locked_until = twofactor.lock_after_failure(count, utcnow())
    if locked_until is None:
        return False
    db.exec(
        update(User)
        .where(col(User.id) == viewer.user.id)
        .values(locked_until=locked_until, failed_login_count=0)
    )
    events.record(db, viewer.user.pk, "locked", ip=client.ip)
    sessions.end_partial_sessions(db, viewer.user.pk)
    return True


def _refuse_if_locked(db: Session, viewer: sessions.Viewer) -> User:
    """The user, locked for this transaction; a locked account finishes no second factor."""
    user = lock_user(db, viewer.user.pk)
    now = utcnow()
    if twofactor.is_locked(user.locked_until, now):
        lockout.refuse_locked(user.failed_login_count, user.locked_until, now)  # 429 (§9)
    return user


def second_factor_passkey(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
) -> Completed:
    """Verify with a passkey at /login/2fa: upgrade to aal2 with a new token."""
    session = viewer.session
    checking = [False]  # only a failed verification counts (not a 429 while locked)

    def effect(challenge: Any) -> Completed:
        _refuse_if_locked(db, viewer)
        checking[0] = True
        passkey = passkeys.verify_authentication(db, settings, challenge, credential)
        checking[0] = False
        factor = twofactor.amr_for_passkey(passkey.backup_eligible)
        fresh = sessions.reread(db, session.pk)
        token = sessions.upgrade_session(db, fresh, settings, factor=factor, passkey_id=passkey.id)
        db.exec(update(User).where(col(User.id) == viewer.user.id).values(failed_login_count=0))
        method = "pwd+passkey" if "pwd" in fresh.amr else "passkey"
        events.record(db, viewer.user.pk, "sign_in", ip=client.ip, method=method, name=passkey.name)
        return Completed(token, _codes_if_none(db, viewer.user.pk, client), viewer.user.username)

    return ceremony.finish(
        db,
        credential,
        purposes=("second-factor",),
        binding=session.token_hash,
        effect=effect,
        ip=client.ip,
        on_failure=lambda _refusal: (
            _fail_second_factor(db, viewer, client) if checking[0] else None
        ),
    )


def second_factor_code(
    db: Session, settings: Settings, client: ClientInfo, viewer: sessions.Viewer, code: str
) -> Completed:
    """One unused recovery code: upgrade to aal2 (amr pwd+otp)."""
    try:
        user = _refuse_if_locked(db, viewer)
    except Refused:
        sessions.end_session(db, viewer.session.pk)
        db.commit()
        raise
    if len(code) > 64 or not recovery.use(db, user.pk, code):
        ended = _fail_second_factor(db, viewer, client)
        db.commit()
        if ended:
            raise Refused(401, TOO_MANY_SECOND_FACTOR)
        raise Refused(422, WRONG_CODE)
    remaining = recovery_codes_remaining(db, user.pk)
    user.failed_login_count = 0
    db.add(user)
    session = sessions.reread(db, viewer.session.pk)
    token = sessions.upgrade_session(db, session, settings, factor="otp", passkey_id=None)
    events.record(
        db,
        user.pk,
        "recovery_code_used",
        ip=client.ip,
        user_agent=client.user_agent,
        remaining=remaining,
    )
    events.record(db, user.pk, "sign_in", ip=client.ip, method="pwd+otp")
    codes = _codes_if_none(db, user.pk, client)
    db.commit()
    return Completed(token, codes, user.username)


def enroll_at_login(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
    name: str,
) -> tuple[str, list[str]]:
    """2FA required, no passkey yet: register one, issue codes, upgrade the session."""

    def effect(challenge: Any) -> tuple[str, list[str]]:
        user = _refuse_if_locked(db, viewer)
        fresh = sessions.reread(db, viewer.session.pk)
        # checked again at the finish: the window may have passed since the start
        check_enroll_at_login(db, settings, user, fresh)
        passkey = register_passkey(db, settings, client, user, challenge, credential, name)
        passkey.last_used_at = utcnow()  # it completes this sign-in: used, not "Never"
        codes = recovery.issue(db, user.pk)
        user.failed_login_count = 0
        db.add(user)
        factor = twofactor.amr_for_passkey(passkey.backup_eligible)
        token = sessions.upgrade_session(db, fresh, settings, factor=factor, passkey_id=passkey.id)
        # SPEC §4.2: enroll-at-login ends the user's other sessions, with its own event
        sessions.end_other_sessions(db, user.pk, keep_id=fresh.id)
        events.record(
            db,
            user.pk,
            "enrolled_at_login",
            ip=client.ip,
            user_agent=client.user_agent,
            name=passkey.name,
        )
        events.record(db, user.pk, "sign_in", ip=client.ip, method="pwd+passkey", name=passkey.name)
        return token, codes

    return ceremony.finish(
        db,
        credential,
        purposes=("enroll-at-login",),
        binding=viewer.session.token_hash,
        effect=effect,
        ip=client.ip,
    )


def check_enroll_at_login(db: Session, settings: Settings, user: User, session: Any) -> None:
    """Refuse enroll-at-login unless the rules allow it now (twofactor.can_enroll_at_login):
    a 409 when it isn't needed, `reauth-required` when the password must be entered first."""
    decision = twofactor.can_enroll_at_login(
        user,
        session,
        passkey_count(db, user.pk),
        utcnow(),
        settings.reauth_seconds,
    )
    if not decision.allowed:
        raise Refused(decision.status, decision.message, code=decision.code)


def refuse_if_locked(db: Session, viewer: sessions.Viewer) -> User:
    """The user, locked for this transaction; 429 with Retry-After while the account is locked."""
    return _refuse_if_locked(db, viewer)


def confirm_password_at_login(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, password: Any
) -> str:
    """The password on /login/2fa before enroll-at-login, for a session whose password was
    not just entered (demoted by an administrator's requirement, or older than the window).
    Counted by the lockout; success makes it a password sign-in's partial session again
    (auth_time now, no demotion reason) with a new token. Commits."""
    count = passkey_count(db, viewer.user.pk)
    if not twofactor.needs_enrollment_at_login(viewer.user, count):  # refused before a check
        raise Refused(409, "This account already has a passkey. Verify with it instead.")
    if not isinstance(password, str) or not password:
        raise Refused(422, "Enter your password.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Refused(422, WRONG_PASSWORD)
    try:
        user = check_password(db, viewer.user.pk, password, client, fail_kind="reauth_failed")
    except Refused as refusal:
        if refusal.status_code == 401:
            raise Refused(422, WRONG_PASSWORD) from None
        raise
    release_attempt(db, user, completed=False)
    session = sessions.reread(db, viewer.session.pk)
    token = sessions.password_reentered(db, session)
    events.record(db, user.pk, "reauth", ip=client.ip, method="password")
    db.commit()
    viewer.session = session
    viewer.user = user
    return token
