"""Password change (SPEC §5.7, §9): the rules as a table, the handler with htmx and without
JavaScript, the lockout counting, and `set-password` for operators."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from models import AuthSession, Notification, SecurityEvent, User
from tests.helpers import PASSWORD, query, reload_user
from web.passwords import hash_password, new_password_problem, verify_password

NEW = "plum orbit lantern 1987"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("password", "current", "expected"),
    [
        ("short1!", None, "Use at least 8 characters."),
        ("ｓｈｏｒｔ１", None, "Use at least 8 characters."),  # fullwidth: NFKC first
        ("x" * 257, None, "Use at most 256 characters."),
        ("Alice.Example", None, None),  # display name is a hint: judged below
        ("alice", None, "Use at least 8 characters."),
        ("alice.ex", None, None),
        ("ALICE.EXAMPLE2", None, None),
        ("correct horse battery", "correct horse battery", "different from your current"),
        ("password1", None, "This is a very common password."),
        ("qwertyuiop", None, "This is a top-100 common password."),
        ("kjhfdsa1", None, "This password is too easy to guess. Add another word"),  # no warning
        (NEW, None, ""),
        ("x" * 73, None, ""),  # beyond zxcvbn's 72 characters: passes on length
        ("plum orbit lantern 1987".upper(), PASSWORD, ""),
    ],
)
def test_new_password_rules(password: str, current: str | None, expected: str | None) -> None:
    problem = new_password_problem(
        password, username="alice.example", current=current, hints=("Alice Example",)
    )
    if expected == "":
        assert problem is None
    elif expected is None:
        assert problem is not None  # some refusal (zxcvbn's words)
        assert problem.strip()
    else:
        assert problem is not None and expected in problem


def test_the_username_in_any_case_is_refused() -> None:
    assert "username" in (new_password_problem("Alice.Example1", username="alice.example1") or "")


def test_weak_passwords_get_zxcvbns_suggestions() -> None:
    problem = new_password_problem("password1", username="alice") or ""
    assert problem.startswith("This is a very common password.")
    assert "Add another word or two" in problem


def test_passwords_are_hashed_in_nfkc_and_old_hashes_still_match() -> None:
    assert verify_password(hash_password("ｐａｓｓｗｏｒｄ"), "password")
    from argon2 import PasswordHasher

    legacy = PasswordHasher().hash("ｐａｓｓｗｏｒｄ")  # made before normalising
    assert verify_password(legacy, "ｐａｓｓｗｏｒｄ")
    assert not verify_password(legacy, "wrong")


def change(client, current: str = PASSWORD, new: str = NEW, htmx: bool = True):
    data = {"current_password": current, "new_password": new}
    if htmx:
        return client.htmx("POST", "/account/password", data)
    return client.form("/account/password", data)


def test_change_password_signs_out_other_sessions_and_rotates_this_one(
    auth, client, make_client, database
):
    other = make_client()
    other.page("/login")
    other.form("/login", {"username": "alice", "password": PASSWORD})
    assert other.page("/account", follow_redirects=False).status_code == 200
    auth.login()
    old_cookie = client.cookies.get("barycenter_session")
    form = client.htmx("GET", "/account/password/change")
    assert form.status_code == 200
    for label in ("Current password", "New password", "Save password", "Cancel"):
        assert label in form.text
    assert 'autocomplete="current-password"' in form.text
    assert 'autocomplete="new-password"' in form.text

    response = change(client)
    assert response.status_code == 200, response.text
    assert "Your password was changed" in response.text
    assert response.headers["hx-trigger"] == "refresh-sessions, refresh-activity"
    assert client.cookies.get("barycenter_session") != old_cookie
    assert client.page("/account", follow_redirects=False).status_code == 200
    assert other.page("/account", follow_redirects=False).status_code == 303  # signed out
    assert len(query(database, select(AuthSession))) == 1
    user = reload_user(database)
    assert user.password_changed_at is not None
    assert verify_password(user.password_hash, NEW)
    assert "password_changed" in [e.kind for e in query(database, select(SecurityEvent))]
    assert "Last changed" in client.htmx("GET", "/account/password").text

    auth.logout()
    assert auth.login(password=PASSWORD).status_code == 401  # the old one fails
    assert auth.login(password=NEW).status_code == 303  # the new one works


@pytest.mark.parametrize(
    ("current", "new", "field", "words"),
    [
        ("", NEW, "current", "Enter your current password."),
        (PASSWORD, "", "new", "Enter a new password."),
        ("wrong password", NEW, "current", "Your current password is not correct."),
        (PASSWORD, "short", "new", "Use at least 8 characters."),
        (PASSWORD, "alice", "new", "Use at least 8 characters."),
        (PASSWORD, PASSWORD, "new", "different from your current"),
        (PASSWORD, "password1", "new", "This is a very common password."),
        (PASSWORD, "<script>alert(1)</script>" + "a" * 300, "new", "at most 256"),
    ],
)
def test_refusals_re_render_the_form_and_change_nothing(
    auth, client, database, current, new, field, words
):
    auth.login()
    before = reload_user(database)
    response = change(client, current, new)
    assert response.status_code == 422
    assert words in response.text
    assert f'id="field-{field}_password-error"' in response.text
    assert "<script>alert" not in response.text
    after = reload_user(database)
    assert after.password_hash == before.password_hash and after.password_changed_at is None
    assert query(database, select(Notification)) == []


def test_without_javascript_the_form_works_as_pages(auth, client, database):
    auth.login()
    page = client.page("/account/password/change")
    assert page.status_code == 200 and "<html" in page.text and "Save password" in page.text
    refused = change(client, new="password1", htmx=False)
    assert refused.status_code == 422 and "<html" in refused.text
    done = change(client, htmx=False)
    assert done.status_code == 200 and "<html" in done.text
    assert "Your password was changed" in done.text
    assert verify_password(reload_user(database).password_hash, NEW)


def test_wrong_current_passwords_count_toward_the_lockout(auth, client, database):
    auth.login()
    for _ in range(4):
        assert change(client, current="wrong password").status_code == 422
    assert reload_user(database).failed_login_count == 4
    fifth = change(client, current="wrong password")
    assert fifth.status_code == 429 and "Retry-After" in fifth.headers
    assert reload_user(database).locked_until is not None
    assert change(client).status_code == 429  # even the right one, while locked
    assert not verify_password(reload_user(database).password_hash, NEW)
    kinds = [e.kind for e in query(database, select(SecurityEvent))]
    assert kinds.count("password_change_failed") == 5 and "locked" in kinds


def test_csrf_and_sign_in_are_required(auth, client):
    response = client.post(
        "/account/password",
        data={"current_password": PASSWORD, "new_password": NEW},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert client.get("/account/password/change", follow_redirects=False).status_code in (
        303,
        401,
    )


def test_the_page_says_where_notifications_go(auth, client, database, user):
    auth.login()
    assert "No email address is on file" in client.page("/account").text
    with database.session() as db:
        row = db.get(User, user.id)
        row.email = "jane@example.com"
        db.add(row)
        db.commit()
    page = client.page("/account").text
    assert "Security notifications go to j•••@example.com" in page
    assert "jane@example.com" not in page


def cli(*args: str, database_url: str, stdin: str = "") -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "BARYCENTER_DATABASE_URL": database_url,
        "BARYCENTER_SECRET_KEY": "x" * 40,
    }
    return subprocess.run(
        [sys.executable, "-m", "web.cli", *args],
        cwd=ROOT,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_set_password_command(user, database, database_url):
    weak = cli("set-password", "alice", "--password-stdin", database_url=database_url,
               stdin="password1\n")  # fmt: skip
    assert weak.returncode == 1 and "This is a very common password." in weak.stderr
    same = cli("set-password", "alice", "--password-stdin", database_url=database_url,
               stdin=PASSWORD + "\n")  # fmt: skip
    assert same.returncode == 1 and "different from the current" in same.stderr
    unknown = cli("set-password", "nobody", "--password-stdin", database_url=database_url,
                  stdin=NEW + "\n")  # fmt: skip
    assert unknown.returncode == 1 and "User not found: nobody" in unknown.stderr
    ok = cli("set-password", "alice", "--password-stdin", database_url=database_url,
             stdin=NEW + "\n")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert verify_password(reload_user(database).password_hash, NEW)
    events = query(database, select(SecurityEvent).where(SecurityEvent.kind == "password_changed"))
    assert [e.actor for e in events] == ["admin"]


def test_create_user_with_email(database, database_url):
    bad = cli("create-user", "bob", "--password-stdin", "--email", "bob@localhost",
              database_url=database_url, stdin=NEW + "\n")  # fmt: skip
    assert bad.returncode == 1 and "not a valid email address" in bad.stderr
    ok = cli("create-user", "bob", "--password-stdin", "--email", "Bob@Example.COM",
             database_url=database_url, stdin=NEW + "\n")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert reload_user(database, "bob").email == "Bob@example.com"


@pytest.mark.crowded
def test_twelve_identical_changes_at_once_change_it_once(auth, client, make_client, database):
    from concurrent.futures import ThreadPoolExecutor

    auth.login()
    clones = []
    for _ in range(12):
        clone = make_client()
        clone.cookies.update(client.cookies)
        clone.csrf = client.csrf
        clones.append(clone)

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(change, clones))
    statuses = [r.status_code for r in responses]
    signed_out = [r for r in responses if r.headers.get("hx-redirect") == "/login"]
    changed = [r for r in responses if r.status_code == 200 and r not in signed_out]
    assert len(changed) == 1, statuses
    assert "Your password was changed." in changed[0].text
    # the others: this session's token already rotated (401; htmx is sent to /login), the
    # password changed meanwhile (409, or 422 once the old one is no longer current), more
    # than 5 password checks in flight (429), SQLite busy (503) — never a 500, never a
    # second change
    assert all(r.status_code == 200 for r in signed_out), statuses
    assert set(statuses) <= {200, 401, 409, 422, 429, 503}, statuses
    kinds = [e.kind for e in query(database, select(SecurityEvent))]
    assert kinds.count("password_changed") == 1
    assert len(query(database, select(Notification))) == 0  # alice has no address
    assert verify_password(reload_user(database).password_hash, NEW)
