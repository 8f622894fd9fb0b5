"""The rules of two-factor authentication (SPEC §4): the table as one parametrized test over
web/twofactor.py, then the handlers that apply it, through the test client and the software
authenticator."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlmodel import select, update

from models import AuthSession, Passkey, RecoveryCode, WebAuthnChallenge, utcnow
from tests.helpers import PASSWORD, query, reload_user
from tests.helpers.account import (
    add_key,
    codes_in,
    enabled_with_passkey,
    kinds,
    move_step_up,
    my_session,
    set_enabled,
    set_required,
    sign_in_partial,
    unused_codes,
    version_in,
)
from web import twofactor
from web.errors import Refused
from web.sessions import COOKIE

ADMIN_REQUIRES = "Your administrator requires two-factor authentication"

# --------------------------------------------------------------------------------------
# The table of SPEC §4, one case per combination
# --------------------------------------------------------------------------------------


@dataclass
class Flags:
    requires_2fa: bool
    user_2fa_enabled: bool
    requires_2fa_from: datetime | None = None  # None: the requirement applies at once
    requirement_reminded_at: datetime | None = None


@dataclass
class Facts:
    state: str
    mfa_verified: bool
    reauth_at: datetime | None = None


SESSIONS = {
    "partial": ("partial", False),
    "full-aal1": ("full", False),
    "full-mfa": ("full", True),
}
STEP_UP_AGO = {"step-up-never": None, "step-up-5min": 5, "step-up-11min": 11}
ACTIONS = (
    "enable",
    "disable",
    "remove-passkey",
    "password-sign-in",
    "session-meets-rules",
    "enroll-at-login",
    *STEP_UP_AGO,
)
SECOND_FACTOR_FIRST = "sent to /login/2fa"
ALLOWED = "allowed"


def expected(requires: bool, enabled: bool, passkeys: int, session: str, action: str) -> Any:
    """What SPEC §4 says, read from its text (not from the module under test)."""
    effective = requires or enabled  # "Effective 2FA = requires_2fa OR user_2fa_enabled"
    # "a session that no longer meets the rules (2FA now required, session not
    # MFA-verified) is sent to /login/2fa and can do nothing else"; a partial session is
    # still waiting for its second factor.
    meets = session != "partial" and (session == "full-mfa" or not effective)
    if action == "session-meets-rules":
        return meets
    if action == "password-sign-in":
        # "effective 2FA off: full session amr ["pwd"], acr aal1; on: partial session"
        return "partial, /login/2fa" if effective else "full, aal1, pwd"
    if action == "enroll-at-login":
        # "A user with effective 2FA but no passkey … is offered passkey registration"
        return effective and passkeys == 0
    if action in STEP_UP_AGO:
        # §4.1: "this session signed in (all its factors done) or confirmed the user's
        # identity within the last BARYCENTER_REAUTH_SECONDS (default 600)"
        minutes = STEP_UP_AGO[action]
        return session == "partial" or minutes is None or minutes > 10
    # The account actions need a signed-in, full session that meets the rules.
    if not meets:
        return SECOND_FACTOR_FIRST
    if action == "enable":
        # "always (user signed in, full session)"; turning on what is on is a conflict, and
        # rev 2 §4.1b: "no button while a requirement is in force" (it is on already).
        if enabled:
            return (409, "already on")
        return (409, "already requires") if requires else ALLOWED
    if action == "disable":
        if requires:  # "refused: 403 and a message …"
            return (403, ADMIN_REQUIRES)
        return ALLOWED if enabled else (409, "already off")
    if action == "remove-passkey":
        # "409 and a clear message when it would remove the last passkey while effective
        # 2FA is on"
        return (409, "last passkey") if effective and passkeys <= 1 else ALLOWED
    raise AssertionError(action)


def decision_outcome(decision: twofactor.Decision) -> Any:
    if decision.allowed:
        return ALLOWED
    return (decision.status, decision.message)


def actual(user: Flags, passkeys: int, facts: Facts, action: str, now: datetime) -> Any:
    """The same question asked of web/twofactor.py, the way the handlers ask it."""
    if action == "session-meets-rules":
        return twofactor.session_meets_rules(user, facts)
    if action == "password-sign-in":
        partial = twofactor.password_sign_in_needs_second_factor(user)
        return "partial, /login/2fa" if partial else "full, aal1, pwd"
    if action == "enroll-at-login":
        return twofactor.needs_enrollment_at_login(user, passkeys)
    if action in STEP_UP_AGO:
        return not twofactor.recently_authenticated(facts, now, 600)
    if not twofactor.session_meets_rules(user, facts):
        return SECOND_FACTOR_FIRST
    if action == "enable":
        return decision_outcome(twofactor.can_enable(user))
    if action == "disable":
        return decision_outcome(twofactor.can_disable(user))
    return decision_outcome(twofactor.can_remove_passkey(user, passkeys))


def same(got: Any, want: Any) -> bool:
    """Refusals: the status must match; the message exactly where the spec gives it,
    otherwise it must say what is wrong in words."""
    if isinstance(want, tuple) and isinstance(got, tuple):
        status, words = want
        if got[0] != status:
            return False
        if words == ADMIN_REQUIRES:
            return got[1] == ADMIN_REQUIRES
        return words in got[1].lower()
    return got == want


CASES = [
    pytest.param(r, e, n, s, a, id=f"req{int(r)}-user{int(e)}-{n}pk-{s}-{a}")
    for r in (False, True)
    for e in (False, True)
    for n in (0, 1, 2)
    for s in SESSIONS
    for a in ACTIONS
]


@pytest.mark.parametrize(("requires", "enabled", "passkeys", "session", "action"), CASES)
def test_rules_table(requires: bool, enabled: bool, passkeys: int, session: str, action: str):
    now = utcnow()
    state, mfa = SESSIONS[session]
    minutes = STEP_UP_AGO.get(action)
    facts = Facts(state, mfa, None if minutes is None else now - timedelta(minutes=minutes))
    user = Flags(requires, enabled)
    want = expected(requires, enabled, passkeys, session, action)
    got = actual(user, passkeys, facts, action, now)
    assert same(got, want), f"expected {want!r}, the rules say {got!r}"
    # effective 2FA is the OR of the two flags, whatever else holds
    assert twofactor.effective(user) is (requires or enabled)


@pytest.mark.parametrize(
    ("requires", "enabled", "words", "disable_button", "recovery_section"),
    [
        (False, False, "Off", False, False),
        (False, True, "On", True, True),
        (True, False, "Required by your administrator", False, True),
        (True, True, "Required by your administrator (also turned on by you)", False, True),
    ],
)
def test_status_words(requires, enabled, words, disable_button, recovery_section):
    user = Flags(requires, enabled)
    assert twofactor.status_words(user) == words
    assert twofactor.shows_disable_button(user) is disable_button  # "no disable button"
    assert twofactor.shows_recovery_codes(user) is recovery_section
    regenerate = twofactor.can_regenerate_codes(user)
    assert regenerate.allowed is recovery_section
    assert regenerate.allowed or (regenerate.status, regenerate.message) == (
        409,
        twofactor.NO_CODES,
    )


@pytest.mark.parametrize(
    ("requires", "enabled", "on_record", "remaining", "state", "at_sign_in"),
    [
        # §4.1b: codes exist whenever effective 2FA is on, however it came on
        (False, False, 0, 0, "off", False),
        (False, False, 10, 10, "off", False),
        (True, False, 0, 0, "none", True),  # required of a passkey holder: create at sign-in
        (False, True, 0, 0, "none", True),  # (an administrator turned the flag on)
        (True, True, 10, 10, "some", False),
        (False, True, 10, 3, "some", False),
        (False, True, 10, 2, "low", False),
        (True, False, 10, 1, "low", False),
        (False, True, 10, 0, "used", False),  # all used: "Create recovery codes", not unasked
    ],
)
def test_recovery_code_rules(requires, enabled, on_record, remaining, state, at_sign_in):
    user = Flags(requires, enabled)
    assert twofactor.recovery_codes_state(user, on_record, remaining) == state
    assert twofactor.issues_codes_at_sign_in(user, on_record) is at_sign_in
    # the question "Your current codes will stop working." only when some still work
    assert twofactor.regenerating_asks_first(remaining) is (remaining > 0)
    # turning 2FA on never replaces codes that still work
    assert twofactor.enabling_issues_codes(remaining) is (remaining == 0)


@pytest.mark.parametrize(
    ("requires", "enabled", "enable_button"),
    [(False, False, True), (False, True, False), (True, False, False), (True, True, False)],
)
def test_no_enable_button_while_required(requires, enabled, enable_button):
    assert twofactor.shows_enable_button(Flags(requires, enabled)) is enable_button


def test_codes_changed_meanwhile():
    assert not twofactor.codes_changed_meanwhile("41", "41")
    assert twofactor.codes_changed_meanwhile("41", "52")
    assert twofactor.codes_changed_meanwhile("0", "52")


def test_recent_authentication_window_edges():
    now = utcnow()
    recent = twofactor.recently_authenticated
    assert recent(Facts("full", True, now), now, 600)
    assert recent(Facts("full", True, now - timedelta(seconds=600)), now, 600)  # exactly: yes
    assert not recent(Facts("full", True, now - timedelta(seconds=600, microseconds=1)), now, 600)
    assert recent(Facts("full", False, now - timedelta(seconds=5)), now, 10)
    assert not recent(Facts("full", False, now - timedelta(seconds=11)), now, 10)
    assert not recent(Facts("full", True, now), now, 0)  # 0 = always ask
    assert not recent(Facts("full", True, None), now, 600)
    assert not recent(Facts("partial", False, now), now, 600)  # factors not all done


# The table of SPEC §4.1: every action that needs recent authentication, × recent/stale ×
# passkeys on the account × 2FA state (off, on by the user, required and in force, required
# but pending — a grace period, §4.2 — with the user's own flag off or on).
REAUTH_ACTIONS = (
    "add-passkey",
    "enable-with-new-passkey",
    "remove-passkey",
    "regenerate-codes",
    "change-password",
)
TWO_FACTOR = {  # (requires_2fa, user_2fa_enabled, the requirement pending)
    "off": (False, False, False),
    "on-by-user": (False, True, False),
    "required": (True, False, False),
    "pending": (True, False, True),
    "pending-on-by-user": (True, True, True),
}


def two_factor_flags(two_factor: str, now: datetime) -> Flags:
    requires, enabled, pending = TWO_FACTOR[two_factor]
    start = now + timedelta(days=7) if pending else None
    return Flags(requires, enabled, requires_2fa_from=start)


CONFIRM = (403, "reauth-required")


def expected_reauth(action: str, recent: bool, passkeys: int, two_factor: str) -> Any:
    """Read from SPEC §4/§4.1/§7: refusals the rules make anyway come first (no ceremony for
    them), then "Confirm it's you" when the authentication is not recent."""
    requires, enabled, pending = TWO_FACTOR[two_factor]
    in_force = requires and not pending
    effective = in_force or enabled
    refusal: Any = None
    if action == "add-passkey" and passkeys >= 32:
        refusal = (409, "most")  # "At most 32 passkeys per user (a clear 409 beyond)"
    if action == "enable-with-new-passkey":
        if enabled:
            refusal = (409, "already on")
        elif in_force:  # rev 2 §4.1b: no enabling while a requirement is in force (§4.2:
            # during a grace period it is offered)
            refusal = (409, "already requires")
        elif passkeys >= 32:
            refusal = (409, "most")
    if action == "remove-passkey" and effective and passkeys <= 1:
        refusal = (409, "last passkey")
    if action == "regenerate-codes" and not effective:
        refusal = (409, "only used while two-factor authentication is on")
    if refusal:
        return refusal
    if action == "change-password" and passkeys == 0:
        return ALLOWED  # no passkey: the "Current password" field is the confirmation (§9)
    return ALLOWED if recent else CONFIRM


def actual_reauth(action: str, facts: Facts, passkeys: int, two_factor: str, now: datetime) -> Any:
    user = two_factor_flags(two_factor, now)
    decision = {
        "add-passkey": lambda: twofactor.can_add_passkey(facts, passkeys, now, 600),
        "enable-with-new-passkey": lambda: twofactor.can_enable_with_new_passkey(
            user, facts, passkeys, now, 600
        ),
        "remove-passkey": lambda: twofactor.can_remove_passkey_now(user, facts, passkeys, now, 600),
        "regenerate-codes": lambda: twofactor.can_regenerate_codes_now(user, facts, now, 600),
        "change-password": lambda: twofactor.can_change_password_now(facts, passkeys, now, 600),
    }[action]()
    if decision.allowed:
        return ALLOWED
    if decision.code:
        assert decision.message == twofactor.CONFIRM_FIRST
        return (decision.status, decision.code)
    return (decision.status, decision.message)


@pytest.mark.parametrize("two_factor", TWO_FACTOR)
@pytest.mark.parametrize("passkeys", [0, 1, 2, 31, 32])
@pytest.mark.parametrize("recent", [True, False], ids=["recent", "stale"])
@pytest.mark.parametrize("action", REAUTH_ACTIONS)
def test_recent_authentication_table(action, recent, passkeys, two_factor):
    now = utcnow()
    ago = timedelta(seconds=600 if recent else 601)
    facts = Facts("full", True, now - ago)
    want = expected_reauth(action, recent, passkeys, two_factor)
    got = actual_reauth(action, facts, passkeys, two_factor, now)
    assert same(got, want), f"expected {want!r}, the rules say {got!r}"
    # "with a passkey on the account, Verify with a passkey; with no passkey, Password"
    assert twofactor.confirm_method(passkeys) == ("passkey" if passkeys else "password")


@pytest.mark.parametrize("two_factor", TWO_FACTOR)
@pytest.mark.parametrize("passkeys", [1, 2, 32])
@pytest.mark.parametrize("recent", [True, False], ids=["recent", "stale"])
def test_removal_question_carries_the_confirmation_when_stale(recent, passkeys, two_factor):
    """Issue 13: the removal question is also "Confirm it's you" (one step) exactly when the
    removal would need it; never for a refused removal (the refusal shows in the row), and
    never with the password (the account has the passkey being removed)."""
    now = utcnow()
    facts = Facts("full", True, now - timedelta(seconds=600 if recent else 601))
    user = two_factor_flags(two_factor, now)
    combined = twofactor.removal_needs_confirmation(user, facts, passkeys, now, 600)
    assert combined is (expected_reauth("remove-passkey", recent, passkeys, two_factor) == CONFIRM)
    assert twofactor.confirm_method(passkeys) == "passkey"


@pytest.mark.parametrize(
    ("count", "locked_in", "may"),
    [(0, None, True), (4, None, True), (5, None, False), (0, 60, False), (0, -1, True)],
)
def test_a_password_is_checked_only_under_the_limit(count, locked_in, may):
    now = utcnow()
    until = None if locked_in is None else now + timedelta(seconds=locked_in)
    assert twofactor.may_check_password(count, until, now) is may


def test_the_lock_message_says_until_when():
    until = datetime(2026, 12, 1, 22, 19, 30)
    assert "Try again after 22:19 UTC" in twofactor.lock_message(until)


def test_amr_and_lockout_rules():
    now = utcnow()
    assert twofactor.amr_for_passkey(backup_eligible=False) == "hwk"
    assert twofactor.amr_for_passkey(backup_eligible=True) == "swk"
    assert twofactor.lock_after_failure(4, now) is None
    assert twofactor.lock_after_failure(5, now) == now + timedelta(minutes=15)
    assert twofactor.is_locked(now + timedelta(seconds=1), now)
    assert not twofactor.is_locked(now, now)
    assert not twofactor.is_locked(None, now)


# --------------------------------------------------------------------------------------
# The grace period of an administrator's requirement (SPEC §4.2, §9), with an injected clock
# --------------------------------------------------------------------------------------

GRACE_ENDS = datetime(2026, 12, 8, 14, 5, tzinfo=UTC)
SECOND = timedelta(seconds=1)
# requirement → (requires_2fa, requires_2fa_from, the clock)
REQUIREMENTS = {
    "none": (False, None, GRACE_ENDS),
    "at-once": (True, None, GRACE_ENDS),
    "pending-a-week": (True, GRACE_ENDS, GRACE_ENDS - timedelta(days=7)),
    "pending-1s-left": (True, GRACE_ENDS, GRACE_ENDS - SECOND),
    "boundary": (True, GRACE_ENDS, GRACE_ENDS),  # "in force when now ≥ requires_2fa_from"
    "passed": (True, GRACE_ENDS, GRACE_ENDS + SECOND),
    "naive-stored-date": (True, GRACE_ENDS.replace(tzinfo=None), GRACE_ENDS - SECOND),
}
GRACE_QUESTIONS = (
    "in-force",
    "pending",
    "effective",
    "status",
    "card-date",
    "notice",
    "enable-button",
    "disable",
    "remove-last-passkey",
    "password-sign-in",
    "aal1-session-meets-rules",
    "enroll-at-login",
    "demotion-reason",
)


def grace_expected(requirement: str, enabled: bool, passkeys: int, question: str) -> Any:
    """What SPEC §4.2 and §9 say, read from their text."""
    requires, start, _ = REQUIREMENTS[requirement]
    pending = requirement.startswith("pending") or requirement == "naive-stored-date"
    in_force = requires and not pending
    effective = enabled or in_force  # "effective2fa is false while … pending and … off"
    answers = {
        "in-force": in_force,
        "pending": pending,
        "effective": effective,
        # "the card says 'On' with the dated requirement when it is on"
        "status": (
            (
                "Required by your administrator (also turned on by you)"
                if enabled
                else "Required by your administrator"
            )
            if in_force
            else ("On" if enabled else "Off")
        ),
        # "Required by your administrator from <date>" (dates in words, time zone stated)
        "card-date": "Required by your administrator from 8 December 2026, 14:05 UTC"
        if pending
        else "",
        # "the notice shows only when the user's own flag is off"
        "notice": pending and not enabled,
        # "no button while a requirement is in force"; "during a grace period it is offered"
        "enable-button": not enabled and not in_force,
        # "A pending requirement already forbids turning 2FA off once it is on"
        "disable": (403, ADMIN_REQUIRES)
        if requires
        else (ALLOWED if enabled else (409, "already off")),
        "remove-last-passkey": (409, "last passkey") if effective and passkeys <= 1 else ALLOWED,
        "password-sign-in": "partial, /login/2fa" if effective else "full, aal1, pwd",
        "aal1-session-meets-rules": not effective,
        "enroll-at-login": effective and passkeys == 0,
        # issue 13 shows "Your administrator now requires two-factor authentication."
        "demotion-reason": "admin-required" if in_force else "",
    }
    return answers[question]


def grace_actual(user: Flags, passkeys: int, now: datetime, question: str) -> Any:
    aal1 = Facts("full", False)
    answers = {
        "in-force": lambda: twofactor.requirement_in_force(user, now),
        "pending": lambda: twofactor.requirement_pending(user, now),
        "effective": lambda: twofactor.effective(user, now),
        "status": lambda: twofactor.status_words(user, now),
        "card-date": lambda: twofactor.pending_words(user, now),
        "notice": lambda: twofactor.shows_requirement_notice(user, now),
        "enable-button": lambda: twofactor.shows_enable_button(user, now),
        "disable": lambda: decision_outcome(twofactor.can_disable(user)),
        "remove-last-passkey": lambda: decision_outcome(
            twofactor.can_remove_passkey(user, passkeys, now)
        ),
        "password-sign-in": lambda: (
            "partial, /login/2fa"
            if twofactor.password_sign_in_needs_second_factor(user, now)
            else "full, aal1, pwd"
        ),
        "aal1-session-meets-rules": lambda: twofactor.session_meets_rules(user, aal1, now),
        "enroll-at-login": lambda: twofactor.needs_enrollment_at_login(user, passkeys, now),
        "demotion-reason": lambda: twofactor.demotion_reason(user, now),
    }
    return answers[question]()


GRACE_CASES = [
    pytest.param(r, e, n, q, id=f"{r}-user{int(e)}-{n}pk-{q}")
    for r in REQUIREMENTS
    for e in (False, True)
    for n in (0, 1)
    for q in GRACE_QUESTIONS
]


@pytest.mark.parametrize(("requirement", "enabled", "passkeys", "question"), GRACE_CASES)
def test_grace_period_table(requirement: str, enabled: bool, passkeys: int, question: str):
    requires, start, now = REQUIREMENTS[requirement]
    user = Flags(requires, enabled, requires_2fa_from=start)
    want = grace_expected(requirement, enabled, passkeys, question)
    got = grace_actual(user, passkeys, now, question)
    assert same(got, want), f"expected {want!r}, the rules say {got!r}"


def test_effective_defaults_to_the_current_time():
    """`effective(user)` keeps its shape: without a clock it asks about now."""
    soon = Flags(True, False, requires_2fa_from=utcnow() + timedelta(minutes=5))
    past = Flags(True, False, requires_2fa_from=utcnow() - timedelta(seconds=1))
    assert not twofactor.effective(soon) and twofactor.requirement_pending(soon)
    assert twofactor.effective(past) and twofactor.requirement_in_force(past)
    assert twofactor.effective(Flags(True, False))  # no date: at once


@pytest.mark.parametrize(
    ("grace_days", "allowed"),
    [(-1, False), (0, True), (1, True), (7, True), (365, True), (366, False), (-(2**31), False)],
)
def test_grace_days_range(grace_days: int, allowed: bool):
    decision = twofactor.check_grace_days(grace_days)
    assert decision.allowed is allowed
    if not allowed:
        assert "between 0 and 365" in decision.message and str(grace_days) in decision.message


NOW = GRACE_ENDS - timedelta(days=3, microseconds=250)  # the new date is to the second


@pytest.mark.parametrize(
    ("requirement", "grace_days", "changes", "start"),
    [
        # a first requirement: at once, or now + N days
        ("none", 0, True, None),
        ("none", 7, True, GRACE_ENDS + timedelta(days=4, seconds=-1)),
        # a new require replaces a pending date (later or sooner, or at once)
        ("pending", 10, True, GRACE_ENDS + timedelta(days=7, seconds=-1)),
        ("pending", 1, True, GRACE_ENDS - timedelta(days=2, seconds=1)),
        ("pending", 0, True, None),
        # never moves a requirement already in force back to pending
        ("at-once", 7, False, None),
        ("passed", 7, False, NOW - SECOND),
        ("passed", 0, False, NOW - SECOND),
    ],
)
def test_new_requirement_start(requirement, grace_days, changes, start):
    stored = {
        "none": (False, None),
        "pending": (True, GRACE_ENDS),
        "at-once": (True, None),
        "passed": (True, NOW - SECOND),
    }[requirement]
    user = Flags(stored[0], False, requires_2fa_from=stored[1])
    assert twofactor.new_requirement_start(user, grace_days, NOW) == (changes, start)


@pytest.mark.parametrize(
    ("left", "enabled", "reminded", "due"),
    [
        (timedelta(days=3), False, False, False),  # too early
        (timedelta(days=1) + SECOND, False, False, False),
        (timedelta(days=1), False, False, True),  # "a day before"
        (timedelta(hours=23), False, False, True),  # (the job may run a little late)
        (SECOND, False, False, True),
        (timedelta(0), False, False, False),  # "unless … the date has passed"
        (-timedelta(hours=1), False, False, False),
        (timedelta(hours=12), True, False, False),  # "unless the user already has 2FA on"
        (timedelta(hours=12), False, True, False),  # "once"
    ],
)
def test_reminder_due(left, enabled, reminded, due):
    now = GRACE_ENDS - left
    user = Flags(
        True,
        enabled,
        requires_2fa_from=GRACE_ENDS,
        requirement_reminded_at=now if reminded else None,
    )
    assert twofactor.reminder_due(user, now) is due


def test_reminder_due_needs_a_dated_requirement():
    assert not twofactor.reminder_due(Flags(True, False), GRACE_ENDS)  # at once
    assert not twofactor.reminder_due(Flags(False, False, GRACE_ENDS), GRACE_ENDS - SECOND)


@pytest.mark.parametrize(
    ("grace", "wanted"),
    [
        (timedelta(days=1), False),
        (timedelta(hours=2), False),
        (timedelta(days=1, seconds=1), True),
        (timedelta(days=7), True),
    ],
)
def test_a_day_or_less_of_grace_needs_no_reminder(grace, wanted):
    assert twofactor.reminder_wanted(NOW + grace, NOW) is wanted
    assert not twofactor.reminder_wanted(None, NOW)


def test_dates_in_words_and_iso():
    assert twofactor.date_words(GRACE_ENDS) == "8 December 2026, 14:05 UTC"
    assert twofactor.iso_utc(GRACE_ENDS) == "2026-12-08T14:05:00Z"
    other_zone = GRACE_ENDS.astimezone(timezone(timedelta(hours=-5)))
    assert twofactor.date_words(other_zone) == "8 December 2026, 14:05 UTC"
    assert twofactor.iso_utc(other_zone.replace(microsecond=123)) == "2026-12-08T14:05:00Z"


# Enabling two-factor authentication
# --------------------------------------------------------------------------------------


def test_enable_with_existing_passkey(auth, client, database, make_client):
    auth.login()
    assert auth.add_passkey("Work key").status_code == 200
    other = make_client()
    other.page("/login")
    assert other.form("/login", {"username": "alice", "password": PASSWORD}).status_code == 303
    assert other.page("/account", follow_redirects=False).status_code == 200
    step = client.htmx("GET", "/account/two-factor/enable")
    assert step.status_code == 200
    assert "Verify with a passkey" in step.text
    assert "Add a new passkey instead" in step.text
    before = client.cookies.get(COOKIE)

    response = auth.enable_2fa()

    assert response.status_code == 200, response.text
    assert "Save your recovery codes" in response.text
    assert "I have saved these codes" in response.text and "Download" in response.text
    codes = codes_in(response.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", c) for c in codes)
    user = reload_user(database)
    assert user.user_2fa_enabled and user.user_2fa_enabled_at is not None
    stored = query(database, select(RecoveryCode))
    assert len(stored) == 10
    assert not {r.code_hash for r in stored} & set(codes)
    assert all(r.code_hash.startswith("$argon2id$") for r in stored)
    assert "2fa_enabled" in kinds(database)
    assert client.cookies.get(COOKIE) != before  # the assertion upgrades: new token
    session = my_session(database, client)
    assert session.mfa_verified and session.acr == "aal2" and session.amr == ["pwd", "hwk"]
    # the user's other sessions are signed out
    assert len(query(database, select(AuthSession))) == 1
    assert other.page("/account", follow_redirects=False).headers["location"] == "/login"
    card = client.htmx("GET", "/account/two-factor")
    assert "data-2fa-status>On<" in card.text
    assert "Disable two-factor authentication" in card.text


def test_enable_with_new_passkey(auth, client, authn, database):
    auth.login()
    step = client.htmx("GET", "/account/two-factor/enable")
    assert "Register passkey and turn on" in step.text
    assert "Passkey name" in step.text
    options = client.json_post(
        "/account/two-factor/enable/start", {"mode": "new", "name": "Laptop"}
    )
    assert options.status_code == 200, options.text
    credential = authn.register(options.json())

    response = client.json_post("/account/two-factor/enable/finish", {"credential": credential})

    assert response.status_code == 200, response.text
    assert len(codes_in(response.text)) == 10
    assert [p.name for p in query(database, select(Passkey))] == ["Laptop"]
    assert reload_user(database).user_2fa_enabled
    assert kinds(database)[-2:] == ["passkey_added", "2fa_enabled"]


def test_required_passkey_holder_gets_codes_once_and_no_enable(auth, client, database, admin):
    """SPEC §4.1b (rev 2): an administrator requires 2FA of a passkey holder: /login/2fa
    says why, the finish creates 10 codes and shows them once; no "Enable" while required,
    and enabling can't replace the codes (409, nothing changes)."""
    auth.login()
    auth.add_passkey("Work key")
    set_required(admin, True)
    assert client.page("/account", follow_redirects=False).headers["location"] == "/login/2fa"
    explained = client.page("/login/2fa")
    assert "Your administrator now requires two-factor authentication." in explained.text
    credential = auth.assertion("/login/2fa/passkey/start")

    done = client.json_post("/login/2fa/passkey/finish", {"credential": credential})

    assert done.status_code == 200 and "hx-redirect" not in done.headers
    assert "Save your recovery codes" in done.text
    codes = codes_in(done.text)
    assert len(codes) == 10 and unused_codes(database) == 10
    assert "recovery_codes_created" in kinds(database)
    # shown once: the next sign-in doesn't create (or show) others
    assert my_session(database, client).state == "full"
    card = client.htmx("GET", "/account/two-factor")
    assert "data-2fa-status>Required by your administrator<" in card.text
    # SPEC rev 2 §4.1b: no "Enable" while a requirement is in force, and the step refuses
    # it (enrolling again would only replace the codes the user saved)
    assert "Enable two-factor authentication" not in card.text
    assert "Disable two-factor authentication" not in card.text
    section = client.htmx("GET", "/account/recovery-codes")
    assert "10 of 10 recovery codes remain" in section.text
    hashes = {r.code_hash for r in query(database, select(RecoveryCode))}
    step = client.htmx("GET", "/account/two-factor/enable")
    assert step.status_code == 409
    assert twofactor.ALREADY_REQUIRED in step.text and 'id="two-factor"' in step.text
    refused = client.json_post("/account/two-factor/enable/start", {"mode": "existing"})
    assert refused.status_code == 409
    assert refused.json() == {"detail": twofactor.ALREADY_REQUIRED}
    assert {r.code_hash for r in query(database, select(RecoveryCode))} == hashes
    assert not reload_user(database).user_2fa_enabled
    # the saved codes keep working
    sign_in_partial(auth)
    used = client.form("/login/2fa/recovery", {"code": codes[0]})
    assert used.status_code == 303 and used.headers["location"] == "/account"
    assert unused_codes(database) == 9


