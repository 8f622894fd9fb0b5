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


ALREADY_REQUIRED = "Your administrator already requires two-factor authentication."


def _requirement_applies(user: UserFlags) -> bool:
    """An administrator's requirement is in force (issue 11 adds the grace period here:
    `requirement_in_force(user, now)`)."""
    return user.requires_2fa


def can_enable(user: UserFlags) -> Decision:
    """A user may turn their own 2FA on (after the enrollment ceremony), except while an
    administrator's requirement is in force: 2FA is on already, and enrolling again would
    only replace the recovery codes the user saved (SPEC §4.1b)."""
    if user.user_2fa_enabled:
        return refuse(409, "Two-factor authentication is already on.")
    if _requirement_applies(user):
        return refuse(409, ALREADY_REQUIRED)
    return ALLOWED


def shows_enable_button(user: UserFlags) -> bool:
    return can_enable(user).allowed


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


def issues_codes_at_sign_in(user: UserFlags, codes_on_record: int) -> bool:
    """SPEC §4.1b: effective 2FA that came on without codes (an administrator required it
    of a passkey holder): the first completed sign-in creates them and shows them once.
    Codes that were all used are not replaced unasked ("Create recovery codes")."""
    return effective(user) and codes_on_record == 0


def recovery_codes_state(user: UserFlags, codes_on_record: int, remaining: int) -> str:
    """What the recovery-codes section says: "off" (no section), "none" ("You don't have
    recovery codes yet"), "used" ("You've used all your recovery codes"), "low" (1 or 2
    left) or "some"."""
    if not shows_recovery_codes(user):
        return "off"
    if codes_on_record == 0:
        return "none"
    if remaining == 0:
        return "used"
    return "low" if remaining <= 2 else "some"


def regenerating_asks_first(remaining: int) -> bool:
    """ "Regenerate recovery codes" asks first when codes that still work would stop
    working ("Your current codes will stop working."); creating the first ones doesn't."""
    return remaining > 0


def codes_changed_meanwhile(seen_version: str, current_version: str) -> bool:
    """A step started from a page showing other codes (a second tab, another device) is
    answered with the current state, never carried out on codes the person didn't see."""
    return seen_version != current_version


def enabling_issues_codes(remaining: int) -> bool:
    """Turning 2FA on never replaces codes that still work."""
    return remaining == 0


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


def lock_after_failure(failed_count: int, now: datetime) -> datetime | None:
    """The 5th failure in a row locks the account for 15 minutes."""
    return now + LOCKOUT if failed_count >= MAX_FAILED_ATTEMPTS else None


def amr_for_passkey(backup_eligible: bool) -> str:
    """hwk for a device-bound credential, swk for a synced (backup-eligible) one."""
    return "swk" if backup_eligible else "hwk"
