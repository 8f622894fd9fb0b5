"""The cost shape of the request path: what an ordinary GET writes, and how many times a
request hops to the thread pool (each hop is a context switch on two busy cores)."""

from __future__ import annotations

import re
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import timedelta

from litestar.concurrency import set_asyncio_executor
from sqlalchemy import event
from sqlmodel import update

from models import AuthSession, utcnow
from tests.helpers import statements

WRITES = ("INSERT", "UPDATE", "DELETE")


def writes(seen: list[str]) -> list[str]:
    return [sql for sql in seen if sql.startswith(WRITES)]


def test_an_ordinary_get_writes_nothing_but_the_touch_once_a_minute(auth, client, database):
    auth.login()
    with statements(database) as seen:
        for _ in range(3):
            assert client.get("/account").status_code == 200
    assert seen and writes(seen) == []
    with database.session() as db:  # last seen two minutes ago
        db.exec(update(AuthSession).values(last_seen_at=utcnow() - timedelta(minutes=2)))
        db.commit()
    with statements(database) as seen:
        for _ in range(3):
            assert client.get("/account").status_code == 200
    (touch,) = writes(seen)
    assert touch.startswith("UPDATE auth_sessions SET last_seen_at")


class CountingExecutor(Executor):
    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.calls: list[str] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.calls.append(getattr(fn, "__qualname__", repr(fn)))
        return self.pool.submit(fn, *args, **kwargs)


def test_hooks_run_on_the_event_loop_not_in_the_thread_pool(app, auth, client):
    auth.login()  # its landing renders /account once
    executor = CountingExecutor()
    set_asyncio_executor(executor)
    try:
        assert client.get("/healthz").status_code == 200
        assert executor.calls == []  # middleware and hooks: no thread hop
        assert client.get("/account").status_code == 200
        # the same page again, unchanged: no thread hop at all (the session lookup reads on
        # the loop, web.sessions.provide_viewer; the page comes from memory, web.pagecache)
        assert executor.calls == []
        app.state.pages = None
        assert client.get("/account").status_code == 200
        # rendered: its queries and template in a worker thread; the database session is
        # closed on the event loop (web.db.provide_db)
        assert len(executor.calls) == 1, executor.calls
        executor.calls.clear()
        with app.state.database.session() as db:  # last seen two minutes ago
            db.exec(update(AuthSession).values(last_seen_at=utcnow() - timedelta(minutes=2)))
            db.commit()
        assert client.get("/account").status_code == 200
        # the once-a-minute touch writes: the session lookup goes to a worker thread too
        assert len(executor.calls) == 2, executor.calls
    finally:
        set_asyncio_executor(None)
        executor.pool.shutdown()


def test_the_answer_after_a_change_reads_without_the_write_lock(auth, client, database):
    """After its service committed, a request's answer (the section it renders) reads
    through the read engine: on SQLite no second BEGIN IMMEDIATE, which in a crowd of
    writers waited out the busy timeout for a change already made (web.db.answer_reads)."""
    auth.login()
    assert auth.add_passkey("Laptop").status_code == 200
    passkey_id = int(re.search(r"/account/passkeys/(\d+)/rename", client.page("/account").text)[1])
    begins: list[str] = []  # the engine of each transaction begun

    def on_begin(connection) -> None:
        begins.append("write" if connection.engine is database.write else "read")

    for engine in {database.read, database.write}:
        event.listen(engine, "begin", on_begin)
    try:
        renamed = client.htmx("POST", f"/account/passkeys/{passkey_id}/rename", {"name": "Desk"})
    finally:
        for engine in {database.read, database.write}:
            event.remove(engine, "begin", on_begin)
    assert renamed.status_code == 200 and "Desk" in renamed.text
    if database.read is not database.write:  # SQLite: the change, then the answer
        assert begins == ["write", "read"], begins
