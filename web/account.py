"""Changes a signed-in person makes on the account page, each one whole transaction.

The rules come from `web.twofactor`; this module only applies them, after locking the
user's row so that concurrent requests decide on fresh data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlmodel import Session, select

from models import AuthSession, Passkey, User, WebAuthnChallenge, utcnow
from models.passkey import passkey_count
from models.recovery import recovery_codes_remaining
from web import ceremony, events, lockout, passkeys, recovery, sessions, twofactor
from web.client import ClientInfo
from web.errors import Refused
from web.passwords import MAX_PASSWORD_LENGTH
from web.settings import Settings
from web.users import lock_user
from web.views import browser_and_os, name_for_new_passkey

NAME_MAX = 64
T = TypeVar("T")


CONFIRMABLE = ("passkeys", "two-factor", "recovery-codes", "password")
"""Sections whose action may need "Confirm it's you" first."""


def require(decision: twofactor.Decision, *, then: str = "") -> None:
    """Turn a refusal of the rules (web.twofactor) into the answer the user sees. A refusal
    for want of recent authentication names the step that resolves it (for the shim)."""
    if not decision.allowed:
        step = f"/account/confirm?then={then}" if decision.code and then else ""
        raise Refused(decision.status, decision.message, code=decision.code, step=step)


def confirm_target(raw: Any) -> str:
    """The `then` of a confirmation: one of the sections, or a 422."""
    if raw not in CONFIRMABLE:
        raise Refused(422, "That step is not known. Reload the page and try again.")
    return str(raw)


WRONG_PASSWORD = "That password is not right. Try again."  # noqa: S105 (a message)


def confirm_with_password(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, password: Any
) -> str:
    """ "Confirm it's you" with the password (accounts without a passkey). Counts toward the
    lockout like a sign-in; success: recent authentication and a new token. The caller
    commits (an action may go on in the same transaction)."""
    require(twofactor.can_confirm_with_password(passkey_count(db, viewer.user.pk)))
    if not isinstance(password, str) or not password:
        raise Refused(422, "Enter your password.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Refused(422, WRONG_PASSWORD)
    try:
        user = lockout.check_password(
            db,
            viewer.user.pk,
            password,
            client,
            fail_kind="reauth_failed",
        )
    except Refused as refusal:
        if refusal.status_code == 401:
            raise Refused(422, WRONG_PASSWORD) from None
        raise
    lockout.release_attempt(db, user, completed=False)
    session = sessions.reread(db, viewer.session.pk)
    token = sessions.confirm_identity(db, session, factor=None, passkey_id=None)
    events.record(db, user.pk, "reauth", ip=client.ip, method="password")
    viewer.session = session
    viewer.user = user
    return token


def confirm_with_passkey(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
) -> str:
    """ "Confirm it's you" with one of the user's existing passkeys (the challenge allowed
    only those): recent authentication and a new token, in one commit."""

    def effect(challenge: Any) -> str:
        passkey = passkeys.verify_authentication(db, settings, challenge, credential)
        token = _mark_step_up(db, viewer, settings, passkey)
        events.record(db, viewer.user.pk, "reauth", ip=client.ip, method="passkey")
        return token

    return _finish(db, client, viewer, credential, "reauth", effect)


def clean_name(raw: Any) -> str:
    """A passkey name: 1–64 printable characters, trimmed (HTML is escaped on output)."""
    if not isinstance(raw, str):
        raise Refused(422, "Give the passkey a name.")
    name = " ".join(raw.split())
    name = "".join(ch for ch in name if ch.isprintable() and not _is_bidi_control(ch))
    if not name:
        raise Refused(422, "Give the passkey a name.")
    if len(name) > NAME_MAX:
        raise Refused(422, f"Passkey names are at most {NAME_MAX} characters.")
    return name


def _is_bidi_control(ch: str) -> bool:
    return "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069" or ch in "\u200e\u200f"


MAX_ID = 2**31 - 1
"""Ids are SQL INTEGER: a larger one in a URL can't exist (and the database would refuse it)."""


def owned_passkey(db: Session, user_id: int, passkey_id: int) -> Passkey:
    """The user's own passkey, or a 404 (another user's id looks like an unknown one)."""
    passkey = db.get(Passkey, passkey_id) if 0 < passkey_id <= MAX_ID else None
    if passkey is None or passkey.user_id != user_id:
        raise Refused(404, "That passkey was not found.")
    return passkey


@dataclass(frozen=True)
class Enabled:
    token: str
    codes: list[str]


def _finish(
    db: Session,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
    purpose: str,
    effect: Callable[[Any], T],
) -> T:
    """Finish a ceremony of this signed-in session (its challenge is bound to the session)."""
    return ceremony.finish(
        db,
        credential,
        purposes=(purpose,),
        binding=viewer.session.token_hash,
        effect=effect,
        ip=client.ip,
    )


