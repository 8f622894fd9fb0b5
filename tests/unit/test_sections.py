"""The account page's sections (web/sections.py): each builder runs only its own queries,
the page runs each query once, a change names in HX-Trigger the other sections it affected
(never the one that answers it), and the two-factor card's state is one rule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from httpx import Response
from sqlmodel import Session, col, select

from models import AuthSession, User, utcnow
from tests.helpers import ORIGIN, PASSWORD, Auth, Client, statements
from tests.softauthn import SoftAuthenticator
from web import sections, twofactor
from web.db import Database
from web.sessions import Viewer
from web.settings import Settings

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


def another_device(auth: Auth) -> Auth:
    """The same browser with another authenticator (a second passkey)."""
    return Auth(auth.client, SoftAuthenticator(rp_id="localhost", origin=ORIGIN))


def signed_in_with_everything(auth: Auth) -> None:
    """alice: two passkeys, 2FA on (so recovery codes), some events."""
    auth.login()
    assert auth.add_passkey("First key").status_code == 200
    assert another_device(auth).add_passkey("Second key").status_code == 200
    assert auth.enable_2fa().status_code == 200


def facts_of(db: Session, settings: Settings) -> sections.Facts:
    """The Facts of alice's newest session, her row and that session loaded beforehand."""
    user = db.exec(select(User).where(User.username_key == "alice")).one()
    session = db.exec(
        select(AuthSession).where(AuthSession.user_id == user.id).order_by(col(AuthSession.id))
    ).first()
    assert session is not None
    return sections.Facts(db, settings, Viewer(user, session), BROWSER)


# Queries per section: what it shows and nothing else (2FA on; while it is off the
# recovery-codes section shows nothing and reads nothing).
QUERIES = {
    "requirement-notice": 0,  # the user's own flags
    "two-factor": 1,  # passkeys (how many; the new passkey's default name)
    "passkeys": 1,  # passkeys
    "recovery-codes": 2,  # the codes (on record, unused, version: one query), passkeys
    "password": 1,  # passkeys (how "Confirm it's you" asks)
    "sessions": 1,  # sessions
    "activity": 1,  # events
}
PAGE_QUERIES = 4  # passkeys, codes, sessions, events: each once


@pytest.mark.parametrize("name", list(sections.SECTIONS))
def test_each_section_runs_only_its_own_queries(name, auth, database, settings):
    signed_in_with_everything(auth)
    with database.session(write=False) as db:
        facts = facts_of(db, settings)
        with statements(database) as seen:
            context = sections.context(facts, name)
    assert len(seen) == QUERIES[name], seen
    assert context  # what its partial reads: test_each_builder_gives_its_partial_what_it_reads


# Every state of every section, as handlers open them (web/sections.SECTION_STATE).
MODES: list[tuple[str, dict[str, object]]] = [
    ("requirement-notice", {}),
    ("two-factor", {}),
    ("two-factor", {"tf_mode": "enroll"}),
    ("two-factor", {"tf_mode": "disable"}),
    ("two-factor", {"tf_mode": "codes", "codes": ["AAAA-BBBB-CCCC"]}),
    ("two-factor", {"confirm_in": "two-factor", "confirm_error": "No."}),
    ("passkeys", {}),
    ("passkeys", {"pk_editing": "first", "pk_name_value": "Laptop", "pk_error": "No."}),
    ("passkeys", {"pk_confirming": "first"}),
    ("passkeys", {"pk_step_up": "first"}),
    ("passkeys", {"pk_refused": "first", "pk_error": "No."}),
    ("passkeys", {"confirm_in": "passkeys"}),
    ("recovery-codes", {}),
    ("recovery-codes", {"rc_mode": "confirm"}),
    ("recovery-codes", {"rc_mode": "step-up"}),
    ("recovery-codes", {"rc_mode": "codes", "codes": ["AAAA-BBBB-CCCC"]}),
    ("password", {}),
    ("password", {"pw_mode": "change", "pw_error": "No.", "pw_error_field": "new"}),
    ("password", {"confirm_in": "password"}),
    ("sessions", {"notice": "Done."}),
    ("activity", {}),
]


