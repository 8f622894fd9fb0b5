"""`GET /.well-known/webauthn`: the origins allowed to use our RP ID (WebAuthn related origin
requests, SPEC §5.6). Browsers fetch it from https://<rpId> when a ceremony runs on another
origin; without BARYCENTER_RELATED_ORIGINS there is no such file (404)."""

from __future__ import annotations

from litestar import Request, Response, get

from web.errors import Refused

CACHE = "public, max-age=3600"


# Public and cacheable by anyone: no CSRF cookie (a shared cache must not hand one user's
# cookie to others).
@get("/.well-known/webauthn", sync_to_thread=False, opt={"exclude_from_csrf": True})
def webauthn_origins(request: Request) -> Response:
    settings = request.app.state.settings
    if not settings.related_origins:
        raise Refused(404, "Not found.")
    return Response(
        {"origins": settings.expected_origins},
        media_type="application/json",
        headers={"Cache-Control": CACHE},
    )
