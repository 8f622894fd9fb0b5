"""Changes a signed-in person makes on the account page, each one whole transaction.

Each passkey ceremony is a pair, side by side: `start_…` (asks the rules, stores a
challenge for its `Purpose`, returns the options) and `finish_…` (through
`web.ceremony.finish`: consumes the challenge, asks the rules again on fresh data, applies
the effect). Every function is given the `Actor` and owns its transaction: handlers never
commit. Callers render from the result, which carries the person and the session as they
are now (`Changed`), or the question to ask first (`AskFirst`); the objects a function was
given may have been refreshed in place (the ORM session's identity map), and are not to be
read after it.

The rules come from `web.twofactor`; this module only applies them, after locking the
user's row so that concurrent requests decide on fresh data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlmodel import Session, select

from models import AuthSession, Passkey, User, WebAuthnChallenge, utcnow
from models.challenge import Purpose
from models.passkey import passkey_count, passkeys_of
from models.recovery import recovery_codes_remaining
from web import ceremony, events, lockout, passkeys, recovery, sessions, twofactor
from web.ceremony import Options
from web.db import transaction
from web.errors import Refused
from web.passwords import MAX_PASSWORD_LENGTH
from web.sessions import Actor, Viewer
from web.users import lock_user
from web.views import browser_and_os, name_for_new_passkey

NAME_MAX = 64
T = TypeVar("T")

CONFIRMABLE = ("passkeys", "two-factor", "recovery-codes", "password")
"""Sections whose action may need "Confirm it's you" first."""

CONFIRM = "confirm"
"""AskFirst.step: the question ("Remove passkey?", "Your current codes will stop working.")."""
STEP_UP = "step-up"
"""AskFirst.step: the question with "Confirm it's you" (one step: its assertion acts)."""


@dataclass(frozen=True)
class Changed:
    """What a change leaves: the person and the session as they are now (render from
    these), a new session token for the cookie, new recovery codes (shown once)."""

    viewer: Viewer
    token: str | None = None
    codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Added:
    """A passkey added on the account page (no new token: registering is no confirmation)."""

    viewer: Viewer
    passkey: Passkey


@dataclass(frozen=True)
class AskFirst:
    """Nothing was done: the person is asked first (`CONFIRM` or `STEP_UP`)."""

    step: str


def _bound(actor: Actor, purpose: Purpose) -> dict[str, Any]:
    """A ceremony of this signed-in session: bound to its token, for one purpose."""
    return {"binding": actor.binding, "session_id": actor.session.id, "purpose": purpose}


def _finish(
    db: Session,
    actor: Actor,
    credential: dict[str, Any],
    purpose: Purpose,
    effect: Callable[[WebAuthnChallenge], T],
) -> T:
    """Finish a ceremony of this signed-in session (its challenge is bound to the session)."""
    return ceremony.finish(
        db, credential, purpose=purpose, binding=actor.binding, effect=effect, ip=actor.client.ip
    )


def _step_up(db: Session, actor: Actor, passkey: Passkey) -> tuple[AuthSession, str]:
    """A passkey assertion in this session: recent authentication, aal2, a new token."""
    session = sessions.reread(db, actor.session.pk)
    factor = twofactor.amr_for_passkey(passkey.backup_eligible)
    token = sessions.confirm_identity(db, session, factor=factor, passkey_id=passkey.id)
    return session, token


def _recency(actor: Actor) -> tuple[Any, int]:
    """Now and BARYCENTER_REAUTH_SECONDS: what the recent-authentication rules take."""
    return utcnow(), actor.settings.reauth_seconds


# ---- names and ids --------------------------------------------------------------------


def confirm_target(raw: Any) -> str:
    """The `then` of a confirmation: one of the sections, or a 422."""
    if raw not in CONFIRMABLE:
        raise Refused(422, "That step is not known. Reload the page and try again.")
    return str(raw)


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


# ---- "Confirm it's you" (recent authentication, SPEC §4.1) -----------------------------

WRONG_PASSWORD = "That password is not right. Try again."  # noqa: S105 (a message)


def confirm_with_password(db: Session, actor: Actor, then: str, password: Any) -> Changed:
    """ "Confirm it's you" with the password (accounts without a passkey): recent
    authentication and a new token; regenerating codes (`then`) goes on at once, in the
    same transaction. Counts toward the lockout like a sign-in; a wrong password is a 422."""
    with transaction(db):
        count = passkey_count(db, actor.user.pk)
        # what the action refuses anyway is refused before a password is checked
        twofactor.can_confirm_for(then, actor.user, count).require()
        twofactor.can_confirm_with_password(count).require()
        if not isinstance(password, str) or not password:
            raise Refused(422, "Enter your password.")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise Refused(422, WRONG_PASSWORD)
        try:
            user = lockout.check_password(
                db, actor.user.pk, password, actor.client, fail_kind="reauth_failed"
            )
        except Refused as refusal:
            if refusal.status_code == 401:
                raise Refused(422, WRONG_PASSWORD) from None
            raise
        lockout.release_attempt(db, user, completed=False)
        user = lock_user(db, user.pk)  # before the session's row: one lock order
        session = sessions.reread(db, actor.session.pk)
        token = sessions.confirm_identity(db, session, factor=None, passkey_id=None)
        events.record(db, user.pk, "reauth", ip=actor.client.ip, method="password")
        codes: list[str] = []
        if then == "recovery-codes":
            user = lock_user(db, user.pk)
            twofactor.can_regenerate_codes(user).require()
            codes = _issue_codes(db, actor, user)
        return Changed(Viewer(user, session), token=token, codes=codes)


def start_confirm(db: Session, actor: Actor, then: str) -> Options:
    """ "Confirm it's you" with a passkey: only this account's own passkeys can answer."""
    with transaction(db):
        existing = passkeys_of(db, actor.user.pk)
        twofactor.can_confirm_with_passkey(len(existing)).require()
        return passkeys.start_authentication(
            db,
            actor.settings,
            user=actor.user,
            allow=existing,
            data={"then": then},
            **_bound(actor, Purpose.REAUTH),
        )


