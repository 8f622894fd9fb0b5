"""argon2id password hashing. Unknown users cost the same as wrong passwords."""

from __future__ import annotations

import os
import threading
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MAX_PASSWORD_LENGTH = 1024
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()

POOL_SIZE = max(2, min(4, os.cpu_count() or 2))
"""At most this many argon2 computations at once per process (each takes 64 MiB): a burst
of sign-ins waits its turn instead of exhausting memory (SPEC §7)."""
_pool = threading.BoundedSemaphore(POOL_SIZE)


def hash_password(password: str) -> str:
    with _pool:
        return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("an unused password that keeps the timing of unknown users honest")


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; with no hash, burns the same time and answers False."""
    stored = password_hash or _dummy_hash()
    with _pool:
        try:
            return _hasher.verify(stored, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
