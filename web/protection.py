"""Request protection beyond the CSRF token: foreign Origin refusal, content types, and the
security headers of SPEC §7 on every response."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from web.errors import Refused

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
HSTS = "max-age=31536000; includeSubDomains"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def security_headers(message: Message, scope: Scope) -> None:
    """A `before_send` hook, so that every response gets the headers: also those that no
    route produced (404, 405) and refusals raised by middleware (CSRF)."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        for name, value in SECURITY_HEADERS.items():
            headers[name] = value
        app = scope.get("app")
        settings = getattr(getattr(app, "state", None), "settings", None)
        if settings is not None and settings.https:  # SPEC §7: HSTS on an https origin
            headers["strict-transport-security"] = HSTS


def check_request(request: Request) -> None:
    """Before every handler: state changes only from our own origin, in the declared type."""
    if request.method not in UNSAFE:
        return
    settings = request.app.state.settings
    origin = request.headers.get("origin")
    if origin is not None and origin not in settings.expected_origins:
        raise Refused(403, "Requests from other sites are refused.")
    # A related origin (BARYCENTER_RELATED_ORIGINS) is another site, but one of ours (SPEC §9).
    if request.headers.get("sec-fetch-site") == "cross-site" and not (
        origin is not None and origin in settings.related_origins
    ):
        raise Refused(403, "Requests from other sites are refused.")
    body = request.route_handler.opt.get("body", "form")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body == "json" and content_type != "application/json":
        raise Refused(415, "This endpoint takes application/json.")
    if body == "form" and content_type and content_type not in FORM_TYPES:
        raise Refused(415, "This endpoint takes a form (application/x-www-form-urlencoded).")
