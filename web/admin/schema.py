"""GraphQL schema of SPEC §6: read and set a user's two 2FA flags, create users."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from sqlmodel import Session
from strawberry.types import Info

from models import User, utcnow
from models.passkey import passkey_count, passkeys_of
from models.recovery import recovery_codes_remaining
from models.user import user_by_username
from web import events, recovery, twofactor
from web.errors import Refused
from web.users import create_user, lock_user, set_email

T = TypeVar("T")


@strawberry.type
class TwoFactorResult:
    success: bool
    message: str
    username: str
    requires2fa: bool = strawberry.field(name="requires2fa")
    user2fa_enabled: bool = strawberry.field(name="user2faEnabled")
    effective2fa: bool = strawberry.field(name="effective2fa")


@strawberry.type
class User2faStatus:
    username: str
    subject: str
    requires2fa: bool = strawberry.field(name="requires2fa")
    user2fa_enabled: bool = strawberry.field(name="user2faEnabled")
    effective2fa: bool = strawberry.field(name="effective2fa")
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


def _result(user: User, message: str) -> TwoFactorResult:
    return TwoFactorResult(
        success=True,
        message=message,
        username=user.username,
        requires2fa=user.requires_2fa,
        user2fa_enabled=user.user_2fa_enabled,
        effective2fa=twofactor.effective(user),
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
    keys = passkeys_of(db, user.id)  # type: ignore[arg-type]
    return User2faStatus(
        username=user.username,
        subject=user.subject,
        requires2fa=user.requires_2fa,
        user2fa_enabled=user.user_2fa_enabled,
        effective2fa=twofactor.effective(user),
        passkey_enrolled=bool(keys),
        passkey_count=len(keys),
        passkey_enrolled_at=keys[0].created_at.isoformat() if keys else None,
        recovery_codes_remaining=recovery_codes_remaining(db, user.id),  # type: ignore[arg-type]
        email=user.email,
    )


def _drop_codes_if_off(db: Session, user: User) -> None:
    """SPEC §4.2: an admin action that leaves effective 2FA off deletes the recovery codes,
    as when the user turns 2FA off."""
    if not twofactor.effective(user):
        recovery.remove_all(db, user.id)  # type: ignore[arg-type]


def _set_required(db: Session, username: str, required: bool) -> TwoFactorResult:
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    user = lock_user(db, found.id)  # type: ignore[arg-type]
    if user.requires_2fa != required:
        user.requires_2fa = required
        db.add(user)
        kind = "2fa_required" if required else "2fa_not_required"
        events.record(db, user.id, kind, actor="admin")  # type: ignore[arg-type]
    _drop_codes_if_off(db, user)
    db.commit()
    verb = "now requires" if required else "no longer requires"
    return _result(user, f"{user.username} {verb} two-factor authentication")


def _set_enabled(db: Session, username: str, enabled: bool) -> TwoFactorResult:
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    user = lock_user(db, found.id)  # type: ignore[arg-type]
    if user.user_2fa_enabled != enabled:
        user.user_2fa_enabled = enabled
        user.user_2fa_enabled_at = utcnow() if enabled else None
        db.add(user)
        kind = "2fa_enabled" if enabled else "2fa_disabled"
        events.record(db, user.id, kind, actor="admin")  # type: ignore[arg-type]
    _drop_codes_if_off(db, user)
    db.commit()
    state = "enabled" if enabled else "disabled"
    message = f"Two-factor preference {state} for {user.username}"
    if enabled and passkey_count(db, user.id) == 0:  # type: ignore[arg-type]
        message += " (no passkey yet: they will register one at their next sign-in)"
    return _result(user, message)


def _create(
    db: Session, username: str, password: str, display_name: str | None, email: str | None
) -> User:
    return create_user(db, username, password, display_name, actor="admin", email=email)


def _set_email(db: Session, username: str, email: str | None) -> TwoFactorResult:
    found = user_by_username(db, username)
    if found is None:
        return _not_found(username)
    try:
        user = set_email(db, found.id, email, actor="admin")  # type: ignore[arg-type]
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
    @strawberry.mutation(name="setUser2faRequired")
    async def set_user2fa_required(
        self, info: Info, username: str, required: bool
    ) -> TwoFactorResult:
        """Sets requires_2fa; the user's own flag is untouched. Applies at their next request."""
        return await _run(info, _set_required, username, required)

    @strawberry.mutation(name="setUser2faEnabled")
    async def set_user2fa_enabled(
        self, info: Info, username: str, enabled: bool
    ) -> TwoFactorResult:
        """Overrides the user's preference (e.g. off for a user who lost their passkey)."""
        return await _run(info, _set_enabled, username, enabled)

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
