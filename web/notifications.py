"""Security notifications (SPEC §5.8): an event of the list below becomes one message in the
`notifications` outbox, in the transaction of the change it reports.

`events.record` calls `queue_for_event`; nothing else writes outbox rows. The sender
(web.mailer) delivers them later, never while a request waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import event
from sqlmodel import Session, col, select

from models import Notification, User, utcnow
from web.addresses import mask
from web.settings import Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

SUBJECTS = {
    "2fa_enabled": "Two-factor authentication was turned on",
    "2fa_disabled": "Two-factor authentication was turned off",
    "2fa_required": "Your administrator now requires two-factor authentication",
    "2fa_not_required": "Your administrator no longer requires two-factor authentication",
    "2fa_requirement_reminder": "Two-factor authentication will be required tomorrow",
    "enrolled_at_login": "Two-factor authentication was set up when you signed in",
    "passkey_added": "A passkey was added to your account",
    "passkey_removed": "A passkey was removed from your account",
    "recovery_codes_regenerated": "Your recovery codes were regenerated",
    "recovery_code_used": "A recovery code was used to sign in",
    "password_changed": "Your password was changed",
    "locked": "Your account was locked after failed attempts",
    "email_changed": "Your address for security notifications was changed",
}
"""The kinds that send mail, and the subject of each (plain words, nothing the user typed)."""

ABSORBS = {"2fa_enabled": "passkey_added", "enrolled_at_login": "passkey_added"}
"""One message per action: turning 2FA on with a new passkey sends one message that names the
passkey, not also "A passkey was added" (the passkey's event comes first, in the same
transaction)."""

LOCK_NOTICE_EVERY = timedelta(hours=1)
SENT_FOR_ADMIN = {"2fa_requirement_reminder"}
"""Kinds that no request causes (a timer sends them): worded as the administrator's."""


def long_when(moment: datetime) -> str:
    """ "8 December 2026, 14:05 UTC" (SPEC §9)."""
    return moment.strftime("%-d %B %Y, %H:%M UTC")


def _from_words(value: Any) -> str:
    """An ISO 8601 date of a requirement, in words; "" when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return long_when(moment)


def _browser(user_agent: str) -> str:
    from web.views import browser_and_os  # views imports events, which imports us

    return browser_and_os(user_agent) if user_agent else ""


@dataclass(frozen=True)
class Facts:
    """What a message says, all of it plain text (templates escape it in the HTML part)."""

    kind: str
    display_name: str
    when: str
    by_admin: bool
    ip: str
    browser: str
    account_url: str
    passkey: str = ""
    remaining: int = 0
    required_from: str = ""
    old_email: str = ""
    new_email: str = ""

    def context(self) -> dict[str, Any]:
        return {**self.__dict__, "subject": SUBJECTS[self.kind]}


@cache
def environment() -> Environment:
    """Email templates: HTML parts autoescaped, text parts not; a misspelt variable fails."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        keep_trailing_newline=True,
    )


def render(facts: Facts, env: Environment | None = None) -> tuple[str, str, str]:
    """(subject, text body, HTML body) of one message."""
    env = env or environment()
    context = facts.context()
    text = env.get_template(f"email/{facts.kind}.txt").render(**context)
    html = env.get_template(f"email/{facts.kind}.html").render(**context)
    return SUBJECTS[facts.kind], text, html


def _settings(db: Session) -> Settings:
    settings = db.info.get("settings")
    if isinstance(settings, Settings):
        return settings
    return Settings.from_env(secret_key="", admin_token=None)  # noqa: S106 (signs nothing)


def _pending(db: Session) -> list[tuple[Notification, str]]:
    """Messages queued in this session's current transaction (for one-per-action): the list
    empties when the transaction commits or rolls back, so an earlier action's message is
    never touched."""
    held = db.info.get("outbox")
    if held is None:
        held = []
        db.info["outbox"] = held

        def forget(*_args: Any) -> None:
            held.clear()

        event.listen(db, "after_commit", forget)
        event.listen(db, "after_rollback", forget)
    return held


def _recently_sent_lock_notice(db: Session, user_id: int, now: datetime) -> bool:
    return (
        db.exec(
            select(Notification.id).where(
                Notification.user_id == user_id,
                Notification.kind == "locked",
                col(Notification.created_at) > now - LOCK_NOTICE_EVERY,
            )
        ).first()
        is not None
    )


def queue_for_event(
    db: Session,
    user_id: int,
    kind: str,
    *,
    actor: str,
    ip: str,
    user_agent: str,
    detail: dict[str, Any],
) -> list[Notification]:
    """Add the messages an event sends (none for most kinds, or when there is no address)."""
    if kind not in SUBJECTS:
        return []
    user = db.get(User, user_id)
    if user is None:
        return []
    if kind == "email_changed":
        recipients = [a for a in (detail.get("old"), detail.get("new")) if a]
        recipients = list(dict.fromkeys(recipients))
    else:
        recipients = [user.email] if user.email else []
    if not recipients:
        return []
    now = utcnow()
    if kind == "locked" and _recently_sent_lock_notice(db, user_id, now):
        return []
    pending = _pending(db)
    passkey = str(detail.get("name", "") or "")
    absorbed = ABSORBS.get(kind)
    if absorbed:
        for entry in [e for e in pending if e[0].kind == absorbed and e[0].user_id == user_id]:
            pending.remove(entry)
            earlier, earlier_passkey = entry
            if earlier in db.new:
                db.expunge(earlier)
            elif earlier in db:
                db.delete(earlier)
            passkey = passkey or earlier_passkey
    settings = _settings(db)
    facts = Facts(
        kind=kind,
        display_name=user.display_name or user.username,
        when=long_when(now),
        by_admin=actor == "admin" or kind in SENT_FOR_ADMIN,
        ip=ip,
        browser=_browser(user_agent),
        account_url=f"{settings.effective_origin}/account",
        passkey=passkey,
        remaining=int(detail.get("remaining", 0) or 0),
        required_from=_from_words(detail.get("from")),
        old_email=mask(detail.get("old")),
        new_email=mask(detail.get("new")),
    )
    subject, text, html = render(facts)
    rows = []
    for recipient in recipients:
        row = Notification(
            user_id=user_id,
            kind=kind,
            recipient=recipient,
            subject=subject,
            body_text=text,
            body_html=html,
            created_at=now,
            next_attempt_at=now,
        )
        db.add(row)
        rows.append(row)
    pending.extend((row, passkey) for row in rows)
    return rows
