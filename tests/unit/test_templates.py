"""Every template in every sample state renders under StrictUndefined: the safety net for
designers' edits (a misspelt variable fails here, not in production)."""

from __future__ import annotations

import re
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
                "components/confirm.html",
                "partials/account/passkey_row.html", "partials/login/enrolled.html",
                "pages/design.html"}  # fmt: skip
    every = {str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.html")}
    assert every - used - includes == set()


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
