"""Helpers every controller shares: rendering page-or-partial, form fields, bindings."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.plugins.htmx import ClientRedirect, HTMXHeaders
from litestar.response import Redirect, Template
from litestar.utils.empty import value_or_default
from litestar.utils.scope.state import ScopeState
from sqlmodel import Session

from web import ratelimit, sessions
from web.client import ClientInfo, client_info
from web.errors import Refused, htmx, wants_json
from web.settings import Settings
from web.tokens import digest

DB = NamedDependency[Session]
"""The request's database session (web.db.provide_db)."""
Current = NamedDependency[sessions.Viewer]
"""The signed-in person (web.sessions.provide_viewer / provide_pending)."""
NO_STORE = {"Cache-Control": "no-store", "Vary": HTMXHeaders.REQUEST.value}
JSON = {"body": "json"}
"""The `opt` of a route whose body is JSON (the passkey ceremonies)."""


def wants_partial(request: Request) -> bool:
    """A partial for htmx; the whole page for plain requests and history restores."""
    details = htmx(request)
    return bool(details) and not details.history_restore_request


def render(
    request: Request,
    *,
    page: str,
    partial: str | None,
    context: dict[str, Any],
    status: int = 200,
    trigger: str | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Template:
    name = partial if partial and wants_partial(request) else page
    headers = {**NO_STORE, **(headers or {})}
    if trigger:  # event names, comma-separated: the sections that refresh themselves
        headers[HTMXHeaders.TRIGGER_EVENT.value] = trigger
    response = Template(name, context=context, status_code=status, headers=headers)
    if token:
        sessions.set_cookie(response, token, request.app.state.settings)
    return response


def rendered(request: Request, name: str, context: dict[str, Any]) -> bytes:
    """A template rendered here and now, with what Litestar's Template response adds to
    its context (the request, the CSRF input): for a page that is kept (web.pagecache)."""
    engine = request.app.template_engine
    assert engine is not None  # configured by create_app
    full = Template(name, context=context).create_template_context(request)
    return engine.get_template(name).render(**full).encode()


def csrf_token(request: Request) -> str:
    """The CSRF token this request's forms carry (the cookie's, or a new one that the
    CSRF middleware sets as the cookie with this answer)."""
    return value_or_default(ScopeState.from_scope(request.scope).csrf_token, "")


def redirect(request: Request, location: str, *, token: str | None = None) -> Response:
    """303 for a plain form; HX-Redirect for htmx. The passkey shim (a JSON request) gets
    the header and `{"redirect": …}` (a passkey sign-in adds its `signal` there)."""
    response: Response
    if wants_json(request):
        response = Response(
            {"redirect": location}, status_code=200, headers={HTMXHeaders.REDIRECT.value: location}
        )
    elif htmx(request):
        response = ClientRedirect(location)
        response.status_code = 200  # ClientRedirect leaves it to the handler: a POST's 201
    else:
        response = Redirect(location, status_code=303)
    response.headers.update(NO_STORE)
    if token:
        sessions.set_cookie(response, token, request.app.state.settings)
    return response


def field(data: Any, name: str) -> str:
    """One text field of a submitted form ("" when absent); anything else is a 400."""
    if not isinstance(data, dict):
        raise Refused(400, "The form could not be read.")
    value = data.get(name, "")
    if not isinstance(value, str):
        raise Refused(400, f"The field “{name}” must be text.")
    return value


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def client(request: Request) -> ClientInfo:
    return client_info(request)


def actor(request: Request, viewer: sessions.Viewer) -> sessions.Actor:
    """Who asks (what the services of web.account and web.signin are given)."""
    return sessions.Actor(viewer.user, viewer.session, settings_of(request), client(request))


def login_binding(request: Request) -> str:
    """Sign-in ceremonies happen before any session: bind them to a nonce cookie."""
    nonce = request.cookies.get(settings_of(request).ceremony_cookie, "")
    if not nonce or len(nonce) > 128:
        raise Refused(400, "This passkey request expired or was already used. Please try again.")
    return digest(nonce)


HOME = "/account"


RETURN_TO_SAFE = "/?&=%#+:@!$'()*,;~-._"
"""Characters a return_to keeps as they are; every other one is percent-encoded (UTF-8),
so only ASCII ever reaches a Location header."""

# Not places to land after signing in: a step or a form's POST route (deeper than
# /account/<section>: …/passkeys/1/rename, …/recovery-codes/regenerate), sign-in, sign-out.
NOT_A_DESTINATION = re.compile(r"/account/[^/]+/|/login(/|$)|/logout(/|$)")


def safe_return_to(value: str | None) -> str:
    """Only local full pages: "/x" but never "//host" or "/\\host", spelled plainly or
    percent-encoded; no control characters or backslashes; at most 512 characters; never a
    step or a form's POST route (after sign-in a person lands on a page, not on …/rename).
    Anything else falls back to the account page; what passes is encoded for headers."""
    if not value or len(value) > 512:
        return HOME
    for spelling in (value, unquote(value)):
        if not spelling.startswith("/") or spelling.startswith(("//", "/\\")):
            return HOME
        if any(ch == "\\" or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in spelling):
            return HOME
        if NOT_A_DESTINATION.match(spelling.split("?", 1)[0]):
            return HOME
    return quote(value, safe=RETURN_TO_SAFE)


def rate_limit(request: Request, action: str) -> None:
    """Per-IP limit on sign-in attempts and ceremony starts (429 with Retry-After)."""
    settings = settings_of(request)
    ip = ratelimit.ip_key(client(request).ip)
    ratelimit.hit(request.app.state.database, f"{action}:{ip}", settings.ip_limit_per_minute)
