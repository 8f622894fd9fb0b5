"""Shared fixtures: a database of its own for every test (SQLite file, or a fresh
PostgreSQL database when BARYCENTER_TEST_DATABASE_URL is set), created with a random name
and dropped after. Migrations run once per test run, into a template that each test's
database is copied from."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from web.db import upgrade

PG_ENV = "BARYCENTER_TEST_DATABASE_URL"


def _admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(make_url(os.environ[PG_ENV]), isolation_level="AUTOCOMMIT")


def _drop(admin, name: str) -> None:  # type: ignore[no-untyped-def]
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


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """One migrated database per run; every test's database starts as a copy of it."""
    with temporary_database(tmp_path_factory.mktemp("template")) as url:
        upgrade(url)
        if url.startswith("sqlite:///"):  # everything into the main file before copying it
            with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        yield url


@pytest.fixture
def database_url(tmp_path, migrated_template) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A migrated database of this test's own."""
    with temporary_database(tmp_path, template=migrated_template) as url:
        yield url
