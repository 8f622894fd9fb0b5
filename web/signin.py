"""Signing in: password, passkey, the second factor at /login/2fa, enroll-at-login.

Each function does one whole step in one transaction (it commits; handlers never do) and
returns the new session token (the handler puts it in the cookie). The passkey ceremonies
are pairs, side by side: `start_…` returns the options, `finish_…` a `Completed`. The
steps before any session are given a `Visitor`; those of a session waiting for its second
factor the `Actor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, update

from models import AuthSession, User, WebAuthnChallenge, utcnow
from models.challenge import Purpose
from models.passkey import passkey_count, passkeys_of
from models.recovery import recovery_codes_remaining
from models.user import user_by_handle, user_by_username
from web import ceremony, events, lockout, passkeys, recovery, sessions, twofactor
from web.account import clean_name, register_passkey
from web.ceremony import Options
from web.client import ClientInfo
from web.db import transaction
from web.errors import Refused
from web.lockout import BAD_CREDENTIALS, check_password, release_attempt
from web.passwords import MAX_PASSWORD_LENGTH, hash_password, needs_rehash, verify_password
from web.sessions import Actor
from web.settings import Settings
from web.users import lock_user

LOCKED = twofactor.LOCKED
TOO_MANY_SECOND_FACTOR = twofactor.TOO_MANY_SECOND_FACTOR
WRONG_CODE = "That recovery code is not valid or was already used."
WRONG_PASSWORD = "That password is not right. Try again."  # noqa: S105 (a message)


@dataclass(frozen=True)
class Visitor:
    """Someone signing in, before any session of theirs: the settings, the client, what a
    passkey sign-in is bound to (the hash of the sign-in nonce cookie) and the browser's
    previous session token (signing in ends it)."""

    settings: Settings
    client: ClientInfo
    binding: str = ""
    replaces: str | None = None


@dataclass(frozen=True)
class SignedIn:
    token: str
    partial: bool


@dataclass(frozen=True)
class Completed:
    """A completed sign-in: the new session token, the person, and the recovery codes it
    created (to be shown once before going on) when 2FA had come on without any (SPEC
    §4.1b)."""

    token: str
    codes: list[str]
    user: User

    @property
    def username(self) -> str:
        return self.user.username


def _codes_if_none(db: Session, user_id: int, client: ClientInfo) -> list[str]:
    """Effective 2FA without recovery codes (an administrator required it of a passkey
    holder): create them now, in the sign-in's own transaction (the caller commits)."""
    user = lock_user(db, user_id)
    if not twofactor.issues_codes_at_sign_in(user, recovery.on_record(db, user_id)):
        return []
    codes = recovery.issue(db, user_id)
    events.record(db, user_id, "recovery_codes_created", ip=client.ip)
    return codes


# ---- before any session: password, passkey ---------------------------------------------


def password_sign_in(db: Session, visitor: Visitor, username: str, password: str) -> SignedIn:
    """Unknown user and wrong password: the same message, the same argon2 work, the same
    lockout (web.lockout)."""
    if not username or not password:
        raise Refused(422, "Enter your username and password.")
    if len(username) > 64 or len(password) > MAX_PASSWORD_LENGTH:
        raise Refused(401, BAD_CREDENTIALS)
    found = user_by_username(db, username)
    db.commit()
    if found is None:  # counted, checked and held like a known name's wrong password
        lockout.refuse_unknown_name(db, username, password)
    client = visitor.client
    user = check_password(db, found.pk, password, client, fail_kind="sign_in_failed")
    verified = user.password_hash
    with transaction(db):
        partial = twofactor.password_sign_in_needs_second_factor(user)
        release_attempt(db, user, completed=not partial)  # committed: a new transaction next
        user = sessions.lock_for_sign_in(db, user.pk, visitor.replaces)
        # unlocked for a moment: a password change may have come in between
        if user.password_hash != verified and not verify_password(user.password_hash, password):
            raise Refused(401, BAD_CREDENTIALS)
        partial = twofactor.password_sign_in_needs_second_factor(user)  # as it is now
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        db.add(user)
        sessions.end_session_by_token(db, visitor.replaces)
        token = sessions.start_session(
            db, user, visitor.settings, client, amr=["pwd"], mfa_verified=False, partial=partial
        )
        if not partial:
            events.record(db, user.pk, "sign_in", ip=client.ip, method="pwd")
        return SignedIn(token=token, partial=partial)


def start_passkey_sign_in(db: Session, settings: Settings, binding: str) -> Options:
    """A discoverable, user-verified ceremony bound to the sign-in nonce (`binding`)."""
    with transaction(db):
        return passkeys.start_authentication(
            db, settings, binding=binding, session_id=None, purpose=Purpose.LOGIN, require_uv=True
        )


