"""How refusals reach the user: a page with role="alert", a message for htmx, or JSON.

Handlers raise `Refused(status, message)` (or Litestar's HTTPException); a page that needs
another page first raises `RedirectTo`. Whatever the cause, the user sees words, never a
stack trace or a raw JSON body in a page.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.plugins.htmx import ClientRedirect, HTMXDetails, HTMXRequest
from litestar.response import Redirect, Template
from sqlalchemy.exc import OperationalError

log = logging.getLogger("barycenter")

MESSAGES = {
    400: "The request could not be understood.",
    401: "Please sign in.",
    403: "That request was refused. Reload the page and try again.",
    404: "Not found.",
    405: "That action is not allowed here.",
    409: "That conflicts with the current state. Reload the page and try again.",
    413: "The request is too large.",
    415: "Unsupported content type.",
    422: "Please check the form.",
    429: "Too many attempts. Please wait a minute and try again.",
    503: "The service is busy. Please try again.",
}


class Refused(HTTPException):
    """A refusal with a message meant for the person using the page. `code` (and `data`) are
    for scripts: a JSON answer carries them next to the message, e.g.
    `{"detail": …, "code": "unknown-credential", "credentialId": …}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        code: str = "",
        step: str = "",
        data: dict[str, Any] | None = None,
    ):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        """Machine-readable reason for the passkey shim (e.g. "reauth-required")."""
        self.step = step
        """Where the step that resolves it is (GET, a section in that state)."""
        self.data = data or {}
        """More machine-readable facts for JSON answers (e.g. the unknown credential's id)."""


class RedirectTo(Exception):  # noqa: N818  (a control-flow signal, not a failure)
    """Send the browser elsewhere; JSON clients get `status` and `message` instead."""

    def __init__(self, location: str, *, status: int = 303, message: str = ""):
        super().__init__(location)
        self.location = location
        self.status = status
        self.message = message


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    content_type = request.headers.get("content-type", "")
    return "application/json" in accept or content_type.startswith("application/json")


def htmx(request: Request) -> HTMXDetails:
    """What htmx says about a request, read by `litestar.plugins.htmx`: truthy for an htmx
    request; `.history_restore_request`, `.target`, … (HTMXPlugin in web/app.py makes every
    request an HTMXRequest; a plain Request is read the same way)."""
    return request.htmx if isinstance(request, HTMXRequest) else HTMXDetails(request)


def message_for(exc: HTTPException) -> str:
    """Our own refusals say what they mean; Litestar's ("Not Found", "Method Not Allowed",
    "CSRF token verification failed", validation errors) get a plain sentence instead."""
    detail = exc.detail if isinstance(exc.detail, str) else ""
    if isinstance(exc, Refused) and detail and exc.status_code != 413:
        return detail
    return MESSAGES.get(exc.status_code, "The request could not be completed.")


def refusal_response(
    request: Request, status: int, message: str, headers=None, extra: dict[str, Any] | None = None
) -> Response:
    headers = dict(headers or {})
    headers["Cache-Control"] = "no-store"
    if wants_json(request):
        return Response({**(extra or {}), "detail": message}, status_code=status, headers=headers)
    if htmx(request):
        # htmx does not swap 4xx/5xx (see responseHandling); base.js shows this text.
        return Response(message, status_code=status, media_type=MediaType.TEXT, headers=headers)
    return Template(
        "pages/error.html",
        context={"status": status, "message": message},
        status_code=status,
        headers=headers,
    )


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if status >= 500:
        log.error("server error on %s %s: %s", request.method, request.url.path, exc.detail)
        return refusal_response(request, 500, "Something went wrong on our side.")
    extra: dict[str, Any] = {}
    if isinstance(exc, Refused) and exc.code:
        extra = {**exc.data, "code": exc.code}
        if exc.step:
            extra["step"] = exc.step
    return refusal_response(request, status, message_for(exc), exc.headers, extra)


def redirect_handler(request: Request, exc: RedirectTo) -> Response:
    if wants_json(request):
        return Response(
            {"detail": exc.message, "redirect": exc.location},
            status_code=exc.status if exc.status >= 400 else 401,
            headers={"Cache-Control": "no-store"},
        )
    if htmx(request):
        response = ClientRedirect(exc.location)
        response.status_code = 200
        response.headers["Cache-Control"] = "no-store"
        return response
    return Redirect(exc.location, status_code=303)


def database_busy_handler(request: Request, exc: OperationalError) -> Response:
    text = str(exc.orig) if exc.orig else str(exc)
    if "locked" in text or "busy" in text:
        return refusal_response(request, 503, MESSAGES[503], {"Retry-After": "1"})
    log.exception("database error", exc_info=exc)
    return refusal_response(request, 500, "Something went wrong on our side.")


def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return refusal_response(request, 500, "Something went wrong on our side.")
