"""An administrator's requirement with a grace period (SPEC §4.2, §6, §9), through the admin
API and the user site; the day-before reminder job; unlockUser and signOutUser.

The rules themselves are a table in test_rules.py; these tests check that every place asks
them: the admin answers, the account page, sign-in, live sessions, the reminder job."""

from __future__ import annotations

import html
import re
import threading
from datetime import datetime, timedelta

import pytest
from litestar.testing import TestClient
from sqlmodel import select, update

from models import AuthSession, SecurityEvent, User, utcnow
from tests.helpers import PASSWORD, query, reload_user
from web import twofactor
from web.admin.app import create_admin_app
from web.db import connect
from web.reminders import send_due_reminders
from web.sessions import COOKIE
from web.settings import Settings
from web.tokens import digest

TOKEN = "a-long-admin-token-for-the-grace-period-tests"  # 32+ characters
RESULT = (
    "success message username requires2fa user2faEnabled effective2fa "
    "requiredFrom requirementPending"
)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(admin_token=TOKEN)


@pytest.fixture
def admin(admin):
    """The shared admin API fixture (tests/unit/conftest.py), answering with the first
    field's value instead of the whole `data`."""
    return lambda document: next(iter(admin(document).values()))


def require(admin, grace_days: int | None = None, required: bool = True, username: str = "alice"):
    grace = "" if grace_days is None else f", graceDays: {grace_days}"
    value = "true" if required else "false"
    return admin(
        f'mutation {{ r: setUser2faRequired(username: "{username}", required: {value}{grace}) '
        f"{{ {RESULT} }} }}"
    )


def status(admin, username: str = "alice"):
    return admin(
        f'{{ s: user2faStatus(username: "{username}") {{ requires2fa user2faEnabled '
        "effective2fa requiredFrom requirementPending } }"
    )


def events_of(database, kind: str | None = None) -> list[SecurityEvent]:
    rows = query(database, select(SecurityEvent).order_by(SecurityEvent.id))
    return [e for e in rows if kind is None or e.kind == kind]


def parse_iso(value: str) -> datetime:
    assert ISO_Z.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def move_date(database, when: datetime | None, username: str = "alice") -> None:
    """The injected clock of a live server: move the requirement's date instead of time."""
    with database.session() as db:
        db.exec(update(User).where(User.username_key == username).values(requires_2fa_from=when))
        db.commit()


def my_session(database, client) -> AuthSession:
    token = client.cookies.get(COOKIE)
    (row,) = query(database, select(AuthSession).where(AuthSession.token_hash == digest(token)))
    return row


