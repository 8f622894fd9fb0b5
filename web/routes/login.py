"""Sign in (password or passkey), the second factor at /login/2fa, sign out."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import FromQuery, RawBody, URLEncodedBody
from litestar.response import Template

from models import User, utcnow
from models.passkey import passkeys_of
from web import ceremony, sessions, signin, twofactor
from web.db import answer_reads
from web.errors import Refused
from web.routes.common import (
    DB,
    HOME,
    JSON,
    Current,
    actor,
    client,
    field,
    login_binding,
    rate_limit,
    redirect,
    render,
    safe_return_to,
    settings_of,
)
from web.tokens import digest, new_token
from web.views import accepted_credentials, codes_download, default_passkey_name, site_of


def login_page(
    request: Request,
    *,
    error: str = "",
    notice: str = "",
    username: str = "",
    return_to: str = "",
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Template:
    context = {"error": error, "notice": notice, "username": username, "return_to": return_to}
    return render(
        request,
        page="pages/login.html",
        partial=None,
        context=context,
        status=status,
        headers=headers,
    )


SIGNED_OUT_ELSEWHERE = "You were signed out from another session."
SESSION_EXPIRED = "Your session expired. Please sign in again."
SIGNED_IN_WITH_NEW_CODES = (
    "You are signed in. Two-factor authentication is on for your account, "
    "so here are your recovery codes."
)


def codes_once(
    request: Request,
    completed: signin.Completed,
    continue_to: str,
    *,
    words: str = SIGNED_IN_WITH_NEW_CODES,
    root_id: str = "second-factor",
) -> Template:
    """The new recovery codes, shown once, before going on to `continue_to` (after
    enroll-at-login, and after the first sign-in since 2FA came on without codes)."""
    context = {
        "codes": completed.codes,
        "codes_title": "Save your recovery codes",
        "continue_to": continue_to,
        "signed_in_words": words,
        "root_id": root_id,
        "download": codes_download(completed.username, site_of(settings_of(request)), utcnow()),
    }
    return render(
        request,
        page="pages/enrolled.html",
        partial="partials/login/enrolled.html",
        context=context,
        token=completed.token,
    )


def finished(
    request: Request, completed: signin.Completed, continue_to: str, root_id: str = "second-factor"
) -> Response | Template:
    """Where a completed sign-in goes: its new codes first when it created some."""
    if completed.codes:
        return codes_once(request, completed, continue_to, root_id=root_id)
    return redirect(request, continue_to, token=completed.token)


def return_to_of(fields: dict[str, Any]) -> str:
    """The local path a ceremony's fields ask to continue to (else the account page)."""
    value = fields.get("return_to")
    return safe_return_to(value if isinstance(value, str) else None)


