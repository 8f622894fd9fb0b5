"""Deleting what has expired: sessions, challenges, rate and lockout counters, very old
events."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, delete, or_, select

from models import (
    AuthSession,
    Notification,
    RateCounter,
    SecurityEvent,
    UnknownNameCounter,
    User,
    WebAuthnChallenge,
    utcnow,
)
from models.session import FULL, PARTIAL
from web import sessions
from web.db import Database
from web.settings import Settings

EVENT_RETENTION = timedelta(days=365)
NOTIFICATION_RETENTION = timedelta(days=30)
"""Sent (or given-up) messages are kept a month for looking into delivery, then deleted."""
UNKNOWN_NAME_RETENTION = timedelta(days=30)
"""The counter of an unknown username whose hold is over is deleted (an ended hold is
forgotten anyway, twofactor.reserve_attempt); one with 1–4 failures and no hold (a known
user's would stay until a sign-in) after a month without attempts, so the table stays
bounded."""


def cleanup(database: Database, settings: Settings) -> dict[str, int]:
    now = utcnow()
    idle_cutoff = now - timedelta(seconds=settings.session_ttl)
    ended_session = or_(
        col(AuthSession.expires_at) <= now,
        (col(AuthSession.state) == FULL) & (col(AuthSession.last_seen_at) < idle_cutoff),
    )
    old_event = col(SecurityEvent.created_at) < now - EVENT_RETENTION
    with database.session() as db:
        # Deleting a session or an event bumps its owner's data_version (migration 0004),
        # which locks the owner's row. Lock the owners first, in one order, as every change
        # of an account does: on PostgreSQL, taking the rows first could deadlock with a
        # change that holds a user's row and wants one of them.
        owners = (
            select(AuthSession.user_id)
            .where(ended_session)
            .union(select(SecurityEvent.user_id).where(old_event))
        )
        db.exec(
            select(User.id)
            .where(col(User.id).in_(owners))
            .order_by(col(User.id))
            .with_for_update(key_share=True)
        ).all()
        expired_partial = db.exec(
            select(AuthSession).where(
                col(AuthSession.expires_at) <= now, col(AuthSession.state) == PARTIAL
            )
        ).all()
        sessions.record_incomplete(db, list(expired_partial))
        counts = {
            "sessions": db.exec(delete(AuthSession).where(ended_session)).rowcount,
            "events": db.exec(delete(SecurityEvent).where(old_event)).rowcount,
        }
        db.commit()  # the owners' locks end here, before the deletes that concern no account
    with database.session() as db:
        counts |= {
            "challenges": db.exec(
                delete(WebAuthnChallenge).where(col(WebAuthnChallenge.expires_at) <= now)
            ).rowcount,
            "rate_counters": db.exec(
                delete(RateCounter).where(
                    col(RateCounter.window_start) < now - timedelta(minutes=2)
                )
            ).rowcount,
            "unknown_name_counters": db.exec(
                delete(UnknownNameCounter).where(
                    or_(
                        col(UnknownNameCounter.locked_until) <= now,
                        col(UnknownNameCounter.last_attempt_at) < now - UNKNOWN_NAME_RETENTION,
                    )
                )
            ).rowcount,
            "notifications": db.exec(
                delete(Notification).where(
                    col(Notification.created_at) < now - NOTIFICATION_RETENTION,
                    or_(
                        col(Notification.sent_at).is_not(None),
                        col(Notification.gave_up_at).is_not(None),
                    ),
                )
            ).rowcount,
        }
        db.commit()
    return counts
