"""What tests share (fixtures stay in the conftest files): the browser-like clients and
`Auth` for both the app in-process and a real server, databases of their own, and short
reads of the database. End-to-end helpers (a real server, Chromium) are in
tests.helpers.e2e; the software authenticator is tests.softauthn, the SMTP server
tests.smtp."""

from tests.helpers.client import ORIGIN, PASSWORD, Auth, BrowserVerbs, Client, ServerClient
from tests.helpers.database import (
    on_postgresql,
    query,
    reload_user,
    statements,
    temporary_database,
)

__all__ = [
    "ORIGIN",
    "PASSWORD",
    "Auth",
    "BrowserVerbs",
    "Client",
    "ServerClient",
    "on_postgresql",
    "query",
    "reload_user",
    "statements",
    "temporary_database",
]