def test_sign_in_without_codes_creates_them_only_once(auth, client, database, admin):
    """A passkey sign-in (the login page's) also creates the missing codes; all codes used
    is not "none": the section offers "Create recovery codes" instead."""
    auth.login()
    auth.add_passkey("Work key")
    set_required(admin, True)
    auth.logout()
    client.page("/login")
    credential = auth.assertion("/login/passkey/start")
    first = client.json_post("/login/passkey/finish", {"credential": credential})
    assert first.status_code == 200 and len(codes_in(first.text)) == 10
    auth.logout()
    client.page("/login")
    credential = auth.assertion("/login/passkey/start")
    second = client.json_post("/login/passkey/finish", {"credential": credential})
    assert second.status_code == 200 and second.headers["hx-redirect"] == "/account"
    assert kinds(database).count("recovery_codes_created") == 1
    with database.session() as db:
        db.exec(update(RecoveryCode).values(used_at=utcnow()))
        db.commit()
    section = client.htmx("GET", "/account/recovery-codes")
    assert "You've used all your recovery codes" in section.text
    assert "Create recovery codes" in section.text and " of 10 " not in section.text
    created = client.htmx("POST", "/account/recovery-codes/regenerate", data={"confirmed": "yes"})
    assert created.status_code == 200 and len(codes_in(created.text)) == 10


