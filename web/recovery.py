"""Recovery codes: 10 single-use codes of 60 random bits each, stored only as argon2id hashes.

A code reads `K7QM-P2XD-9RTB`: 12 characters from an alphabet without look-alikes (no 0/O,
1/I/L, U), grouped by four. Entry ignores case, spaces and hyphens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, delete, func, select, update

from models import RecoveryCode, utcnow

ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # 30 symbols, 12 of them: ~58.9 bits
LENGTH = 12
COUNT = 10
# Codes carry ~59 bits of randomness, so a light argon2id is plenty and keeps 10 checks fast.
_hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, LENGTH, 4))


def normalize(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch not in " -\t")


def issue(db: Session, user_id: int) -> list[str]:
    """Replace the user's codes with 10 new ones (the caller commits); returns them once."""
    db.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user_id))
    codes = [new_code() for _ in range(COUNT)]
    for code in codes:
        db.add(RecoveryCode(user_id=user_id, code_hash=_hasher.hash(normalize(code))))
    return codes


def remove_all(db: Session, user_id: int) -> None:
    db.exec(delete(RecoveryCode).where(col(RecoveryCode.user_id) == user_id))


def use(db: Session, user_id: int, entered: str) -> bool:
    """Mark the matching unused code as used; False when none matches (or it just got used)."""
    candidate = normalize(entered)
    if len(candidate) != LENGTH or any(ch not in ALPHABET for ch in candidate):
        return False
    unused = db.exec(
        select(RecoveryCode).where(
            RecoveryCode.user_id == user_id, col(RecoveryCode.used_at).is_(None)
        )
    ).all()
    for row in unused:
        try:
            _hasher.verify(row.code_hash, candidate)
        except (VerificationError, InvalidHashError):
            continue
        used = db.exec(
            update(RecoveryCode)
            .where(col(RecoveryCode.id) == row.id, col(RecoveryCode.used_at).is_(None))
            .values(used_at=utcnow())
        )
        return used.rowcount == 1
    return False


def on_record(db: Session, user_id: int) -> int:
    """How many codes the user has, used or not (0: none were ever issued, or removed)."""
    return db.exec(select(func.count()).where(col(RecoveryCode.user_id) == user_id)).one()


def version(db: Session, user_id: int) -> str:
    """Which set of codes the user has ("0" for none): a digest of their salted hashes, new
    with every issue (ids may be reused). Steps carry it to notice codes changed meanwhile."""
    hashes = db.exec(select(RecoveryCode.code_hash).where(col(RecoveryCode.user_id) == user_id))
    return _version(list(hashes))


def _version(hashes: list[str]) -> str:
    # sorted here, not by the database: its collation must not change the digest
    if not hashes:
        return "0"
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Summary:
    """The user's codes as the account page shows them."""

    on_record: int
    remaining: int
    version: str


NONE = Summary(0, 0, "0")


def summary(db: Session, user_id: int) -> Summary:
    """How many codes are on record, how many are unused, and their `version`: one query."""
    rows = db.exec(
        select(RecoveryCode.code_hash, RecoveryCode.used_at).where(
            col(RecoveryCode.user_id) == user_id
        )
    ).all()
    remaining = sum(1 for _, used_at in rows if used_at is None)
    return Summary(len(rows), remaining, _version([code_hash for code_hash, _ in rows]))
