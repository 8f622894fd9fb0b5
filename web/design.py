"""Sample data for every template state: the /_design gallery (BARYCENTER_DEV=1) and the
StrictUndefined test render from here, without a database or a ceremony.

Add a state here when you add one to a template; the test fails for a variable a sample
does not provide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from web.notifications import SUBJECTS, Facts
from web.views import SECTION_STATE, EventView, PasskeyView, SessionView, two_factor_view


@dataclass
class SampleUser:
    username: str = "ada"
    display_name: str = "Ada Lovelace"
    requires_2fa: bool = False
    user_2fa_enabled: bool = False
    requires_2fa_from: datetime | None = None
    requirement_reminded_at: datetime | None = None


SAMPLE_NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
"""The samples' clock: a requirement "from 8 December 2026" is still pending then."""
GRACE_ENDS = datetime(2026, 12, 8, 14, 5, tzinfo=UTC)


CODES = [
    "K7QM-P2XD-9RTB", "H3VN-8WQA-M4ZK", "T9RC-6YPE-2XHD", "B5KW-N7GM-3QSA", "Z8XF-4TJR-6PVN",
    "M2HQ-9BKD-7WCE", "R6NP-3ZAT-8YGM", "E4WJ-5XRV-2KHB", "Q7TD-6MCP-9NZF", "G3YS-8HKW-4RXA",
]  # fmt: skip
PASSKEYS = [
    PasskeyView(1, "iCloud Keychain", True, "2 Mar 2026, 09:14 UTC", "29 Nov 2026, 08:02 UTC"),
    PasskeyView(2, "YubiKey 5C", False, "14 Jun 2026, 17:40 UTC", "Never"),
]
DOWNLOAD = {
    "filename": "barycenter-recovery-codes-ada-localhost-2026-11-29.txt",
    "heading": "Recovery codes for ada at localhost, created 2026-11-29 (UTC)",
}
LONG_NAME = "A passkey with a very long name that keeps going to test wrapping in the row"
SESSIONS = [
    SessionView(1, "Chrome on Mac OS X", "203.0.113.7", "Password and passkey",
                "29 Nov 2026, 08:02 UTC", "29 Nov 2026, 07:50 UTC", True),
    SessionView(2, "Firefox on Windows", "198.51.100.23", "Passkey",
                "28 Nov 2026, 19:12 UTC", "28 Nov 2026, 18:00 UTC", False),
]  # fmt: skip
EVENTS = [
    EventView("Two-factor authentication turned on", "29 Nov 2026, 08:03 UTC", "203.0.113.7", False),
    EventView("Passkey “YubiKey 5C” added", "29 Nov 2026, 08:01 UTC", "203.0.113.7", False),
    EventView("Failed sign-in attempt", "28 Nov 2026, 22:40 UTC", "192.0.2.99", True),
    EventView("Signed in with password", "28 Nov 2026, 18:00 UTC", "198.51.100.23", False),
]  # fmt: skip


def account(
    *, required: bool = False, enabled: bool = False, passkeys: list[PasskeyView] | None = None,
    remaining: int = 10, required_from: datetime | None = None, **state: Any,
) -> dict[str, Any]:  # fmt: skip
    """An account page context in a given state (the same keys as web.sections.page gives the page)."""
    user = SampleUser(
        requires_2fa=required, user_2fa_enabled=enabled, requires_2fa_from=required_from
    )
    keys = PASSKEYS if passkeys is None else passkeys
    context: dict[str, Any] = {
        "user": user,
        "display_name": user.display_name,
        "passkeys": keys,
        "two_factor": two_factor_view(
            user,  # type: ignore[arg-type]  # a SampleUser stands in for a User
            len(keys),
            remaining,
            10 if remaining else 0,
            SAMPLE_NOW,
        ),
        "accepted": {"rp_id": "localhost", "user_id": "dXNlcg", "credential_ids": "Y3JlZA"},
        "sessions": SESSIONS,
        "events": EVENTS,
        "default_passkey_name": "Chrome on Mac OS X",
        "password": PASSWORD,
        "codes_version": "42",
        "download": DOWNLOAD,
    }
    return {**context, **SECTION_STATE, **state}


PASSWORD = {"changed": "Last changed 2 Mar 2026, 09:14 UTC", "notify_to": "a•••@example.com"}
NO_EMAIL = {"changed": "Not changed since the account was created", "notify_to": ""}


def email(kind: str, **facts: Any) -> dict[str, Any]:
    """A notification's context (web.notifications.Facts) with sample facts."""
    sample = {
        "kind": kind, "display_name": "Ada Lovelace", "when": "8 December 2026, 14:05 UTC",
        "by_admin": False, "ip": "203.0.113.7", "browser": "Chrome on Mac OS X",
        "account_url": "http://localhost:8000/account", "passkey": "", "remaining": 0,
        "required_from": "", "old_email": "", "new_email": "", **facts,
    }  # fmt: skip
    return Facts(**sample).context()


