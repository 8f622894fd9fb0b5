"""The rules of two-factor authentication (SPEC §4), in one place.

Handlers and templates ask these functions; they never decide on their own. Each function
reads like a row of the spec's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


REQUIRED_FROM = "Required by your administrator from"
"""The card's words for a pending requirement; the date follows (SPEC §4.2)."""
NOTICE_FROM = "Your administrator requires two-factor authentication from"
"""The account page's notice while a requirement is pending; the date follows."""
GRACE_DAYS_MAX = 365
REMIND_BEFORE = timedelta(days=1)
"""The reminder of a pending requirement goes this long before it applies."""
ADMIN_REQUIRED = "admin-required"
"""auth_sessions.partial_reason of a session demoted because a requirement came in force."""


class UserFlags(Protocol):
    requires_2fa: bool
    user_2fa_enabled: bool
    requires_2fa_from: datetime | None


class ReminderFacts(UserFlags, Protocol):
    requirement_reminded_at: datetime | None


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


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def _utc(moment: datetime) -> datetime:
    """Stored times are UTC; some databases hand them back without a zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def requirement_in_force(user: UserFlags, now: datetime | None = None) -> bool:
    """An administrator's requirement applies: set, and its grace period (if any) is over.
    In force from `requires_2fa_from` on, to the instant (SPEC §9)."""
    if not user.requires_2fa:
        return False
    start = user.requires_2fa_from
    return start is None or _now(now) >= _utc(start)


def requirement_pending(user: UserFlags, now: datetime | None = None) -> bool:
    """An administrator's requirement is set but its grace period has not ended yet."""
    return user.requires_2fa and not requirement_in_force(user, now)


def required_from(user: UserFlags) -> datetime | None:
    """When the requirement starts (or started) to apply; None: at once, or none set."""
    if not user.requires_2fa or user.requires_2fa_from is None:
        return None
    return _utc(user.requires_2fa_from)


def effective(user: UserFlags, now: datetime | None = None) -> bool:
    """Effective 2FA = user_2fa_enabled OR (requires_2fa AND the requirement is in force)."""
    return user.user_2fa_enabled or requirement_in_force(user, now)


def date_words(moment: datetime) -> str:
    """A date for people, in UTC with the zone stated: "8 December 2026, 14:05 UTC"."""
    return _utc(moment).astimezone(UTC).strftime("%-d %B %Y, %H:%M UTC")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with Z, to the second (the admin API, <time datetime>, events)."""
    return _utc(moment).astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def status_words(user: UserFlags, now: datetime | None = None) -> str:
    """The two-factor card's status in words. While a requirement is pending the status is
    the user's own ("On"/"Off"); the card adds the dated requirement (`pending_words`)."""
    in_force = requirement_in_force(user, now)
    if in_force and user.user_2fa_enabled:
        return "Required by your administrator (also turned on by you)"
    if in_force:
        return "Required by your administrator"
    return "On" if user.user_2fa_enabled else "Off"


def pending_words(user: UserFlags, now: datetime | None = None) -> str:
    """ "Required by your administrator from 8 December 2026, 14:05 UTC" while pending, else "".
    Templates show REQUIRED_FROM and the date (in a <time>) from the same facts."""
    start = required_from(user)
    if start is None or not requirement_pending(user, now):
        return ""
    return f"{REQUIRED_FROM} {date_words(start)}"


def shows_requirement_notice(user: UserFlags, now: datetime | None = None) -> bool:
    """The dated notice at the top of the account page: pending, and 2FA not on yet."""
    return requirement_pending(user, now) and not user.user_2fa_enabled


def can_enable(user: UserFlags) -> Decision:
    """A user may always turn their own 2FA on (after the enrollment ceremony)."""
    if user.user_2fa_enabled:
        return refuse(409, "Two-factor authentication is already on.")
    return ALLOWED


def shows_enable_button(user: UserFlags, now: datetime | None = None) -> bool:
    """ "Enable" is offered unless it is on, or a requirement is in force (SPEC §4.1b);
    during a grace period it is offered (§4.2)."""
    return can_enable(user).allowed and not requirement_in_force(user, now)


def can_disable(user: UserFlags) -> Decision:
    """A user may turn their own 2FA off unless an administrator requires it (a pending
    requirement too: SPEC §4.2)."""
    if user.requires_2fa:
        return refuse(403, ADMIN_REQUIRES)
    if not user.user_2fa_enabled:
        return refuse(409, "Two-factor authentication is already off.")
    return ALLOWED