def test_no_codes_yet_section(auth, client, database, admin):
    auth.login()
    auth.add_passkey("Work key")
    set_enabled(admin, True)  # on without codes (an administrator's override)
    with database.session() as db:  # the sign-in that would create them hasn't happened
        db.exec(update(AuthSession).values(mfa_verified=True, state="full"))
        db.commit()
    section = client.htmx("GET", "/account/recovery-codes")
    assert "You don't have recovery codes yet" in section.text
    assert "Create recovery codes" in section.text
    assert "0 of 10" not in section.text and "Only 0" not in section.text


def test_enable_when_already_on_is_409(auth, client, authn, database, admin):
    enabled_with_passkey(auth)
    assert client.htmx("GET", "/account/two-factor/enable").status_code == 409
    for body in ({"mode": "existing"}, {"mode": "new", "name": "Another"}):
        refused = client.json_post("/account/two-factor/enable/start", body)
        assert refused.status_code == 409
        assert refused.json() == {"detail": "Two-factor authentication is already on."}
    # A ceremony started while off, finished after an administrator turned it on: 409 too.
    set_enabled(admin, False)
    options = client.json_post("/account/two-factor/enable/start", {"mode": "existing"})
    assert options.status_code == 200
    credential = authn.authenticate(options.json())
    set_enabled(admin, True)
    codes_before = {r.code_hash for r in query(database, select(RecoveryCode))}
    refused = client.json_post("/account/two-factor/enable/finish", {"credential": credential})
    assert refused.status_code == 409
    assert refused.json()["detail"] == "Two-factor authentication is already on."
    assert {r.code_hash for r in query(database, select(RecoveryCode))} == codes_before
    assert kinds(database)[-3:] == ["2fa_enabled", "2fa_disabled", "2fa_enabled"]


