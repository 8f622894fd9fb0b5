"""Shared fixtures: a database of its own for every test (SQLite file, or a fresh
PostgreSQL database when BARYCENTER_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ENV = "BARYCENTER_TEST_DATABASE_URL"


@contextmanager
def temporary_database(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A URL to an empty database that exists for the duration of the block."""
    base = os.environ.get(PG_ENV)
    if not base:
        yield f"sqlite:///{tmp_path}/barycenter.db"
        return
    name = f"barycenter_test_{secrets.token_hex(6)}"
    url = make_url(base)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with temporary_database(tmp_path) as url:
        yield url
