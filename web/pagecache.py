"""Rendered account pages, reused while nothing they show has changed.

Rendering GET /account costs ten times the rest of its request path (sessions, queries and
the template: ~3 ms of CPU). A page is rendered once and then served from memory until it
could differ. It is keyed by everything it is made of beyond the data:

- the session (its token's hash), which the page marks as "this session";
- the CSRF token in its forms;
- the browser (the suggested name of a new passkey comes from its User-Agent);
- the owner's `users.data_version`.

The database itself bumps that version on every change the page shows. A trigger on each
table the page reads adds one to it (migration 0004), so no writer can forget to do so:
the user site, the admin API, the CLI and the clean-up jobs all go through those triggers.
The version is read with the session on every request (web.sessions.at_rest), so a change
is seen by the next request, in every process.

A few things the page shows change with time alone: an idle session ending, the days left
of a grace period, the date in the recovery codes' file name, "Last seen" (which is touched
once a minute without a bump). So an entry also ends after MAX_AGE, and at the moment an
administrator's requirement starts to apply.

The memory is bounded (least recently used pages go first). Only the whole page is kept:
a section that htmx asks for is rendered each time (it runs only its own queries).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cachetools import TLRUCache

from web import twofactor
from web.twofactor import UserFlags

MAX_AGE = 60.0
"""Seconds a rendered page is reused at most, even when nothing was written."""


@dataclass(frozen=True)
class Key:
    session: str
    """The session's token hash: unique to one session (its id is not: SQLite hands the id
    of the newest session, once ended, to the next one, perhaps another person's)."""
    data_version: int
    csrf_token: str
    browser: bytes
    """A digest of the User-Agent header (any length: it is the client's)."""


def key(token_hash: str, data_version: int, csrf_token: str, user_agent: str) -> Key:
    return Key(
        session=token_hash,
        data_version=data_version,
        csrf_token=csrf_token,
        browser=hashlib.blake2b(user_agent.encode(), digest_size=16).digest(),
    )


def fresh_until(user: UserFlags, now: datetime) -> float:
    """When a page rendered `now` must be rendered again even if nothing is written: after
    MAX_AGE, or when an administrator's requirement starts to apply."""
    until = now.timestamp() + MAX_AGE
    starts = twofactor.required_from(user)
    if starts is not None and starts > now:
        until = min(until, starts.timestamp())
    return until


@dataclass(frozen=True)
class _Entry:
    body: bytes
    until: float


class PageCache:
    """Rendered pages by Key, at most `max_bytes` of them; safe to share between threads."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self._pages: TLRUCache[Key, _Entry] = TLRUCache(
            maxsize=max_bytes,
            ttu=lambda _key, entry, _now: entry.until,
            timer=clock,
            getsizeof=lambda entry: len(entry.body),
        )
        self._lock = threading.Lock()

    def get(self, key: Key) -> bytes | None:
        with self._lock:
            entry = self._pages.get(key)
        return entry.body if entry is not None else None

    def put(self, key: Key, body: bytes, until: float) -> None:
        if len(body) > self._pages.maxsize:
            return  # larger than the whole cache: never kept
        with self._lock:
            self._pages[key] = _Entry(body, until)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)
