"""The designer gallery (BARYCENTER_DEV=1 only): every template in every sample state."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Template
from markupsafe import Markup

from web import notifications
from web.design import SAMPLES, render_sample

NO_STORE = {"Cache-Control": "no-store"}


@get("/_design", sync_to_thread=False)
def design_gallery(request: Request) -> Template:
    engine = request.app.template_engine
    assert engine is not None  # the app is always built with its Jinja engine
    environment = engine.engine
    partials = [
        (name, template, Markup(render_sample(environment, name)))  # noqa: S704 (our templates)
        for name, (template, _) in SAMPLES.items()
        if template.startswith("partials/")
    ]
    pages = [(name, t) for name, (t, _) in SAMPLES.items() if t.startswith("pages/")]
    emails = [(name, t) for name, (t, _) in SAMPLES.items() if t.startswith("email/")]
    return Template(
        "pages/design.html",
        context={"pages": pages, "partials": partials, "emails": emails},
        headers=NO_STORE,
    )


@get("/_design/{name:str}", sync_to_thread=False)
def design_sample(name: FromPath[str]) -> Template:
    """One page (with its layout) or email (its HTML part) sample; partials are inline."""
    if name not in SAMPLES or not SAMPLES[name][0].startswith(("pages/", "email/")):
        raise NotFoundException("No such page sample.")
    template, context = SAMPLES[name]
    return Template(template, context=context, headers=NO_STORE)


@get("/_design/{name:str}/text", sync_to_thread=False)
def design_email_text(name: FromPath[str]) -> Response:
    """The text part of an email sample."""
    if name not in SAMPLES or not SAMPLES[name][0].startswith("email/"):
        raise NotFoundException("No such email sample.")
    template, context = SAMPLES[name]
    text = notifications.environment().get_template(template[:-5] + ".txt").render(**context)
    return Response(text, media_type="text/plain; charset=utf-8", headers=NO_STORE)