def finish_confirm(db: Session, actor: Actor, credential: dict[str, Any]) -> Changed:
    """Recent authentication and a new token, in one commit."""

    def effect(challenge: WebAuthnChallenge) -> Changed:
        lock_user(db, actor.user.pk)  # first, as every change of the account (one lock order)
        passkey = passkeys.verify_authentication(db, actor.settings, challenge, credential)
        session, token = _step_up(db, actor, passkey)
        events.record(db, actor.user.pk, "reauth", ip=actor.client.ip, method="passkey")
        return Changed(Viewer(actor.user, session), token=token)

    return _finish(db, actor, credential, Purpose.REAUTH, effect)


# ---- two-factor authentication: enable, disable ----------------------------------------


def start_enable_2fa(db: Session, actor: Actor, *, mode: Any, name: Any) -> Options:
    """Enrollment with an existing passkey (`mode` "existing": an assertion) or a new one
    (a registration named `name`, which needs recent authentication like adding one)."""
    with transaction(db):
        twofactor.can_enable(actor.user).require()
        existing = passkeys_of(db, actor.user.pk)
        bound = _bound(actor, Purpose.ENABLE_2FA)
        if mode == "existing":
            twofactor.can_enable_with_existing_passkey(actor.user, len(existing)).require()
            return passkeys.start_authentication(
                db, actor.settings, user=actor.user, allow=existing, **bound
            )
        decision = twofactor.can_enable_with_new_passkey(
            actor.user, actor.session, len(existing), *_recency(actor)
        )
        decision.require(then="two-factor")
        data = {"mode": "new", "name": clean_name(name)}
        return passkeys.start_registration(
            db, actor.settings, actor.user, existing, data=data, **bound
        )


def finish_enable_2fa(db: Session, actor: Actor, credential: dict[str, Any]) -> Changed:
    """The passkey, the flag, 10 codes (unless codes still work: `codes` is then empty),
    the event and signing out other sessions, in ONE commit."""

    def effect(challenge: WebAuthnChallenge) -> Changed:
        user = lock_user(db, actor.user.pk)
        twofactor.can_enable(user).require()
        new = challenge.data.get("mode") == "new"
        if new:
            session = sessions.reread(db, actor.session.pk)
            # asked again at the finish: the window may have passed since the start
            decision = twofactor.can_enable_with_new_passkey(
                user, session, passkey_count(db, user.pk), *_recency(actor)
            )
            decision.require(then="two-factor")
            name = challenge.data["name"]
            passkey = register_passkey(db, actor, user, challenge, credential, name)
            passkey.last_used_at = utcnow()  # it just turned 2FA on: used, not "Never"
        else:
            passkey = passkeys.verify_authentication(db, actor.settings, challenge, credential)
        user.user_2fa_enabled = True
        user.user_2fa_enabled_at = utcnow()
        db.add(user)
        remaining = recovery_codes_remaining(db, user.pk)
        codes = recovery.issue(db, user.pk) if twofactor.enabling_issues_codes(remaining) else []
        client = actor.client
        events.record(db, user.pk, "2fa_enabled", ip=client.ip, user_agent=client.user_agent)
        sessions.end_other_sessions(db, user.pk, keep_id=actor.session.id)
        if new:
            # registering a new credential never counts as recent authentication (SPEC §9):
            # a new token, and the session keeps meeting the rules, nothing more
            session = sessions.reread(db, actor.session.pk)
            token = sessions.enrolled(db, session)
        else:
            session, token = _step_up(db, actor, passkey)
        return Changed(Viewer(user, session), token=token, codes=codes)

    return _finish(db, actor, credential, Purpose.ENABLE_2FA, effect)


