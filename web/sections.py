"""The account page's sections: what each one shows (built from its own queries only), and
which other sections a change refreshes.

A section alone (htmx) runs only its builder; the whole page runs every builder over one
`Facts`, so each query runs once per request whichever sections ask for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlmodel import Session

from models import AuthSession, Passkey, SecurityEvent, User, utcnow
from models.passkey import passkeys_of
from web import events, recovery, sessions, twofactor
from web.settings import Settings
from web.views import (
    SECTION_STATE,
    accepted_credentials,
    codes_download,
    current_first,
    default_passkey_name,
    event_views,
    passkey_view,
    password_view,
    session_view,
    site_of,
    two_factor_codes,
    two_factor_passkeys,
    two_factor_status,
)


class Facts:
    """What the sections read for one request: each query runs at most once, when a
    section first asks for it."""

    def __init__(
        self, db: Session, settings: Settings, viewer: sessions.Viewer, user_agent: str
    ) -> None:
        self.db, self.settings, self.viewer, self.user_agent = db, settings, viewer, user_agent
        self.now: datetime = utcnow()

    @property
    def user(self) -> User:
        return self.viewer.user

    @cached_property
    def passkeys(self) -> list[Passkey]:
        return passkeys_of(self.db, self.user.pk)

    @cached_property
    def codes(self) -> recovery.Summary:
        """The recovery codes (none are looked up while 2FA is off: none are shown)."""
        shown = twofactor.shows_recovery_codes(self.user, self.now)
        return recovery.summary(self.db, self.user.pk) if shown else recovery.NONE

    @cached_property
    def live_sessions(self) -> list[AuthSession]:
        live = sessions.sessions_of(self.db, self.user.pk)
        return [s for s in live if not sessions.is_expired(s, self.settings)]

    @cached_property
    def events(self) -> list[SecurityEvent]:
        return events.recent(self.db, self.user.pk)


# ---- one builder per section: the keys its partial reads ---------------------------------
# `two_factor` is shared: each builder gives the part of it that its partial reads, and the
# page merges the parts.


def requirement_notice(facts: Facts) -> dict[str, Any]:
    return {"two_factor": two_factor_status(facts.user, facts.now)}


def two_factor_card(facts: Facts) -> dict[str, Any]:
    return {
        "two_factor": {
            **two_factor_status(facts.user, facts.now),
            **two_factor_passkeys(len(facts.passkeys)),
        },
        "default_passkey_name": _default_name(facts),
        "download": _download(facts),
    }


def passkeys(facts: Facts) -> dict[str, Any]:
    return {
        "passkeys": [passkey_view(p) for p in facts.passkeys],
        "two_factor": two_factor_passkeys(len(facts.passkeys)),
        "default_passkey_name": _default_name(facts),
    }


def recovery_codes(facts: Facts) -> dict[str, Any]:
    codes = facts.codes
    two_factor = two_factor_codes(facts.user, codes.on_record, codes.remaining)
    if two_factor["shows_recovery"]:  # its "Confirm it's you" asks with a passkey or not
        two_factor |= two_factor_passkeys(len(facts.passkeys))
    return {
        "two_factor": two_factor,
        "codes_version": codes.version,
        "download": _download(facts),
    }


def password(facts: Facts) -> dict[str, Any]:
    return {
        "user": facts.user,
        "password": password_view(facts.user),
        "two_factor": two_factor_passkeys(len(facts.passkeys)),
    }


def sessions_list(facts: Facts) -> dict[str, Any]:
    current = facts.viewer.session.id
    return {"sessions": current_first([session_view(s, current) for s in facts.live_sessions])}


def activity(facts: Facts) -> dict[str, Any]:
    return {"events": event_views(facts.events)}


def _default_name(facts: Facts) -> str:
    return default_passkey_name(facts.user_agent, [p.name for p in facts.passkeys])


def _download(facts: Facts) -> dict[str, str]:
    return codes_download(facts.user.username, site_of(facts.settings), facts.now)


Builder = Callable[[Facts], dict[str, Any]]

# Section id (its element's id and its URL, /account/<id>) → its partial and its builder.
SECTIONS: dict[str, tuple[str, Builder]] = {
    "requirement-notice": ("partials/account/requirement_notice.html", requirement_notice),
    "two-factor": ("partials/account/two_factor.html", two_factor_card),
    "passkeys": ("partials/account/passkeys.html", passkeys),
    "recovery-codes": ("partials/account/recovery_codes.html", recovery_codes),
    "password": ("partials/account/password.html", password),
    "sessions": ("partials/account/sessions.html", sessions_list),
    "activity": ("partials/account/activity.html", activity),
}


def page(facts: Facts) -> dict[str, Any]:
    """The whole account page: every section's keys (their `two_factor` parts merged)."""
    context: dict[str, Any] = {"two_factor": {}}
    for _, build in SECTIONS.values():
        part = build(facts)
        context["two_factor"] |= part.pop("two_factor", {})
        context |= part
    context["user"] = facts.user
    context["display_name"] = facts.user.display_name or facts.user.username
    # every page load tells the password manager which passkeys are current (Signal API)
    context["accepted"] = accepted_credentials(facts.settings, facts.user, facts.passkeys)
    return context


def context(facts: Facts, name: str | None, **state: Any) -> dict[str, Any]:
    """What a section's partial (or, `name` None, the whole page) renders from, in `state`
    (keys of SECTION_STATE: a step open, a notice, an error …)."""
    built = page(facts) if name is None else SECTIONS[name][1](facts)
    return {**built, **SECTION_STATE, **state}


# ---- what a change refreshes ---------------------------------------------------------
# For each change: the sections whose content it changes (decided from what each shows at
# rest). The section that answers the change is left out of the header (it is fresh); the
# others refresh themselves (HX-Trigger: refresh-<id>, … ; hx-trigger="refresh-<id> from:body").
# A section with a step open ([data-open]) skips its refresh (static/js/page.js).
#  - a passkey ceremony that confirms it's you also changes "Last used" (passkeys) and this
#    session's sign-in method (sessions);
#  - the two-factor card at rest shows only the user's own flags, so only enabling and
#    disabling (which answer with that card) change it.
PASSKEY_USED = ("passkeys", "sessions")
AFFECTS: dict[str, tuple[str, ...]] = {
    "2fa-enabled": ("requirement-notice", "recovery-codes", "activity", *PASSKEY_USED),
    "2fa-disabled": ("recovery-codes", "activity", *PASSKEY_USED),
    "passkey-added": ("activity",),
    "passkey-renamed": ("activity",),
    "passkey-removed": ("sessions", "activity"),  # the sessions signed in with it end
    "codes-regenerated": ("activity",),
    "codes-regenerated-with-passkey": ("activity", *PASSKEY_USED),
    "confirmed": ("activity",),
    "confirmed-with-passkey": ("activity", *PASSKEY_USED),
    "password-changed": ("sessions", "activity"),  # every other session ends
    "session-ended": ("activity",),
}


def refreshes(change: str, answered: str) -> str:
    """The HX-Trigger header of the answer to `change` given by section `answered`: the
    other sections it affected ("refresh-sessions, refresh-activity"), "" for none."""
    return ", ".join(f"refresh-{s}" for s in AFFECTS[change] if s != answered)
