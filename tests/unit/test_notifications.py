"""Security notifications (SPEC §5.8): outbox rows written with the change, delivered by a
real SMTP server (aiosmtpd on a loopback port) — no mock of the sender anywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlmodel import select, update

from models import Notification, User, utcnow
from tests.helpers import ORIGIN, PASSWORD, Auth, query, reload_user
from tests.helpers.account import version_in
from tests.smtp import SmtpServer, self_signed_tls
from tests.softauthn import SoftAuthenticator
from web import events, mailer
from web.admin.app import create_admin_app
from web.mailer import deliver
from web.notifications import SUBJECTS
from web.settings import Settings

ALICE = "alice@example.com"
TOKEN = "an-admin-token-of-more-than-32-characters"
NEW_PASSWORD = "plum orbit lantern 1987"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(settings: Settings, smtp: SmtpServer) -> Settings:
    return settings.with_(admin_token=TOKEN, smtp_url=smtp.url)


@pytest.fixture
def alice_email(database, user) -> None:
    with database.session() as db:
        db.exec(update(User).where(User.id == user.id).values(email=ALICE))
        db.commit()


@pytest.fixture
def api(settings, database) -> Iterator[TestClient]:
    with TestClient(app=create_admin_app(settings, database)) as client:
        yield client


def graphql(api: TestClient, document: str) -> dict:
    response = api.post(
        "/graphql", json={"query": document}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


def outbox(database) -> list[Notification]:
    return list(query(database, select(Notification).order_by(Notification.id)))


def codes_of(html: str) -> list[str]:
    return re.findall(r"<code>([A-Z0-9-]+)</code>", html)


def test_each_notification_is_delivered_once_with_its_subject(
    auth, client, database, settings, smtp, api, alice_email
):
    auth.login()
    assert auth.add_passkey("Work key").status_code == 200  # passkey added
    enabled = auth.enable_2fa()  # 2FA on (with an existing passkey)
    assert enabled.status_code == 200, enabled.text
    codes = codes_of(enabled.text)
    # codes regenerated: the question first (issue 13), then its answer
    question = client.htmx("POST", "/account/recovery-codes/regenerate")
    answer = {"codes_version": version_in(question.text), "confirmed": "yes"}
    regenerated = client.htmx("POST", "/account/recovery-codes/regenerate", data=answer)
    assert regenerated.status_code == 200 and "Save your recovery codes" in regenerated.text
    codes = codes_of(regenerated.text)
    spare_device = Auth(client, SoftAuthenticator(rp_id="localhost", origin=ORIGIN))
    assert spare_device.add_passkey("Spare key").status_code == 200  # a second passkey added
    auth.logout()
    auth.login()
    used = client.form("/login/2fa/recovery", {"code": codes[0], "return_to": "/account"})
    assert used.status_code in (200, 303), used.text  # a recovery code used
    spare = reload_passkey_id(database, "Spare key")
    credential = auth.assertion(f"/account/passkeys/{spare}/remove/start")
    removed = client.json_post("/account/passkeys/remove/finish", {"credential": credential})
    assert removed.status_code == 200, removed.text  # passkey removed
    client.page("/account")
    changed = client.htmx(
        "POST",
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text  # password changed
    graphql(api, 'mutation { setUser2faRequired(username: "alice", required: true) { success } }')

    outcome = deliver(settings_database(database, settings), settings)
    expected = [
        SUBJECTS[k]
        for k in (
            "passkey_added",
            "2fa_enabled",
            "recovery_codes_regenerated",
            "passkey_added",
            "recovery_code_used",
            "passkey_removed",
            "password_changed",
            "2fa_required",
        )
    ]
    assert outcome.sent == len(expected) and outcome.failed == 0
    assert smtp.inbox.subjects(ALICE) == expected
    assert all(m.recipients == [ALICE] for m in smtp.inbox.messages)
    assert all(n.sent_at is not None and n.attempts == 1 for n in outbox(database))
    # delivered once: another round sends nothing
    assert deliver(database, settings).sent == 0
    assert len(smtp.inbox.messages) == len(expected)

    by_subject = {str(m.message["Subject"]): m.message for m in smtp.inbox.messages}
    used_mail = by_subject[SUBJECTS["recovery_code_used"]].get_body(("plain",)).get_content()
    assert "9 unused codes remain" in used_mail
    assert "testclient" in used_mail  # the IP of the request
    admin_mail = by_subject[SUBJECTS["2fa_required"]].get_body(("plain",)).get_content()
    assert "your administrator" in admin_mail and "testclient" not in admin_mail
    html = by_subject[SUBJECTS["password_changed"]].get_body(("html",)).get_content()
    assert 'href="http://localhost:8000/account"' in html


def reload_passkey_id(database, name: str) -> int:
    from models import Passkey

    return query(database, select(Passkey).where(Passkey.name == name))[0].id


def settings_database(database, settings):
    database.info["settings"] = settings
    return database


def test_enabling_with_a_new_passkey_is_one_message_naming_it(
    auth, client, database, authn, alice_email
):
    auth.login()
    options = client.json_post(
        "/account/two-factor/enable/start", {"mode": "new", "name": "Blue key"}
    )
    credential = authn.register(options.json())
    finished = client.json_post("/account/two-factor/enable/finish", {"credential": credential})
    assert finished.status_code == 200, finished.text
    rows = outbox(database)
    assert [r.kind for r in rows] == ["2fa_enabled"]
    assert "“Blue key”" in rows[0].body_text and "“Blue key”" in rows[0].body_html


def test_no_address_no_mail_and_quiet_events_send_nothing(auth, client, database, user):
    auth.login()
    auth.add_passkey("Work key")
    assert outbox(database) == []  # alice has no address
    with database.session() as db:
        db.exec(update(User).where(User.id == user.id).values(email=ALICE))
        db.commit()
    auth.logout()
    auth.login()  # sign_in, renames and the like send nothing
    assert outbox(database) == []


def test_a_rolled_back_change_queues_nothing(
    auth, client, database, alice_email, monkeypatch: pytest.MonkeyPatch
):
    auth.login()
    auth.add_passkey("Work key")
    before = len(outbox(database))

    def fail(*_args, **_kwargs):
        raise RuntimeError("injected after the change")

    # enable_2fa records its event, then signs out other sessions: fail there
    monkeypatch.setattr("web.account.sessions.end_other_sessions", fail)
    response = auth.enable_2fa()
    assert response.status_code == 500
    assert not reload_user(database).user_2fa_enabled
    assert len(outbox(database)) == before

    with database.session() as db:  # and at the lowest level
        events.record(db, reload_user(database).id, "password_changed", ip="192.0.2.1")
        db.rollback()
    assert len(outbox(database)) == before


def test_lock_notices_at_most_once_an_hour(client, database, user, alice_email):
    for _round in range(2):
        for _ in range(5):
            client.page("/login")
            client.form("/login", {"username": "alice", "password": "wrong password"})
        assert reload_user(database).locked_until is not None
        with database.session() as db:  # the lock ends; someone tries again
            db.exec(update(User).where(User.id == user.id).values(locked_until=None))
            db.commit()
    kinds = [n.kind for n in outbox(database)]
    assert kinds == ["locked"]
    with database.session() as db:  # an hour later, a new lock is told again
        db.exec(update(Notification).values(created_at=utcnow() - timedelta(minutes=61)))
        db.commit()
    for _ in range(5):
        client.form("/login", {"username": "alice", "password": "wrong password"})
    assert [n.kind for n in outbox(database)] == ["locked", "locked"]


def test_smtp_down_the_change_succeeds_and_send_mail_delivers_later(
    auth, client, database, settings, smtp, alice_email
):
    smtp.stop()  # nothing listens on the port now
    auth.login()
    added = auth.add_passkey("Work key")
    assert added.status_code == 200  # the change does not wait for mail
    deliver(database, settings)  # the background sender's round fails
    (row,) = outbox(database)
    assert row.sent_at is None and row.attempts == 1 and row.gave_up_at is None
    assert "ConnectionRefused" in row.last_error
    assert row.next_attempt_at <= utcnow() + timedelta(seconds=30)  # first retry within 30 s
    assert deliver(database, settings).sent == 0  # not due yet: nothing tried

    smtp.start()
    result = send_mail_cli(settings)
    assert result.returncode == 0, result.stderr
    assert "1 sent, 0 failed" in result.stdout
    assert smtp.inbox.subjects(ALICE) == [SUBJECTS["passkey_added"]]
    assert send_mail_cli(settings).stdout.startswith("0 sent")  # once
    assert len(smtp.inbox.messages) == 1


def send_mail_cli(settings: Settings, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "BARYCENTER_DATABASE_URL": settings.database_url,
        "BARYCENTER_SMTP_URL": settings.smtp_url or "",
        "BARYCENTER_SECRET_KEY": "x" * 40,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "web.cli", "send-mail"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refusals_are_retried_with_growing_backoff_and_given_up_after_a_day(
    auth, database, settings, smtp, alice_email
):
    smtp.inbox.refuse = True  # 451 for every message
    auth.login()
    auth.add_passkey("Work key")
    waits = []
    for _ in range(3):
        before = utcnow()
        deliver(database, settings, ignore_delays=True)
        (row,) = outbox(database)
        waits.append(row.next_attempt_at - before)
    assert row.attempts == 3 and "451" in row.last_error and row.gave_up_at is None
    assert waits[0] <= timedelta(seconds=30) and waits[0] < waits[1] < waits[2]
    with database.session() as db:  # a day later, still refused: given up, error kept
        db.exec(update(Notification).values(created_at=utcnow() - timedelta(hours=25)))
        db.commit()
    deliver(database, settings, ignore_delays=True)
    (row,) = outbox(database)
    assert row.gave_up_at is not None and row.sent_at is None and "451" in row.last_error
    smtp.inbox.refuse = False
    assert deliver(database, settings, ignore_delays=True).sent == 0  # never again
    assert smtp.inbox.messages == []


def test_two_sender_processes_send_each_message_once(database, settings, smtp, user):
    with database.session() as db:
        for i in range(40):
            db.add(
                Notification(
                    user_id=user.id,
                    kind="password_changed",
                    recipient=f"user{i}@example.com",
                    subject=f"Message {i}",
                    body_text="text",
                    body_html="<p>html</p>",
                )
            )
        db.commit()
    environment = {
        **os.environ,
        "BARYCENTER_DATABASE_URL": settings.database_url,
        "BARYCENTER_SMTP_URL": smtp.url,
        "BARYCENTER_SECRET_KEY": "x" * 40,
    }
    senders = [
        subprocess.Popen(
            [sys.executable, "-m", "web.cli", "send-mail"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [s.communicate(timeout=120) for s in senders]
    assert all(s.returncode == 0 for s in senders), outputs
    sent = [int(out.split(" sent")[0]) for out, _ in outputs]
    assert sum(sent) == 40
    received = sorted(str(m.message["Subject"]) for m in smtp.inbox.wait_for(40))
    assert received == sorted(f"Message {i}" for i in range(40))  # each exactly once


def test_without_smtp_messages_become_eml_files(auth, database, settings, tmp_path, alice_email):
    files = settings.with_(smtp_url=None, mail_dir=str(tmp_path / "mail"))
    auth.login()
    auth.add_passkey("Work key")
    assert deliver(database, files).sent == 1
    (eml,) = (tmp_path / "mail").glob("*.eml")
    text = eml.read_text()
    assert f"To: {ALICE}" in text and f"Subject: {SUBJECTS['passkey_added']}" in text


def test_headers_cannot_be_injected(database, settings, smtp, user):
    hostile = "\r\nBcc: evil@example.com"
    row = Notification(
        user_id=user.id,
        kind="passkey_added",
        recipient="alice@example.com",
        subject=f"Subject{hostile}",
        body_text=f"name{hostile}",
        body_html=f"<p>name{hostile}</p>",
        created_at=utcnow(),
    )
    message = mailer.build_message(row, "Barycenter <no-reply@localhost>")
    assert message["Subject"] == "Subject Bcc: evil@example.com"
    assert message["Bcc"] is None
    with pytest.raises(ValueError):
        mailer.build_message(
            row.model_copy(update={"recipient": f"a@example.com{hostile}"}), "x@y.org"
        )
    with pytest.raises(ValueError):
        mailer.check_mail_from(f"Barycenter <a@example.com>{hostile}")

    # a hostile user agent and passkey name reach the mail body only
    with database.session() as db:
        db.exec(update(User).where(User.id == user.id).values(email=ALICE))
        events.record(
            db,
            user.id,
            "passkey_added",
            ip="192.0.2.1",
            user_agent=f"Evil{hostile}",
            name=f"Key{hostile}",
        )
        db.commit()
    assert deliver(database, settings).sent == 1
    (received,) = smtp.inbox.messages
    assert received.recipients == [ALICE] and received.message["Bcc"] is None


@pytest.mark.parametrize(
    "url",
    ["http://mail.example.com", "smtp://", "smtps://h?starttls=1", "smtp://h?verify=maybe",
     "smtp://h?tls=1", "smtp://h:99999"],
)  # fmt: skip
def test_bad_smtp_urls_stop_start_up(url: str) -> None:
    with pytest.raises(ValueError):
        Settings.from_env({"BARYCENTER_SMTP_URL": url, "BARYCENTER_SECRET_KEY": "k" * 40})


def test_smtp_url_ports_and_options() -> None:
    assert mailer.parse_smtp_url("smtp://h").port == 25
    assert mailer.parse_smtp_url("smtp://h?starttls=1").port == 587
    assert mailer.parse_smtp_url("smtp://h?starttls=1").security == "starttls"
    tls = mailer.parse_smtp_url("smtps://us%40r:p%3Ass@h?verify=0")
    assert (tls.port, tls.security, tls.username, tls.password, tls.verify) == (
        465, "tls", "us@r", "p:ss", False
    )  # fmt: skip
    assert "p:ss" not in repr(tls)


def test_one_per_action_never_reaches_an_earlier_committed_action(database, user, alice_email):
    with database.session() as db:
        events.record(db, user.id, "passkey_added", ip="192.0.2.1", name="Old key")
        db.commit()
        events.record(db, user.id, "2fa_enabled", ip="192.0.2.1")  # a later action
        db.commit()
    assert [n.kind for n in outbox(database)] == ["passkey_added", "2fa_enabled"]
    with database.session() as db:  # the same action: one message naming the passkey
        events.record(db, user.id, "passkey_added", ip="192.0.2.1", name="New key")
        events.record(db, user.id, "2fa_enabled", ip="192.0.2.1")
        db.commit()
    rows = outbox(database)
    assert [n.kind for n in rows] == ["passkey_added", "2fa_enabled", "2fa_enabled"]
    assert "“New key”" in rows[-1].body_text and "“Old key”" not in rows[-1].body_text


def test_cleanup_deletes_old_delivered_messages_only(database, settings, user, alice_email):
    from web.cleanup import cleanup

    with database.session() as db:
        for kind in ("password_changed", "passkey_removed", "locked"):
            events.record(db, user.id, kind, ip="192.0.2.1", name="Key")
        db.commit()
    old = utcnow() - timedelta(days=31)
    with database.session() as db:
        db.exec(update(Notification).values(created_at=old))
        db.exec(update(Notification).where(Notification.kind == "locked").values(sent_at=old))
        db.exec(
            update(Notification)
            .where(Notification.kind == "passkey_removed")
            .values(gave_up_at=old)
        )
        db.commit()
    assert cleanup(database, settings)["notifications"] == 2
    assert [n.kind for n in outbox(database)] == ["password_changed"]  # still pending


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # smtps: all TLS
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_encrypted_smtp_verifies_certificates_and_logs_in(
    database, settings, user, alice_email, tmp_path, security
):
    server = SmtpServer(
        security=security, tls=self_signed_tls(tmp_path), login=("mailer", "s3cr:t@pass")
    ).start()
    try:
        with database.session() as db:
            events.record(db, user.id, "password_changed", ip="192.0.2.1")
            db.commit()
        base = server.url.replace("://", "://mailer:s3cr%3At%40pass@")
        verified = settings.with_(smtp_url=base)
        assert deliver(database, verified).failed == 1  # a self-signed certificate: refused
        (row,) = outbox(database)
        assert "CERTIFICATE_VERIFY_FAILED" in row.last_error and row.sent_at is None
        assert server.inbox.messages == []

        wrong_login = settings.with_(smtp_url=server.url + ("&" if "?" in server.url else "?")
                                     + "verify=0")  # fmt: skip
        assert deliver(database, wrong_login, ignore_delays=True).failed == 1
        assert (
            "Authentication" in outbox(database)[0].last_error
            or "530" in outbox(database)[0].last_error
        )

        test_server = settings.with_(smtp_url=base + ("&" if "?" in base else "?") + "verify=0")
        assert deliver(database, test_server, ignore_delays=True).sent == 1
        assert server.inbox.subjects(ALICE) == [SUBJECTS["password_changed"]]
    finally:
        server.stop()


def test_requirement_with_a_date_and_its_reminder_name_the_date(database, user, alice_email):
    with database.session() as db:  # the event shapes issue 11 records (SPEC §9)
        events.record(
            db, user.id, "2fa_required", actor="admin", **{"from": "2026-12-08T14:05:00Z"}
        )
        events.record(db, user.id, "2fa_requirement_reminder", **{"from": "2026-12-08T14:05:00Z"})
        events.record(db, user.id, "2fa_required", actor="admin")  # at once: no date
        db.commit()
    dated, reminder, at_once = outbox(database)
    assert "from 8 December 2026, 14:05 UTC" in dated.body_text
    assert "from 8 December 2026, 14:05 UTC" in reminder.body_text
    assert "Who: your administrator" in reminder.body_text  # no request caused it
    assert reminder.subject == "Two-factor authentication will be required tomorrow"
    assert "from " not in at_once.body_text.split("\n\n")[1]
    assert "next sign-in" in at_once.body_text


def test_enroll_at_login_is_one_message_naming_the_passkey(
    auth, client, authn, database, api, alice_email
):
    graphql(api, 'mutation { setUser2faRequired(username: "alice", required: true) { success } }')
    auth.login()
    options = client.json_post("/login/2fa/enroll/start", {"name": "Phone"})
    assert options.status_code == 200, options.text
    credential = authn.register(options.json())
    done = client.json_post("/login/2fa/enroll/finish", {"credential": credential, "name": "Phone"})
    assert done.status_code == 200, done.text
    rows = outbox(database)
    assert [r.kind for r in rows] == ["2fa_required", "enrolled_at_login"]  # no "passkey added"
    assert "“Phone”" in rows[1].body_text and "testclient" in rows[1].body_text
