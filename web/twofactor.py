"""The rules of two-factor authentication (SPEC §4), in one place.

Handlers and templates ask these functions; they never decide on their own. Each function
reads like a row of the spec's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

STEP_UP_WINDOW = timedelta(minutes=10)
MAX_FAILED_ATTEMPTS = 5
LOCKOUT = timedelta(minutes=15)

ADMIN_REQUIRES = "Your administrator requires two-factor authentication"
NO_CODES = "Recovery codes are only used while two-factor authentication is on."
LAST_PASSKEY = (
    "You can't remove your last passkey while two-factor authentication is on. "
    "Add another passkey first, or turn two-factor authentication off."
)


class UserFlags(Protocol):
    requires_2fa: bool
    user_2fa_enabled: bool


class SessionFacts(Protocol):
    state: str
    mfa_verified: bool
    reauth_at: datetime | None


@dataclass(frozen=True)
class Decision:
    """The answer to "may this happen?": allowed, or the status and message of a refusal."""

    allowed: bool
    status: int = 200
    message: str = ""


ALLOWED = Decision(True)


def refuse(status: int, message: str) -> Decision:
    return Decision(False, status, message)


def effective(user: UserFlags) -> bool:
    """Effective 2FA = requires_2fa OR user_2fa_enabled."""
    return user.requires_2fa or user.user_2fa_enabled


def status_words(user: UserFlags) -> str:
    """The two-factor card's status in words."""
    if user.requires_2fa and user.user_2fa_enabled:
        return "Required by your administrator (also turned on by you)"
    if user.requires_2fa:
        return "Required by your administrator"
    return "On" if user.user_2fa_enabled else "Off"


def can_enable(user: UserFlags) -> Decision:
    """A user may always turn their own 2FA on (after the enrollment ceremony)."""
    if user.user_2fa_enabled:
        return refuse(409, "Two-factor authentication is already on.")
    return ALLOWED


def can_disable(user: UserFlags) -> Decision:
    """A user may turn their own 2FA off unless an administrator requires it."""
    if user.requires_2fa:
        return refuse(403, ADMIN_REQUIRES)
    if not user.user_2fa_enabled:
        return refuse(409, "Two-factor authentication is already off.")
    return ALLOWED


def shows_disable_button(user: UserFlags) -> bool:
    return can_disable(user).allowed


def can_remove_passkey(user: UserFlags, passkey_count: int) -> Decision:
    """Never remove the last passkey while effective 2FA is on."""
    if passkey_count <= 1 and effective(user):
        return refuse(409, LAST_PASSKEY)
    return ALLOWED


def password_sign_in_needs_second_factor(user: UserFlags) -> bool:
    """Password correct: a full session when 2FA is off, a partial one when it is on."""
    return effective(user)


def session_meets_rules(user: UserFlags, session: SessionFacts) -> bool:
    """A full session stops meeting the rules when 2FA becomes effective without MFA."""
    if session.state != "full":
        return False
    return session.mfa_verified or not effective(user)


def needs_enrollment_at_login(user: UserFlags, passkey_count: int) -> bool:
    """Effective 2FA but no passkey: offer passkey registration on /login/2fa."""
    return effective(user) and passkey_count == 0


def has_recent_step_up(session: SessionFacts, now: datetime) -> bool:
    """A passkey assertion succeeded in this session in the last 10 minutes."""
    return session.reauth_at is not None and now - session.reauth_at <= STEP_UP_WINDOW


def needs_step_up(session: SessionFacts, now: datetime) -> bool:
    """Removing a passkey and regenerating recovery codes need a fresh passkey assertion."""
    return not has_recent_step_up(session, now)


def shows_recovery_codes(user: UserFlags) -> bool:
    return effective(user)


def can_regenerate_codes(user: UserFlags) -> Decision:
    """Recovery codes exist only while effective 2FA is on."""
    return ALLOWED if effective(user) else refuse(409, NO_CODES)


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


def lock_after_failure(failed_count: int, now: datetime) -> datetime | None:
    """The 5th failure in a row locks the account for 15 minutes."""
    return now + LOCKOUT if failed_count >= MAX_FAILED_ATTEMPTS else None


def amr_for_passkey(backup_eligible: bool) -> str:
    """hwk for a device-bound credential, swk for a synced (backup-eligible) one."""
    return "swk" if backup_eligible else "hwk"