class LoginController(Controller):
    path = "/login"

    @get("/", sync_to_thread=True)
    def show(self, request: Request, db: DB, return_to: FromQuery[str] = "") -> Template | Response:
        token = sessions.token_of(request)
        existed = sessions.names_a_session(db, token)
        viewer = sessions.load(request, db)
        if viewer is not None and viewer.session.state == "full":  # signed in already
            if not twofactor.session_meets_rules(viewer.user, viewer.session, utcnow()):
                return redirect(request, "/login/2fa")  # 2FA became effective meanwhile
            return redirect(request, safe_return_to(return_to))
        notice = ""
        if token and viewer is None:  # the cookie names a session that is no more
            notice = SESSION_EXPIRED if existed else SIGNED_OUT_ELSEWHERE
        page = login_page(
            request, notice=notice, return_to=safe_return_to(return_to) if return_to else ""
        )
        if notice:
            sessions.clear_cookie(page, settings_of(request))  # say it once
        return page

    @post("/", sync_to_thread=True)
    def submit(
        self, request: Request, db: DB, data: URLEncodedBody[dict[str, Any]]
    ) -> Template | Response:
        username, password = field(data, "username"), field(data, "password")
        return_to = safe_return_to(field(data, "return_to"))
        try:
            rate_limit(request, "sign-in")
            visitor = signin.Visitor(
                settings_of(request), client(request), replaces=sessions.token_of(request)
            )
            outcome = signin.password_sign_in(db, visitor, username.strip(), password)
        except Refused as refusal:
            return login_page(
                request,
                error=str(refusal.detail),
                username=username[:64],
                return_to=return_to,
                status=refusal.status_code,
                headers=refusal.headers,
            )
        if outcome.partial:
            target = "/login/2fa" + (f"?return_to={quote(return_to)}" if return_to != HOME else "")
        else:
            target = return_to
        return redirect(request, target, token=outcome.token)

    @post("/passkey/start", sync_to_thread=True, opt=JSON)
    def passkey_start(self, request: Request, db: DB) -> Response:
        rate_limit(request, "ceremony")
        nonce = request.cookies.get(settings_of(request).ceremony_cookie) or new_token()
        options = signin.start_passkey_sign_in(db, settings_of(request), digest(nonce))
        response = Response(options, status_code=200, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            settings_of(request).ceremony_cookie,
            nonce,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=settings_of(request).secure_cookies,
            max_age=600,
        )
        return response

    @post("/passkey/finish", sync_to_thread=True, opt=JSON)
    def passkey_finish(self, request: Request, db: DB, body: RawBody) -> Response | Template:
        credential, fields = ceremony.read_credential(body)
        visitor = signin.Visitor(
            settings_of(request),
            client(request),
            binding=login_binding(request),
            replaces=sessions.token_of(request),
        )
        completed = signin.finish_passkey_sign_in(db, visitor, credential)
        if completed.codes:  # 2FA came on without codes: shown once, in place of this card
            return codes_once(request, completed, return_to_of(fields), root_id="sign-in")
        response = redirect(request, return_to_of(fields), token=completed.token)
        return with_accepted_credentials(request, db, response, completed.user)


def with_accepted_credentials(
    request: Request, db: DB, response: Response, owner: User | None
) -> Response:
    """After a passkey sign-in, the shim tells the password manager which passkeys the
    account has now (WebAuthn Signal API): they go in the JSON answer next to `redirect`."""
    if owner is None or not isinstance(response.content, dict):
        return response
    answer_reads(db, request.app.state.database)
    accepted = accepted_credentials(settings_of(request), owner, passkeys_of(db, owner.pk))
    response.content = {
        **response.content,
        "signal": {
            "rpId": accepted["rp_id"],
            "userId": accepted["user_id"],
            "allAcceptedCredentialIds": accepted["credential_ids"].split(),
        },
    }
    return response