def start_disable_2fa(db: Session, actor: Actor) -> Options:
    with transaction(db):
        twofactor.can_disable(actor.user).require()
        allow = passkeys_of(db, actor.user.pk)
        return passkeys.start_authentication(
            db, actor.settings, user=actor.user, allow=allow, **_bound(actor, Purpose.DISABLE_2FA)
        )


def finish_disable_2fa(db: Session, actor: Actor, credential: dict[str, Any]) -> Changed:
    """The flag off, the recovery codes gone, the event; the assertion confirms it's you."""

    def effect(challenge: WebAuthnChallenge) -> Changed:
        user = lock_user(db, actor.user.pk)
        twofactor.can_disable(user).require()
        passkey = passkeys.verify_authentication(db, actor.settings, challenge, credential)
        user.user_2fa_enabled = False
        user.user_2fa_enabled_at = None
        db.add(user)
        if not twofactor.keeps_recovery_codes(user):
            recovery.remove_all(db, user.pk)
        client = actor.client
        events.record(db, user.pk, "2fa_disabled", ip=client.ip, user_agent=client.user_agent)
        session, token = _step_up(db, actor, passkey)
        return Changed(Viewer(user, session), token=token)

    return _finish(db, actor, credential, Purpose.DISABLE_2FA, effect)


# ---- passkeys: add, rename, remove -----------------------------------------------------


def register_passkey(
    db: Session,
    actor: Actor,
    user: User,
    challenge: WebAuthnChallenge,
    credential: dict[str, Any],
    name: str,
) -> Passkey:
    """Verify a registration and store the passkey with its event (inside a finish).
    An untouched prefilled name gives way to the provider's, when the AAGUID is known."""
    client = actor.client
    new = passkeys.verify_registration(actor.settings, challenge, credential)
    name = name_for_new_passkey(name, new.aaguid, client.user_agent)
    passkey = passkeys.store_passkey(db, user, new, name)
    events.record(
        db, user.pk, "passkey_added", ip=client.ip, user_agent=client.user_agent, name=name
    )
    return passkey


def start_add_passkey(db: Session, actor: Actor, name: Any) -> Options:
    """Adding a passkey: under the limit, recent authentication, and a name."""
    with transaction(db):
        existing = passkeys_of(db, actor.user.pk)
        decision = twofactor.can_add_passkey(actor.session, len(existing), *_recency(actor))
        decision.require(then="passkeys")
        return passkeys.start_registration(
            db,
            actor.settings,
            actor.user,
            existing,
            data={"name": clean_name(name)},
            **_bound(actor, Purpose.REGISTER),
        )


def finish_add_passkey(db: Session, actor: Actor, credential: dict[str, Any], name: Any) -> Added:
    name = clean_name(name)  # a 422 before the challenge is used

    def effect(challenge: WebAuthnChallenge) -> Added:
        user = lock_user(db, actor.user.pk)
        session = sessions.reread(db, actor.session.pk)
        # asked again at the finish: the limit, and the window may have passed since the start
        count = passkey_count(db, user.pk)
        twofactor.can_add_passkey(session, count, *_recency(actor)).require(then="passkeys")
        passkey = register_passkey(db, actor, user, challenge, credential, name)
        return Added(Viewer(user, session), passkey)

    return _finish(db, actor, credential, Purpose.REGISTER, effect)


def _lock_as(db: Session, actor: Actor) -> User:
    """The account locked (first, as every change of it: one lock order), then this session
    re-read: a change asked for by a session that another request ended meanwhile (a
    password change, "sign out all other sessions") is not made (sessions.reread)."""
    user = lock_user(db, actor.user.pk)
    sessions.reread(db, actor.session.pk)
    return user


