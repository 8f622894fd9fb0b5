"""argon2id password hashing, and what makes a new password acceptable (SPEC §5.7).

Unknown users cost the same as wrong passwords. Passwords are compared and hashed in NFKC
form (the same password typed on another keyboard or OS still matches); hashing and
judging run inside a bounded pool, so a burst of requests cannot exhaust memory or CPU.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

MAX_PASSWORD_LENGTH = 1024
"""The most a sign-in accepts (older passwords); new ones are at most NEW_PASSWORD_MAX."""
MIN_PASSWORD_LENGTH = 8
NEW_PASSWORD_MAX = 256
ZXCVBN_LIMIT = 72
"""zxcvbn judges at most this many characters (its own limit); longer passwords pass on length."""
MIN_SCORE = 3

_hasher = PasswordHasher()

POOL_SIZE = max(2, min(4, os.cpu_count() or 2))
"""At most this many argon2 computations (or zxcvbn judgements) at once per process (argon2
takes 64 MiB each): a burst of sign-ins waits its turn instead of exhausting memory (SPEC §7)."""
_pool = threading.BoundedSemaphore(POOL_SIZE)


@contextmanager
def hashing_slot() -> Iterator[None]:
    """One place in the bounded pool."""
    with _pool:
        yield


def normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    with hashing_slot():
        return _hasher.hash(normalize(password))


@cache
def _dummy_hash() -> str:
    return _hasher.hash("an unused password that keeps the timing of unknown users honest")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; with no hash, burns the same time and answers False.
    A hash made before passwords were normalised still matches the password as typed."""
    normalized = normalize(password)
    with hashing_slot():
        ok = _verify(password_hash or _dummy_hash(), normalized)
        if not ok and password_hash and normalized != password:
            ok = _verify(password_hash, password)
    return ok and bool(password_hash)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


WEAK = "This password is too easy to guess."
WEAK_HINT = "Try a longer phrase of several uncommon words."


def new_password_problem(
    password: str, *, username: str, current: str | None = None, hints: tuple[str, ...] = ()
) -> str | None:
    """Why `password` can't be the new password (in words), or None when it can.

    8–256 characters after NFKC; not the username; not the current password (when given:
    the caller checks a stored hash itself); zxcvbn score 3 or more (passwords longer than
    zxcvbn's 72 characters pass on length), its warning and suggestions becoming the
    message (our words when it has no warning). `hints`: other guessable words (display
    name, the email's local part).
    """
    candidate = normalize(password)
    if len(candidate) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(candidate) > NEW_PASSWORD_MAX:
        return f"Use at most {NEW_PASSWORD_MAX} characters."
    if candidate.casefold() == normalize(username).casefold():
        return "Your password can't be your username."
    if current is not None and candidate == normalize(current):
        return "Choose a password different from your current one."
    if len(candidate) > ZXCVBN_LIMIT:
        return None  # beyond zxcvbn's limit: long enough on its own (SPEC §9)
    inputs = [w for w in (username, *hints) if w]
    with hashing_slot():
        verdict = zxcvbn(candidate[:ZXCVBN_LIMIT], user_inputs=inputs)
    if verdict["score"] >= MIN_SCORE:
        return None
    feedback = verdict.get("feedback") or {}
    warning = (feedback.get("warning") or "").strip() or WEAK
    suggestions = [s.strip() for s in feedback.get("suggestions") or [] if s.strip()]
    return " ".join([warning, *(suggestions or [WEAK_HINT])])
