"""The rules of two-factor authentication (SPEC §4), in one place.

Handlers and templates ask these functions; they never decide on their own. Each function
reads like a row of the spec's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

MAX_FAILED_ATTEMPTS = 5
MAX_PASSKEYS = 32
"""At most this many passkeys per user (SPEC §7)."""
LOCKOUT = timedelta(minutes=15)

ADMIN_REQUIRES = "Your administrator requires two-factor authentication"
NO_CODES = "Recovery codes are only used while two-factor authentication is on."
REAUTH_REQUIRED = "reauth-required"
"""The machine-readable code of a refusal that needs "Confirm it's you" first (SPEC §9)."""
CONFIRM_FIRST = "Confirm it's you to continue."
TOO_MANY_PASSKEYS = (
    f"You already have {MAX_PASSKEYS} passkeys, the most an account can have. "
    "Remove one you no longer use first."
)
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
    code: str = ""
    """A machine-readable reason for the shim (e.g. `reauth-required`)."""


ALLOWED = Decision(True)


def refuse(status: int, message: str, code: str = "") -> Decision:
    return Decision(False, status, message, code)


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


def recently_authenticated(session: SessionFacts, now: datetime, seconds: int) -> bool:
    """SPEC §4.1/§9: this session signed in (all factors done) or confirmed the user's
    identity at most `seconds` ago (exactly `seconds` still counts; 0 = always ask)."""
    if seconds <= 0 or session.state != "full" or session.reauth_at is None:
        return False
    return now - session.reauth_at <= timedelta(seconds=seconds)


def confirm_method(passkey_count: int) -> str:
    """How "Confirm it's you" asks: a passkey when the account has one, else the password."""
    return "passkey" if passkey_count > 0 else "password"


def _then_recent(
    decision: Decision, session: SessionFacts, now: datetime, seconds: int
) -> Decision:
    """What the rules refuse anyway is refused first (no ceremony for it); then recency."""
    if not decision.allowed or recently_authenticated(session, now, seconds):
        return decision
    return refuse(403, CONFIRM_FIRST, REAUTH_REQUIRED)


def can_add_passkey(
    session: SessionFacts, passkey_count: int, now: datetime, seconds: int
) -> Decision:
    """Adding a passkey: under the limit of 32, and recent authentication."""
    if passkey_count >= MAX_PASSKEYS:
        return _then_recent(refuse(409, TOO_MANY_PASSKEYS), session, now, seconds)
    return _then_recent(ALLOWED, session, now, seconds)


def can_enable_with_new_passkey(
    user: UserFlags, session: SessionFacts, passkey_count: int, now: datetime, seconds: int
) -> Decision:
    """Enabling 2FA with a new passkey is adding one (enabling with an existing passkey is
    itself the assertion, so it needs no more than can_enable)."""
    decision = can_enable(user)
    if not decision.allowed:
        return decision
    return can_add_passkey(session, passkey_count, now, seconds)


def can_remove_passkey_now(
    user: UserFlags, session: SessionFacts, passkey_count: int, now: datetime, seconds: int
) -> Decision:
    """Removing a passkey: never the last one with 2FA on; then recent authentication."""
    return _then_recent(can_remove_passkey(user, passkey_count), session, now, seconds)


def can_regenerate_codes_now(
    user: UserFlags, session: SessionFacts, now: datetime, seconds: int
) -> Decision:
    """Regenerating recovery codes: only with 2FA on; then recent authentication."""
    return _then_recent(can_regenerate_codes(user), session, now, seconds)


def can_change_password(session: SessionFacts, now: datetime, seconds: int) -> Decision:
    """Changing the password (issue 10) needs recent authentication."""
    return _then_recent(ALLOWED, session, now, seconds)


def shows_recovery_codes(user: UserFlags) -> bool:
    return effective(user)


def can_regenerate_codes(user: UserFlags) -> Decision:
    """Recovery codes exist only while effective 2FA is on."""
    return ALLOWED if effective(user) else refuse(409, NO_CODES)


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


def may_check_password(failed_count: int, locked_until: datetime | None, now: datetime) -> bool:
    """SPEC §5.1/§9: a password (or second factor) is checked only while the account is not
    locked and fewer than 5 attempts of this window are counted (each attempt is counted,
    atomically, BEFORE the check: so at most 5 are ever checked at once)."""
    return not is_locked(locked_until, now) and failed_count < MAX_FAILED_ATTEMPTS


def lock_message(locked_until: datetime | None) -> str:
    """The lock message says until when ("Try again after 22:19 UTC")."""
    if locked_until is None:
        return "Too many attempts at once. Try again in a minute."
    return (
        "Too many failed attempts. This account is locked for 15 minutes. "
        f"Try again after {locked_until:%H:%M} UTC."
    )


def lock_after_failure(failed_count: int, now: datetime) -> datetime | None:
    """The 5th failure in a row locks the account for 15 minutes."""
    return now + LOCKOUT if failed_count >= MAX_FAILED_ATTEMPTS else None


def amr_for_passkey(backup_eligible: bool) -> str:
    """hwk for a device-bound credential, swk for a synced (backup-eligible) one."""
    return "swk" if backup_eligible else "hwk"


def can_change_password_now(
    session: SessionFacts, passkey_count: int, now: datetime, seconds: int
) -> Decision:
    """Changing the password (SPEC §5.7, §9): with no passkey on the account, the "Current
    password" field is itself the confirmation; with one, a stale session confirms it's you
    with a passkey first."""
    if passkey_count == 0:
        return ALLOWED
    return can_change_password(session, now, seconds)