def test_enable_refusals(auth, client, authn, database, make_client):
    stranger = make_client()
    stranger.page("/login")
    signed_out = stranger.json_post("/account/two-factor/enable/start", {"mode": "existing"})
    assert signed_out.status_code == 401 and signed_out.json()["redirect"] == "/login"
    auth.login()
    no_passkey = client.json_post("/account/two-factor/enable/start", {"mode": "existing"})
    assert no_passkey.status_code == 409
    assert no_passkey.json() == {"detail": "You have no passkey yet. Register one instead."}
    for name in ("", "   ", "x" * 65, None, 42):
        bad_name = client.json_post(
            "/account/two-factor/enable/start", {"mode": "new", "name": name}
        )
        assert bad_name.status_code == 422, name
        assert bad_name.json()["detail"]
    not_json = client.json_post("/account/two-factor/enable/start", b"mode=new")
    assert not_json.status_code == 400
    no_credential = client.json_post("/account/two-factor/enable/finish", {"name": "x"})
    assert no_credential.status_code == 400
    assert query(database, select(WebAuthnChallenge)) == []
    assert query(database, select(Passkey)) == []
    assert not reload_user(database).user_2fa_enabled


def test_enable_with_failed_ceremony_changes_nothing(auth, client, authn, database):
    auth.login()
    auth.add_passkey("Work key")
    options = client.json_post("/account/two-factor/enable/start", {"mode": "existing"})
    credential = authn.authenticate(options.json(), signature=b"\x30\x06\x02\x01\x01\x02\x01\x01")
    refused = client.json_post("/account/two-factor/enable/finish", {"credential": credential})
    assert refused.status_code == 400
    assert refused.json()["detail"]
    assert not reload_user(database).user_2fa_enabled
    assert query(database, select(RecoveryCode)) == []
    assert "2fa_enabled" not in kinds(database)
    # the challenge is used up: a good response to it is refused now
    retry = authn.authenticate(options.json())
    assert (
        client.json_post("/account/two-factor/enable/finish", {"credential": retry}).status_code
        == 400
    )
    assert not reload_user(database).user_2fa_enabled


# --------------------------------------------------------------------------------------
# Disabling two-factor authentication
# --------------------------------------------------------------------------------------


