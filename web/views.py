"""What the templates see: plain data built from the tables, in one place per page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from ua_parser import parse_os, parse_user_agent
from webauthn.helpers import bytes_to_base64url

from models import AuthSession, Passkey, SecurityEvent, User, utcnow
from web import events, twofactor
from web.addresses import mask
from web.settings import Settings

# Passkey providers by AAGUID (a few well-known ones; others fall back to browser and OS).
PROVIDERS = {
    "fbfc3007-154e-4ecc-8c0b-6e020557d7bd": "iCloud Keychain",
    "dd4ec289-e01d-41c9-bb89-70fa845d4bf2": "iCloud Keychain",
    "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4": "Google Password Manager",
    "adce0002-35bc-c60a-648b-0b25f1f05503": "Chrome on Mac",
    "08987058-cadc-4b81-b6e1-30de50dcbe96": "Windows Hello",
    "9ddd1817-af5a-4672-a2b9-3e3dd95000a9": "Windows Hello",
    "6028b017-b1d4-4c02-b4b3-afcdafc96bb2": "Windows Hello",
    "bada5566-a7aa-401f-bd96-45619a55120d": "1Password",
    "d548826e-79b4-db40-a3d8-11116f7e8349": "Bitwarden",
    "531126d6-e717-415c-9320-3d9aa6981239": "Dashlane",
    "b84e4048-15dc-4dd0-8640-f4f60813c8af": "NordPass",
    "0ea242b4-43c4-4a1b-8b17-dd6d0b6baec6": "Keeper",
    "f8a011f3-8c0a-4d15-8006-17111f9edc7d": "Security key",
    "cb69481e-8ff7-4039-93ec-0a2729a154a8": "YubiKey",
    "ee882879-721c-4913-9775-3dfcce97072a": "YubiKey",
}


@lru_cache(maxsize=1024)
def browser_and_os(user_agent: str) -> str:
    """ "Chrome on Linux" from a User-Agent string; "Unknown browser" when it says nothing.
    ua-parser 1.x, browser and system only (its device rules cost twice as much again, ~1 ms
    a string), and cached: a page shows the same few strings on every request."""
    if not user_agent:
        return "Unknown browser"
    agent, system = parse_user_agent(user_agent), parse_os(user_agent)
    browser = agent.family if agent and agent.family != "Other" else "Unknown browser"
    os_name = system.family if system and system.family != "Other" else ""
    return f"{browser} on {os_name}" if os_name else browser


def default_passkey_name(user_agent: str, taken: list[str] | None = None) -> str:
    base = browser_and_os(user_agent)
    if base == "Unknown browser":
        base = "Passkey"
    taken = taken or []
    if base not in taken:
        return base
    n = 2
    while f"{base} ({n})" in taken:
        n += 1
    return f"{base} ({n})"


def name_for_new_passkey(chosen: str, aaguid: str, user_agent: str) -> str:
    """What a new passkey is called: what the person typed, except that the untouched
    prefilled default ("Chrome on Mac OS X", "… (2)") gives way to the provider's name when
    the authenticator's AAGUID is a known one ("iCloud Keychain")."""
    provider = PROVIDERS.get(aaguid)
    base = default_passkey_name(user_agent)
    untouched = chosen == base or re.fullmatch(rf"{re.escape(base)} \(\d+\)", chosen)
    return provider if provider and untouched else chosen


@dataclass(frozen=True)
class Stamp:
    """A time for people: words in UTC ("29 Nov 2026, 14:05 UTC") and the ISO 8601 instant
    for `<time datetime>` (static/js/page.js rewrites it into the viewer's zone)."""

    words: str
    iso: str = ""

    def __str__(self) -> str:
        return self.words


def when(moment: datetime | None) -> Stamp:
    """A date for people: "29 Nov 2026, 14:05 UTC" (and its instant, for <time>)."""
    if moment is None:
        return Stamp("Never")
    return Stamp(moment.strftime("%-d %b %Y, %H:%M UTC"), moment.strftime("%Y-%m-%dT%H:%M:%SZ"))


