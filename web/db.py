"""Engines, the per-request database session, and migrations.

SQLite runs in WAL mode with a busy timeout. Requests that change state open their
transaction with BEGIN IMMEDIATE (the write engine), so two writers queue instead of
failing half-way; reads use the ordinary engine. PostgreSQL uses one engine for both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from litestar import Request
from litestar.types import Method
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import SingletonThreadPool
from sqlmodel import Session

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
PER_THREAD = {"poolclass": SingletonThreadPool, "pool_size": 64}
"""The pool of `Database.loop`: a connection per thread (an event loop's), for up to 64
threads at once (a server has one loop a process; tests run several: past 64, the pool
would close the connections of the oldest threads)."""
LOOP_WAIT_MS = 100
"""How long a read on the event loop may wait (a SQLite lock in a rare moment such as a
WAL checkpoint, a slow PostgreSQL): past it, the request takes the thread path instead
(web.sessions.at_rest), so a loop never stalls for the busy timeout."""
BUSY_TIMEOUT_MS = 5000
"""The default of `Settings.sqlite_busy_timeout_ms`."""


@dataclass(frozen=True)
class Database:
    read: Engine
    write: Engine
    loop: Engine
    """One connection per thread, for the single read that an event loop makes itself (the
    session lookup of web.sessions.provide_viewer). From the shared pools, a loop could
    wait for a connection that only it can give back (requests release theirs on it)."""
    info: dict = field(default_factory=dict, compare=False)
    """Handed to every session as `Session.info` (e.g. "settings", which the outbox reads)."""

    def session(self, *, write: bool = True) -> Session:
        return Session(
            self.write if write else self.read, expire_on_commit=False, info=dict(self.info)
        )

    def loop_session(self) -> Session:
        """A read on the calling thread's own connection (see `loop`)."""
        return Session(self.loop, expire_on_commit=False, info=dict(self.info))

    def dispose(self) -> None:
        for engine in {self.read, self.write, self.loop}:
            engine.dispose()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_engine(
    url: str,
    *,
    immediate: bool,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    per_thread: bool = False,
) -> Engine:
    path = url.removeprefix("sqlite:///")
    # A request holds its connection until it ends (template rendering included), so more
    # requests are in flight than the default pool of 5 keeps: without room, every extra
    # one would open (and PRAGMA) a new connection and close it again.
    pool: dict = {}
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": 32, "max_overflow": 32}
    if per_thread:
        pool = PER_THREAD
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        hide_parameters=True,  # errors are logged: never with the values (hashes, tokens)
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def connect(url: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Database:
    """`busy_timeout_ms`: how long a SQLite statement waits for another writer's lock (then
    the request answers 503); PostgreSQL ignores it."""
    if is_sqlite(url):
        return Database(
            read=_sqlite_engine(url, immediate=False, busy_timeout_ms=busy_timeout_ms),
            write=_sqlite_engine(url, immediate=True, busy_timeout_ms=busy_timeout_ms),
            loop=_sqlite_engine(
                url, immediate=False, busy_timeout_ms=LOOP_WAIT_MS, per_thread=True
            ),
        )
    engine = create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
    )
    # no pre-ping (a second round trip on the loop): a broken connection fails the read,
    # the request takes the thread path, and the connection is replaced
    loop = create_engine(
        url,
        hide_parameters=True,
        connect_args={"connect_timeout": 2, "options": f"-c statement_timeout={LOOP_WAIT_MS}"},
        **PER_THREAD,
    )
    return Database(read=engine, write=engine, loop=loop)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Apply every migration (`barycenter-account db upgrade`; `serve` does it on start)."""
    if is_sqlite(url):
        _sqlite_engine(url, immediate=False).dispose()  # creates the folder, sets WAL
    command.upgrade(alembic_config(url), "head")


SAFE_METHODS: frozenset[Method] = frozenset({"GET", "HEAD", "OPTIONS"})
"""The one definition of the methods that change nothing: they read through the read engine,
pass CSRF and the Origin checks, and write nothing but the once-a-minute session touch."""


async def provide_db(request: Request) -> AsyncIterator[Session]:
    """One session per request; services commit explicitly, anything left is rolled back.

    An async generator, so that the clean-up runs on the event loop the moment the handler
    is done. As a plain generator Litestar ran it in the thread pool: a handler that read
    after its service committed (the page it answers with) held SQLite's write lock until
    a pool thread was free — and under 16 concurrent ceremony finishes every pool thread
    was waiting for that lock, so each finish waited out the 5 s busy timeout (503s)."""
    database: Database = request.app.state.database
    session = database.session(write=request.method not in SAFE_METHODS)
    try:
        yield session
    finally:
        session.close()


def answer_reads(db: Session, database: Database) -> None:
    """What is left of a request after its service only reads (the answer: a section, the
    Signal API's list): through the read engine from here on. On SQLite the write engine
    would take the write lock again (BEGIN IMMEDIATE) just to read, and in a crowd of
    writers that could wait out the busy timeout after the change had committed (503 for a
    change that was made). Inside a transaction (a refusal read in it) nothing changes."""
    if not db.in_transaction() and db.bind is not database.read:
        db.bind = database.read


@contextmanager
def transaction(db: Session) -> Iterator[None]:
    """A service's transaction: committed when the block ends, rolled back when it raises.
    Services own their transaction; handlers never commit. What a service committed on
    purpose before refusing stays (a counted failed attempt: web/lockout.py); the rest of
    a refused change is rolled back."""
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    db.commit()
