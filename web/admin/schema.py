"""GraphQL schema of SPEC §6: read and set a user's two 2FA flags (an administrator's
requirement may come with a grace period), create users, clear a lockout, end every session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from sqlmodel import Session
from strawberry.types import Info

from models import User, utcnow
from models.passkey import passkey_count, passkeys_of
from models.recovery import recovery_codes_remaining
from models.user import user_by_username
from web import events, recovery, sessions, twofactor
from web.errors import Refused
from web.users import create_user, lock_user, set_email

T = TypeVar("T")


REQUIRED_FROM_DOC = (
    "When the administrator's requirement starts (or started) to apply, ISO 8601 UTC with Z; "
    "null when it applies at once or there is no requirement. Stays after the date passes."
)
PENDING_DOC = "True while a requirement is set but its grace period has not ended yet."
EFFECTIVE_DOC = (
    "Whether sign-ins need a second factor now: the user's own flag, or a requirement "
    "that is in force (false while it is pending and the user's own flag is off)."
)


@strawberry.type(description="The answer of a change to a user's account.")
class TwoFactorResult:
    success: bool
    message: str
    username: str
    requires2fa: bool = strawberry.field(name="requires2fa")
    user2fa_enabled: bool = strawberry.field(name="user2faEnabled")
    effective2fa: bool = strawberry.field(name="effective2fa", description=EFFECTIVE_DOC)
    required_from: str | None = strawberry.field(
        name="requiredFrom", description=REQUIRED_FROM_DOC, default=None
    )
    requirement_pending: bool = strawberry.field(
        name="requirementPending", description=PENDING_DOC, default=False
    )


@strawberry.type(description="A user's two-factor state, as the rules see it now.")
class User2faStatus:
    username: str
    subject: str
    requires2fa: bool = strawberry.field(name="requires2fa")
    user2fa_enabled: bool = strawberry.field(name="user2faEnabled")
    effective2fa: bool = strawberry.field(name="effective2fa", description=EFFECTIVE_DOC)
    required_from: str | None = strawberry.field(name="requiredFrom", description=REQUIRED_FROM_DOC)
    requirement_pending: bool = strawberry.field(name="requirementPending", description=PENDING_DOC)
    passkey_enrolled: bool
    passkey_count: int
    passkey_enrolled_at: str | None
    recovery_codes_remaining: int
    email: str | None = None


@strawberry.type
class CreateUserResult:
    success: bool
    message: str
    username: str
    subject: str | None


async def _run(info: Info, work: Callable[..., T], *args: Any) -> T:
    """Run `work(db, *args)` in a worker thread with a fresh session: each field of an
    aliased batch commits on its own, and the event loop never waits for a database lock."""

    def in_thread() -> T:
        with info.context["database"].session() as db:
            return work(db, *args)

    return await asyncio.to_thread(in_thread)


def _required_from(user: User) -> str | None:
    start = twofactor.required_from(user)
    return twofactor.iso_utc(start) if start is not None else None


def _result(user: User, message: str, *, success: bool = True) -> TwoFactorResult:
    now = utcnow()
    return TwoFactorResult(
        success=success,
        message=message,
        username=user.username,
        requires2fa=user.requires_2fa,
        user2fa_enabled=user.user_2fa_enabled,
        effective2fa=twofactor.effective(user, now),
        required_from=_required_from(user),
        requirement_pending=twofactor.requirement_pending(user, now),
    )


def _not_found(username: str) -> TwoFactorResult:
    return TwoFactorResult(
        success=False,
        message=f"User not found: {username}",
        username=username,
        requires2fa=False,
        user2fa_enabled=False,
        effective2fa=False,
    )


@strawberry.type
class Query:
    @strawberry.field(name="user2faStatus")
    async def user2fa_status(self, info: Info, username: str) -> User2faStatus | None:
        return await _run(info, _status, username)


def _status(db: Session, username: str) -> User2faStatus | None:
    user = user_by_username(db, username)
    if user is None:
        return None
    keys = passkeys_of(db, user.pk)
    now = utcnow()
    return User2faStatus(
        username=user.username,
        subject=user.subject,
        requires2fa=user.requires_2fa,
        user2fa_enabled=user.user_2fa_enabled,
        effective2fa=twofactor.effective(user, now),
        required_from=_required_from(user),
        requirement_pending=twofactor.requirement_pending(user, now),
        passkey_enrolled=bool(keys),
        passkey_count=len(keys),
        passkey_enrolled_at=keys[0].created_at.isoformat() if keys else None,
        recovery_codes_remaining=recovery_codes_remaining(db, user.pk),
        email=user.email,
    )


def _drop_codes_if_off(db: Session, user: User) -> None:
    """SPEC §4.2: an admin action that leaves effective 2FA off deletes the recovery codes,
    as when the user turns 2FA off. (A pending requirement leaves 2FA off too.)"""
    if not twofactor.keeps_recovery_codes(user):
        recovery.remove_all(db, user.pk)


def _set_required(db: Session, username: str, required: bool, grace_days: int) -> TwoFactorResult:
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    if not required:
        return _clear_requirement(db, found.pk)
    check = twofactor.check_grace_days(grace_days)
    if not check.allowed:
        return _result(found, check.message, success=False)
    user = lock_user(db, found.pk)
    now = utcnow()
    changes, start = twofactor.new_requirement_start(user, grace_days, now)
    if not changes:
        db.commit()
        return _result(user, f"{user.username} already requires two-factor authentication")
    user.requires_2fa = True
    user.requires_2fa_from = start
    # the day-before reminder is for this date; none is needed for a day or less of grace
    user.requirement_reminded_at = None if twofactor.reminder_wanted(start, now) else now
    db.add(user)
    detail = {"from": twofactor.iso_utc(start)} if start is not None else {}
    events.record(db, user.pk, "2fa_required", actor="admin", **detail)
    db.commit()
    if start is None:
        return _result(user, f"{user.username} now requires two-factor authentication")
    words = twofactor.date_words(start)
    return _result(user, f"{user.username} requires two-factor authentication from {words}")


def _clear_requirement(db: Session, user_id: int) -> TwoFactorResult:
    """`required: false` clears the requirement and its date (graceDays is ignored)."""
    user = lock_user(db, user_id)
    if user.requires_2fa or user.requires_2fa_from is not None:
        was_required = user.requires_2fa
        user.requires_2fa = False
        user.requires_2fa_from = None
        user.requirement_reminded_at = None
        db.add(user)
        if was_required:
            events.record(db, user.pk, "2fa_not_required", actor="admin")
    _drop_codes_if_off(db, user)
    db.commit()
    return _result(user, f"{user.username} no longer requires two-factor authentication")


def _set_enabled(db: Session, username: str, enabled: bool) -> TwoFactorResult:
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    user = lock_user(db, found.pk)
    if user.user_2fa_enabled != enabled:
        user.user_2fa_enabled = enabled
        user.user_2fa_enabled_at = utcnow() if enabled else None
        db.add(user)
        kind = "2fa_enabled" if enabled else "2fa_disabled"
        events.record(db, user.pk, kind, actor="admin")
    _drop_codes_if_off(db, user)
    db.commit()
    state = "enabled" if enabled else "disabled"
    message = f"Two-factor preference {state} for {user.username}"
    if enabled and twofactor.needs_enrollment_at_login(user, passkey_count(db, user.pk)):
        message += " (no passkey yet: they will register one at their next sign-in)"
    return _result(user, message)


def _unlock(db: Session, username: str) -> TwoFactorResult:
    """Clear a lockout and the failure count (SPEC §9): the user may try again at once."""
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    user = lock_user(db, found.pk)
    was_locked = twofactor.is_locked(user.locked_until, utcnow())
    if not was_locked and user.failed_login_count == 0 and user.locked_until is None:
        db.commit()
        return _result(user, f"{user.username} was not locked")
    user.failed_login_count = 0
    user.locked_until = None
    db.add(user)
    events.record(db, user.pk, "unlocked", actor="admin")
    db.commit()
    if was_locked:
        return _result(user, f"{user.username} is unlocked")
    return _result(user, f"{user.username} was not locked; failed attempts reset")


def _sign_out(db: Session, username: str) -> TwoFactorResult:
    """End every session of the user, partial ones too (a compromised account)."""
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    user = lock_user(db, found.pk)
    ended = sessions.end_other_sessions(db, user.pk, keep_id=None)
    if ended:
        events.record(db, user.pk, "signed_out_everywhere", actor="admin", sessions=ended)
    db.commit()
    if not ended:
        return _result(user, f"{user.username} had no active sessions")
    plural = "" if ended == 1 else "s"
    return _result(user, f"Ended {ended} session{plural} of {user.username}")


def _create(
    db: Session, username: str, password: str, display_name: str | None, email: str | None
) -> User:
    return create_user(db, username, password, display_name, actor="admin", email=email)


def _set_email(db: Session, username: str, email: str | None) -> TwoFactorResult:
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    try:
        user = set_email(db, found.pk, email, actor="admin")
    except Refused as refusal:
        db.rollback()
        return TwoFactorResult(
            success=False,
            message=str(refusal.detail),
            username=found.username,
            requires2fa=found.requires_2fa,
            user2fa_enabled=found.user_2fa_enabled,
            effective2fa=twofactor.effective(found),
        )
    message = (
        f"Notifications for {user.username} go to {user.email}"
        if user.email
        else f"{user.username} has no email address now"
    )
    return _result(user, message)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        name="setUser2faRequired",
        description=(
            "Require two-factor authentication for a user (the user's own flag is untouched). "
            "graceDays 0 applies it at their next request; 1 to 365 gives them that many days "
            "(requiredFrom), with a notice, a notification and a reminder the day before. "
            "A new graceDays replaces a pending date but never delays a requirement already in "
            "force. required: false clears the requirement and its date (graceDays ignored)."
        ),
    )
    async def set_user2fa_required(
        self,
        info: Info,
        username: str,
        required: bool,
        grace_days: Annotated[
            int,
            strawberry.argument(
                name="graceDays", description="Days before the requirement applies, 0 to 365."
            ),
        ] = 0,
    ) -> TwoFactorResult:
        return await _run(info, _set_required, username, required, grace_days)

    @strawberry.mutation(name="setUser2faEnabled")
    async def set_user2fa_enabled(
        self, info: Info, username: str, enabled: bool
    ) -> TwoFactorResult:
        """Overrides the user's preference (e.g. off for a user who lost their passkey)."""
        return await _run(info, _set_enabled, username, enabled)

    @strawberry.mutation(
        name="unlockUser",
        description="Clear a lockout after failed attempts: the user may sign in again at once.",
    )
    async def unlock_user(self, info: Info, username: str) -> TwoFactorResult:
        return await _run(info, _unlock, username)

    @strawberry.mutation(
        name="signOutUser",
        description="End every session of the user (for a lost device or a compromised account).",
    )
    async def sign_out_user(self, info: Info, username: str) -> TwoFactorResult:
        return await _run(info, _sign_out, username)

    @strawberry.mutation(name="createUser")
    async def create_user_(
        self,
        info: Info,
        username: str,
        password: str,
        display_name: str | None = None,
        email: str | None = None,
    ) -> CreateUserResult:
        try:
            user = await _run(info, _create, username, password, display_name, email)
        except Refused as refusal:
            return CreateUserResult(
                success=False, message=str(refusal.detail), username=username, subject=None
            )
        return CreateUserResult(
            success=True,
            message=f"Created {user.username}",
            username=user.username,
            subject=user.subject,
        )

    @strawberry.mutation(name="setUserEmail")
    async def set_user_email(
        self, info: Info, username: str, email: str | None = None
    ) -> TwoFactorResult:
        """Where security notifications go; null clears it. Mails the old and new address."""
        return await _run(info, _set_email, username, email)


log = logging.getLogger("barycenter.admin")


class QuietSchema(strawberry.Schema):
    """Errors are logged by their message only: a GraphQLError prints the query's source
    around the error, and a query may hold a password (createUser) — SPEC §7."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            original = error.original_error
            if original is not None and not isinstance(original, GraphQLError):
                log.error("admin API error: %s", type(original).__name__)
            else:
                log.warning("admin API request refused (%d errors)", len(errors))
                return


schema = QuietSchema(query=Query, mutation=Mutation)