SIGN_IN_METHODS = {
    ("pwd",): "Password",
    ("hwk",): "Passkey",
    ("swk",): "Passkey",
    ("pwd", "hwk"): "Password and passkey",
    ("pwd", "swk"): "Password and passkey",
    ("pwd", "otp"): "Password and recovery code",
}


@dataclass(frozen=True)
class SessionView:
    id: int
    browser: str
    ip: str
    method: str
    last_seen: Stamp | str
    signed_in: Stamp | str
    current: bool


def session_view(session: AuthSession, current_id: int | None) -> SessionView:
    return SessionView(
        id=session.pk,
        browser=browser_and_os(session.user_agent),
        ip=session.ip or "unknown",
        method=SIGN_IN_METHODS.get(tuple(session.amr), "Password"),
        last_seen=when(session.last_seen_at),
        signed_in=when(session.auth_time),
        current=session.id == current_id,
    )


@dataclass(frozen=True)
class EventView:
    what: str
    when: Stamp | str
    ip: str
    warning: bool


REPEATABLE = {
    "sign_in_failed": "failed sign-in attempts",
    "second_factor_failed": "failed two-factor attempts",
}


def event_views(rows: list[SecurityEvent]) -> list[EventView]:
    """Events in words, newest first; a run of the same failure reads "3 failed sign-in
    attempts" (with the time of the latest)."""
    views: list[EventView] = []
    run: list[SecurityEvent] = []
    for event in [*rows, None]:
        if run and (event is None or event.kind != run[0].kind or event.kind not in REPEATABLE):
            first = run[0]
            view = event_view(first)
            if len(run) > 1:
                view = EventView(f"{len(run)} {REPEATABLE[first.kind]}", view.when, view.ip, True)
            views.append(view)
            run = []
        if event is not None:
            run.append(event)
    return views


def event_view(event: SecurityEvent) -> EventView:
    return EventView(
        what=events.describe(event),
        when=when(event.created_at),
        ip=event.ip,
        warning=events.is_warning(event),
    )


@dataclass(frozen=True)
class PasskeyView:
    id: int
    name: str
    synced: bool
    created: Stamp | str
    last_used: Stamp | str


def passkey_view(passkey: Passkey) -> PasskeyView:
    return PasskeyView(
        id=passkey.pk,
        name=passkey.name,
        synced=passkey.backup_eligible,
        created=when(passkey.created_at),
        last_used=when(passkey.last_used_at),
    )


def accepted_credentials(settings: Settings, user: User, passkeys: list[Passkey]) -> dict:
    """For the WebAuthn Signal API: the credentials this RP still accepts for the user."""
    return {
        "rp_id": settings.rp_id,
        "user_id": bytes_to_base64url(user.webauthn_handle),
        "credential_ids": " ".join(bytes_to_base64url(p.credential_id) for p in passkeys),
    }


@dataclass(frozen=True)
class Moment:
    """A time as the pages show it: words in UTC inside <time datetime="iso">."""

    iso: str
    words: str


def moment(value: datetime | None) -> Moment | None:
    if value is None:
        return None
    return Moment(iso=twofactor.iso_utc(value), words=twofactor.date_words(value))


def two_factor_status(user: User, now: datetime) -> dict[str, Any]:
    """The two-factor facts that come from the user alone (no query): the card's state, the
    requirement and its notice, which buttons it offers."""
    pending = twofactor.requirement_pending(user, now)
    return {
        "state": twofactor.card_state(user, now),
        "effective": twofactor.effective(user, now),
        "required": twofactor.requirement_in_force(user, now),
        "user_enabled": user.user_2fa_enabled,
        "status": twofactor.status_words(user, now),
        # a pending requirement: "Required by your administrator from <date>" (SPEC §4.2)
        "pending": pending,
        "pending_label": twofactor.REQUIRED_FROM,
        "pending_words": twofactor.pending_words(user, now),
        "required_from": moment(twofactor.required_from(user)) if pending else None,
        "notice": twofactor.shows_requirement_notice(user, now),
        "notice_label": twofactor.NOTICE_FROM,
        "can_enable": twofactor.shows_enable_button(user, now),
        "can_disable": twofactor.shows_disable_button(user),
    }