def rename_passkey(db: Session, actor: Actor, passkey_id: int, raw_name: Any) -> Passkey:
    with transaction(db):
        _lock_as(db, actor)
        passkey = owned_passkey(db, actor.user.pk, passkey_id)
        name = clean_name(raw_name)
        if name != passkey.name:
            events.record(
                db,
                actor.user.pk,
                "passkey_renamed",
                ip=actor.client.ip,
                old=passkey.name,
                name=name,
            )
            passkey.name = name
            db.add(passkey)
        return passkey


def _removable(db: Session, actor: Actor, passkey_id: int) -> tuple[User, Passkey]:
    """The user (locked) and their passkey, unless the rules refuse its removal anyway (the
    last passkey with 2FA on: 409) — refused at once, before any ceremony."""
    user = lock_user(db, actor.user.pk)
    passkey = owned_passkey(db, user.pk, passkey_id)
    twofactor.can_remove_passkey(user, passkey_count(db, user.pk)).require()
    return user, passkey


def _remove(db: Session, actor: Actor, user: User, passkey: Passkey) -> AuthSession:
    """Remove a passkey; other sessions signed in with it end. This session as it is now."""
    client = actor.client
    events.record(
        db,
        user.pk,
        "passkey_removed",
        ip=client.ip,
        user_agent=client.user_agent,
        name=passkey.name,
    )
    sessions.end_sessions_with_passkey(db, user.pk, passkey.pk, keep_id=actor.session.pk)
    session = sessions.reread(db, actor.session.pk)
    if session.passkey_id == passkey.id:
        session.passkey_id = None
    session.confirmed_passkey_ids = [
        i for i in session.confirmed_passkey_ids or [] if i != passkey.id
    ]
    db.add(session)
    db.delete(passkey)
    return session


def removal_step(db: Session, actor: Actor, passkey_id: int) -> AskFirst:
    """ "Remove passkey?" — with "Confirm it's you" in the same step (`STEP_UP`) when this
    session hasn't authenticated lately. A removal the rules refuse anyway is a 409."""
    with transaction(db):
        user, _ = _removable(db, actor, passkey_id)
        count = passkey_count(db, user.pk)
        asks = twofactor.removal_needs_confirmation(user, actor.session, count, *_recency(actor))
        return AskFirst(STEP_UP if asks else CONFIRM)


def remove_passkey(db: Session, actor: Actor, passkey_id: int) -> Changed | AskFirst:
    """The answer "Remove": done at once in a recent session, else the step-up question."""
    with transaction(db):
        user, passkey = _removable(db, actor, passkey_id)
        count = passkey_count(db, user.pk)
        decision = twofactor.can_remove_passkey_now(user, actor.session, count, *_recency(actor))
        if decision.code == twofactor.REAUTH_REQUIRED:
            return AskFirst(STEP_UP)
        decision.require()
        return Changed(Viewer(user, _remove(db, actor, user, passkey)))


def start_remove_passkey(db: Session, actor: Actor, passkey_id: int) -> Options:
    """ "Confirm it's you" whose assertion also removes the passkey `passkey_id`."""
    with transaction(db):
        _removable(db, actor, passkey_id)
        return passkeys.start_authentication(
            db,
            actor.settings,
            user=actor.user,
            allow=passkeys_of(db, actor.user.pk),
            data={"passkey_id": passkey_id},
            **_bound(actor, Purpose.REMOVE_PASSKEY),
        )


def finish_remove_passkey(db: Session, actor: Actor, credential: dict[str, Any]) -> Changed:
    """Verified with a passkey, then the passkey the ceremony was started for is removed, in
    one transaction: a refused removal undoes the step-up (and its token) with it."""

    def effect(challenge: WebAuthnChallenge) -> Changed:
        lock_user(db, actor.user.pk)  # first, as every change of the account (one lock order)
        passkey = passkeys.verify_authentication(db, actor.settings, challenge, credential)
        _, token = _step_up(db, actor, passkey)
        user, doomed = _removable(db, actor, int(challenge.data["passkey_id"]))
        return Changed(Viewer(user, _remove(db, actor, user, doomed)), token=token)

    return _finish(db, actor, credential, Purpose.REMOVE_PASSKEY, effect)


# ---- recovery codes --------------------------------------------------------------------


def _check_seen(db: Session, user_id: int, seen: str | None) -> None:
    """A step begun on a page that showed other codes: 409, nothing changes."""
    if seen is not None:
        twofactor.can_act_on_codes_seen(seen, recovery.version(db, user_id)).require()


