"""Security events: recorded with every change, and described in plain words."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from models import SecurityEvent, utcnow
from web import notifications
from web.twofactor import LOCKOUT_MINUTES, date_words

RECENT = 20


def record(
    db: Session,
    user_id: int,
    kind: str,
    *,
    actor: str = "user",
    ip: str = "",
    user_agent: str = "",
    **detail: Any,
) -> None:
    """Adds an event to the current transaction (the caller commits), and the email it sends
    (SPEC §5.8) to the outbox in the same transaction: a rolled-back change sends nothing.
    `user_agent` only words the email ("Chrome on Linux"); it is not stored with the event."""
    db.add(
        SecurityEvent(
            user_id=user_id, kind=kind, actor=actor, ip=ip, detail=detail, created_at=utcnow()
        )
    )
    notifications.queue_for_event(
        db, user_id, kind, actor=actor, ip=ip, user_agent=user_agent, detail=detail
    )


# Built once (statement construction and its cache key cost more than the query itself).
_RECENT = (
    select(SecurityEvent)
    .where(SecurityEvent.user_id == bindparam("user_id"))
    .order_by(col(SecurityEvent.created_at).desc(), col(SecurityEvent.id).desc())
    .limit(bindparam("limit"))
)


def recent(db: Session, user_id: int, limit: int = RECENT) -> list[SecurityEvent]:
    return list(db.exec(_RECENT, params={"user_id": user_id, "limit": limit}))


def describe(event: SecurityEvent) -> str:
    """One event in words, as the activity list shows it."""
    d = event.detail or {}
    by_admin = event.actor == "admin"
    name = d.get("name", "")
    words = {
        "2fa_enabled": "Two-factor authentication turned on",
        "2fa_disabled": "Two-factor authentication turned off",
        "2fa_required": _required_words(d.get("from")),
        "2fa_requirement_reminder": _reminder_words(d.get("from")),
        "unlocked": "Account unlocked by an administrator",
        "signed_out_everywhere": "Signed out of every session by an administrator",
        "2fa_not_required": "Administrator no longer requires two-factor authentication",
        "passkey_added": f"Passkey “{name}” added",
        "passkey_renamed": f"Passkey “{d.get('old', '')}” renamed to “{name}”",
        "passkey_removed": f"Passkey “{name}” removed",
        "passkey_clone_suspected": (
            f"Passkey “{name}” was refused: it may have been copied. Remove this passkey "
            "and add it again; if you didn't reset your security key, tell your administrator."
        ),
        "recovery_code_used": f"Recovery code used — {d.get('remaining', 0)} left",
        "recovery_codes_regenerated": "Recovery codes regenerated",
        "recovery_codes_created": "Recovery codes created",
        "session_revoked": _session_revoked_words(d),
        "sign_in": _sign_in_words(d.get("method", "")),
        "sign_in_failed": "Failed sign-in attempt",
        "second_factor_failed": "Failed two-factor attempt",
        "locked": f"Account locked for {LOCKOUT_MINUTES} minutes after repeated failures",
        "sessions_revoked": "Signed out of other sessions",
        "user_created": "Account created",
        "password_changed": "Password changed" + (" by an administrator" if by_admin else ""),
        "password_change_failed": "Wrong current password given when changing the password",
        "email_changed": _email_words(d, by_admin),
        "reauth": _reauth_words(d.get("method", "")),
        "reauth_failed": "Failed attempt to confirm it's you",
        "sign_in_incomplete": "Password entered; sign-in not completed",
        "enrolled_at_login": f"Passkey “{name}” registered at sign-in; other sessions signed out",
    }
    text = words.get(event.kind, event.kind.replace("_", " ").capitalize())
    if by_admin and event.kind in {"2fa_enabled", "2fa_disabled"}:
        text += " by an administrator"
    return text


def _email_words(d: dict[str, Any], by_admin: bool) -> str:
    from web.addresses import mask

    by = " by an administrator" if by_admin else ""
    old, new = mask(d.get("old")), mask(d.get("new"))
    if old and new:
        return f"Email address for notifications changed from {old} to {new}{by}"
    if new:
        return f"Email address for notifications set to {new}{by}"
    return f"Email address for notifications removed{by}"


def _session_revoked_words(detail: dict[str, Any]) -> str:
    browser, ip = detail.get("browser", ""), detail.get("session_ip", "")
    if browser and ip:
        return f"Signed out a session ({browser}, IP {ip})"
    return "Signed out a session"


def _reauth_words(method: str) -> str:
    return {
        "passkey": "Confirmed it's you with a passkey",
        "password": "Confirmed it's you with your password",
    }.get(method, "Confirmed it's you")


def _date_words(value: Any) -> str:
    """An ISO 8601 date of an event's detail in words ("8 December 2026, 14:05 UTC")."""
    try:
        return date_words(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return ""


def _required_words(start: Any) -> str:
    words = _date_words(start) if start else ""
    if words:
        return f"Two-factor authentication required by an administrator from {words}"
    return "Two-factor authentication required by an administrator"


def _reminder_words(start: Any) -> str:
    words = _date_words(start) if start else ""
    if words:
        return f"Reminder sent: two-factor authentication will be required from {words}"
    return "Reminder sent: two-factor authentication will be required soon"


def _sign_in_words(method: str) -> str:
    return {
        "pwd": "Signed in with password",
        "passkey": "Signed in with a passkey",
        "pwd+passkey": "Signed in with password and passkey",
        "pwd+otp": "Signed in with password and a recovery code",
    }.get(method, "Signed in")


def is_warning(event: SecurityEvent) -> bool:
    return event.kind in {
        "sign_in_failed",
        "second_factor_failed",
        "reauth_failed",
        "sign_in_incomplete",
        "locked",
        "passkey_clone_suspected",
        "password_change_failed",
    }