def two_factor_passkeys(passkey_count: int) -> dict[str, Any]:
    """The two-factor facts that come from the number of passkeys."""
    return {
        "has_passkeys": passkey_count > 0,
        # "Confirm it's you" asks with a passkey when there is one, else the password
        "confirm_method": twofactor.confirm_method(passkey_count),
        "passkeys_full": passkey_count >= twofactor.MAX_PASSKEYS,
        "max_passkeys": twofactor.MAX_PASSKEYS,
    }


def two_factor_codes(user: User, on_record: int, remaining: int) -> dict[str, Any]:
    """The two-factor facts about recovery codes (all 0 while 2FA is off)."""
    codes = twofactor.recovery_codes_state(user, on_record, remaining)
    return {
        "shows_recovery": codes != "off",
        "recovery_state": codes,  # off | none | used | low | some
        "recovery_remaining": remaining,
        "recovery_total": on_record,
        "recovery_low": codes == "low",
        "regenerate_asks": twofactor.regenerating_asks_first(remaining),
    }


def two_factor_view(
    user: User,
    passkey_count: int,
    recovery_remaining: int,
    codes_on_record: int = 10,
    now: datetime | None = None,
) -> dict[str, Any]:
    """All the two-factor facts at once (the /_design gallery), all decided by web.twofactor."""
    return {
        **two_factor_status(user, now or utcnow()),
        **two_factor_passkeys(passkey_count),
        **two_factor_codes(user, codes_on_record, recovery_remaining),
    }


def codes_download(username: str, site: str, day: datetime) -> dict[str, str]:
    """The recovery-codes text file: its name and first line say whose codes they are, for
    which site and from when ("barycenter-recovery-codes-ada-localhost-2026-12-01.txt")."""
    date = day.strftime("%Y-%m-%d")
    safe_site = re.sub(r"[^A-Za-z0-9.-]+", "-", site).strip("-") or "site"
    safe_user = re.sub(r"[^A-Za-z0-9._-]+", "-", username).strip("-") or "account"
    return {
        "filename": f"barycenter-recovery-codes-{safe_user}-{safe_site}-{date}.txt",
        "heading": f"Recovery codes for {username} at {site}, created {date} (UTC)",
    }


def site_of(settings: Settings) -> str:
    """The site people know: the host of the origin (``account.example.com``)."""
    return urlsplit(settings.effective_origin).hostname or settings.rp_id


# What each section of the account page shows: its normal state unless a handler says
# otherwise (a swap showing a step, a form with its error, a notice).
SECTION_STATE: dict[str, Any] = {
    "tf_mode": "view",  # two-factor card: view | enroll | disable | codes
    "codes": [],  # new recovery codes, shown once
    "codes_title": "Save your recovery codes",
    "tf_error": "",
    "pk_editing": None,  # passkey id with its rename form open
    "pk_confirming": None,  # passkey id asking "Remove passkey?"
    "pk_step_up": None,  # passkey id asking "Remove passkey?" with "Confirm it's you" (one step)
    "pk_error": "",
    "pk_refused": None,  # passkey id whose removal was refused (the message shows in its row)
    "pk_name_value": "",
    "rc_mode": "view",  # recovery codes: view | confirm | step-up | codes
    "rc_error": "",
    "confirm_in": "",  # the section showing "Confirm it's you" (components/confirm.html)
    "confirm_error": "",  # its alert after a wrong password
    "notice": "",
    "notice_in": "",  # the section the notice belongs to
    "signal": None,  # after a removal: the passkeys a password manager should keep
    "pw_mode": "view",  # password: view | change
    "pw_error": "",  # why the new password (or the current one) was refused
    "pw_error_field": "",  # "current" or "new": the field the error belongs to
}


def password_view(user: User) -> dict[str, str]:
    """The password section's facts, and where security notifications go (masked)."""
    changed = user.password_changed_at
    return {
        "changed": f"Last changed {when(changed)}"
        if changed
        else "Not changed since the account was created",
        "notify_to": mask(user.email),
    }


def current_first(views: list[SessionView]) -> list[SessionView]:
    """This session first, then the others as they were (most recently seen first)."""
    return sorted(views, key=lambda v: not v.current)