def finish_passkey_sign_in(db: Session, visitor: Visitor, credential: dict[str, Any]) -> Completed:
    """A user-verified discoverable passkey: a full aal2 session, no second prompt."""
    handle = passkeys.user_handle_of(credential)
    owner = user_by_handle(db, handle) if handle else None
    settings, client = visitor.settings, visitor.client

    def effect(challenge: WebAuthnChallenge) -> Completed:
        passkeys.refuse_unknown_credential(db, credential)  # the shim signals it (SPEC §9)
        if owner is None:
            raise Refused(400, "That passkey does not belong to an account here.")
        # first, as every change of the account: one order of locks
        sessions.lock_for_sign_in(db, owner.pk, visitor.replaces)
        passkey = passkeys.verify_authentication(db, settings, challenge, credential, owner=owner)
        factor = twofactor.amr_for_passkey(passkey.backup_eligible)
        events.record(db, owner.pk, "sign_in", ip=client.ip, method="passkey", name=passkey.name)
        sessions.end_session_by_token(db, visitor.replaces)
        token = sessions.start_session(
            db, owner, settings, client, amr=[factor], mfa_verified=True, passkey_id=passkey.id
        )
        return Completed(token, _codes_if_none(db, owner.pk, client), owner)

    return ceremony.finish(
        db, credential, purpose=Purpose.LOGIN, binding=visitor.binding, effect=effect, ip=client.ip
    )


# ---- /login/2fa: a session waiting for its second factor -------------------------------


def second_factor_step(db: Session, actor: Actor) -> str:
    """What /login/2fa offers (twofactor.enroll_at_login_step): "" (verify), "register"
    (enroll-at-login) or "password" (the password first, then enroll-at-login)."""
    count = passkey_count(db, actor.user.pk)
    now, seconds = utcnow(), actor.settings.reauth_seconds
    return twofactor.enroll_at_login_step(actor.user, actor.session, count, now, seconds)


def _fail_second_factor(db: Session, user_id: int, client: ClientInfo) -> bool:
    """Count a failed second factor; the 5th ends the partial session. True when it ended."""
    count = db.exec(
        update(User)
        .where(col(User.id) == user_id)
        .values(failed_login_count=User.failed_login_count + 1)
        .returning(col(User.failed_login_count))
    ).one()[0]
    events.record(db, user_id, "second_factor_failed", ip=client.ip)
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


def _refuse_if_locked(db: Session, user_id: int) -> User:
    """The user, locked for this transaction; a locked account finishes no second factor
    (429 with Retry-After while it is locked)."""
    user = lock_user(db, user_id)
    now = utcnow()
    if twofactor.is_locked(user.locked_until, now):
        lockout.refuse_locked(user.failed_login_count, user.locked_until, now)  # 429 (§9)
    return user


def start_second_factor(db: Session, actor: Actor) -> Options:
    """ "Verify with a passkey": one of this account's passkeys (none: enroll-at-login)."""
    with transaction(db):
        allow = passkeys_of(db, actor.user.pk)
        twofactor.can_verify_second_factor(len(allow)).require()
        return passkeys.start_authentication(
            db,
            actor.settings,
            binding=actor.binding,
            session_id=actor.session.id,
            purpose=Purpose.SECOND_FACTOR,
            user=actor.user,
            allow=allow,
        )


def finish_second_factor(db: Session, actor: Actor, credential: dict[str, Any]) -> Completed:
    """Verified with a passkey: upgrade to aal2 with a new token. Only a failed verification
    counts toward the lockout (not a 429 while locked)."""
    checking = [False]
    user_id, client = actor.user.pk, actor.client

    def effect(challenge: WebAuthnChallenge) -> Completed:
        user = _refuse_if_locked(db, user_id)
        checking[0] = True
        passkey = passkeys.verify_authentication(db, actor.settings, challenge, credential)
        checking[0] = False
        factor = twofactor.amr_for_passkey(passkey.backup_eligible)
        fresh = sessions.reread(db, actor.session.pk)
        token = sessions.upgrade_session(
            db, fresh, actor.settings, factor=factor, passkey_id=passkey.id
        )
        db.exec(update(User).where(col(User.id) == user_id).values(failed_login_count=0))
        method = "pwd+passkey" if "pwd" in fresh.amr else "passkey"
        events.record(db, user_id, "sign_in", ip=client.ip, method=method, name=passkey.name)
        return Completed(token, _codes_if_none(db, user_id, client), user)

    return ceremony.finish(
        db,
        credential,
        purpose=Purpose.SECOND_FACTOR,
        binding=actor.binding,
        effect=effect,
        ip=client.ip,
        on_failure=lambda _refusal: (
            _fail_second_factor(db, user_id, client) if checking[0] else None
        ),
    )