def shows_disable_button(user: UserFlags) -> bool:
    return can_disable(user).allowed


def can_remove_passkey(
    user: UserFlags, passkey_count: int, now: datetime | None = None
) -> Decision:
    """Never remove the last passkey while effective 2FA is on."""
    if passkey_count <= 1 and effective(user, now):
        return refuse(409, LAST_PASSKEY)
    return ALLOWED


def password_sign_in_needs_second_factor(user: UserFlags, now: datetime | None = None) -> bool:
    """Password correct: a full session when 2FA is off, a partial one when it is on."""
    return effective(user, now)


def session_meets_rules(
    user: UserFlags, session: SessionFacts, now: datetime | None = None
) -> bool:
    """A full session stops meeting the rules when 2FA becomes effective without MFA (also
    when a grace period ends: the next request finds the requirement in force)."""
    if session.state != "full":
        return False
    return session.mfa_verified or not effective(user, now)


def demotion_reason(user: UserFlags, now: datetime | None = None) -> str:
    """Why a full session was sent to /login/2fa: "admin-required" when an administrator's
    requirement (now in force) is the cause, else "" (SPEC §4.1b: /login/2fa says so)."""
    return ADMIN_REQUIRED if requirement_in_force(user, now) else ""


def needs_enrollment_at_login(
    user: UserFlags, passkey_count: int, now: datetime | None = None
) -> bool:
    """Effective 2FA but no passkey: offer passkey registration on /login/2fa."""
    return effective(user, now) and passkey_count == 0


def has_recent_step_up(session: SessionFacts, now: datetime) -> bool:
    """A passkey assertion succeeded in this session in the last 10 minutes."""
    return session.reauth_at is not None and now - session.reauth_at <= STEP_UP_WINDOW


def needs_step_up(session: SessionFacts, now: datetime) -> bool:
    """Removing a passkey and regenerating recovery codes need a fresh passkey assertion."""
    return not has_recent_step_up(session, now)


def shows_recovery_codes(user: UserFlags, now: datetime | None = None) -> bool:
    return effective(user, now)


def can_regenerate_codes(user: UserFlags, now: datetime | None = None) -> Decision:
    """Recovery codes exist only while effective 2FA is on."""
    return ALLOWED if effective(user, now) else refuse(409, NO_CODES)


# ---- the grace period of an administrator's requirement (SPEC §4.2, §9) ------------------


def check_grace_days(grace_days: int) -> Decision:
    """`graceDays` of setUser2faRequired: 0 (at once) to 365."""
    if grace_days < 0 or grace_days > GRACE_DAYS_MAX:
        return refuse(422, f"graceDays must be between 0 and {GRACE_DAYS_MAX}, not {grace_days}.")
    return ALLOWED


def new_requirement_start(
    user: UserFlags, grace_days: int, now: datetime | None = None
) -> tuple[bool, datetime | None]:
    """`setUser2faRequired(required: true, graceDays)`: (changes anything?, the new
    `requires_2fa_from`). A new require replaces a pending date; it never moves a
    requirement already in force back to pending."""
    now = _now(now)
    # to the second, so that the date shown (requiredFrom, the pages) is the exact instant
    start = (now + timedelta(days=grace_days)).replace(microsecond=0) if grace_days > 0 else None
    if requirement_in_force(user, now):
        return False, user.requires_2fa_from
    return True, start


def reminder_wanted(start: datetime | None, now: datetime | None = None) -> bool:
    """A day-before reminder is worth sending only when the grace is longer than a day."""
    return start is not None and _utc(start) - _now(now) > REMIND_BEFORE


def reminder_due(user: ReminderFacts, now: datetime | None = None) -> bool:
    """The day-before reminder: once, while pending, not already on, in its last day."""
    start = required_from(user)
    return (
        start is not None
        and requirement_pending(user, now)
        and not user.user_2fa_enabled
        and user.requirement_reminded_at is None
        and _now(now) >= start - REMIND_BEFORE
    )


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


def lock_after_failure(failed_count: int, now: datetime) -> datetime | None:
    """The 5th failure in a row locks the account for 15 minutes."""
    return now + LOCKOUT if failed_count >= MAX_FAILED_ATTEMPTS else None


def amr_for_passkey(backup_eligible: bool) -> str:
    """hwk for a device-bound credential, swk for a synced (backup-eligible) one."""
    return "swk" if backup_eligible else "hwk"