def test_disable_success(auth, client, database):
    enabled_with_passkey(auth)
    step = client.htmx("GET", "/account/two-factor/disable")
    assert step.status_code == 200
    assert "Verify with a passkey" in step.text and "Cancel" in step.text
    credential = auth.assertion("/account/two-factor/disable/start")

    response = client.json_post("/account/two-factor/disable/finish", {"credential": credential})

    assert response.status_code == 200, response.text
    assert "data-2fa-status>Off<" in response.text
    assert "Two-factor authentication is off." in response.text
    user = reload_user(database)
    assert not user.user_2fa_enabled and user.user_2fa_enabled_at is None
    assert query(database, select(RecoveryCode)) == []
    assert kinds(database)[-1] == "2fa_disabled"
    assert len(query(database, select(Passkey))) == 1  # passkeys stay


def test_disable_while_required_is_403_even_with_a_valid_assertion(
    auth, client, authn, database, admin
):
    enabled_with_passkey(auth)
    options = client.json_post("/account/two-factor/disable/start", {})
    assert options.status_code == 200
    credential = authn.authenticate(options.json())
    set_required(admin, True)
    events_before = kinds(database)

    refused = client.json_post("/account/two-factor/disable/finish", {"credential": credential})

    assert refused.status_code == 403
    assert refused.json() == {"detail": ADMIN_REQUIRES}
    user = reload_user(database)
    assert user.requires_2fa and user.user_2fa_enabled
    assert unused_codes(database) == 10
    assert kinds(database) == events_before
    card = client.htmx("GET", "/account/two-factor")
    assert "Disable two-factor authentication" not in card.text


DISABLE_REQUESTS = [
    ("/account/two-factor/disable/finish", "json", b"this is not json"),
    ("/account/two-factor/disable/finish", "json", b'{"credential": 42}'),
    ("/account/two-factor/disable/finish", "json", b"{}"),
    ("/account/two-factor/disable/finish", "json", b'{"credential": {"id": "AAAA"}}'),
    ("/account/two-factor/disable/start", "json", b"[1, 2, 3]"),
    ("/account/two-factor/disable/start", "json", b"{}"),
    ("/account/two-factor/disable", "GET", b""),
]


def test_disable_while_required_is_403_whatever_the_body(auth, client, database, admin):
    auth.login()
    auth.add_passkey("Work key")
    set_required(admin, True)
    # the session is sent to the second factor first; then the refusal
    client.page("/login/2fa")
    assertion = auth.assertion("/login/2fa/passkey/start")
    assert (
        client.json_post("/login/2fa/passkey/finish", {"credential": assertion}).status_code == 200
    )
    client.page("/account")
    for url, method, body in DISABLE_REQUESTS:
        if method == "GET":
            refused = client.htmx("GET", url)
            assert refused.text == ADMIN_REQUIRES
        else:
            refused = client.json_post(url, body)
            assert refused.json() == {"detail": ADMIN_REQUIRES}, (url, body)
        assert refused.status_code == 403
    user = reload_user(database)
    assert user.requires_2fa and not user.user_2fa_enabled
    assert (
        query(database, select(WebAuthnChallenge).where(WebAuthnChallenge.purpose == "disable-2fa"))
        == []
    )


def test_disable_when_off_is_409(auth, client, database):
    auth.login()
    auth.add_passkey("Work key")
    assert client.htmx("GET", "/account/two-factor/disable").status_code == 409
    start = client.json_post("/account/two-factor/disable/start", {})
    assert start.status_code == 409
    assert start.json() == {"detail": "Two-factor authentication is already off."}
    finish = client.json_post("/account/two-factor/disable/finish", b"garbage")
    assert finish.status_code == 409
    assert (
        query(database, select(WebAuthnChallenge).where(WebAuthnChallenge.purpose == "disable-2fa"))
        == []
    )
    assert "2fa_disabled" not in kinds(database)


def test_disable_needs_the_disable_purpose(auth, client, database):
    """A passkey assertion made for another purpose does not turn 2FA off."""
    enabled_with_passkey(auth)
    move_step_up(database, None)
    credential = auth.assertion("/account/recovery-codes/start")
    refused = client.json_post("/account/two-factor/disable/finish", {"credential": credential})
    assert refused.status_code == 400
    assert reload_user(database).user_2fa_enabled
    assert unused_codes(database) == 10


# --------------------------------------------------------------------------------------
# Last-passkey guard and step-up
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["user", "admin-required"])
@pytest.mark.parametrize("step_up", ["fresh", "stale"])
def test_last_passkey_guard_refuses_before_any_ceremony(
    auth, client, database, admin, how, step_up
):
    if how == "user":
        enabled_with_passkey(auth)
    else:
        auth.login()
        auth.add_passkey("Work key")
        set_required(admin, True)
        client.page("/login/2fa")
        assertion = auth.assertion("/login/2fa/passkey/start")
        assert (
            client.json_post("/login/2fa/passkey/finish", {"credential": assertion}).status_code
            == 200
        )
        client.page("/account")
    move_step_up(database, 1 if step_up == "fresh" else 30)
    [passkey] = query(database, select(Passkey))
    challenges_before = len(query(database, select(WebAuthnChallenge)))

    plain = client.form(f"/account/passkeys/{passkey.id}/remove")
    htmx = client.htmx("POST", f"/account/passkeys/{passkey.id}/remove")
    start = client.json_post(f"/account/passkeys/{passkey.id}/remove/start", {})
    confirm = client.htmx("GET", f"/account/passkeys/{passkey.id}/remove")

    for response in (plain, htmx, start, confirm):
        assert response.status_code == 409
    assert twofactor.LAST_PASSKEY in html.unescape(plain.text) and 'role="alert"' in plain.text
    # SPEC §9 (rev 2): a 409 answers the section as it is now, the refusal in the row
    for answer in (htmx, confirm):
        text = html.unescape(answer.text)
        assert answer.text.lstrip().startswith('<section id="passkeys"'), answer.text[:80]
        row = text[text.index(f'id="passkey-{passkey.id}"') :]
        assert twofactor.LAST_PASSKEY in row[: row.index("</li>")]
    assert start.json() == {"detail": twofactor.LAST_PASSKEY}
    assert "last passkey" in twofactor.LAST_PASSKEY
    assert len(query(database, select(Passkey))) == 1
    assert len(query(database, select(WebAuthnChallenge))) == challenges_before
    assert "passkey_removed" not in kinds(database)


def test_remove_with_two_passkeys_and_2fa_on(auth, client, database):
    enabled_with_passkey(auth)
    add_key(auth, "Spare key")
    spare = query(database, select(Passkey).where(Passkey.name == "Spare key"))[0]
    # the enrollment assertion was a step-up a moment ago: removal goes straight through
    response = client.htmx("POST", f"/account/passkeys/{spare.id}/remove")
    assert response.status_code == 200
    assert "Passkey removed." in response.text
    assert [p.name for p in query(database, select(Passkey))] == ["Work key"]


def test_remove_needs_step_up_then_allows(auth, client, authn, database):
    auth.login()
    for name in ("First", "Second", "Third"):
        add_key(auth, name)
    first, second, third = query(database, select(Passkey).order_by(Passkey.id))
    move_step_up(database, 30)  # the password sign-in was recent; now it is not

    # the question went stale before its "Remove passkey" was pressed: the combined step
    prompt = client.htmx("POST", f"/account/passkeys/{first.id}/remove")

    assert prompt.status_code == 200
    assert "Remove “First”? You won't be able to sign in with it any more." in html.unescape(
        prompt.text
    )
    assert f'data-start="/account/passkeys/{first.id}/remove/start"' in prompt.text
    assert len(query(database, select(Passkey))) == 3
    # the plain form (no JavaScript) gets the same step, as a whole page
    page = client.form(f"/account/passkeys/{first.id}/remove")
    assert page.status_code == 200 and "<html" in page.text and "Verify with a passkey" in page.text

    before = client.cookies.get(COOKIE)
    credential = auth.assertion(
        f"/account/passkeys/{first.id}/remove/start", {}, credential_id=second.credential_id
    )
    removed = client.json_post("/account/passkeys/remove/finish", {"credential": credential})
    assert removed.status_code == 200, removed.text
    assert "Passkey removed." in removed.text
    assert client.cookies.get(COOKIE) != before
    assert [p.name for p in query(database, select(Passkey).order_by(Passkey.id))] == [
        "Second",
        "Third",
    ]
    assert my_session(database, client).reauth_at is not None

    # within 10 minutes of that assertion: no second prompt
    direct = client.htmx("POST", f"/account/passkeys/{third.id}/remove")
    assert direct.status_code == 200 and "Passkey removed." in direct.text
    assert [p.name for p in query(database, select(Passkey))] == ["Second"]