def _mark_step_up(
    db: Session, viewer: sessions.Viewer, settings: Settings, passkey: Passkey
) -> str:
    """A passkey assertion in this session: recent authentication, aal2, new token."""
    session = sessions.reread(db, viewer.session.pk)
    factor = twofactor.amr_for_passkey(passkey.backup_eligible)
    token = sessions.confirm_identity(db, session, factor=factor, passkey_id=passkey.id)
    viewer.session = session
    return token


def register_passkey(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    user: User,
    challenge: WebAuthnChallenge,
    credential: dict[str, Any],
    name: str,
) -> Passkey:
    """Verify a registration and store the passkey with its event (the caller commits).
    An untouched prefilled name gives way to the provider's, when the AAGUID is known."""
    new = passkeys.verify_registration(settings, challenge, credential)
    name = name_for_new_passkey(name, new.aaguid, client.user_agent)
    passkey = passkeys.store_passkey(db, user, new, name)
    events.record(
        db,
        user.pk,
        "passkey_added",
        ip=client.ip,
        user_agent=client.user_agent,
        name=name,
    )
    return passkey


def add_passkey(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
    name: str,
) -> Passkey:
    def effect(challenge: Any) -> Passkey:
        user = lock_user(db, viewer.user.pk)
        session = sessions.reread(db, viewer.session.pk)
        # asked again at the finish: the limit, and the window may have passed since the start
        decision = twofactor.can_add_passkey(
            session,
            passkey_count(db, user.pk),
            utcnow(),
            settings.reauth_seconds,
        )
        require(decision, then="passkeys")
        return register_passkey(db, settings, client, user, challenge, credential, name)

    return _finish(db, client, viewer, credential, "register", effect)


def enable_2fa(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
) -> Enabled:
    """Enrollment: with a new passkey (registration) or an existing one (assertion); the
    passkey, the flag, 10 codes, the event and signing out other sessions in ONE commit."""

    def effect(challenge: Any) -> Enabled:
        user = lock_user(db, viewer.user.pk)
        require(twofactor.can_enable(user))
        new = challenge.data.get("mode") == "new"
        if new:
            session = sessions.reread(db, viewer.session.pk)
            # asked again at the finish: the window may have passed since the start
            decision = twofactor.can_enable_with_new_passkey(
                user,
                session,
                passkey_count(db, user.pk),
                utcnow(),
                settings.reauth_seconds,
            )
            require(decision, then="two-factor")
            name = challenge.data["name"]
            passkey = register_passkey(db, settings, client, user, challenge, credential, name)
            passkey.last_used_at = utcnow()  # it just turned 2FA on: used, not "Never"
        else:
            passkey = passkeys.verify_authentication(db, settings, challenge, credential)
        user.user_2fa_enabled = True
        user.user_2fa_enabled_at = utcnow()
        db.add(user)
        remaining = recovery_codes_remaining(db, user.pk)
        codes = recovery.issue(db, user.pk) if twofactor.enabling_issues_codes(remaining) else []
        events.record(db, user.pk, "2fa_enabled", ip=client.ip, user_agent=client.user_agent)
        sessions.end_other_sessions(db, user.pk, keep_id=viewer.session.id)
        if new:
            # registering a new credential never counts as recent authentication (SPEC §9):
            # a new token, and the session keeps meeting the rules, nothing more
            session = sessions.reread(db, viewer.session.pk)
            token = sessions.enrolled(db, session)
            viewer.session = session
        else:
            token = _mark_step_up(db, viewer, settings, passkey)
        viewer.user = user
        return Enabled(token=token, codes=codes)

    return _finish(db, client, viewer, credential, "enable-2fa", effect)


def disable_2fa(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
) -> str:
    def effect(challenge: Any) -> str:
        user = lock_user(db, viewer.user.pk)
        require(twofactor.can_disable(user))
        passkey = passkeys.verify_authentication(db, settings, challenge, credential)
        user.user_2fa_enabled = False
        user.user_2fa_enabled_at = None
        db.add(user)
        recovery.remove_all(db, user.pk)
        events.record(db, user.pk, "2fa_disabled", ip=client.ip, user_agent=client.user_agent)
        viewer.user = user
        return _mark_step_up(db, viewer, settings, passkey)

    return _finish(db, client, viewer, credential, "disable-2fa", effect)


def rename_passkey(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, passkey_id: int, raw_name: Any
) -> Passkey:
    passkey = owned_passkey(db, viewer.user.pk, passkey_id)
    name = clean_name(raw_name)
    if name != passkey.name:
        events.record(
            db,
            viewer.user.pk,
            "passkey_renamed",
            ip=client.ip,
            old=passkey.name,
            name=name,
        )
        passkey.name = name
        db.add(passkey)
    db.commit()
    return passkey


def check_removal(db: Session, viewer: sessions.Viewer, passkey_id: int) -> Passkey:
    """Refuse at once what the rules refuse anyway (the last passkey with 2FA on)."""
    user = lock_user(db, viewer.user.pk)
    passkey = owned_passkey(db, user.pk, passkey_id)
    require(twofactor.can_remove_passkey(user, passkey_count(db, user.pk)))
    return passkey


