"""Delivering the outbox (SPEC §5.8): claim due messages with a lease, send each with a real
SMTP client (the standard library's, in a worker thread), record the outcome.

- Several processes on one database send each message once: a claim takes rows with
  `FOR UPDATE SKIP LOCKED` (PostgreSQL) and sets `claimed_until` with an UPDATE that only
  succeeds while nobody else holds the lease (SQLite has no SKIP LOCKED; its BEGIN IMMEDIATE
  serialises the claims). A process that dies mid-send leaves its lease to expire, and the
  message goes out again then: at-least-once across a crash, exactly once otherwise.
- Failures are retried with backoff (15 s, 30 s, 1 min, … at most an hour apart) and given up
  24 hours after the message was queued, keeping the last error.
- Without BARYCENTER_SMTP_URL each message is written to <data>/mail/*.eml instead.
- Headers are built by the `email` package's EmailMessage: a CR or LF in any value is refused
  there, never written as a new header.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import ColumnElement, or_
from sqlmodel import Session, col, select, update

from models import Notification, utcnow
from web.db import Database
from web.settings import Settings

log = logging.getLogger("barycenter.mail")

TIMEOUT = 10.0
"""Seconds for connecting to and each exchange with the SMTP server."""
BATCH = 10
LEASE = timedelta(seconds=BATCH * 3 * TIMEOUT + 60)
"""Longer than a batch can take even when every exchange times out."""
FIRST_RETRY = timedelta(seconds=15)
LONGEST_WAIT = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class MailConfigError(ValueError):
    """BARYCENTER_SMTP_URL or BARYCENTER_MAIL_FROM is not usable."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # "none" | "starttls" | "tls"
    username: str = ""
    password: str = ""
    verify: bool = True

    def __repr__(self) -> str:  # never print the password
        return f"SmtpConfig({self.security}://{self.host}:{self.port}, verify={self.verify})"


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    if name not in query:
        return default
    value = query[name][-1].strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise MailConfigError(f"BARYCENTER_SMTP_URL: {name} must be 1 or 0, not {value!r}")


