"""End-to-end fixtures: a real `barycenter-account serve` process on free ports (its own
database for the run), Debian's Chromium through Playwright, a CDP virtual authenticator.
Each test makes its own user through the admin API, so tests share one server but never
state. The helpers the tests call are in tests/helpers/e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.helpers import temporary_database
from tests.helpers.e2e import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Authenticator,
    NewContext,
    Server,
    add_authenticator,
    start_server,
    stop_server,
)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server")
    with temporary_database(tmp) as url:
        running = start_server(url, tmp)
        yield running
        stop_server(running)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[NewContext]:
    """`new_context(**options)`: more browsers for one test (other sessions, another user
    agent, JavaScript off), closed after the test."""
    made: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        ctx = browser.new_context(**options)
        ctx.set_default_timeout(10_000)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def authenticator(page: Page) -> Authenticator:
    return add_authenticator(page)
