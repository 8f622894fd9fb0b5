"""Every template in every sample state renders under StrictUndefined: the safety net for
designers' edits (a misspelt variable fails here, not in production)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar.testing import TestClient

from models import SecurityEvent
from web.app import HTMX_FILE, create_app
from web.design import SAMPLES, render_sample
from web.views import PasskeyView, event_views, when

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture(scope="module")
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=True
    )
    env.globals.update(htmx_file=HTMX_FILE, dev=False)
    env.filters["when"] = when
    return env


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_renders(environment: Environment, name: str) -> None:
    html = render_sample(environment, name)
    assert html.strip()
    assert "<script>" not in html.replace('<script src="', "")


def test_every_template_has_a_sample() -> None:
    used = {template for template, _ in SAMPLES.values()}
    includes = {"layouts/base.html", "components/forms.html", "components/codes.html",
                "components/confirm.html", "components/passkey.html",
                "partials/account/passkey_row.html", "partials/login/enrolled.html",
                "pages/design.html", "email/base.html"}  # fmt: skip
    every = {str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.html")}
    assert every - used - includes == set()


class CeremonyScopes(HTMLParser):
    """Each [data-passkey-action] button with its attributes and what its enclosing
    [data-passkey-scope] holds (the shim writes messages to the status region there)."""

    VOID = {"input", "br", "hr", "img", "meta", "link", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict] = []  # open elements: {"scope": bool, "buttons": [], "statuses": []}
        self.scopes: list[dict] = []
        self.orphans: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        scope = next((e for e in reversed(self.stack) if e["scope"]), None)
        if "data-passkey-action" in found:
            (scope["buttons"] if scope else self.orphans).append(found)
        if "data-passkey-status" in found and scope:
            scope["statuses"].append(found)
        if tag in self.VOID:
            return
        element = {"scope": "data-passkey-scope" in found, "buttons": [], "statuses": []}
        self.stack.append(element)
        if element["scope"]:
            self.scopes.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_ceremony_button_has_its_status_region(environment: Environment, name: str) -> None:
    """The macros of components/passkey.html keep what passkeys.js needs: every button has
    its endpoints and target, inside a scope with one role="alert" status region."""
    parser = CeremonyScopes()
    parser.feed(render_sample(environment, name))
    assert parser.orphans == []
    for scope in parser.scopes:
        for button in scope["buttons"]:
            assert button["data-passkey-action"] in {"register", "authenticate"}
            assert button["data-start"] and button["data-finish"] and button["data-target"]
            assert [s.get("role") for s in scope["statuses"]] == ["alert"], button
            assert button["data-target"].startswith("#")


def test_partial_root_id_is_its_file_name(environment: Environment) -> None:
    for name, (template, _) in SAMPLES.items():
        if not template.startswith("partials/account/"):
            continue
        expected = Path(template).stem.replace("_", "-")
        html = render_sample(environment, name)
        first = re.search(r"<(section|div)[^>]*\bid=\"([^\"]+)\"", html)
        assert first and first.group(2) == expected, name


def test_names_are_escaped(environment: Environment) -> None:
    template, context = SAMPLES["passkeys-added"]
    evil = PasskeyView(9, "<img src=x onerror=alert(1)>", False, "now", "Never")
    html = environment.get_template(template).render(
        **{**context, "passkeys": [evil]},
        csrf_token=lambda: "t",
        csrf_input="",
        url_for=lambda *_a, **_k: "",
    )
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_gallery_renders_every_state_in_dev_mode(settings, database) -> None:
    app = create_app(settings.with_(dev=True), database)
    with TestClient(app=app, base_url="http://localhost:8000") as client:
        gallery = client.get("/_design")
        assert gallery.status_code == 200
        for name, (template, _) in SAMPLES.items():
            if template.startswith("pages/"):
                assert client.get(f"/_design/{name}").status_code == 200, name
            else:
                assert name in gallery.text


def test_gallery_is_off_outside_dev_mode(client) -> None:
    assert client.get("/_design").status_code == 404


def test_a_run_of_failures_reads_as_one_line() -> None:
    rows = [
        SecurityEvent(user_id=1, kind="sign_in_failed", ip="192.0.2.1"),
        SecurityEvent(user_id=1, kind="sign_in_failed", ip="192.0.2.1"),
        SecurityEvent(user_id=1, kind="sign_in_failed", ip="192.0.2.1"),
        SecurityEvent(user_id=1, kind="locked"),
        SecurityEvent(user_id=1, kind="sign_in_failed"),
        SecurityEvent(user_id=1, kind="2fa_enabled", actor="admin"),
    ]
    words = [view.what for view in event_views(rows)]
    assert words == [
        "3 failed sign-in attempts",
        "Account locked for 15 minutes after repeated failures",
        "Failed sign-in attempt",
        "Two-factor authentication turned on by an administrator",
    ]


EMAIL_TEMPLATES = sorted((TEMPLATES / "email").glob("*.txt"))


def test_every_email_has_both_parts_and_a_sample() -> None:
    from web.notifications import SUBJECTS

    kinds = {p.stem for p in EMAIL_TEMPLATES} - {"base"}
    assert kinds == set(SUBJECTS)
    assert all((TEMPLATES / "email" / f"{kind}.html").exists() for kind in kinds)
    sampled = {t for t, _ in SAMPLES.values() if t.startswith("email/")}
    assert sampled == {f"email/{kind}.html" for kind in kinds}


@pytest.mark.parametrize(
    "name", sorted(n for n, (t, _) in SAMPLES.items() if t.startswith("email/"))
)
def test_email_text_part_renders(name: str) -> None:
    """The text part under StrictUndefined, with the same facts as its HTML part."""
    from web.notifications import environment as email_environment

    template, context = SAMPLES[name]
    text = email_environment().get_template(template[:-5] + ".txt").render(**context)
    html = email_environment().get_template(template).render(**context)
    assert "Hello Ada Lovelace," in text and "Hello Ada Lovelace," in html
    assert context["when"] in text and context["when"] in html
    assert (
        "http://localhost:8000/account" in text and 'href="http://localhost:8000/account"' in html
    )
    if context["by_admin"]:
        assert "your administrator" in text and "203.0.113.7" not in text
    else:
        assert "203.0.113.7" in text and "203.0.113.7" in html
    assert "{{" not in text and "{%" not in text


def test_email_html_escapes_what_users_typed() -> None:
    template, context = SAMPLES["email-hostile-passkey-name"]
    from web.notifications import environment as email_environment

    html = email_environment().get_template(template).render(**context)
    assert "<img src=x" not in html and "&lt;img src=x" in html
