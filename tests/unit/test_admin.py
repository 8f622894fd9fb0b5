"""The admin API (SPEC §6): GraphQL on its own listener, behind a Bearer token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlmodel import select

from models import Passkey, SecurityEvent, User, utcnow
from tests.helpers import query, reload_user
from tests.helpers.admin_api import RESULT_FIELDS, TOKEN, set_enabled, set_required
from web import recovery
from web.admin.app import create_admin_app
from web.protection import CSP

STATUS_FIELDS = (
    "username subject requires2fa user2faEnabled effective2fa passkeyEnrolled passkeyCount "
    "passkeyEnrolledAt recoveryCodesRemaining"
)


@pytest.fixture
def api(settings, database) -> Iterator[TestClient]:
    with TestClient(app=create_admin_app(settings, database)) as client:
        yield client


def graphql(api: TestClient, document: str, token: str | None = TOKEN, **variables):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    payload: dict = {"query": document}
    if variables:
        payload["variables"] = variables
    return api.post("/graphql", json=payload, headers=headers)


def data(api: TestClient, document: str, **variables) -> dict:
    response = graphql(api, document, **variables)
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


def admin_events(database) -> list[tuple[str, str, str]]:
    rows = query(database, select(SecurityEvent, User).join(User).order_by(SecurityEvent.id))
    return [
        (user.username, event.kind, event.actor) for event, user in rows if event.actor == "admin"
    ]


STATUS = f'query {{ s: user2faStatus(username: "alice") {{ {STATUS_FIELDS} }} }}'

# --------------------------------------------------------------------------------------
# Bearer token
# --------------------------------------------------------------------------------------


BAD_AUTHORIZATIONS = [
    None,
    "Bearer wrong-token",
    "Bearer ",
    f"Basic {TOKEN}",
    TOKEN,
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    b"Bearer \xe9t\xe9",  # not ASCII
]


def test_bad_token_is_401_and_changes_nothing(api, user, database):
    for authorization in BAD_AUTHORIZATIONS:
        headers = {"Authorization": authorization} if authorization is not None else {}
        for document in (set_required("alice", True), STATUS):
            response = api.post("/graphql", json={"query": document}, headers=headers)
            assert response.status_code == 401, authorization
            assert response.json() == {"errors": [{"message": "Unauthorized"}]}
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-security-policy"] == CSP
    assert not reload_user(database).requires_2fa
    assert admin_events(database) == [("alice", "user_created", "admin")]


def test_bearer_scheme_is_case_insensitive(api, user):
    response = api.post(
        "/graphql", json={"query": STATUS}, headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert response.status_code == 200
    assert response.json()["data"]["s"]["username"] == "alice"


def test_no_token_configured_refuses_everything(settings, database, user):
    for configured in (None, ""):
        api = TestClient(app=create_admin_app(settings.with_(admin_token=configured), database))
        for authorization in (None, "Bearer ", "Bearer None", f"Bearer {TOKEN}"):
            headers = {"Authorization": authorization} if authorization else {}
            response = api.post(
                "/graphql", json={"query": set_required("alice", True)}, headers=headers
            )
            assert response.status_code == 401, (configured, authorization)
    assert not reload_user(database).requires_2fa


def test_graphql_is_not_served_on_the_user_site(client, user, database):
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    document = {"query": set_required("alice", True)}
    client.page("/login")
    post = client.post("/graphql", json=document, headers={**headers, "X-CSRFToken": client.csrf})
    get = client.get("/graphql", params={"query": STATUS}, headers=headers)
    assert post.status_code in (404, 405)
    assert get.status_code in (404, 405)
    assert "requires2fa" not in post.text and "requires2fa" not in get.text
    assert not reload_user(database).requires_2fa


def test_admin_listener_serves_nothing_else(api, user):
    for path in ("/", "/login", "/account", "/graphql/../account"):
        response = api.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 404, path
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"


def test_graphql_only_by_post(api, user):
    response = api.get(
        "/graphql", params={"query": STATUS}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code in (400, 404, 405)
    assert "alice" not in response.text


# --------------------------------------------------------------------------------------
# user2faStatus
# --------------------------------------------------------------------------------------


def test_status_of_a_new_user(api, user):
    status = data(api, STATUS)["s"]
    assert status == {
        "username": "alice",
        "subject": user.subject,
        "requires2fa": False,
        "user2faEnabled": False,
        "effective2fa": False,
        "passkeyEnrolled": False,
        "passkeyCount": 0,
        "passkeyEnrolledAt": None,
        "recoveryCodesRemaining": 0,
    }
    assert str(uuid.UUID(status["subject"])) == status["subject"]


def test_status_with_passkeys_and_codes(api, user, database):
    created = utcnow()
    with database.session() as db:
        for index, name in enumerate(("Phone", "Laptop")):
            db.add(
                Passkey(
                    credential_id=bytes([index + 1]) * 16,
                    user_id=user.id,
                    public_key=b"\xa5cose",
                    name=name,
                    created_at=created,
                )
            )
        recovery.issue(db, user.id)
        db.commit()
        # one code used
        codes = recovery.issue(db, user.id)
        assert recovery.use(db, user.id, codes[0])
        db.commit()
    with database.session() as db:
        db_user = db.get(User, user.id)
        db_user.user_2fa_enabled = True
        db.add(db_user)
        db.commit()

    status = data(api, STATUS)["s"]

    assert status["passkeyEnrolled"] is True
    assert status["passkeyCount"] == 2
    assert status["passkeyEnrolledAt"][:19] == created.isoformat()[:19]
    assert status["recoveryCodesRemaining"] == 9
    assert status["user2faEnabled"] and status["effective2fa"] and not status["requires2fa"]


def test_status_of_an_unknown_user_is_null(api, user):
    for username in ("nobody", "", "ALICE'--", "a" * 300):
        response = graphql(
            api,
            f"query($u: String!) {{ s: user2faStatus(username: $u) {{ {STATUS_FIELDS} }} }}",
            u=username,
        )
        assert response.status_code == 200
        assert response.json() == {"data": {"s": None}}, username


def test_status_finds_usernames_case_insensitively(api, user):
    status = data(api, 'query { s: user2faStatus(username: "ALICE") { username } }')["s"]
    assert status == {"username": "alice"}


# --------------------------------------------------------------------------------------
# setUser2faRequired and setUser2faEnabled
# --------------------------------------------------------------------------------------


def test_set_required_on_and_off(api, user, database):
    on = data(api, set_required("alice", True))["r"]
    assert on == {
        "success": True,
        "message": on["message"],
        "username": "alice",
        "requires2fa": True,
        "user2faEnabled": False,
        "effective2fa": True,
    }
    assert "requires two-factor authentication" in on["message"]
    stored = reload_user(database)
    assert stored.requires_2fa and not stored.user_2fa_enabled  # the user's flag untouched
    status = data(api, STATUS)["s"]
    assert status["requires2fa"] and status["effective2fa"] and not status["user2faEnabled"]

    off = data(api, set_required("alice", False))["r"]
    assert off["success"] and not off["requires2fa"] and not off["effective2fa"]
    assert not reload_user(database).requires_2fa
    assert admin_events(database)[1:] == [
        ("alice", "2fa_required", "admin"),
        ("alice", "2fa_not_required", "admin"),
    ]


def test_set_required_keeps_the_users_own_flag(api, user, database):
    with database.session() as db:
        db_user = db.get(User, user.id)
        db_user.user_2fa_enabled = True
        db.add(db_user)
        db.commit()
    both = data(api, set_required("alice", True))["r"]
    assert both["requires2fa"] and both["user2faEnabled"] and both["effective2fa"]
    after = data(api, set_required("alice", False))["r"]
    assert not after["requires2fa"] and after["user2faEnabled"] and after["effective2fa"]
    assert reload_user(database).user_2fa_enabled


def test_set_enabled_overrides_the_preference(api, user, database):
    on = data(api, set_enabled("alice", True))["r"]
    assert on["success"] and on["user2faEnabled"] and on["effective2fa"]
    assert not on["requires2fa"]
    assert "no passkey yet" in on["message"]
    stored = reload_user(database)
    assert stored.user_2fa_enabled and stored.user_2fa_enabled_at is not None
    assert not stored.requires_2fa

    off = data(api, set_enabled("alice", False))["r"]
    assert off["success"] and not off["user2faEnabled"] and not off["effective2fa"]
    stored = reload_user(database)
    assert not stored.user_2fa_enabled and stored.user_2fa_enabled_at is None
    assert admin_events(database)[1:] == [
        ("alice", "2fa_enabled", "admin"),
        ("alice", "2fa_disabled", "admin"),
    ]


def test_set_enabled_off_while_required_keeps_2fa_effective(api, user, database):
    data(api, set_required("alice", True))
    result = data(api, set_enabled("alice", False))["r"]
    assert result["success"] and result["requires2fa"] and result["effective2fa"]


@pytest.mark.parametrize("mutation", ["setUser2faRequired", "setUser2faEnabled"])
def test_unknown_user_is_not_a_success(api, user, database, mutation):
    argument = "required" if mutation == "setUser2faRequired" else "enabled"
    result = data(
        api,
        f'mutation {{ r: {mutation}(username: "bob", {argument}: true) {{ {RESULT_FIELDS} }} }}',
    )["r"]
    assert result == {
        "success": False,
        "message": "User not found: bob",
        "username": "bob",
        "requires2fa": False,
        "user2faEnabled": False,
        "effective2fa": False,
    }
    assert admin_events(database) == [("alice", "user_created", "admin")]
    stored = reload_user(database)
    assert not stored.requires_2fa and not stored.user_2fa_enabled


def test_missing_argument_is_an_error_and_changes_nothing(api, user, database):
    response = graphql(api, 'mutation { setUser2faRequired(username: "alice") { success } }')
    body = response.json()
    assert body.get("errors")
    assert not reload_user(database).requires_2fa


def test_bad_json_body(api, user, database):
    response = api.post(
        "/graphql",
        content=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert not reload_user(database).requires_2fa


# --------------------------------------------------------------------------------------
# createUser
# --------------------------------------------------------------------------------------

CREATE = (
    "mutation($u: String!, $p: String!, $d: String) "
    "{ c: createUser(username: $u, password: $p, displayName: $d) "
    "{ success message username subject } }"
)


def test_create_user(api, database, client):
    result = data(api, CREATE, u="bob.smith", p="a long password", d="Bob Smith")["c"]
    assert result["success"] is True
    assert result["username"] == "bob.smith"
    assert str(uuid.UUID(result["subject"])) == result["subject"]
    stored = reload_user(database, "bob.smith")
    assert stored.display_name == "Bob Smith"
    assert stored.subject == result["subject"]
    assert stored.password_hash.startswith("$argon2id$")
    assert "a long password" not in stored.password_hash
    assert admin_events(database) == [("bob.smith", "user_created", "admin")]
    # the new user can sign in on the user site
    client.page("/login")
    signed_in = client.form("/login", {"username": "Bob.Smith", "password": "a long password"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/account"


def test_create_user_without_display_name(api, database):
    result = data(api, CREATE, u="carol", p="a long password")["c"]
    assert result["success"]
    assert reload_user(database, "carol").display_name == "carol"


def test_create_duplicate_user(api, user, database):
    for username in ("alice", "ALICE", "Alice"):
        result = data(api, CREATE, u=username, p="another password")["c"]
        assert result["success"] is False, username
        assert result["subject"] is None
        assert "already taken" in result["message"]
    assert len(query(database, select(User))) == 1
    assert admin_events(database) == [("alice", "user_created", "admin")]


INVALID_USERS = [
    ("", "a long password"),
    ("has space", "a long password"),
    ("a/b", "a long password"),
    ("<script>", "a long password"),
    ("é", "a long password"),
    ("x" * 65, "a long password"),
    ("dave", "short"),
    ("dave", "p" * 1025),
]


def test_create_user_invalid(api, database):
    for username, password in INVALID_USERS:
        result = data(api, CREATE, u=username, p=password)["c"]
        assert result["success"] is False, username
        assert result["subject"] is None
        assert result["message"]
    assert query(database, select(User)) == []
    assert query(database, select(SecurityEvent)) == []


# --------------------------------------------------------------------------------------
# Aliased batches
# --------------------------------------------------------------------------------------


def test_aliased_batch_applies_each_mutation(api, user, database):
    document = f"""
    mutation {{
      newUser: createUser(username: "bob", password: "a long password") {{ success username }}
      aliceRequired: setUser2faRequired(username: "alice", required: true) {{ {RESULT_FIELDS} }}
      bobEnabled: setUser2faEnabled(username: "bob", enabled: true) {{ {RESULT_FIELDS} }}
      ghost: setUser2faRequired(username: "ghost", required: true) {{ success message }}
      aliceEnabled: setUser2faEnabled(username: "alice", enabled: true) {{ {RESULT_FIELDS} }}
    }}
    """
    result = data(api, document)
    assert result["newUser"] == {"success": True, "username": "bob"}
    assert result["aliceRequired"]["success"] and result["aliceRequired"]["requires2fa"]
    assert result["bobEnabled"]["success"] and result["bobEnabled"]["user2faEnabled"]
    assert result["ghost"] == {"success": False, "message": "User not found: ghost"}
    assert result["aliceEnabled"]["requires2fa"] and result["aliceEnabled"]["user2faEnabled"]
    alice, bob = reload_user(database, "alice"), reload_user(database, "bob")
    assert alice.requires_2fa and alice.user_2fa_enabled
    assert bob.user_2fa_enabled and not bob.requires_2fa
    assert admin_events(database) == [
        ("alice", "user_created", "admin"),
        ("bob", "user_created", "admin"),
        ("alice", "2fa_required", "admin"),
        ("bob", "2fa_enabled", "admin"),
        ("alice", "2fa_enabled", "admin"),
    ]


def test_aliased_batch_of_queries(api, user, database):
    data(api, CREATE, u="bob", p="a long password")
    data(api, set_required("bob", True))
    result = data(
        api,
        'query { a: user2faStatus(username: "alice") { username effective2fa } '
        'b: user2faStatus(username: "bob") { username effective2fa } '
        'c: user2faStatus(username: "nobody") { username } }',
    )
    assert result == {
        "a": {"username": "alice", "effective2fa": False},
        "b": {"username": "bob", "effective2fa": True},
        "c": None,
    }