def remove_passkey(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, passkey_id: int
) -> None:
    """Remove (the caller has checked step-up) and commit."""
    _remove_passkey(db, client, viewer, passkey_id)
    db.commit()


def _remove_passkey(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, passkey_id: int
) -> None:
    """Remove a passkey (the caller commits); other sessions signed in with it end."""
    passkey = check_removal(db, viewer, passkey_id)
    user = viewer.user
    events.record(
        db,
        viewer.user.pk,
        "passkey_removed",
        ip=client.ip,
        user_agent=client.user_agent,
        name=passkey.name,
    )
    sessions.end_sessions_with_passkey(db, user.pk, passkey.pk, keep_id=viewer.session.pk)
    session = db.get(AuthSession, viewer.session.id)
    if session is not None:
        if session.passkey_id == passkey.id:
            session.passkey_id = None
        session.confirmed_passkey_ids = [
            i for i in session.confirmed_passkey_ids or [] if i != passkey.id
        ]
        db.add(session)
    db.delete(passkey)


def _step_up_then(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
    purpose: str,
    action: Callable[[dict[str, Any]], T],
) -> tuple[str, T]:
    """A step-up assertion for `purpose`, then `action(challenge data)`, in one transaction:
    if the action is refused, the step-up (and its new token) is undone with it."""

    def effect(challenge: Any) -> tuple[str, T]:
        passkey = passkeys.verify_authentication(db, settings, challenge, credential)
        token = _mark_step_up(db, viewer, settings, passkey)
        return token, action(dict(challenge.data))

    return _finish(db, client, viewer, credential, purpose, effect)


def remove_passkey_after_step_up(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
) -> str:
    """Verify with a passkey, then remove the passkey the ceremony was started for."""

    def remove(data: dict[str, Any]) -> None:
        _remove_passkey(db, client, viewer, int(data["passkey_id"]))

    token, _ = _step_up_then(db, settings, client, viewer, credential, "remove-passkey", remove)
    return token


def regenerate_codes_after_step_up(
    db: Session,
    settings: Settings,
    client: ClientInfo,
    viewer: sessions.Viewer,
    credential: dict[str, Any],
) -> tuple[str, list[str]]:
    """Verify with a passkey, then replace the recovery codes."""
    return _step_up_then(
        db,
        settings,
        client,
        viewer,
        credential,
        "recovery-codes",
        lambda data: _regenerate_codes(db, client, viewer, data.get("codes_version")),
    )


CODES_CHANGED = (
    "Your recovery codes were changed in another window or device. "
    "This is what they are now; nothing else was changed."
)


def check_codes_version(db: Session, viewer: sessions.Viewer, seen: str) -> None:
    """A step begun on a page that showed another set of codes: 409, nothing changes."""
    current = recovery.version(db, viewer.user.pk)
    if twofactor.codes_changed_meanwhile(seen, current):
        raise Refused(409, CODES_CHANGED)


def regenerate_codes(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, seen: str | None = None
) -> list[str]:
    """Replace the recovery codes (the caller has checked step-up) and commit."""
    codes = _regenerate_codes(db, client, viewer, seen)
    db.commit()
    return codes


def _regenerate_codes(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, seen: str | None
) -> list[str]:
    user = lock_user(db, viewer.user.pk)
    require(twofactor.can_regenerate_codes(user))
    if seen is not None:
        check_codes_version(db, viewer, seen)
    first = recovery.on_record(db, user.pk) == 0
    codes = recovery.issue(db, user.pk)
    kind = "recovery_codes_created" if first else "recovery_codes_regenerated"
    events.record(db, user.pk, kind, ip=client.ip, user_agent=client.user_agent)
    return codes


def revoke_session(
    db: Session, client: ClientInfo, viewer: sessions.Viewer, session_id: int
) -> None:
    """Sign one other session out, recorded (which browser, from which IP)."""
    if not 0 < session_id <= MAX_ID:
        raise Refused(404, "That session was not found.")
    target = db.exec(
        select(AuthSession).where(
            AuthSession.id == session_id, AuthSession.user_id == viewer.user.id
        )
    ).first()
    if target is None or target.id == viewer.session.id:
        raise Refused(404, "That session was not found.")
    sessions.end_session(db, session_id)
    events.record(
        db,
        viewer.user.pk,
        "session_revoked",
        ip=client.ip,
        browser=browser_and_os(target.user_agent),
        session_ip=target.ip,
    )
    db.commit()


def revoke_other_sessions(db: Session, client: ClientInfo, viewer: sessions.Viewer) -> int:
    ended = sessions.end_other_sessions(db, viewer.user.pk, keep_id=viewer.session.id)
    events.record(db, viewer.user.pk, "sessions_revoked", ip=client.ip, count=ended)
    db.commit()
    return ended