def parse_smtp_url(url: str) -> SmtpConfig:
    """smtp://[user:pass@]host[:port][?starttls=1][&verify=0] or smtps://…"""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"smtp", "smtps"}:
        raise MailConfigError("BARYCENTER_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise MailConfigError("BARYCENTER_SMTP_URL needs a host name")
    query = parse_qs(parts.query)
    unknown = set(query) - {"starttls", "verify"}
    if unknown:
        raise MailConfigError(f"BARYCENTER_SMTP_URL: unknown parameter {sorted(unknown)[0]!r}")
    starttls = _flag(query, "starttls", False)
    if parts.scheme == "smtps" and starttls:
        raise MailConfigError("BARYCENTER_SMTP_URL: smtps:// is already encrypted (no starttls)")
    security = "tls" if parts.scheme == "smtps" else ("starttls" if starttls else "none")
    try:
        port = parts.port
    except ValueError:
        raise MailConfigError("BARYCENTER_SMTP_URL has an invalid port") from None
    default = DEFAULT_PORTS["smtp+starttls" if starttls else parts.scheme]
    return SmtpConfig(
        host=parts.hostname,
        port=port or default,
        security=security,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        verify=_flag(query, "verify", True),
    )


def check_mail_from(mail_from: str) -> None:
    """BARYCENTER_MAIL_FROM must be one address header value (a display name is fine)."""
    message = EmailMessage()
    try:
        message["From"] = mail_from
        addresses = message["From"].addresses
    except (ValueError, IndexError, TypeError) as error:
        raise MailConfigError(f"BARYCENTER_MAIL_FROM is not an address: {error}") from None
    if len(addresses) != 1 or not addresses[0].addr_spec or "@" not in addresses[0].addr_spec:
        raise MailConfigError("BARYCENTER_MAIL_FROM must be one address, e.g. Name <a@b.org>")


def build_message(row: Notification, mail_from: str) -> EmailMessage:
    """The message of an outbox row: text and HTML alternatives, headers set as objects."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = Address(addr_spec=row.recipient)
    message["Subject"] = " ".join(row.subject.split())
    message["Date"] = format_datetime(row.created_at.replace(tzinfo=UTC), usegmt=True)
    domain = mail_from.rpartition("@")[2].strip(" >") or "localhost"
    message["Message-ID"] = make_msgid(idstring=f"n{row.id}", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(row.body_text)
    message.add_alternative(row.body_html, subtype="html")
    return message


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not config.verify:  # ?verify=0: test servers with self-signed certificates only
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def send_smtp(config: SmtpConfig, message: EmailMessage) -> None:
    """One message over SMTP; any refusal, time-out or dropped connection raises."""
    client: smtplib.SMTP
    if config.security == "tls":
        client = smtplib.SMTP_SSL(
            config.host, config.port, timeout=TIMEOUT, context=_tls_context(config)
        )
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=TIMEOUT)
    with client:
        if config.security == "starttls":
            client.starttls(context=_tls_context(config))
        if config.username:
            client.login(config.username, config.password)
        refused = client.send_message(message)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)


def write_eml(folder: Path, row: Notification, message: EmailMessage) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{row.created_at:%Y%m%dT%H%M%S}-{row.id}-{row.kind}.eml"
    path.write_bytes(message.as_bytes())
    return path


def _due(now: datetime, ignore_delays: bool) -> list[ColumnElement[bool]]:
    conditions = [
        col(Notification.sent_at).is_(None),
        col(Notification.gave_up_at).is_(None),
        or_(col(Notification.claimed_until).is_(None), col(Notification.claimed_until) < now),
    ]
    if not ignore_delays:
        conditions.append(col(Notification.next_attempt_at) <= now)
    return conditions


def claim(
    database: Database, *, limit: int = BATCH, ignore_delays: bool = False, skip: set[int]
) -> list[Notification]:
    """Take up to `limit` due messages for this process (committed before any is sent)."""
    now = utcnow()
    with database.session() as db:
        query = (
            select(Notification)
            .where(*_due(now, ignore_delays))
            .order_by(col(Notification.id))
            .limit(limit + len(skip))
            .with_for_update(skip_locked=True)
        )
        claimed: list[Notification] = []
        for row in db.exec(query):
            if row.id in skip or len(claimed) >= limit:
                continue
            taken = db.exec(
                update(Notification)
                .where(col(Notification.id) == row.id, *_due(now, ignore_delays))
                .values(claimed_until=now + LEASE)
            ).rowcount
            if taken == 1:
                claimed.append(row)
        db.commit()
        return claimed


def backoff(attempts: int) -> timedelta:
    """Wait before attempt n+1: 15 s, 30 s, 1 min, 2 min, … at most an hour."""
    return min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), LONGEST_WAIT)


def _record(db: Session, row: Notification, error: str | None) -> None:
    now = utcnow()
    values: dict = {"attempts": Notification.attempts + 1, "claimed_until": None}
    if error is None:
        values["sent_at"] = now
        values["last_error"] = ""
    else:
        values["last_error"] = error[:2000]
        values["next_attempt_at"] = now + backoff(row.attempts + 1)
        if now - row.created_at >= GIVE_UP_AFTER:
            values["gave_up_at"] = now
    db.exec(update(Notification).where(col(Notification.id) == row.id).values(**values))
    db.commit()


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0


def deliver(database: Database, settings: Settings, *, ignore_delays: bool = False) -> Outcome:
    """Send every due message (each attempted once in this call). `send-mail` ignores the
    retry delays; the background sender keeps them."""
    config = parse_smtp_url(settings.smtp_url) if settings.smtp_url else None
    outcome = Outcome()
    tried: set[int] = set()
    while True:
        rows = claim(database, ignore_delays=ignore_delays, skip=tried)
        if not rows:
            return outcome
        for row in rows:
            tried.add(row.pk)
            error = _send_one(settings, config, row)
            with database.session() as db:
                _record(db, row, error)
            if error is None:
                outcome.sent += 1
            else:
                outcome.failed += 1
                log.warning("mail %s to the user %s not sent: %s", row.id, row.user_id, error)


def _send_one(settings: Settings, config: SmtpConfig | None, row: Notification) -> str | None:
    """None when delivered (or written), else why not."""
    try:
        message = build_message(row, settings.mail_from)
        if config is None:
            write_eml(settings.mail_folder, row, message)
        else:
            send_smtp(config, message)
    except (OSError, smtplib.SMTPException, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None