def _issue_codes(db: Session, actor: Actor, user: User) -> list[str]:
    """New recovery codes in place of any others, with their event (inside a transaction)."""
    first = recovery.on_record(db, user.pk) == 0
    codes = recovery.issue(db, user.pk)
    kind = "recovery_codes_created" if first else "recovery_codes_regenerated"
    events.record(db, user.pk, kind, ip=actor.client.ip, user_agent=actor.client.user_agent)
    return codes


def regenerate_question(db: Session, actor: Actor, seen: str | None) -> bool:
    """Whether "Regenerate" asks first ("Your current codes will stop working.", SPEC
    §4.1b); a 409 when codes don't apply or changed since the page showed them."""
    with transaction(db):
        twofactor.can_regenerate_codes(actor.user).require()
        _check_seen(db, actor.user.pk, seen)
        return twofactor.regenerating_asks_first(recovery_codes_remaining(db, actor.user.pk))


def regenerate_codes(
    db: Session, actor: Actor, seen: str | None, *, confirmed: bool
) -> Changed | AskFirst:
    """The answer to the question (or "Create recovery codes"): the question first unless
    `confirmed`, then "Confirm it's you" when this session hasn't authenticated lately,
    else the new codes."""
    with transaction(db):
        user = _lock_as(db, actor)
        twofactor.can_regenerate_codes(user).require()
        _check_seen(db, user.pk, seen)
        remaining = recovery_codes_remaining(db, user.pk)
        if twofactor.regenerating_asks_first(remaining) and not confirmed:
            return AskFirst(CONFIRM)
        decision = twofactor.can_regenerate_codes_now(user, actor.session, *_recency(actor))
        if decision.code == twofactor.REAUTH_REQUIRED:
            return AskFirst(STEP_UP)
        decision.require()
        return Changed(Viewer(user, actor.session), codes=_issue_codes(db, actor, user))


def start_regenerate_codes(db: Session, actor: Actor, seen: Any) -> Options:
    """ "Confirm it's you" whose assertion also regenerates the codes the page showed."""
    with transaction(db):
        twofactor.can_regenerate_codes(actor.user).require()
        if seen is not None and not isinstance(seen, str):
            raise Refused(400, "The request could not be understood.")
        _check_seen(db, actor.user.pk, seen)  # the step-up began on a page showing these
        return passkeys.start_authentication(
            db,
            actor.settings,
            user=actor.user,
            allow=passkeys_of(db, actor.user.pk),
            data={"codes_version": seen},
            **_bound(actor, Purpose.RECOVERY_CODES),
        )


def finish_regenerate_codes(db: Session, actor: Actor, credential: dict[str, Any]) -> Changed:
    """Verified with a passkey, then new codes, in one transaction."""

    def effect(challenge: WebAuthnChallenge) -> Changed:
        user = lock_user(db, actor.user.pk)  # first, as every change of the account
        passkey = passkeys.verify_authentication(db, actor.settings, challenge, credential)
        session, token = _step_up(db, actor, passkey)
        twofactor.can_regenerate_codes(user).require()
        _check_seen(db, user.pk, challenge.data.get("codes_version"))
        codes = _issue_codes(db, actor, user)
        return Changed(Viewer(user, session), token=token, codes=codes)

    return _finish(db, actor, credential, Purpose.RECOVERY_CODES, effect)


# ---- sessions --------------------------------------------------------------------------


def revoke_session(db: Session, actor: Actor, session_id: int) -> None:
    """Sign one other session out, recorded (which browser, from which IP)."""
    with transaction(db):
        if not 0 < session_id <= MAX_ID:
            raise Refused(404, "That session was not found.")
        _lock_as(db, actor)
        target = db.exec(
            select(AuthSession).where(
                AuthSession.id == session_id, AuthSession.user_id == actor.user.id
            )
        ).first()
        if target is None or target.id == actor.session.id:
            raise Refused(404, "That session was not found.")
        sessions.end_session(db, session_id)
        events.record(
            db,
            actor.user.pk,
            "session_revoked",
            ip=actor.client.ip,
            browser=browser_and_os(target.user_agent),
            session_ip=target.ip,
        )


def revoke_other_sessions(db: Session, actor: Actor) -> int:
    with transaction(db):
        _lock_as(db, actor)
        ended = sessions.end_other_sessions(db, actor.user.pk, keep_id=actor.session.id)
        events.record(db, actor.user.pk, "sessions_revoked", ip=actor.client.ip, count=ended)
        return ended
