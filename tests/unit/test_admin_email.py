"""The admin API's email calls (SPEC §6 rev 2): createUser(email:), setUserEmail,
user2faStatus { email }, and the mail an address change sends to both addresses."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlmodel import select

from models import Notification, SecurityEvent
from tests.helpers import query, reload_user
from web.admin.app import create_admin_app

TOKEN = "an-admin-token-of-more-than-32-characters"


@pytest.fixture
def api(settings, database) -> Iterator[TestClient]:
    with TestClient(app=create_admin_app(settings.with_(admin_token=TOKEN), database)) as c:
        yield c


def call(api: TestClient, document: str, **variables) -> dict:
    response = api.post(
        "/graphql",
        json={"query": document, "variables": variables},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


SET = """mutation($u: String!, $e: String) {
  r: setUserEmail(username: $u, email: $e) { success message username }
}"""
STATUS = "query($u: String!) { user2faStatus(username: $u) { username email } }"


def test_set_change_and_clear_an_address(api, database, user):
    result = call(api, SET, u="alice", e="  Alice@Example.COM ")["r"]
    assert result["success"] and "Alice@example.com" in result["message"]
    assert call(api, STATUS, u="alice")["user2faStatus"]["email"] == "Alice@example.com"
    call(api, SET, u="alice", e="alice@example.org")
    cleared = call(api, SET, u="alice", e=None)["r"]
    assert cleared["success"]
    assert call(api, STATUS, u="alice")["user2faStatus"]["email"] is None

    mails = [(n.recipient, n.kind) for n in query(database, select(Notification))]
    assert mails == [
        ("Alice@example.com", "email_changed"),  # set: the new address
        ("Alice@example.com", "email_changed"),  # changed: the old one…
        ("alice@example.org", "email_changed"),  # …and the new one
        ("alice@example.org", "email_changed"),  # cleared: the old one
    ]
    events = query(database, select(SecurityEvent).where(SecurityEvent.kind == "email_changed"))
    assert [e.actor for e in events] == ["admin"] * 3
    assert events[1].detail == {"old": "Alice@example.com", "new": "alice@example.org"}


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "not an address", "a@b.test", "a@localhost", "ü@example.com",
     "a@example.com\r\nBcc: x@example.com", "a" * 300 + "@example.com", "a@@example.com",
     '"quoted"@example.com', "<script>@example.com"],
)  # fmt: skip
def test_invalid_addresses_are_refused_and_change_nothing(api, database, user, bad):
    call(api, SET, u="alice", e="alice@example.com")
    before = len(query(database, select(Notification)))
    result = call(api, SET, u="alice", e=bad)["r"]
    assert result["success"] is False and result["message"]
    assert reload_user(database).email == "alice@example.com"
    assert len(query(database, select(Notification))) == before


def test_unknown_user(api):
    result = call(api, SET, u="nobody", e="a@example.com")["r"]
    assert result == {"success": False, "message": "User not found: nobody", "username": "nobody"}
    assert call(api, STATUS, u="nobody")["user2faStatus"] is None


def test_create_user_with_an_email(api, database):
    create = """mutation($e: String) { createUser(username: "bob", password: "plum orbit lantern",
                email: $e) { success message } }"""
    refused = call(api, create, e="bob@localhost")["createUser"]
    assert refused["success"] is False and "not a valid email address" in refused["message"]
    assert call(api, STATUS, u="bob")["user2faStatus"] is None  # nothing half-made
    assert call(api, create, e="bob@example.com")["createUser"]["success"]
    assert call(api, STATUS, u="bob")["user2faStatus"]["email"] == "bob@example.com"
    assert reload_user(database, "bob").email == "bob@example.com"


def test_the_activity_list_words_an_address_change(api, auth, client, user):
    call(api, SET, u="alice", e="alice@example.com")
    auth.login()
    page = client.page("/account").text
    assert "Email address for notifications set to a•••@example.com by an administrator" in page
    assert json.dumps("alice@example.com")[1:-1] not in page
