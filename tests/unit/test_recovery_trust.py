"""Issue 13 through the test client: the edges a careful tester found — codes kept when
2FA is turned on, regenerating under concurrent answers, the sessions list and its event,
"Last used", the clone warning, the download's name, times in <time>."""

from __future__ import annotations

import html
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlmodel import select

from models import AuthSession, Passkey, RecoveryCode, SecurityEvent
from tests.helpers import PASSWORD, query, reload_user
from tests.helpers.account import (
    codes_in,
    enabled_with_passkey,
    kinds,
    set_enabled,
    unused_codes,
    version_in,
)
from web import events, recovery
from web.views import codes_download


def test_turning_2fa_on_keeps_codes_that_still_work(auth, client, database, admin):  # noqa: F811
    enabled_with_passkey(auth)
    set_enabled(admin, False)  # an administrator turns it off
    if unused_codes(database) == 0:  # (should those be deleted: codes that still work)
        with database.session() as db:
            recovery.issue(db, reload_user(database).id)
            db.commit()
    hashes = {r.code_hash for r in query(database, select(RecoveryCode))}
    client.page("/account")
    response = auth.enable_2fa()
    assert response.status_code == 200, response.text
    assert codes_in(response.text) == []  # not replaced, not shown
    assert "Your recovery codes still work." in response.text
    assert {r.code_hash for r in query(database, select(RecoveryCode))} == hashes


@pytest.mark.crowded
def test_twelve_identical_answers_regenerate_once(auth, client, database):
    enabled_with_passkey(auth)
    question = client.htmx("GET", "/account/recovery-codes/regenerate")
    answer = {"codes_version": version_in(question.text), "confirmed": "yes"}

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(
            pool.map(
                lambda _: client.htmx("POST", "/account/recovery-codes/regenerate", data=answer),
                range(12),
            )
        )

    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 1, statuses
    # the others: 409 with the current state (or, SQLite under a burst, 503 "busy, try
    # again" with Retry-After) — never a 500, never a second set of codes
    assert set(statuses) <= {200, 409, 503}, statuses
    shown = next(codes_in(a.text) for a in answers if a.status_code == 200)
    assert len(shown) == 10 and unused_codes(database) == 10
    assert kinds(database).count("recovery_codes_regenerated") == 1
    for refused in (a for a in answers if a.status_code == 409):
        assert codes_in(refused.text) == []
        assert "changed in another window" in html.unescape(refused.text)


def test_hostile_codes_version_changes_nothing(auth, client, database):
    enabled_with_passkey(auth)
    hashes = {r.code_hash for r in query(database, select(RecoveryCode))}
    for value in ("", "0", "<script>x</script>", "\u202e", "9" * 5000):
        answer = {"codes_version": value, "confirmed": "yes"}
        refused = client.htmx("POST", "/account/recovery-codes/regenerate", data=answer)
        assert refused.status_code == 409, value
        assert "<script>x" not in refused.text
        start = client.json_post("/account/recovery-codes/start", {"codes_version": value})
        assert start.status_code == 409
    wrong_type = client.json_post("/account/recovery-codes/start", {"codes_version": 7})
    assert wrong_type.status_code == 400
    assert {r.code_hash for r in query(database, select(RecoveryCode))} == hashes


def test_signing_out_one_session_is_recorded(auth, client, database, make_client):
    auth.login()
    other = make_client()
    other.page("/login")
    hostile = "<img src=x onerror=alert(1)> Evil/1.0"
    other.form(
        "/login", {"username": "alice", "password": PASSWORD}, headers={"User-Agent": hostile}
    )
    page = client.page("/account")
    rows = page.text[page.text.index('id="sessions"') :]
    # this session first; each row says when it signed in and from which IP
    assert rows.index("This session") < rows.index("Sign out<span")
    assert rows.count("Signed in <time datetime=") == 2
    (theirs,) = [s for s in query(database, select(AuthSession)) if s.user_agent == hostile]
    assert "<img src=x" not in page.text
    name = re.search(r'Sign out<span class="visually-hidden"> ([^<]+)</span>', rows)
    assert name and "IP testclient" in name.group(1) and "signed in" in name.group(1)

    revoked = client.htmx("POST", f"/account/sessions/{theirs.id}/revoke")

    assert revoked.status_code == 200
    event = query(database, select(SecurityEvent).where(SecurityEvent.kind == "session_revoked"))
    assert len(event) == 1 and event[0].detail["session_ip"] == theirs.ip
    assert "Signed out a session (" in events.describe(event[0])
    activity = client.htmx("GET", "/account/activity")
    assert "Signed out a session" in html.unescape(activity.text)
    assert "<img src=x" not in activity.text
    again = client.htmx("POST", f"/account/sessions/{theirs.id}/revoke")
    assert again.status_code == 404
    assert (
        len(query(database, select(SecurityEvent).where(SecurityEvent.kind == "session_revoked")))
        == 1
    )


def test_last_used_is_set_by_the_passkey_that_turned_2fa_on(auth, client, authn, database):
    auth.login()
    options = client.json_post("/account/two-factor/enable/start", {"mode": "new", "name": "Key"})
    credential = authn.register(options.json())
    done = client.json_post("/account/two-factor/enable/finish", {"credential": credential})
    assert done.status_code == 200
    (passkey,) = query(database, select(Passkey))
    assert passkey.last_used_at is not None
    page = client.page("/account")
    assert "Last used Never" not in page.text


def test_clone_warning_says_what_to_do():
    event = SecurityEvent(user_id=1, kind="passkey_clone_suspected", detail={"name": "Key"})
    words = events.describe(event)
    assert "Remove this passkey and add it again" in words
    assert "if you didn't reset your security key, tell your administrator" in words
    assert events.is_warning(event)


def test_download_names_the_account_the_site_and_the_date():
    day = datetime(2026, 12, 1, 23, 59)
    named = codes_download("ada.l", "account.example.com", day)
    assert named["filename"] == "barycenter-recovery-codes-ada.l-account.example.com-2026-12-01.txt"
    assert named["heading"].startswith("Recovery codes for ada.l at account.example.com")
    odd = codes_download("a", 'x"\n/../<b>', day)["filename"]
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.txt", odd) and "/" not in odd


def test_times_are_time_elements_in_utc(auth, client, database):
    auth.login()
    auth.add_passkey("Key")
    page = client.page("/account")
    stamps = re.findall(r'<time datetime="([^"]+)" data-relative>([^<]+)</time>', page.text)
    assert stamps, "no <time> on the account page"
    for iso, words in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", iso)
        assert words.endswith(" UTC")
    # "Signed in as" once (in the header)
    assert page.text.count("Signed in as") == 1