EMAIL_FACTS: dict[str, dict[str, Any]] = {
    "2fa_enabled": {"passkey": "YubiKey 5C"},
    "2fa_required": {"by_admin": True, "required_from": "15 December 2026, 09:00 UTC"},
    "2fa_requirement_reminder": {"by_admin": True, "required_from": "15 December 2026, 09:00 UTC"},
    "2fa_not_required": {"by_admin": True},
    "enrolled_at_login": {"passkey": "iCloud Keychain"},
    "passkey_added": {"passkey": "YubiKey 5C"},
    "passkey_removed": {"passkey": "Old phone"},
    "recovery_code_used": {"remaining": 7},
    "email_changed": {"by_admin": True, "old_email": "a•••@example.com", "new_email": "a•••@example.org"},
    "locked": {"browser": ""},
}  # fmt: skip
EMAILS = {
    f"email-{kind}": (f"email/{kind}.html", email(kind, **EMAIL_FACTS.get(kind, {})))
    for kind in SUBJECTS
}
EMAILS["email-2fa_disabled-by-admin"] = (
    "email/2fa_disabled.html",
    email("2fa_disabled", by_admin=True),
)
EMAILS["email-2fa_required-at-once"] = (
    "email/2fa_required.html",
    email("2fa_required", by_admin=True),
)
EMAILS["email-hostile-passkey-name"] = (
    "email/passkey_added.html",
    email("passkey_added", passkey="<img src=x onerror=alert(1)>\r\nBcc: evil@example.com"),
)


def login(**state: Any) -> dict[str, Any]:
    return {"error": "", "notice": "", "username": "", "return_to": "", **state}


def second_factor(**state: Any) -> dict[str, Any]:
    return {
        "admin_required": False,
        "enroll": False,
        "enroll_password_first": False,
        "default_passkey_name": "Chrome on Mac OS X",
        "error": "",
        "return_to": "/account",
        **state,
    }


TWO_FACTOR = "partials/account/two_factor.html"
PASSKEYS_PARTIAL = "partials/account/passkeys.html"
RECOVERY = "partials/account/recovery_codes.html"
PW_SECTION = "partials/account/password.html"