def text_of(response) -> str:
    """The words of a page (tags dropped, white space collapsed)."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", response.text)))


# --------------------------------------------------------------------------------------
# Admin API
# --------------------------------------------------------------------------------------


def test_require_with_grace_days(admin, user, database):
    before = utcnow()
    result = require(admin, 7)
    after = utcnow()
    assert result["success"] and result["requires2fa"]
    assert result["requirementPending"] is True
    assert result["effective2fa"] is False  # pending, and the user's own flag is off
    start = parse_iso(result["requiredFrom"])
    assert before + timedelta(days=7) - timedelta(seconds=1) <= start <= after + timedelta(days=7)
    assert twofactor.date_words(start) in result["message"]
    assert status(admin) == {
        "requires2fa": True,
        "user2faEnabled": False,
        "effective2fa": False,
        "requiredFrom": result["requiredFrom"],
        "requirementPending": True,
    }
    (event,) = events_of(database, "2fa_required")
    assert event.actor == "admin" and event.detail == {"from": result["requiredFrom"]}
    stored = reload_user(database)
    assert stored.requires_2fa_from is not None and stored.requirement_reminded_at is None


def test_require_at_once_by_default(admin, user, database):
    result = require(admin)  # graceDays defaults to 0
    assert result["effective2fa"] and not result["requirementPending"]
    assert result["requiredFrom"] is None
    (event,) = events_of(database, "2fa_required")
    assert event.detail == {}  # no date: at once
    assert status(admin)["requiredFrom"] is None


@pytest.mark.parametrize("grace_days", [-1, 366, 100000])
def test_grace_days_out_of_range_is_refused_and_changes_nothing(admin, user, database, grace_days):
    before = events_of(database)
    result = require(admin, grace_days)
    assert result["success"] is False
    assert "graceDays must be between 0 and 365" in result["message"]
    assert not result["requires2fa"] and result["requiredFrom"] is None
    stored = reload_user(database)
    assert not stored.requires_2fa and stored.requires_2fa_from is None
    assert len(events_of(database)) == len(before)


def test_grace_days_out_of_range_leave_a_pending_date_alone(admin, user, database):
    first = require(admin, 5)
    assert require(admin, -3)["success"] is False
    assert status(admin)["requiredFrom"] == first["requiredFrom"]


def test_graphql_refuses_a_grace_days_that_is_not_an_int(settings, database, user):
    with TestClient(app=create_admin_app(settings, database)) as api:
        for bad in ('"7"', "7.5", "null", "99999999999"):
            response = api.post(
                "/graphql",
                json={
                    "query": f'mutation {{ setUser2faRequired(username: "alice", required: true, '
                    f"graceDays: {bad}) {{ success }} }}"
                },
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code in (200, 400)
            assert response.json().get("errors"), bad
    assert not reload_user(database).requires_2fa


def test_a_new_require_replaces_a_pending_date(admin, user, database):
    first = parse_iso(require(admin, 7)["requiredFrom"])
    second = require(admin, 3)
    assert second["requirementPending"]
    assert parse_iso(second["requiredFrom"]) < first
    longer = require(admin, 30)
    assert parse_iso(longer["requiredFrom"]) > first
    now = require(admin, 0)  # a pending requirement may be brought forward to "at once"
    assert now["effective2fa"] and now["requiredFrom"] is None and not now["requirementPending"]
    dates = [e.detail.get("from") for e in events_of(database, "2fa_required")]
    assert dates == [
        first.isoformat().replace("+00:00", "Z"),
        second["requiredFrom"],
        longer["requiredFrom"],
        None,
    ]


def test_a_requirement_in_force_never_goes_back_to_pending(admin, user, database):
    require(admin, 7)
    passed = utcnow().replace(microsecond=0) - timedelta(hours=1)
    move_date(database, passed)
    for grace in (0, 7, 365):
        result = require(admin, grace)
        assert result["success"] and "already requires" in result["message"]
        assert result["effective2fa"] and not result["requirementPending"]
        # requiredFrom stays after the date passes
        assert result["requiredFrom"] == twofactor.iso_utc(passed)
    assert len(events_of(database, "2fa_required")) == 1
    require(admin)  # at once, then a grace: still at once
    move_date(database, None)
    assert require(admin, 7)["requiredFrom"] is None


def test_required_false_clears_the_date_and_ignores_grace_days(admin, user, database):
    require(admin, 7)
    with database.session() as db:
        db.exec(update(User).values(requirement_reminded_at=utcnow()))
        db.commit()
    result = require(admin, -5, required=False)  # graceDays ignored with required: false
    assert result["success"] and not result["requires2fa"]
    assert result["requiredFrom"] is None and not result["requirementPending"]
    stored = reload_user(database)
    assert stored.requires_2fa_from is None and stored.requirement_reminded_at is None
    assert [e.kind for e in events_of(database)][-1] == "2fa_not_required"


def test_a_day_of_grace_sends_no_reminder(admin, user, database):
    require(admin, 1)
    assert reload_user(database).requirement_reminded_at is not None  # nothing left to remind
    assert send_due_reminders(database) == 0
    require(admin, 2)  # a new date: a reminder again
    assert reload_user(database).requirement_reminded_at is None


def test_unknown_user(admin):
    for document in (
        'mutation { r: setUser2faRequired(username: "nobody", required: true, graceDays: 7) '
        "{ success message } }",
        'mutation { r: unlockUser(username: "nobody") { success message } }',
        'mutation { r: signOutUser(username: "nobody") { success message } }',
    ):
        assert admin(document) == {"success": False, "message": "User not found: nobody"}


def test_schema_documents_the_new_fields(settings, database):
    from web.admin.schema import schema

    sdl = schema.as_str()
    assert "graceDays: Int! = 0" in sdl
    assert "requiredFrom: String" in sdl and "requirementPending: Boolean!" in sdl
    assert "unlockUser(username: String!): TwoFactorResult!" in sdl
    assert "signOutUser(username: String!): TwoFactorResult!" in sdl
    assert "Days before the requirement applies, 0 to 365." in sdl


# --------------------------------------------------------------------------------------
# The user's side while pending, and when the date comes
# --------------------------------------------------------------------------------------


def test_pending_sign_in_notice_card_and_enable(auth, client, admin, database):
    auth.login()
    assert auth.add_passkey("Work key").status_code == 200
    result = require(admin, 7)
    start = parse_iso(result["requiredFrom"])
    words = twofactor.date_words(start)
    auth.logout()
    # sign-in works as before: a password alone gives a full session
    response = client.form("/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 303 and response.headers["location"] == "/account"
    page = client.page("/account")
    assert page.status_code == 200
    text = text_of(page)
    assert f"Your administrator requires two-factor authentication from {words}." in text
    assert f"Required by your administrator from {words}." in text
    assert page.text.count(f'<time datetime="{result["requiredFrom"]}">{words}</time>') == 2
    assert "data-2fa-status>Off<" in page.text
    assert "Enable two-factor authentication" in page.text
    notice = client.htmx("GET", "/account/requirement-notice")
    assert notice.text.strip().startswith('<div id="requirement-notice"') and words in notice.text

    assert auth.enable_2fa().status_code == 200
    page = client.page("/account")
    text = text_of(page)
    assert "Your administrator requires two-factor authentication from" not in text  # notice gone
    assert "data-2fa-status>On<" in page.text  # "On" with the dated requirement
    assert f"Required by your administrator from {words}." in text
    assert "Disable two-factor authentication" not in page.text
    assert "Enable two-factor authentication" not in page.text
    # a pending requirement already forbids turning it off
    refused = client.json_post("/account/two-factor/disable/start", {})
    assert refused.status_code == 403
    assert refused.json()["detail"] == twofactor.ADMIN_REQUIRES
    assert reload_user(database).user_2fa_enabled
    assert status(admin)["effective2fa"] is True


def test_the_date_passing_demotes_a_live_session_to_enroll_at_login(auth, client, admin, database):
    auth.login()  # no passkey
    require(admin, 7)
    assert client.page("/account").status_code == 200  # pending: nothing changes
    assert my_session(database, client).state == "full"
    move_date(database, utcnow() - timedelta(seconds=1))  # the grace period ends
    response = client.page("/account", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login/2fa"
    session = my_session(database, client)
    assert session.state == "partial" and session.partial_reason == "admin-required"
    page = client.page("/login/2fa")
    assert "Register a passkey" in page.text  # enroll-at-login, after the password
    assert client.form("/login/2fa/password", {"password": PASSWORD}).status_code == 303
    assert "Register passkey and sign in" in client.page("/login/2fa").text
    # a password sign-in now needs the second factor
    auth.logout()
    response = client.form("/login", {"username": "alice", "password": PASSWORD})
    assert response.headers["location"] == "/login/2fa"


def test_grace_changed_to_zero_demotes_at_the_next_request(auth, client, admin, database):
    auth.login()
    require(admin, 7)
    assert client.page("/account").status_code == 200
    require(admin, 0)
    response = client.htmx("GET", "/account/two-factor")
    assert response.headers.get("hx-redirect") == "/login/2fa"
    assert my_session(database, client).partial_reason == "admin-required"


def test_user_flag_demotion_is_not_admin_required(auth, client, admin, database):
    auth.login()
    admin('mutation { r: setUser2faEnabled(username: "alice", enabled: true) { success } }')
    client.page("/account", follow_redirects=False)
    session = my_session(database, client)
    assert session.state == "partial" and session.partial_reason == ""


# --------------------------------------------------------------------------------------
# The reminder job, with an injected clock
# --------------------------------------------------------------------------------------


def test_reminder_is_queued_once_a_day_before_and_not_after_a_restart(
    admin, user, database, settings
):
    start = parse_iso(require(admin, 3)["requiredFrom"])
    assert send_due_reminders(database, now=start - timedelta(days=2)) == 0
    assert send_due_reminders(database, now=start - timedelta(days=1, seconds=1)) == 0
    assert send_due_reminders(database, now=start - timedelta(days=1)) == 1
    (event,) = events_of(database, "2fa_requirement_reminder")
    assert event.detail == {"from": twofactor.iso_utc(start)} and event.actor == "admin"
    assert reload_user(database).requirement_reminded_at == start - timedelta(days=1)
    assert send_due_reminders(database, now=start - timedelta(hours=2)) == 0
    # a "restart": a new process, a new connection, the same database
    restarted = connect(settings.database_url)
    try:
        assert send_due_reminders(restarted, now=start - timedelta(hours=1)) == 0
    finally:
        restarted.dispose()
    assert len(events_of(database, "2fa_requirement_reminder")) == 1


def test_no_reminder_when_on_passed_or_not_pending(admin, user, database, make_client):
    start = parse_iso(require(admin, 3)["requiredFrom"])
    assert send_due_reminders(database, now=start) == 0  # the date has come: too late
    assert send_due_reminders(database, now=start + timedelta(days=1)) == 0
    with database.session() as db:
        db.exec(update(User).values(user_2fa_enabled=True))
        db.commit()
    assert send_due_reminders(database, now=start - timedelta(hours=3)) == 0  # 2FA already on
    require(admin, required=False)
    assert send_due_reminders(database, now=start - timedelta(hours=3)) == 0
    assert events_of(database, "2fa_requirement_reminder") == []


def test_reminder_jobs_running_at_once_queue_one(admin, user, database, settings):
    start = parse_iso(require(admin, 3)["requiredFrom"])
    now = start - timedelta(hours=5)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def job() -> None:
        own = connect(settings.database_url)
        try:
            barrier.wait()
            results.append(send_due_reminders(own, now=now))
        finally:
            own.dispose()

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, 0, 1]
    assert len(events_of(database, "2fa_requirement_reminder")) == 1


# --------------------------------------------------------------------------------------
# unlockUser and signOutUser
# --------------------------------------------------------------------------------------


def test_unlock_user(admin, client, user, database):
    client.page("/login")
    for _ in range(5):
        client.form("/login", {"username": "alice", "password": "wrong password"})
    locked = client.form("/login", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    result = admin(f'mutation {{ r: unlockUser(username: "alice") {{ {RESULT} }} }}')
    assert result["success"] and result["message"] == "alice is unlocked"
    stored = reload_user(database)
    assert stored.locked_until is None and stored.failed_login_count == 0
    (event,) = events_of(database, "unlocked")
    assert event.actor == "admin"
    response = client.form("/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 303
    # nothing to unlock: no event
    again = admin('mutation { r: unlockUser(username: "alice") { success message } }')
    assert again == {"success": True, "message": "alice was not locked"}
    assert len(events_of(database, "unlocked")) == 1


def test_unlock_resets_counted_failures(admin, client, user, database):
    client.page("/login")
    for _ in range(3):
        client.form("/login", {"username": "alice", "password": "wrong password"})
    result = admin('mutation { r: unlockUser(username: "alice") { success message } }')
    assert result["success"] and "failed attempts reset" in result["message"]
    assert reload_user(database).failed_login_count == 0


def test_sign_out_user_ends_every_session(admin, auth, client, make_client, database):
    auth.login()
    other = make_client()
    other.page("/login")
    other.form("/login", {"username": "alice", "password": PASSWORD})
    assert len(query(database, select(AuthSession))) == 2
    result = admin(f'mutation {{ r: signOutUser(username: "alice") {{ {RESULT} }} }}')
    assert result["success"] and result["message"] == "Ended 2 sessions of alice"
    assert query(database, select(AuthSession)) == []
    for browser in (client, other):
        response = browser.get("/account", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"
    (event,) = events_of(database, "signed_out_everywhere")
    assert event.actor == "admin" and event.detail == {"sessions": 2}
    again = admin('mutation { r: signOutUser(username: "alice") { success message } }')
    assert again == {"success": True, "message": "alice had no active sessions"}
    assert len(events_of(database, "signed_out_everywhere")) == 1


def test_aliased_batch_of_new_mutations(settings, user, database):
    with TestClient(app=create_admin_app(settings, database)) as api:
        response = api.post(
            "/graphql",
            json={
                "query": "mutation { "
                'a: setUser2faRequired(username: "alice", required: true, graceDays: 2) '
                '{ success requirementPending } b: unlockUser(username: "alice") { success } '
                'c: signOutUser(username: "alice") { success } }'
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    body = response.json()
    assert body["data"] == {
        "a": {"success": True, "requirementPending": True},
        "b": {"success": True},
        "c": {"success": True},
    }


def test_activity_words_for_the_new_events(admin, auth, client, database):
    auth.login()
    start = parse_iso(require(admin, 3)["requiredFrom"])
    send_due_reminders(database, now=start - timedelta(hours=1))
    page = client.page("/account")
    text = text_of(page)
    words = twofactor.date_words(start)
    assert f"Two-factor authentication required by an administrator from {words}" in text
    assert f"Reminder sent: two-factor authentication will be required from {words}" in text


def test_serve_runs_the_reminders_in_its_background_work(admin, user, database, settings):
    """`serve`'s background task sends what is due when it starts (then every interval)."""
    import asyncio

    from web.cli import _reminders_forever

    require(admin, 3)
    move_date(database, utcnow().replace(microsecond=0) + timedelta(hours=12))

    async def briefly() -> None:
        task = asyncio.create_task(_reminders_forever(settings.with_(reminder_interval=3600)))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if events_of(database, "2fa_requirement_reminder"):
                break
        task.cancel()

    asyncio.run(briefly())
    assert len(events_of(database, "2fa_requirement_reminder")) == 1
    assert reload_user(database).requirement_reminded_at is not None