def test_stale_removal_question_is_one_combined_step(auth, client, database):
    """Issue 13: with no recent authentication the removal question itself carries
    "Confirm it's you" (no second step); its assertion removes the passkey."""
    auth.login()
    add_key(auth, "First")
    add_key(auth, "Second")
    first, second = query(database, select(Passkey).order_by(Passkey.id))
    move_step_up(database, 30)

    question = client.htmx("GET", f"/account/passkeys/{first.id}/remove")

    assert question.status_code == 200
    text = html.unescape(question.text)
    row = text[text.index(f'id="passkey-{first.id}"') :]
    row = row[: row.index("</li>")]
    assert "<h3" in row and "Confirm it's you</h3>" in row
    assert "Remove “First”? You won't be able to sign in with it any more." in row
    assert "Verify with a passkey" in row and "and remove “First”" in row
    assert f'data-start="/account/passkeys/{first.id}/remove/start"' in row
    assert 'data-finish="/account/passkeys/remove/finish"' in row
    assert ">Cancel</a>" in row
    # no second step: no "Remove passkey" button posting the question, no password field
    assert "Remove passkey</button>" not in text
    assert f'action="/account/passkeys/{first.id}/remove"' not in text
    assert 'type="password"' not in text
    assert len(query(database, select(Passkey))) == 2

    # a plain request gets the same step, as a whole page
    page = client.get(f"/account/passkeys/{first.id}/remove")
    assert page.status_code == 200 and "<html" in page.text
    assert "Verify with a passkey" in page.text and "Remove passkey</button>" not in page.text

    credential = auth.assertion(
        f"/account/passkeys/{first.id}/remove/start", {}, credential_id=second.credential_id
    )
    removed = client.json_post("/account/passkeys/remove/finish", {"credential": credential})
    assert removed.status_code == 200, removed.text
    assert "Passkey removed." in removed.text
    assert [p.name for p in query(database, select(Passkey))] == ["Second"]
    assert kinds(database).count("passkey_removed") == 1


def test_recent_removal_question_stays_one_click(auth, client, database):
    """A recent session gets the plain question: "Remove passkey" removes at once."""
    auth.login()
    add_key(auth, "First")
    add_key(auth, "Second")
    first = query(database, select(Passkey).where(Passkey.name == "First"))[0]
    question = client.htmx("GET", f"/account/passkeys/{first.id}/remove")
    assert question.status_code == 200
    assert "Remove passkey</button>" in question.text
    assert "Confirm it's you" not in question.text
    done = client.htmx("POST", f"/account/passkeys/{first.id}/remove")
    assert "Passkey removed." in done.text
    assert [p.name for p in query(database, select(Passkey))] == ["Second"]


def test_remove_step_up_expires_after_10_minutes(auth, client, database):
    auth.login()
    add_key(auth, "First")
    add_key(auth, "Second")
    first = query(database, select(Passkey).where(Passkey.name == "First"))[0]
    move_step_up(database, 11)
    prompt = client.htmx("POST", f"/account/passkeys/{first.id}/remove")
    assert "Confirm it's you" in prompt.text
    assert len(query(database, select(Passkey))) == 2
    move_step_up(database, 9)
    done = client.htmx("POST", f"/account/passkeys/{first.id}/remove")
    assert "Passkey removed." in done.text
    assert len(query(database, select(Passkey))) == 1


def test_regenerate_asks_first(auth, client, database):
    """SPEC §4.1b/§9 (rev 2): the question first; only its answer replaces the codes."""
    codes = enabled_with_passkey(auth)
    card = client.htmx("GET", "/account/recovery-codes")
    assert "Regenerate recovery codes" in card.text and 'method="post"' not in card.text
    hashes = {r.code_hash for r in query(database, select(RecoveryCode))}
    question = client.htmx(
        "GET", f"/account/recovery-codes/regenerate?codes_version={version_in(card.text)}"
    )
    assert question.status_code == 200
    assert "Your current codes will stop working." in question.text
    assert "Regenerate recovery codes" in question.text and "Cancel" in question.text
    assert "data-open" in question.text  # background refreshes leave it alone
    # a post that is not the answer to the question asks it again; nothing changes
    unasked = client.htmx("POST", "/account/recovery-codes/regenerate")
    assert "Your current codes will stop working." in unasked.text
    assert {r.code_hash for r in query(database, select(RecoveryCode))} == hashes
    # no-JS: the same question as a whole page
    plain = client.get(f"/account/recovery-codes/regenerate?codes_version={version_in(card.text)}")
    assert plain.status_code == 200 and "<h1>Account security</h1>" in plain.text
    assert "Your current codes will stop working." in plain.text

    answer = {"codes_version": version_in(question.text), "confirmed": "yes"}
    done = client.htmx("POST", "/account/recovery-codes/regenerate", data=answer)

    assert done.status_code == 200 and done.headers["hx-trigger"] == "refresh-activity"
    new = codes_in(done.text)
    assert len(new) == 10 and not set(new) & set(codes)
    assert "data-open" in done.text
    # the same answer again (a second click, a second tab): 409, the current state, no change
    hashes = {r.code_hash for r in query(database, select(RecoveryCode))}
    again = client.htmx("POST", "/account/recovery-codes/regenerate", data=answer)
    assert again.status_code == 409
    assert "changed in another window" in html.unescape(again.text)
    assert "10 of 10 recovery codes remain" in again.text
    assert codes_in(again.text) == []
    assert {r.code_hash for r in query(database, select(RecoveryCode))} == hashes
    stale = client.htmx(
        "GET", f"/account/recovery-codes/regenerate?codes_version={answer['codes_version']}"
    )
    assert stale.status_code == 409 and "Your current codes will stop working." not in stale.text
    assert kinds(database).count("recovery_codes_regenerated") == 1


def test_regenerate_codes_step_up(auth, client, database):
    codes = enabled_with_passkey(auth)
    # right after enrollment (a passkey assertion): allowed at once, once asked
    fresh = client.htmx("POST", "/account/recovery-codes/regenerate", data={"confirmed": "yes"})
    assert fresh.status_code == 200
    regenerated = codes_in(fresh.text)
    assert len(regenerated) == 10 and not set(regenerated) & set(codes)

    # a new sign-in with password and recovery code: no passkey assertion in this session
    sign_in_partial(auth)
    used = client.form("/login/2fa/recovery", {"code": regenerated[0]})
    assert used.status_code == 303 and used.headers["location"] == "/account"
    client.page("/account")
    move_step_up(database, 30)  # a recovery-code sign-in is recent (§4.1); 30 minutes on
    hashes = {r.code_hash for r in query(database, select(RecoveryCode))}

    prompt = client.htmx("POST", "/account/recovery-codes/regenerate", data={"confirmed": "yes"})

    assert prompt.status_code == 200
    assert "Confirm it's you with one of your passkeys" in html.unescape(prompt.text)
    assert codes_in(prompt.text) == []
    assert {r.code_hash for r in query(database, select(RecoveryCode))} == hashes

    credential = auth.assertion("/account/recovery-codes/start")
    done = client.json_post("/account/recovery-codes/finish", {"credential": credential})
    assert done.status_code == 200, done.text
    newest = codes_in(done.text)
    assert len(newest) == 10
    assert unused_codes(database) == 10
    assert kinds(database).count("recovery_codes_regenerated") == 2

    move_step_up(database, 11)
    again = client.htmx("POST", "/account/recovery-codes/regenerate", data={"confirmed": "yes"})
    assert "Confirm it's you" in again.text and codes_in(again.text) == []
    # a step-up begun on a page showing older codes: refused before any ceremony
    stale = client.json_post("/account/recovery-codes/start", {"codes_version": "1"})
    assert stale.status_code == 409 and "another window" in stale.json()["detail"]
    current = version_in(client.htmx("GET", "/account/recovery-codes").text)
    credential = auth.assertion("/account/recovery-codes/start", {"codes_version": current})
    with database.session() as db:  # meanwhile, another tab regenerates
        db.exec(update(RecoveryCode).values(code_hash=RecoveryCode.code_hash + "x"))
        db.commit()
    late = client.json_post("/account/recovery-codes/finish", {"credential": credential})
    assert late.status_code == 409 and unused_codes(database) == 10


def test_regenerate_refused_when_2fa_off(auth, client, database):
    auth.login()
    auth.add_passkey("Work key")
    assert client.htmx("POST", "/account/recovery-codes/regenerate").status_code == 409
    refused = client.json_post("/account/recovery-codes/start", {})
    assert refused.status_code == 409 and refused.json()["detail"] == twofactor.NO_CODES
    assert query(database, select(RecoveryCode)) == []
    started = select(WebAuthnChallenge).where(WebAuthnChallenge.purpose == "recovery-codes")
    assert query(database, started) == []  # refused before any ceremony


# --------------------------------------------------------------------------------------
# A partial session reaches only /login/2fa
# --------------------------------------------------------------------------------------


