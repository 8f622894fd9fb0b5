"""Databases for tests: a fresh one per test (SQLite file, or a PostgreSQL database of its
own when BARYCENTER_TEST_DATABASE_URL is set), and short reads of what a test left there."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlmodel import select

from models import User
from web.db import Database

PG_ENV = "BARYCENTER_TEST_DATABASE_URL"


def on_postgresql() -> bool:
    """True when this run's databases are PostgreSQL ones (the second pass of .ci/run)."""
    return bool(os.environ.get(PG_ENV))


def _admin_engine() -> Engine:
    return create_engine(make_url(os.environ[PG_ENV]), isolation_level="AUTOCOMMIT")


def _drop(admin: Engine, name: str) -> None:
    with admin.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


@contextmanager
def temporary_database(tmp_path: Path, template: str | None = None) -> Iterator[str]:
    """A URL to a database that exists for the duration of the block: empty, or a copy of
    `template` (a URL that temporary_database gave before)."""
    base = os.environ.get(PG_ENV)
    if not base:
        path = tmp_path / f"barycenter-{secrets.token_hex(4)}.db"
        if template:
            shutil.copyfile(template.removeprefix("sqlite:///"), path)
        yield f"sqlite:///{path}"
        return
    name = f"barycenter_test_{secrets.token_hex(6)}"
    admin = _admin_engine()
    with admin.connect() as connection:
        copy = f' TEMPLATE "{make_url(template).database}"' if template else ""
        connection.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop(admin, name)
        admin.dispose()


def reload_user(database: Database, username: str = "alice") -> User:
    with database.session(write=False) as db:
        return db.exec(select(User).where(User.username_key == username)).one()


def query(database: Database, statement: Any) -> Any:
    with database.session(write=False) as db:
        return db.exec(statement).all()


TRANSACTION_CONTROL = frozenset({"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"})


@contextmanager
def statements(database: Database) -> Iterator[list[str]]:
    """The SQL statements run on the database's engines while the block runs (its own
    BEGIN, COMMIT and ROLLBACK left out: they are not queries)."""
    seen: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sql = " ".join(statement.split())
        if sql not in TRANSACTION_CONTROL:
            seen.append(sql)

    engines = {database.read, database.write, database.loop}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)