@pytest.mark.parametrize(("name", "mode"), MODES)
def test_each_builder_gives_its_partial_what_it_reads(name, mode, app, auth, database, settings):
    """A section's partial rendered from its own builder alone, under the app's
    StrictUndefined: a key its builder leaves out (read only by another section's builder,
    or by the page) fails here, not on a route that happens to open that state."""
    signed_in_with_everything(auth)
    engine = app.template_engine.engine
    with database.session(write=False) as db:
        facts = facts_of(db, settings)
        first = facts.passkeys[0].pk
        state = {k: first if v == "first" else v for k, v in mode.items()}
        context = sections.context(facts, name, notice_in=name, **state)
        html = engine.get_template(sections.SECTIONS[name][0]).render(
            **context, csrf_input="", csrf_token=lambda: "t", url_for=lambda *_a, **_k: "/"
        )
    assert f'id="{name}"' in html


def test_the_page_runs_each_query_once(auth, database, settings):
    signed_in_with_everything(auth)
    with database.session(write=False) as db:
        alone: set[str] = set()
        for name in sections.SECTIONS:
            facts = facts_of(db, settings)
            with statements(database) as seen:
                sections.context(facts, name)
            alone |= set(seen)
        facts = facts_of(db, settings)
        with statements(database) as seen:
            page = sections.context(facts, None)
    assert len(seen) == PAGE_QUERIES == len(alone)
    assert set(seen) == alone  # the sections' queries, each once
    assert [p.name for p in page["passkeys"]] == ["First key", "Second key"]
    assert page["two_factor"]["recovery_remaining"] == 10 and len(page["events"]) >= 3


def test_with_2fa_off_the_codes_are_not_read(auth, database, settings):
    auth.login()
    assert auth.add_passkey().status_code == 200
    with database.session(write=False) as db:
        facts = facts_of(db, settings)
        with statements(database) as seen:
            context = sections.context(facts, "recovery-codes")
    assert seen == [] and context["two_factor"]["shows_recovery"] is False


@pytest.mark.parametrize("name", list(sections.SECTIONS))
def test_a_section_request_builds_only_that_section(name, app, auth, client, database):
    """Through the app: a section for htmx costs the request's own statements (the viewer)
    plus its builder's; the whole page, rendered, costs the same plus every builder's."""
    signed_in_with_everything(auth)
    client.page("/account")  # any once-a-minute bookkeeping happens here
    app.state.pages = None  # rendered every time (the kept page: tests/unit/test_page_cache.py)
    with statements(database) as page:
        assert client.get("/account").status_code == 200
    with statements(database) as alone:
        response = client.htmx("GET", f"/account/{name}")
    assert response.status_code == 200
    assert "<h1>Account security</h1>" not in response.text
    assert len(page) - len(alone) == PAGE_QUERIES - QUERIES[name]


def test_a_plain_request_for_a_section_gets_the_whole_page_in_that_state(auth, client):
    auth.login()
    assert auth.add_passkey("Only key").status_code == 200
    page = client.get("/account/two-factor/enable")  # no JavaScript: the whole page
    assert page.status_code == 200 and "<h1>Account security</h1>" in page.text
    assert "Turn on two-factor authentication" in page.text  # the step is open
    assert "Only key" in page.text and "Recent security activity" in page.text


# ---- refresh events ----------------------------------------------------------------


def listeners(text: str) -> dict[str, str]:
    """Element id → the event it refreshes on (hx-trigger="… from:body")."""
    found = re.findall(r'id="([a-z-]+)"[^>]*?hx-trigger="([a-z-]+) from:body"', text, re.S)
    return dict(found)


def require_later(database: Database) -> None:
    """An administrator's requirement from three days on (the notice shows while 2FA is off)."""
    with database.session() as db:
        alice = db.exec(select(User).where(User.username_key == "alice")).one()
        alice.requires_2fa, alice.requires_2fa_from = True, utcnow() + timedelta(days=3)
        db.add(alice)
        db.commit()


def test_each_section_listens_to_its_own_event(auth, client, database):
    auth.login()
    require_later(database)
    page = client.page("/account").text
    assert "requirement-notice" in page and "Your administrator requires" in page
    assert listeners(page) == {name: f"refresh-{name}" for name in sections.SECTIONS}
    assert "account-changed" not in page


def test_no_change_refreshes_the_section_that_answers_it():
    for change, affected in sections.AFFECTS.items():
        assert set(affected) <= set(sections.SECTIONS), change
        for name in sections.SECTIONS:
            header = sections.refreshes(change, name)
            assert f"refresh-{name}" not in header.split(", ")
            assert header == ", ".join(f"refresh-{s}" for s in affected if s != name)


