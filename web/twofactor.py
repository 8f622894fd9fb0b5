"""The rules of two-factor authentication (SPEC §4), in one place.

Handlers and templates ask these functions; they never decide on their own. Each function
reads like a row of the spec's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from web.errors import Refused

MAX_FAILED_ATTEMPTS = 5
MAX_PASSKEYS = 32
"""At most this many passkeys per user (SPEC §7)."""
LOCKOUT_MINUTES = 15
LOCKOUT = timedelta(minutes=LOCKOUT_MINUTES)
"""The 5th failure in a row locks the account this long (SPEC §5.1): the one place for 5/15."""
LOCKED = f"Too many failed attempts. This account is locked for {LOCKOUT_MINUTES} minutes."
TOO_MANY_SECOND_FACTOR = (
    f"Too many failed attempts. Please sign in again in {LOCKOUT_MINUTES} minutes."
)

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
    code: str = ""
    """A machine-readable reason for the shim (e.g. `reauth-required`)."""

    def require(self, *, then: str = "") -> None:
        """A refusal becomes the answer the user sees (web.errors.Refused). A refusal for
        want of recent authentication names the step that resolves it, the section `then`
        with "Confirm it's you" (for the shim)."""
        if not self.allowed:
            step = f"/account/confirm?then={then}" if self.code and then else ""
            raise Refused(self.status, self.message, code=self.code, step=step)


ALLOWED = Decision(True)


def refuse(status: int, message: str, code: str = "") -> Decision:
    return Decision(False, status, message, code)


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


@dataclass(frozen=True)
class CardState:
    """The two-factor card at rest: its status badge (`kind`: "required", "on" or "off",
    the badge's style; `words`) and the sentence under it (`explanation`)."""

    kind: str
    words: str
    explanation: str


CONFIRM_EACH_SIGN_IN = "You confirm each password sign-in with a passkey or a recovery code."


def card_state(user: UserFlags, now: datetime | None = None) -> CardState:
    """What the two-factor card says at rest (SPEC §4): required by the administrator, on,
    off with a pending requirement (the badge is the user's own, "Off"), or off."""
    words = status_words(user, now)
    if requirement_in_force(user, now):
        also = ", and you have also turned it on yourself" if user.user_2fa_enabled else ""
        why = f"Your administrator requires two-factor authentication{also}."
        return CardState("required", words, f"{why} {CONFIRM_EACH_SIGN_IN}")
    if user.user_2fa_enabled:
        return CardState("on", words, CONFIRM_EACH_SIGN_IN)
    if requirement_pending(user, now):
        return CardState(
            "off",
            words,
            "Turn it on before then: from that time on, each password sign-in will need a "
            "passkey or a recovery code, and you'll be asked to set it up when you next sign in.",
        )
    return CardState(
        "off",
        words,
        "Add a second step to password sign-ins: a passkey on your device, with recovery "
        "codes as a backup.",
    )


ALREADY_REQUIRED = "Your administrator already requires two-factor authentication."


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
    """A user may turn their own 2FA on (after the enrollment ceremony), except while an
    administrator's requirement is in force: 2FA is on already, and enrolling again would
    only replace the recovery codes the user saved (SPEC §4.1b)."""
    if user.user_2fa_enabled:
        return refuse(409, "Two-factor authentication is already on.")
    if requirement_in_force(user):
        return refuse(409, ALREADY_REQUIRED)
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


class PartialFacts(Protocol):
    state: str
    auth_time: datetime
    partial_reason: str


ALREADY_HAS_PASSKEY = "This account already has a passkey. Verify with it instead."
PASSWORD_FIRST = "Enter your password to register a passkey."  # noqa: S105 (a message)
ENROLL_ALWAYS_ASK = timedelta(minutes=5)
"""With BARYCENTER_REAUTH_SECONDS=0 (always ask) the password just entered counts this long
for enroll-at-login (the life of its ceremony); otherwise no one could ever enroll."""


def can_enroll_at_login(
    user: UserFlags, session: PartialFacts, passkey_count: int, now: datetime, seconds: int
) -> Decision:
    """Enroll-at-login (SPEC §4, §4.1): effective 2FA and no passkey, and the password entered
    in this very sign-in within the recent-authentication window — a password sign-in's
    partial session. A full session demoted by an administrator's requirement, or one whose
    password is older, must enter the password on /login/2fa first: a stolen stale cookie
    must not be able to register the thief's passkey."""
    if not needs_enrollment_at_login(user, passkey_count, now):
        return refuse(409, ALREADY_HAS_PASSKEY)
    window = timedelta(seconds=seconds) if seconds > 0 else ENROLL_ALWAYS_ASK
    if (
        session.state == "partial"
        and session.partial_reason == ""
        and now - _utc(session.auth_time) <= window
    ):
        return ALLOWED
    return refuse(403, PASSWORD_FIRST, REAUTH_REQUIRED)


def enroll_at_login_step(
    user: UserFlags, session: PartialFacts, passkey_count: int, now: datetime, seconds: int
) -> str:
    """What /login/2fa offers: "" (verify with a passkey or a recovery code), "register"
    (enroll-at-login), or "password" (enroll-at-login, the password entered first)."""
    if not needs_enrollment_at_login(user, passkey_count, now):
        return ""
    decision = can_enroll_at_login(user, session, passkey_count, now, seconds)
    return "password" if decision.code == REAUTH_REQUIRED else "register"


def can_reenter_password_at_login(user: UserFlags, passkey_count: int) -> Decision:
    """The password on /login/2fa is only for enroll-at-login (refused before a check)."""
    if not needs_enrollment_at_login(user, passkey_count):
        return refuse(409, ALREADY_HAS_PASSKEY)
    return ALLOWED


def recently_authenticated(session: SessionFacts, now: datetime, seconds: int) -> bool:
    """SPEC §4.1/§9: this session signed in (all factors done) or confirmed the user's
    identity at most `seconds` ago (exactly `seconds` still counts; 0 = always ask)."""
    if seconds <= 0 or session.state != "full" or session.reauth_at is None:
        return False
    return now - session.reauth_at <= timedelta(seconds=seconds)


def confirm_method(passkey_count: int) -> str:
    """How "Confirm it's you" asks: a passkey when the account has one, else the password."""
    return "passkey" if passkey_count > 0 else "password"


CONFIRM_WITH_PASSKEY = "Confirm with one of your passkeys."
CONFIRM_WITH_PASSWORD = "You have no passkey. Confirm with your password."  # noqa: S105
NO_PASSKEY_TO_ENABLE_WITH = "You have no passkey yet. Register one instead."
NO_PASSKEY_FOR_SECOND_FACTOR = "This account has no passkey yet. Register one first."


def can_confirm_with_passkey(passkey_count: int) -> Decision:
    """ "Confirm it's you" with a passkey only when the account has one."""
    if confirm_method(passkey_count) != "passkey":
        return refuse(409, CONFIRM_WITH_PASSWORD)
    return ALLOWED


def can_enable_with_existing_passkey(user: UserFlags, passkey_count: int) -> Decision:
    """Enabling 2FA with an existing passkey: allowed to enable, and there is one."""
    decision = can_enable(user)
    if decision.allowed and passkey_count == 0:
        return refuse(409, NO_PASSKEY_TO_ENABLE_WITH)
    return decision


def can_verify_second_factor(passkey_count: int) -> Decision:
    """ "Verify with a passkey" at /login/2fa needs a passkey (else: enroll-at-login)."""
    return ALLOWED if passkey_count > 0 else refuse(409, NO_PASSKEY_FOR_SECOND_FACTOR)


def can_confirm_with_password(passkey_count: int) -> Decision:
    """ "Confirm it's you" with the password only when the account has no passkey."""
    if confirm_method(passkey_count) != "password":
        return refuse(409, CONFIRM_WITH_PASSKEY)
    return ALLOWED


def can_confirm_for(
    then: str, user: UserFlags, passkey_count: int, now: datetime | None = None
) -> Decision:
    """What the action after "Confirm it's you" would refuse anyway is refused before any
    password is checked (a refusal after the check would waste a lockout attempt)."""
    if then == "recovery-codes":
        return can_regenerate_codes(user, now)
    if then == "two-factor":
        return can_enable(user)
    if then == "passkeys" and passkey_count >= MAX_PASSKEYS:
        return refuse(409, TOO_MANY_PASSKEYS)
    return ALLOWED


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


def removal_needs_confirmation(
    user: UserFlags, session: SessionFacts, passkey_count: int, now: datetime, seconds: int
) -> bool:
    """The removal question is also "Confirm it's you" — ONE step, whose passkey assertion
    confirms and removes — when this session hasn't authenticated lately (SPEC §4.1); a
    recent session gets the plain question (one click removes). A passkey is always there
    to confirm with (the one being removed), so this step never asks for the password."""
    decision = can_remove_passkey_now(user, session, passkey_count, now, seconds)
    return decision.code == REAUTH_REQUIRED


def can_regenerate_codes_now(
    user: UserFlags, session: SessionFacts, now: datetime, seconds: int
) -> Decision:
    """Regenerating recovery codes: only with 2FA on; then recent authentication."""
    return _then_recent(can_regenerate_codes(user), session, now, seconds)


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


def reminder_window(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The requirement dates whose reminder may be due now (a pre-selection for the job's
    query; reminder_due decides for each user): after now, at most REMIND_BEFORE ahead."""
    now = _now(now)
    return now, now + REMIND_BEFORE


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


BUSY = timedelta(minutes=1)
"""When the 5th attempt of a window is reserved, the account answers 429 for at most this
long while those attempts are checked; a reservation that leaked (a crash during the check)
is forgotten after it, so "5 in flight" never becomes a permanent lock (SPEC §7)."""


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


CODES_CHANGED = (
    "Your recovery codes were changed in another window or device. "
    "This is what they are now; nothing else was changed."
)


def codes_changed_meanwhile(seen_version: str, current_version: str) -> bool:
    """A step started from a page showing other codes (a second tab, another device) is
    answered with the current state, never carried out on codes the person didn't see."""
    return seen_version != current_version


def can_act_on_codes_seen(seen_version: str | None, current_version: str) -> Decision:
    """A recovery-codes step names the codes its page showed (None: it didn't say); other
    codes than those are a 409, and nothing changes."""
    if seen_version is not None and codes_changed_meanwhile(seen_version, current_version):
        return refuse(409, CODES_CHANGED)
    return ALLOWED


def keeps_recovery_codes(user: UserFlags, now: datetime | None = None) -> bool:
    """Recovery codes exist only while effective 2FA is on: a change that leaves it off
    deletes them (the user turning it off, or an administrator)."""
    return effective(user, now)


def enabling_issues_codes(remaining: int) -> bool:
    """Turning 2FA on never replaces codes that still work."""
    return remaining == 0


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    """A hold is in force: a 15-minute lock, or the short busy window of 5 attempts in flight."""
    return locked_until is not None and _utc(locked_until) > now


def lock_in_force(failed_count: int, locked_until: datetime | None, now: datetime) -> bool:
    """The 15-minute lock (its counter was reset when it was set), not the busy window (which
    is set when the counter reaches 5)."""
    return is_locked(locked_until, now) and failed_count < MAX_FAILED_ATTEMPTS


def may_check_password(failed_count: int, locked_until: datetime | None, now: datetime) -> bool:
    """SPEC §5.1/§9: a password (or second factor) is checked only while no hold is in force
    and fewer than 5 attempts of this window are counted (each attempt is counted, under the
    user's row lock, BEFORE the check: so at most 5 are ever checked at once). An ended hold
    is forgotten."""
    if is_locked(locked_until, now):
        return False
    return locked_until is not None or failed_count < MAX_FAILED_ATTEMPTS


def reserve_attempt(
    failed_count: int, locked_until: datetime | None, now: datetime
) -> tuple[int, datetime | None] | None:
    """Counting one more attempt: the new (counter, hold), or None when it is refused. The
    5th reservation opens the busy window (BUSY); an ended hold starts the count afresh."""
    if not may_check_password(failed_count, locked_until, now):
        return None
    count = (0 if locked_until is not None else failed_count) + 1
    return count, (now + BUSY if count >= MAX_FAILED_ATTEMPTS else None)


def hold_message(failed_count: int, locked_until: datetime | None, now: datetime) -> str:
    """What a 429 says: until when for a lock, "in a minute" while 5 attempts are checked."""
    if lock_in_force(failed_count, locked_until, now):
        return lock_message(locked_until)
    return lock_message(None)


def lock_message(locked_until: datetime | None) -> str:
    """The lock message says until when ("Try again after 22:19 UTC")."""
    if locked_until is None:
        return "Too many attempts at once. Try again in a minute."
    return f"{LOCKED} Try again after {locked_until:%H:%M} UTC."


def lock_after_failure(failed_count: int, now: datetime) -> datetime | None:
    """The 5th failure in a row locks the account (LOCKOUT)."""
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
    return _then_recent(ALLOWED, session, now, seconds)