class SecondFactorController(Controller):
    """`/login/2fa`: only a session waiting for its second factor gets here."""

    path = "/login/2fa"
    dependencies = {"viewer": Provide(sessions.provide_pending, sync_to_thread=True)}

    def _refused(
        self, request: Request, db: DB, viewer: Current, refusal: Refused, return_to: str
    ) -> Template:
        """A plain form of this step refused: the step again with the words, the status and
        the refusal's headers (a 429 keeps its Retry-After). A 401 (the sign-in is over)
        goes to the error handler."""
        db.rollback()
        if refusal.status_code == 401:
            raise refusal
        return self._page(
            request,
            db,
            viewer,
            return_to=return_to,
            error=str(refusal.detail),
            status=refusal.status_code,
            headers=refusal.headers,
        )

    def _page(
        self,
        request: Request,
        db: DB,
        viewer: Current,
        *,
        return_to: str,
        error: str = "",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Template:
        step = signin.second_factor_step(db, actor(request, viewer))
        context = {
            "admin_required": viewer.session.partial_reason == twofactor.ADMIN_REQUIRED,
            "enroll": step != "",
            # a demoted or stale session enters the password before registering a passkey
            "enroll_password_first": step == "password",
            "default_passkey_name": default_passkey_name(request.headers.get("user-agent", "")),
            "error": error,
            "return_to": return_to,
        }
        return render(
            request,
            page="pages/login_2fa.html",
            partial=None,
            context=context,
            status=status,
            headers=headers,
        )

    @get("/", sync_to_thread=True)
    def show(
        self, request: Request, db: DB, viewer: Current, return_to: FromQuery[str] = ""
    ) -> Template:
        return self._page(request, db, viewer, return_to=safe_return_to(return_to))

    @get("/recovery", sync_to_thread=False)
    def recovery_page(self) -> Response:
        """The form posts here; a reload or a bookmark of it lands on the step itself."""
        return Response(content=None, status_code=303, headers={"Location": "/login/2fa"})

    @post("/recovery", sync_to_thread=True)
    def recovery_code(
        self, request: Request, db: DB, viewer: Current, data: URLEncodedBody[dict[str, Any]]
    ) -> Template | Response:
        code = field(data, "code")
        return_to = safe_return_to(field(data, "return_to"))
        try:
            rate_limit(request, "sign-in")
            completed = signin.second_factor_code(db, actor(request, viewer), code)
        except Refused as refusal:
            return self._refused(request, db, viewer, refusal, return_to)
        return finished(request, completed, return_to)

    @post("/password", sync_to_thread=True)
    def password(
        self, request: Request, db: DB, viewer: Current, data: URLEncodedBody[dict[str, Any]]
    ) -> Template | Response:
        """The password before enroll-at-login (a plain form; counted by the lockout)."""
        return_to = safe_return_to(field(data, "return_to"))
        try:
            rate_limit(request, "sign-in")
            password = field(data, "password")
            token = signin.confirm_password_at_login(db, actor(request, viewer), password)
        except Refused as refusal:
            return self._refused(request, db, viewer, refusal, return_to)
        target = "/login/2fa" + (f"?return_to={quote(return_to)}" if return_to != HOME else "")
        return redirect(request, target, token=token)

    @post("/passkey/start", sync_to_thread=True, opt=JSON)
    def passkey_start(self, request: Request, db: DB, viewer: Current) -> Response:
        rate_limit(request, "ceremony")
        options = signin.start_second_factor(db, actor(request, viewer))
        return Response(options, status_code=200, headers={"Cache-Control": "no-store"})

    @post("/passkey/finish", sync_to_thread=True, opt=JSON)
    def passkey_finish(
        self, request: Request, db: DB, viewer: Current, body: RawBody
    ) -> Response | Template:
        credential, fields = ceremony.read_credential(body)
        completed = signin.finish_second_factor(db, actor(request, viewer), credential)
        if completed.codes:  # 2FA came on without codes: shown once before going on
            return codes_once(request, completed, return_to_of(fields))
        response = redirect(request, return_to_of(fields), token=completed.token)
        return with_accepted_credentials(request, db, response, completed.user)

    @post("/enroll/start", sync_to_thread=True, opt=JSON)
    def enroll_start(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Response:
        rate_limit(request, "ceremony")
        name = ceremony.read_json(body).get("name")
        options = signin.start_enroll_at_login(db, actor(request, viewer), name)
        return Response(options, status_code=200, headers={"Cache-Control": "no-store"})

    @post("/enroll/finish", sync_to_thread=True, opt=JSON)
    def enroll_finish(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Template:
        credential, fields = ceremony.read_credential(body)
        completed = signin.finish_enroll_at_login(
            db, actor(request, viewer), credential, fields.get("name")
        )
        return codes_once(
            request,
            completed,
            return_to_of(fields),
            words="Your passkey is registered and you are signed in.",
        )


@post("/logout", sync_to_thread=True)
def logout(request: Request, db: DB) -> Response:
    viewer = sessions.load(request, db)
    signin.sign_out(db, viewer.session if viewer is not None else None)
    response = redirect(request, "/login")
    sessions.clear_cookie(response, settings_of(request))
    return response