def trigger(response: Response) -> list[str]:
    return [name.strip() for name in response.headers.get("hx-trigger", "").split(",") if name]


def test_changes_name_the_sections_they_affect(auth, make_client, client, database):
    auth.login()
    added = auth.add_passkey("First key")
    assert trigger(added) == ["refresh-activity"]
    assert another_device(auth).add_passkey("Second key").status_code == 200
    passkey_id = re.findall(r'id="passkey-(\d+)"', client.page("/account").text)[0]

    renamed = client.htmx("POST", f"/account/passkeys/{passkey_id}/rename", {"name": "Laptop"})
    assert renamed.status_code == 200 and trigger(renamed) == ["refresh-activity"]

    enabled = auth.enable_2fa()
    assert enabled.status_code == 200
    assert set(trigger(enabled)) == {
        "refresh-requirement-notice",  # it goes away
        "refresh-recovery-codes",  # it appears
        "refresh-passkeys",  # "Last used" of the passkey just used
        "refresh-sessions",  # other sessions ended; this one's sign-in method
        "refresh-activity",
    }

    other: Client = make_client()
    other.page("/login")
    other.form("/login", {"username": "alice", "password": PASSWORD})
    removed = client.htmx("POST", f"/account/passkeys/{passkey_id}/remove")
    assert removed.status_code == 200 and "Passkey removed." in removed.text
    assert trigger(removed) == ["refresh-sessions", "refresh-activity"]

    ended = client.htmx("POST", "/account/sessions/revoke-others")
    assert ended.status_code == 200 and trigger(ended) == ["refresh-activity"]


def test_a_refusal_or_a_step_refreshes_nothing(auth, client):
    auth.login()
    assert auth.add_passkey("Only key").status_code == 200
    passkey_id = re.findall(r'id="passkey-(\d+)"', client.page("/account").text)[0]
    step = client.htmx("GET", f"/account/passkeys/{passkey_id}/rename")
    assert step.status_code == 200 and "hx-trigger" not in step.headers
    refused = client.htmx("POST", f"/account/passkeys/{passkey_id}/rename", {"name": " "})
    assert refused.status_code == 422 and "hx-trigger" not in refused.headers


# ---- the two-factor card's state (a rule: web/twofactor.py) ---------------------------


@dataclass
class Flags:
    requires_2fa: bool
    user_2fa_enabled: bool
    requires_2fa_from: datetime | None = None


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER, EARLIER = NOW + timedelta(days=3), NOW - timedelta(days=3)
ADMIN = "Your administrator requires two-factor authentication"
EACH = "You confirm each password sign-in with a passkey or a recovery code."


@pytest.mark.parametrize(
    ("requires", "enabled", "start", "kind", "words", "explanation"),
    [
        (False, False, None, "off", "Off", "Add a second step to password sign-ins"),
        (False, True, None, "on", "On", EACH),
        (True, False, None, "required", "Required by your administrator", f"{ADMIN}. {EACH}"),
        (True, False, EARLIER, "required", "Required by your administrator", f"{ADMIN}. {EACH}"),
        (
            True,
            True,
            None,
            "required",
            "Required by your administrator (also turned on by you)",
            f"{ADMIN}, and you have also turned it on yourself. {EACH}",
        ),
        # a pending requirement: the badge is the user's own; the sentence says what comes
        (True, False, LATER, "off", "Off", "Turn it on before then: from that time on"),
        (True, True, LATER, "on", "On", EACH),
    ],
)
def test_card_state(requires, enabled, start, kind, words, explanation):
    state = twofactor.card_state(Flags(requires, enabled, start), NOW)
    assert (state.kind, state.words) == (kind, words)
    assert state.explanation.startswith(explanation)
    assert state.words == twofactor.status_words(Flags(requires, enabled, start), NOW)


def test_the_card_shows_its_state(auth, client, database):
    auth.login()
    card = client.htmx("GET", "/account/two-factor").text
    assert '<span class="status status-off" data-2fa-status>Off</span>' in card
    assert "Add a second step to password sign-ins" in card
    require_later(database)
    card = client.htmx("GET", "/account/two-factor").text
    assert '<span class="status status-off" data-2fa-status>Off</span>' in card
    assert "Turn it on before then: from that time on" in card