def test_partial_session_is_locked_to_login_2fa(auth, client, database):
    enabled_with_passkey(auth)
    sign_in_partial(auth)
    session = my_session(database, client)
    assert session.state == "partial" and session.amr == ["pwd"] and not session.mfa_verified
    challenges_before = len(query(database, select(WebAuthnChallenge)))

    for url in ("/account", "/account/passkeys", "/account/two-factor/enable", "/"):
        response = client.get(url, follow_redirects=url == "/")
        if url == "/":
            assert str(response.url).endswith("/login/2fa")
        else:
            assert response.status_code == 303, url
            assert response.headers["location"] == "/login/2fa"
    for url in (
        "/account/passkeys/start",
        "/account/two-factor/disable/start",
        "/account/two-factor/disable/finish",
        "/account/recovery-codes/start",
    ):
        refused = client.json_post(url, {"name": "x"})
        assert refused.status_code == 401, url
        assert refused.json()["redirect"] == "/login/2fa"
        assert refused.json()["detail"]
    hx = client.htmx("GET", "/account/two-factor")
    assert hx.status_code == 200 and hx.headers["hx-redirect"] == "/login/2fa"
    hx_post = client.htmx("POST", "/account/sessions/revoke-others")
    assert hx_post.headers["hx-redirect"] == "/login/2fa"
    plain = client.form("/account/recovery-codes/regenerate")
    assert plain.status_code == 303 and plain.headers["location"] == "/login/2fa"
    assert unused_codes(database) == 10
    assert len(query(database, select(WebAuthnChallenge))) == challenges_before
    # and the step itself is reachable
    page = client.page("/login/2fa")
    assert page.status_code == 200 and "Verify with a passkey" in page.text
    assert "Use a recovery code" in page.text


def test_admin_requires_2fa_mid_session(auth, client, database, admin):
    auth.login()
    auth.add_passkey("Work key")
    assert client.page("/account").status_code == 200
    assert my_session(database, client).acr == "aal1"

    set_required(admin, True)

    response = client.get("/account", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login/2fa"
    assert my_session(database, client).state == "partial"
    assert client.json_post("/account/passkeys/start", {"name": "x"}).status_code == 401
    page = client.page("/login/2fa")
    assert "Verify with a passkey" in page.text
    before = client.cookies.get(COOKIE)
    credential = auth.assertion("/login/2fa/passkey/start")
    done = client.json_post("/login/2fa/passkey/finish", {"credential": credential})
    # rev 2 (§4.1b): 2FA came on without codes: this finish creates them and shows them once
    assert done.status_code == 200 and len(codes_in(done.text)) == 10
    assert 'href="/account">I have saved these codes' in done.text
    assert client.cookies.get(COOKIE) != before
    session = my_session(database, client)
    assert session.state == "full" and session.acr == "aal2" and session.mfa_verified
    assert client.page("/account", follow_redirects=False).status_code == 200
    assert reload_user(database).user_2fa_enabled is False  # the user's own flag untouched


def test_admin_requires_2fa_without_passkey_enrolls_at_login(auth, client, authn, database, admin):
    auth.login()
    set_required(admin, True)
    assert client.get("/account", follow_redirects=False).headers["location"] == "/login/2fa"
    page = client.page("/login/2fa")
    # a demoted session enters its password first (security review of issue 9)
    assert client.json_post("/login/2fa/enroll/start", {"name": "Phone"}).status_code == 403
    assert client.form("/login/2fa/password", {"password": PASSWORD}).status_code == 303
    page = client.page("/login/2fa")
    assert "Register passkey and sign in" in page.text and "Passkey name" in page.text
    assert client.json_post("/login/2fa/passkey/start", {}).status_code == 409
    options = client.json_post("/login/2fa/enroll/start", {"name": "Phone"})
    assert options.status_code == 200, options.text
    credential = authn.register(options.json())

    done = client.json_post("/login/2fa/enroll/finish", {"credential": credential, "name": "Phone"})

    assert done.status_code == 200, done.text
    assert len(codes_in(done.text)) == 10
    session = my_session(database, client)
    assert session.state == "full" and session.acr == "aal2" and session.amr == ["pwd", "hwk"]
    assert [p.name for p in query(database, select(Passkey))] == ["Phone"]
    assert client.page("/account", follow_redirects=False).status_code == 200


def test_admin_turning_2fa_off_applies_from_the_next_sign_in(auth, client, database, admin):
    enabled_with_passkey(auth)
    sign_in_partial(auth)
    set_enabled(admin, False)
    # The partial session still waits for its second factor (it was a password only).
    assert client.get("/account", follow_redirects=False).headers["location"] == "/login/2fa"
    auth.logout()
    auth.login()
    assert my_session(database, client).state == "full"
    assert client.page("/account", follow_redirects=False).status_code == 200


# --------------------------------------------------------------------------------------
# Failed second factors and recovery codes
# --------------------------------------------------------------------------------------


def test_five_failed_second_factors_end_the_partial_session(auth, client, authn, database):
    codes = enabled_with_passkey(auth)
    sign_in_partial(auth)
    [passkey] = query(database, select(Passkey))
    for _ in range(2):  # two failed passkey assertions …
        options = client.json_post("/login/2fa/passkey/start", {})
        bad = authn.authenticate(options.json(), signature=b"\x30\x06\x02\x01\x01\x02\x01\x01")
        assert client.json_post("/login/2fa/passkey/finish", {"credential": bad}).status_code == 400
    for _ in range(2):  # … and two wrong codes
        wrong = client.form("/login/2fa/recovery", {"code": "AAAA-BBBB-CCCC"})
        assert wrong.status_code == 422
        assert "That recovery code is not valid or was already used." in wrong.text
    assert my_session(database, client).state == "partial"

    fifth = client.form("/login/2fa/recovery", {"code": "AAAA-BBBB-CCCC"})

    assert fifth.status_code == 401
    assert "Too many failed attempts" in fifth.text
    assert query(database, select(AuthSession)) == []
    assert client.get("/login/2fa", follow_redirects=False).headers["location"] == "/login"
    # a valid code no longer helps this browser
    client.page("/login")
    late = client.form("/login/2fa/recovery", {"code": codes[0]})
    assert late.status_code == 303 and late.headers["location"] == "/login"
    assert unused_codes(database) == 10
    # the account is locked for a while, not for ever
    user = reload_user(database)
    assert user.locked_until is not None
    assert timedelta(minutes=14) < user.locked_until - utcnow() <= timedelta(minutes=15)
    locked = client.form("/login", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert passkey.sign_count == query(database, select(Passkey))[0].sign_count


def test_failed_second_factors_are_not_forgiven_by_signing_in_again(auth, client, database):
    """Four wrong codes, a new password sign-in, one more wrong code: that is five."""
    enabled_with_passkey(auth)
    sign_in_partial(auth)
    for _ in range(4):
        assert client.form("/login/2fa/recovery", {"code": "AAAA-BBBB-CCCC"}).status_code == 422
    sign_in_partial(auth)
    fifth = client.form("/login/2fa/recovery", {"code": "AAAA-BBBB-CCCC"})
    assert fifth.status_code == 401
    assert query(database, select(AuthSession)) == []


def test_recovery_code_sign_in(auth, client, database):
    codes = enabled_with_passkey(auth)
    sign_in_partial(auth)
    partial_token = client.cookies.get(COOKIE)

    response = client.form("/login/2fa/recovery", {"code": codes[3]})

    assert response.status_code == 303 and response.headers["location"] == "/account"
    token = client.cookies.get(COOKIE)
    assert token and token != partial_token
    session = my_session(database, client)
    assert session.state == "full"
    assert session.amr == ["pwd", "otp"]
    assert session.acr == "aal2" and session.mfa_verified
    # a recovery-code sign-in is recent authentication (§4.1: how a person who lost their
    # passkeys adds a new one)
    assert session.reauth_at == session.auth_time
    page = client.page("/account")
    assert page.status_code == 200
    assert "9 of 10 recovery codes remain" in page.text
    assert "Recovery code used — 9 left" in page.text
    assert unused_codes(database) == 9
    # the partial session's token is dead
    stale = TestClient(app=client.app, base_url="http://localhost:8000")
    stale.cookies.set(COOKIE, partial_token)
    assert stale.get("/account", follow_redirects=False).headers["location"] == "/login"


def test_recovery_code_reuse_and_wrong_code_refused(auth, client, database):
    codes = enabled_with_passkey(auth)
    sign_in_partial(auth)
    assert client.form("/login/2fa/recovery", {"code": codes[0]}).status_code == 303
    sign_in_partial(auth)

    reused = client.form("/login/2fa/recovery", {"code": codes[0]})
    wrong = client.form("/login/2fa/recovery", {"code": "ABCD-EFGH-JKMN"})
    garbage = client.form("/login/2fa/recovery", {"code": "<script>x</script>"})
    empty = client.form("/login/2fa/recovery", {"code": ""})

    for refused in (reused, wrong, garbage, empty):
        assert refused.status_code == 422
        assert "That recovery code is not valid or was already used." in refused.text
        assert 'role="alert"' in refused.text
    assert "<script>x</script>" not in garbage.text
    assert my_session(database, client).state == "partial"
    assert unused_codes(database) == 9
    assert reload_user(database).failed_login_count == 4
    # a right code still works after wrong ones, and resets the count
    assert client.form("/login/2fa/recovery", {"code": codes[1]}).status_code == 303
    assert reload_user(database).failed_login_count == 0


def test_recovery_code_entry_ignores_case_spaces_and_hyphens(auth, client, database):
    codes = enabled_with_passkey(auth)
    variants = [
        lambda c: c.lower(),
        lambda c: c.replace("-", ""),
        lambda c: c.replace("-", " "),
        lambda c: f"  {c[:2]} {c[2:].lower()}  ",
        lambda c: "-".join(c.replace("-", "")),
    ]
    for index, variant in enumerate(variants):
        sign_in_partial(auth)
        entered = variant(codes[index])
        response = client.form("/login/2fa/recovery", {"code": entered})
        assert response.status_code == 303, entered
        assert my_session(database, client).amr == ["pwd", "otp"]
    assert unused_codes(database) == 10 - len(variants)


# --------------------------------------------------------------------------------------
# Atomicity: a failure inside enrollment leaves nothing behind
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["new", "existing"])
@pytest.mark.parametrize(
    "failure", [RuntimeError("disk on fire"), Refused(409, "Refused mid-way.")]
)
def test_enable_is_atomic(auth, client, authn, database, monkeypatch, mode, failure):
    auth.login()
    if mode == "existing":
        auth.add_passkey("Work key")
        body: dict[str, Any] = {"mode": "existing"}
    else:
        body = {"mode": "new", "name": "Laptop"}
    passkeys_before = [p.credential_id for p in query(database, select(Passkey))]
    events_before = kinds(database)
    options = client.json_post("/account/two-factor/enable/start", body)
    assert options.status_code == 200
    json_options = options.json()
    credential = authn.register(json_options) if mode == "new" else authn.authenticate(json_options)

    def explode(*args: Any, **kwargs: Any) -> list[str]:
        raise failure

    with monkeypatch.context() as patched:
        patched.setattr("web.recovery.issue", explode)
        response = client.json_post("/account/two-factor/enable/finish", {"credential": credential})

    assert response.status_code == (500 if isinstance(failure, RuntimeError) else 409)
    assert "Traceback" not in response.text and "disk on fire" not in response.text
    assert [p.credential_id for p in query(database, select(Passkey))] == passkeys_before
    user = reload_user(database)
    assert not user.user_2fa_enabled and user.user_2fa_enabled_at is None
    assert query(database, select(RecoveryCode)) == []
    assert kinds(database) == events_before
    session = my_session(database, client)
    assert session.reauth_at == session.auth_time and session.acr == "aal1"  # untouched
    [challenge] = query(
        database, select(WebAuthnChallenge).where(WebAuthnChallenge.purpose == "enable-2fa")
    )
    assert challenge.consumed_at is not None, "a failed ceremony must use up its challenge"
    replay = client.json_post("/account/two-factor/enable/finish", {"credential": credential})
    assert replay.status_code == 400
    assert not reload_user(database).user_2fa_enabled


def test_disable_is_atomic(auth, client, database, monkeypatch):
    enabled_with_passkey(auth)
    credential = auth.assertion("/account/two-factor/disable/start")

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("web.recovery.remove_all", explode)
    response = client.json_post("/account/two-factor/disable/finish", {"credential": credential})
    assert response.status_code == 500
    assert reload_user(database).user_2fa_enabled
    assert unused_codes(database) == 10
    assert "2fa_disabled" not in kinds(database)


@pytest.mark.parametrize(
    ("passkeys", "seconds_ago", "allowed"),
    [
        (0, None, True),  # no passkey: "Current password" is the confirmation
        (0, 601, True),
        (1, 600, True),  # exactly the window still counts
        (1, 601, False),  # stale, with a passkey: "Confirm it's you" first
        (2, None, False),
        (32, 5, True),
    ],
)
def test_change_password_now_table(passkeys, seconds_ago, allowed):
    now = utcnow()
    reauth = None if seconds_ago is None else now - timedelta(seconds=seconds_ago)
    decision = twofactor.can_change_password_now(Facts("full", True, reauth), passkeys, now, 600)
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.status, decision.code) == (403, twofactor.REAUTH_REQUIRED)