# name → (template, context). Pages render with the layout; partials as htmx swaps them.
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "login": ("pages/login.html", login()),
    "login-error": ("pages/login.html", login(error="Incorrect username or password.", username="ada")),
    "login-2fa": ("pages/login_2fa.html", second_factor()),
    "login-2fa-wrong-code": ("pages/login_2fa.html", second_factor(error="That recovery code is not valid or was already used.")),
    "login-2fa-enroll": ("pages/login_2fa.html", second_factor(enroll=True)),
    "login-2fa-enroll-password-first": ("pages/login_2fa.html", second_factor(enroll=True, enroll_password_first=True)),
    "login-2fa-admin-required": ("pages/login_2fa.html", second_factor(admin_required=True)),
    "login-signed-out-elsewhere": ("pages/login.html", login(notice="You were signed out from another session.")),
    "enrolled": ("pages/enrolled.html", {"codes": CODES, "codes_title": "Save your recovery codes", "continue_to": "/account", "root_id": "second-factor", "signed_in_words": "Your passkey is registered and you are signed in.", "download": DOWNLOAD}),
    "signed-in-new-codes": ("pages/enrolled.html", {"codes": CODES, "codes_title": "Save your recovery codes", "continue_to": "/account", "root_id": "sign-in", "signed_in_words": "You are signed in. Two-factor authentication is on for your account, so here are your recovery codes.", "download": DOWNLOAD}),
    "error": ("pages/error.html", {"status": 404, "message": "That passkey was not found."}),
    "account-2fa-off": ("pages/account.html", account()),
    "account-2fa-on": ("pages/account.html", account(enabled=True)),
    "account-2fa-required": ("pages/account.html", account(required=True)),
    "account-2fa-both": ("pages/account.html", account(required=True, enabled=True)),
    "account-2fa-pending": ("pages/account.html", account(required=True, required_from=GRACE_ENDS)),
    "account-2fa-pending-on": ("pages/account.html", account(required=True, enabled=True, required_from=GRACE_ENDS)),
    "requirement-notice": ("partials/account/requirement_notice.html", account(required=True, required_from=GRACE_ENDS)),
    "account-no-passkeys": ("pages/account.html", account(passkeys=[])),
    "two-factor-enroll-new": (TWO_FACTOR, account(passkeys=[], tf_mode="enroll")),
    "two-factor-enroll-existing": (TWO_FACTOR, account(tf_mode="enroll")),
    "two-factor-codes": (TWO_FACTOR, account(enabled=True, tf_mode="codes", codes=CODES)),
    "two-factor-disable": (TWO_FACTOR, account(enabled=True, tf_mode="disable")),
    "two-factor-error": (TWO_FACTOR, account(tf_error="The passkey could not be verified. Please try again.")),
    "passkeys-empty": (PASSKEYS_PARTIAL, account(passkeys=[])),
    "passkeys-long": (PASSKEYS_PARTIAL, account(passkeys=[*PASSKEYS, *[PasskeyView(10 + i, f"{LONG_NAME} {i}", i % 2 == 0, "1 Jan 2026, 00:00 UTC", "Never") for i in range(6)]])),
    "passkeys-added": (PASSKEYS_PARTIAL, account(notice="Passkey “YubiKey 5C” added.", notice_in="passkeys")),
    "passkeys-rename": (PASSKEYS_PARTIAL, account(pk_editing=1, pk_name_value="iCloud Keychain")),
    "passkeys-rename-error": (PASSKEYS_PARTIAL, account(pk_editing=1, pk_name_value="", pk_error="Give the passkey a name.")),
    "passkeys-remove-confirm": (PASSKEYS_PARTIAL, account(pk_confirming=2)),
    "passkeys-remove-step-up": (PASSKEYS_PARTIAL, account(pk_step_up=2)),
    "passkeys-confirm-passkey": (PASSKEYS_PARTIAL, account(confirm_in="passkeys")),
    "passkeys-confirm-password": (PASSKEYS_PARTIAL, account(passkeys=[], confirm_in="passkeys", confirm_error="That password is not right. Try again.")),
    "two-factor-confirm": (TWO_FACTOR, account(passkeys=[], confirm_in="two-factor")),
    "passkeys-removed": (PASSKEYS_PARTIAL, account(passkeys=PASSKEYS[:1], notice="Passkey removed.", notice_in="passkeys", signal={"rp_id": "localhost", "user_id": "dXNlcg", "credential_ids": "Y3JlZA"})),
    "recovery-codes": (RECOVERY, account(enabled=True)),
    "recovery-codes-low": (RECOVERY, account(enabled=True, remaining=2)),
    "recovery-codes-step-up": (RECOVERY, account(enabled=True, rc_mode="step-up")),
    "recovery-codes-question": (RECOVERY, account(enabled=True, rc_mode="confirm")),
    "recovery-codes-none-yet": (RECOVERY, account(required=True, remaining=0, two_factor=two_factor_view(SampleUser(requires_2fa=True), 2, 0, 0, SAMPLE_NOW))),  # type: ignore[arg-type]  # a SampleUser stands in for a User
    "recovery-codes-all-used": (RECOVERY, account(enabled=True, remaining=0)),
    "recovery-codes-changed-elsewhere": (RECOVERY, account(enabled=True, rc_error="Your recovery codes were changed in another window or device. This is what they are now; nothing else was changed.")),
    "passkeys-last-refused": (PASSKEYS_PARTIAL, account(enabled=True, passkeys=PASSKEYS[:1], pk_refused=1, pk_error="You can't remove your last passkey while two-factor authentication is on. Add another passkey first, or turn two-factor authentication off.")),
    "two-factor-already-required": (TWO_FACTOR, account(required=True, tf_error="Your administrator already requires two-factor authentication.")),
    "recovery-codes-new": (RECOVERY, account(enabled=True, rc_mode="codes", codes=CODES)),
    "sessions": ("partials/account/sessions.html", account()),
    "sessions-one": ("partials/account/sessions.html", account(sessions=SESSIONS[:1])),
    "activity": ("partials/account/activity.html", account()),
    "activity-empty": ("partials/account/activity.html", account(events=[])),
    "password": (PW_SECTION, account()),
    "password-no-email": (PW_SECTION, account(password=NO_EMAIL)),
    "password-change": (PW_SECTION, account(pw_mode="change")),
    "password-confirm": (PW_SECTION, account(confirm_in="password")),
    "password-weak": (PW_SECTION, account(pw_mode="change", pw_error="This is a very common password. Add another word or two. Uncommon words are better.", pw_error_field="new")),
    "password-wrong-current": (PW_SECTION, account(pw_mode="change", pw_error="Your current password is not correct.", pw_error_field="current")),
    "password-changed": (PW_SECTION, account(notice="Your password was changed. Every other session was signed out.", notice_in="password")),
    **EMAILS,
}  # fmt: skip


def render_sample(environment: Any, name: str) -> str:
    """Render one sample outside a request (gallery partials, the StrictUndefined test)."""
    template, context = SAMPLES[name]
    request_bound = {
        "csrf_token": lambda: "design-sample-token",
        "csrf_input": '<input type="hidden" name="_csrf_token" value="design-sample-token">',
        "url_for": lambda _name, file_path: f"/static/{file_path}",
    }
    return environment.get_template(template).render(**request_bound, **context)
