"""Files that clients fetch from fixed addresses on their own.

`GET /.well-known/webauthn`: the origins allowed to use our RP ID (WebAuthn related origin
requests, SPEC §5.6). Browsers fetch it from https://<rpId> when a ceremony runs on another
origin; without BARYCENTER_RELATED_ORIGINS there is no such file (404).

`GET /favicon.ico`: the icon that pages link (static/favicon.svg), for the browsers and
tools that ask the conventional address instead of reading the <link>: no 404 in the log
on a first visit, and cached for a week."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from litestar import Request, Response, get

from web.errors import Refused

CACHE = "public, max-age=3600"
FAVICON = Path(__file__).resolve().parents[2] / "static" / "favicon.svg"
FAVICON_CACHE = "public, max-age=604800"


@cache
def _favicon() -> bytes:
    return FAVICON.read_bytes()


@get("/favicon.ico", sync_to_thread=False, opt={"exclude_from_csrf": True})
def favicon() -> Response:
    return Response(
        _favicon(), media_type="image/svg+xml", headers={"Cache-Control": FAVICON_CACHE}
    )


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