# --------------------------------------------------------------------------------------
# Enroll-at-login needs the password entered in this sign-in, recently (security review)
# --------------------------------------------------------------------------------------


@dataclass
class Pending:
    state: str
    auth_time: datetime
    partial_reason: str = ""


@pytest.mark.parametrize(
    ("reason", "minutes_ago", "passkeys", "seconds", "want"),
    [
        ("", 1, 0, 600, "allowed"),  # a password sign-in just now
        ("", 10, 0, 600, "allowed"),  # exactly the window still counts
        ("", 11, 0, 600, "reauth-required"),  # stale (a demoted old session)
        ("admin-required", 1, 0, 600, "reauth-required"),  # demoted: password first
        ("admin-required", 20, 0, 600, "reauth-required"),
        ("", 1, 1, 600, 409),  # has a passkey: verify with it instead
        ("", 4, 0, 0, "allowed"),  # 0 (always ask): the ceremony's 5 minutes
        ("", 6, 0, 0, "reauth-required"),
    ],
)
def test_can_enroll_at_login(reason, minutes_ago, passkeys, seconds, want):
    now = utcnow()
    session = Pending("partial", now - timedelta(minutes=minutes_ago), reason)
    user = Flags(requires_2fa=True, user_2fa_enabled=False)
    got = twofactor.can_enroll_at_login(user, session, passkeys, now, seconds)
    if want == "allowed":
        assert got.allowed
    elif want == "reauth-required":
        assert not got.allowed and got.status == 403 and got.code == twofactor.REAUTH_REQUIRED
    else:
        assert not got.allowed and got.status == want
    off = Flags(requires_2fa=False, user_2fa_enabled=False)
    assert twofactor.can_enroll_at_login(off, session, 0, now, seconds).status == 409


# --------------------------------------------------------------------------------------
# Reserving a password attempt: at most 5 in flight, and never a permanent hold
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "held_for", "want"),
    [
        (0, None, (1, None)),
        (3, None, (4, None)),
        (4, None, (5, "busy")),  # the 5th opens the busy window
        (5, 30, None),  # 5 in flight: refused for now
        (5, -1, (1, None)),  # the busy window ended: leaked reservations are forgotten
        (0, 600, None),  # locked
        (0, -1, (1, None)),  # an ended lock is forgotten
    ],
)
def test_reserving_a_password_attempt(count, held_for, want):
    now = utcnow()
    until = None if held_for is None else now + timedelta(seconds=held_for)
    got = twofactor.reserve_attempt(count, until, now)
    if want is None:
        assert got is None
    else:
        assert got is not None and got[0] == want[0]
        assert (got[1] == now + twofactor.BUSY) if want[1] == "busy" else got[1] is None
    assert twofactor.may_check_password(count, until, now) is (want is not None)


def test_a_lock_and_the_busy_window_say_different_things():
    now = utcnow()
    lock = now + timedelta(minutes=15)
    assert twofactor.lock_in_force(0, lock, now)
    assert "locked for 15 minutes" in twofactor.hold_message(0, lock, now)
    busy = now + twofactor.BUSY
    assert not twofactor.lock_in_force(5, busy, now)
    assert "in a minute" in twofactor.hold_message(5, busy, now)


# --------------------------------------------------------------------------------------
# Refusals that handlers used to write themselves, now Decisions of the rules module
# --------------------------------------------------------------------------------------

OFF = Flags(requires_2fa=False, user_2fa_enabled=False)
ON = Flags(requires_2fa=False, user_2fa_enabled=True)


@pytest.mark.parametrize(
    ("rule", "passkeys", "status"),
    [
        (lambda n: twofactor.can_confirm_with_password(n), 0, 200),
        (lambda n: twofactor.can_confirm_with_password(n), 1, 409),
        (lambda n: twofactor.can_confirm_with_passkey(n), 1, 200),
        (lambda n: twofactor.can_confirm_with_passkey(n), 0, 409),
        (lambda n: twofactor.can_enable_with_existing_passkey(OFF, n), 1, 200),
        (lambda n: twofactor.can_enable_with_existing_passkey(OFF, n), 0, 409),
        (lambda n: twofactor.can_enable_with_existing_passkey(ON, n), 1, 409),
        (lambda n: twofactor.can_verify_second_factor(n), 1, 200),
        (lambda n: twofactor.can_verify_second_factor(n), 0, 409),
        (lambda n: twofactor.can_confirm_for("recovery-codes", OFF, n), 0, 409),
        (lambda n: twofactor.can_confirm_for("recovery-codes", ON, n), 0, 200),
        (lambda n: twofactor.can_confirm_for("two-factor", ON, n), 0, 409),
        (lambda n: twofactor.can_confirm_for("two-factor", OFF, n), 0, 200),
        (lambda n: twofactor.can_confirm_for("passkeys", OFF, n), 31, 200),
        (lambda n: twofactor.can_confirm_for("passkeys", OFF, n), 32, 409),
    ],
)
def test_refusals_are_decisions(rule, passkeys, status):
    decision = rule(passkeys)
    assert decision.allowed is (status == 200)
    assert decision.status == status
    if not decision.allowed:
        assert decision.message


def test_the_reminder_window_comes_from_the_rules():
    now = utcnow()
    after, until = twofactor.reminder_window(now)
    assert (after, until) == (now, now + twofactor.REMIND_BEFORE)
