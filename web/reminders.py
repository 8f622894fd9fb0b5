"""The day-before reminder of an administrator's requirement with a grace period (SPEC §4.2).

`serve` runs `send_due_reminders` in its background work (web/cli.py). Each reminder is
recorded as the event `2fa_requirement_reminder` (issue 10's outbox turns events into mail),
and `users.requirement_reminded_at` marks it done in the same transaction: it goes once, also
after a restart, and once only when several processes run the job at the same moment (the
UPDATE … WHERE requirement_reminded_at IS NULL lets one of them win). When a reminder is due
is decided by web.twofactor.reminder_due.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import col, select, update

from models import User, utcnow
from web import events, twofactor
from web.db import Database

log = logging.getLogger("barycenter")


def send_due_reminders(database: Database, now: datetime | None = None) -> int:
    """Queue every reminder that is due now; returns how many were queued."""
    now = now or utcnow()
    after, until = twofactor.reminder_window(now)
    with database.session(write=False) as reader:
        # a cheap pre-selection; the rule itself decides below, for each user
        candidates = list(
            reader.exec(
                select(User.id).where(
                    col(User.requires_2fa).is_(True),
                    col(User.requires_2fa_from).is_not(None),
                    col(User.requires_2fa_from) > after,
                    col(User.requires_2fa_from) <= until,
                    col(User.requirement_reminded_at).is_(None),
                    col(User.user_2fa_enabled).is_(False),
                )
            )
        )
    sent = 0
    for user_id in candidates:
        with database.session() as db:
            user = db.get(User, user_id, populate_existing=True, with_for_update=True)
            if user is None or not twofactor.reminder_due(user, now):
                continue
            claimed = db.exec(
                update(User)
                .where(col(User.id) == user_id, col(User.requirement_reminded_at).is_(None))
                .values(requirement_reminded_at=now)
            ).rowcount
            if claimed != 1:  # another process sent it meanwhile
                db.rollback()
                continue
            start = twofactor.required_from(user)
            assert start is not None  # reminder_due says so
            events.record(
                db,
                user.pk,
                "2fa_requirement_reminder",
                actor="admin",
                **{"from": twofactor.iso_utc(start)},
            )
            db.commit()
            sent += 1
    if sent:
        log.info("queued %d two-factor requirement reminder(s)", sent)
    return sent
