"""Shared fixtures: a database of its own for every test (SQLite file, or a fresh
PostgreSQL database when BARYCENTER_TEST_DATABASE_URL is set), created with a random name
and dropped after. Migrations run once per test run, into a template that each test's
database is copied from.

On PostgreSQL (the second pass of .ci/run) only the tests that use a database run: the
others (rules tables, templates, parsers) have nothing that depends on the database and
already ran on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest

from tests.helpers.database import on_postgresql, temporary_database
from web.db import upgrade

DATABASE_FIXTURES = frozenset({"database_url", "migrated_template", "server"})
"""A test that uses one of these (directly or through other fixtures) touches a database."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not on_postgresql():
        return
    keep, skip = [], []
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        (keep if uses & DATABASE_FIXTURES or item.get_closest_marker("database") else skip).append(
            item
        )
    if skip:
        config.hook.pytest_deselected(items=skip)
        items[:] = keep


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory) -> Iterator[str]:
    """One migrated database per run; every test's database starts as a copy of it."""
    with temporary_database(tmp_path_factory.mktemp("template")) as url:
        upgrade(url)
        if url.startswith("sqlite:///"):  # everything into the main file before copying it
            with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        yield url


@pytest.fixture
def database_url(tmp_path, migrated_template) -> Iterator[str]:
    """A migrated database of this test's own."""
    with temporary_database(tmp_path, template=migrated_template) as url:
        yield url
