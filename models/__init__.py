"""SQLModel tables (SPEC §3) and the queries that belong to them."""

from models.base import utcnow
from models.challenge import WebAuthnChallenge
from models.event import SecurityEvent
from models.notification import Notification
from models.passkey import Passkey
from models.rate import RateCounter, UnknownNameCounter
from models.recovery import RecoveryCode
from models.session import AuthSession
from models.user import User

__all__ = [
    "AuthSession",
    "Notification",
    "Passkey",
    "RateCounter",
    "RecoveryCode",
    "SecurityEvent",
    "UnknownNameCounter",
    "User",
    "WebAuthnChallenge",
    "utcnow",
]