def second_factor_code(db: Session, actor: Actor, code: str) -> Completed:
    """One unused recovery code: upgrade to aal2 (amr pwd+otp)."""
    client = actor.client
    try:
        user = _refuse_if_locked(db, actor.user.pk)
    except Refused:
        sessions.end_session(db, actor.session.pk)
        db.commit()
        raise
    if len(code) > 64 or not recovery.use(db, user.pk, code):
        ended = _fail_second_factor(db, user.pk, client)
        db.commit()
        if ended:
            raise Refused(401, TOO_MANY_SECOND_FACTOR)
        raise Refused(422, WRONG_CODE)
    with transaction(db):
        remaining = recovery_codes_remaining(db, user.pk)
        user.failed_login_count = 0
        db.add(user)
        session = sessions.reread(db, actor.session.pk)
        token = sessions.upgrade_session(db, session, actor.settings, factor="otp", passkey_id=None)
        events.record(
            db,
            user.pk,
            "recovery_code_used",
            ip=client.ip,
            user_agent=client.user_agent,
            remaining=remaining,
        )
        events.record(db, user.pk, "sign_in", ip=client.ip, method="pwd+otp")
        return Completed(token, _codes_if_none(db, user.pk, client), user)


def _check_enroll_at_login(db: Session, actor: Actor, user: User, session: AuthSession) -> None:
    """Refuse enroll-at-login unless the rules allow it now (twofactor.can_enroll_at_login):
    a 409 when it isn't needed, `reauth-required` when the password must be entered first."""
    count = passkey_count(db, user.pk)
    now, seconds = utcnow(), actor.settings.reauth_seconds
    twofactor.can_enroll_at_login(user, session, count, now, seconds).require()


def start_enroll_at_login(db: Session, actor: Actor, name: Any) -> Options:
    """2FA required, no passkey yet: register one named `name`."""
    name = clean_name(name)
    with transaction(db):
        user = _refuse_if_locked(db, actor.user.pk)
        _check_enroll_at_login(db, actor, user, actor.session)
        return passkeys.start_registration(
            db,
            actor.settings,
            user,
            [],
            binding=actor.binding,
            session_id=actor.session.id,
            purpose=Purpose.ENROLL_AT_LOGIN,
            data={"name": name},
        )


def finish_enroll_at_login(
    db: Session, actor: Actor, credential: dict[str, Any], name: Any
) -> Completed:
    """The passkey registered, codes issued, the session upgraded, other sessions ended."""
    name = clean_name(name)  # a 422 before the challenge is used
    client = actor.client

    def effect(challenge: WebAuthnChallenge) -> Completed:
        user = _refuse_if_locked(db, actor.user.pk)
        fresh = sessions.reread(db, actor.session.pk)
        # checked again at the finish: the window may have passed since the start
        _check_enroll_at_login(db, actor, user, fresh)
        passkey = register_passkey(db, actor, user, challenge, credential, name)
        passkey.last_used_at = utcnow()  # it completes this sign-in: used, not "Never"
        codes = recovery.issue(db, user.pk)
        user.failed_login_count = 0
        db.add(user)
        factor = twofactor.amr_for_passkey(passkey.backup_eligible)
        token = sessions.upgrade_session(
            db, fresh, actor.settings, factor=factor, passkey_id=passkey.id
        )
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
        return Completed(token, codes, user)

    return ceremony.finish(
        db,
        credential,
        purpose=Purpose.ENROLL_AT_LOGIN,
        binding=actor.binding,
        effect=effect,
        ip=client.ip,
    )


def confirm_password_at_login(db: Session, actor: Actor, password: Any) -> str:
    """The password on /login/2fa before enroll-at-login, for a session whose password was
    not just entered (demoted by an administrator's requirement, or older than the window).
    Counted by the lockout; success makes it a password sign-in's partial session again
    (auth_time now, no demotion reason) with a new token."""
    count = passkey_count(db, actor.user.pk)
    twofactor.can_reenter_password_at_login(actor.user, count).require()  # before a check
    if not isinstance(password, str) or not password:
        raise Refused(422, "Enter your password.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Refused(422, WRONG_PASSWORD)
    client = actor.client
    try:
        user = check_password(db, actor.user.pk, password, client, fail_kind="reauth_failed")
    except Refused as refusal:
        if refusal.status_code == 401:
            raise Refused(422, WRONG_PASSWORD) from None
        raise
    with transaction(db):
        release_attempt(db, user, completed=False)
        lock_user(db, user.pk)  # before the session's row: one lock order
        session = sessions.reread(db, actor.session.pk)
        token = sessions.password_reentered(db, session)
        events.record(db, user.pk, "reauth", ip=client.ip, method="password")
        return token


def sign_out(db: Session, session: AuthSession | None) -> None:
    """End this browser's session (none: nothing to do), recorded when it was incomplete."""
    if session is None:
        return
    with transaction(db):
        lock_user(db, session.user_id)  # before the session's row: one lock order
        sessions.record_incomplete(db, [session])
        sessions.end_session(db, session.pk)
