"""The account security page and each of its sections (htmx partials, plain forms too)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from litestar import Controller, Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.di import Provide
from litestar.enums import MediaType
from litestar.params import FromPath, FromQuery, RawBody, URLEncodedBody
from litestar.response import Redirect, Template
from sqlmodel import Session

from models import User, utcnow
from web import account, ceremony, pagecache, password_change, sections, sessions, twofactor
from web.db import answer_reads
from web.errors import Refused
from web.pagecache import PageCache
from web.routes.common import (
    DB,
    JSON,
    NO_STORE,
    Current,
    actor,
    csrf_token,
    field,
    rate_limit,
    render,
    rendered,
    settings_of,
    wants_partial,
)
from web.views import accepted_credentials


def section(
    request: Request,
    db: Session,
    viewer: sessions.Viewer,
    name: str,
    *,
    status: int = 200,
    change: str | None = None,
    token: str | None = None,
    facts: sections.Facts | None = None,
    **state: Any,
) -> Template:
    """One section for htmx, built from its own queries (or the whole page, in that state,
    for a plain request). After a `change` (web.sections.AFFECTS), the other sections it
    affected are named in HX-Trigger and refresh themselves."""
    answer_reads(db, request.app.state.database)
    facts = facts or sections.Facts(
        db, settings_of(request), viewer, request.headers.get("user-agent", "")
    )
    partial = wants_partial(request)
    return render(
        request,
        page="pages/account.html",
        partial=sections.SECTIONS[name][0],
        context=sections.context(facts, name if partial else None, notice_in=name, **state),
        status=status,
        trigger=sections.refreshes(change, name) if change else None,
        token=token,
    )


# Where each section shows a refusal of its own action (SPEC §9: a 409 swaps the section's
# current state with the message; htmx's responseHandling swaps 409s).
SECTION_ERROR = {
    "two-factor": "tf_error",
    "passkeys": "pk_error",
    "recovery-codes": "rc_error",
    "sessions": "notice",
}


def conflict(
    request: Request,
    db: Session,
    viewer: sessions.Viewer,
    name: str,
    refusal: Refused,
    **state: Any,
) -> Template:
    """A refused action of a section: the section as it is now, with the refusal's words in
    it (never a card that contradicts the current state). Nothing was changed."""
    db.rollback()
    viewer.user = db.get(User, viewer.user.id, populate_existing=True) or viewer.user
    message = str(refusal.detail)
    state[SECTION_ERROR[name]] = message
    return section(request, db, viewer, name, status=refusal.status_code, **state)


def removed(
    request: Request, db: Session, viewer: sessions.Viewer, token: str | None = None
) -> Template:
    """The passkeys section after a removal, with what the Signal API needs."""
    answer_reads(db, request.app.state.database)
    facts = sections.Facts(db, settings_of(request), viewer, request.headers.get("user-agent", ""))
    signal = accepted_credentials(facts.settings, viewer.user, facts.passkeys)
    return section(
        request,
        db,
        viewer,
        "passkeys",
        notice="Passkey removed.",
        change="passkey-removed",
        token=token,
        facts=facts,
        signal=signal,
    )


def form_fields(body: bytes) -> dict[str, str]:
    """A small urlencoded form (or none at all): its text fields, the last value of each."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as error:
        raise Refused(400, "The form could not be read.") from error
    return {key: value[:200] for key, value in pairs}


def ceremony_options(options: dict[str, Any]) -> Response:
    return Response(options, status_code=200, headers={"Cache-Control": "no-store"})


@get("/", sync_to_thread=False)
def home() -> Redirect:
    return Redirect("/account", status_code=303)


def _render_page(request: Request, db: Session, viewer: sessions.Viewer, user_agent: str) -> bytes:
    facts = sections.Facts(db, settings_of(request), viewer, user_agent)
    return rendered(request, "pages/account.html", sections.context(facts, None))


class AccountController(Controller):
    path = "/account"
    dependencies = {"viewer": Provide(sessions.provide_viewer)}  # async: most on the loop

    @get("/")
    async def page(self, request: Request, db: DB) -> Response:
        """The whole page. From memory while nothing it shows has changed (web.pagecache),
        for a session that needs nothing but reading (sessions.at_rest): no thread hop,
        no objects. Otherwise the whole path: the viewer's checks (which may write, or send
        the person elsewhere), then the page rendered in a worker thread."""
        pages: PageCache | None = request.app.state.pages
        user_agent = request.headers.get("user-agent", "")
        token = csrf_token(request)
        if pages is not None and (rest := sessions.at_rest(request)) is not None:
            kept = pages.get(pagecache.key(rest.token_hash, rest.data_version, token, user_agent))
            if kept is not None:
                return Response(kept, media_type=MediaType.HTML, headers=NO_STORE)
        viewer = await sessions.provide_viewer(request, db)
        now = utcnow()
        body = await sync_to_thread(_render_page, request, db, viewer, user_agent)
        # kept only for a browser that keeps its CSRF cookie: without one, every request
        # gets a new token (and so would fill the memory with pages never asked for again)
        if pages is not None and request.cookies.get(settings_of(request).csrf_cookie):
            key = pagecache.key(
                viewer.session.token_hash, viewer.user.data_version, token, user_agent
            )
            pages.put(key, body, pagecache.fresh_until(viewer.user, now))
        return Response(body, media_type=MediaType.HTML, headers=NO_STORE)

    @get("/{name:str}", sync_to_thread=True)
    def show_section(
        self, request: Request, db: DB, viewer: Current, name: FromPath[str]
    ) -> Template:
        if name not in sections.SECTIONS:
            raise Refused(404, "Not found.")
        return section(request, db, viewer, name)

    # Litestar's router never falls back from a static segment to "/{name}": "passkeys"
    # and "sessions" are static segments of the /…/{id}/… routes below, so they need
    # routes of their own (without them both answered 404).
    @get("/passkeys", sync_to_thread=True)
    def passkeys_section(self, request: Request, db: DB, viewer: Current) -> Template:
        return section(request, db, viewer, "passkeys")

    @get("/sessions", sync_to_thread=True)
    def sessions_section(self, request: Request, db: DB, viewer: Current) -> Template:
        return section(request, db, viewer, "sessions")

    # A refusal of the rules with 409 shows in its section, as the section is now (SPEC
    # §9); any other refusal goes to the error handler.

    # ---- Two-factor authentication: enable -------------------------------------------

    @get("/two-factor/enable", sync_to_thread=True)
    def enable_step(self, request: Request, db: DB, viewer: Current) -> Template:
        try:
            twofactor.can_enable(viewer.user).require()
        except Refused as refusal:
            return conflict(request, db, viewer, "two-factor", refusal)
        return section(request, db, viewer, "two-factor", tf_mode="enroll")

    @post("/two-factor/enable/start", sync_to_thread=True, opt=JSON)
    def enable_start(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Response:
        rate_limit(request, "ceremony")
        fields = ceremony.read_json(body)
        mode, name = fields.get("mode"), fields.get("name")
        return ceremony_options(
            account.start_enable_2fa(db, actor(request, viewer), mode=mode, name=name)
        )

    @post("/two-factor/enable/finish", sync_to_thread=True, opt=JSON)
    def enable_finish(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Template:
        credential, _ = ceremony.read_credential(body)
        enabled = account.finish_enable_2fa(db, actor(request, viewer), credential)
        viewer = enabled.viewer
        if not enabled.codes:  # codes that still work are kept (SPEC §4.1b)
            return section(
                request,
                db,
                viewer,
                "two-factor",
                notice="Two-factor authentication is on. Your recovery codes still work.",
                change="2fa-enabled",
                token=enabled.token,
            )
        return section(
            request,
            db,
            viewer,
            "two-factor",
            tf_mode="codes",
            codes=enabled.codes,
            change="2fa-enabled",
            token=enabled.token,
        )

    # ---- Two-factor authentication: disable ------------------------------------------

    @get("/two-factor/disable", sync_to_thread=True)
    def disable_step(self, request: Request, db: DB, viewer: Current) -> Template:
        try:
            twofactor.can_disable(viewer.user).require()
        except Refused as refusal:
            if refusal.status_code != 409:  # already off: the card as it is now, with the words
                raise
            return conflict(request, db, viewer, "two-factor", refusal)
        return section(request, db, viewer, "two-factor", tf_mode="disable")

    @post("/two-factor/disable/start", sync_to_thread=True, opt=JSON)
    def disable_start(self, request: Request, db: DB, viewer: Current) -> Response:
        rate_limit(request, "ceremony")
        return ceremony_options(account.start_disable_2fa(db, actor(request, viewer)))

    @post("/two-factor/disable/finish", sync_to_thread=True, opt=JSON)
    def disable_finish(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Template:
        twofactor.can_disable(viewer.user).require()  # 403 whatever the client sends, unread
        credential, _ = ceremony.read_credential(body)
        disabled = account.finish_disable_2fa(db, actor(request, viewer), credential)
        viewer, token = disabled.viewer, disabled.token
        return section(
            request,
            db,
            viewer,
            "two-factor",
            notice="Two-factor authentication is off.",
            change="2fa-disabled",
            token=token,
        )

    # ---- Passkeys --------------------------------------------------------------------

    @post("/passkeys/start", sync_to_thread=True, opt=JSON)
    def add_start(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Response:
        rate_limit(request, "ceremony")
        name = ceremony.read_json(body).get("name")
        return ceremony_options(account.start_add_passkey(db, actor(request, viewer), name))

    @post("/passkeys/finish", sync_to_thread=True, opt=JSON)
    def add_finish(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Template:
        credential, fields = ceremony.read_credential(body)
        added = account.finish_add_passkey(
            db, actor(request, viewer), credential, fields.get("name")
        )
        viewer, passkey = added.viewer, added.passkey
        return section(
            request,
            db,
            viewer,
            "passkeys",
            notice=f"Passkey “{passkey.name}” added.",
            change="passkey-added",
        )

    @get("/passkeys/{passkey_id:int}/rename", sync_to_thread=True)
    def rename_form(
        self, request: Request, db: DB, viewer: Current, passkey_id: FromPath[int]
    ) -> Template:
        passkey = account.owned_passkey(db, viewer.user.pk, passkey_id)
        return section(
            request, db, viewer, "passkeys", pk_editing=passkey_id, pk_name_value=passkey.name
        )

    @post("/passkeys/{passkey_id:int}/rename", sync_to_thread=True)
    def rename(
        self,
        request: Request,
        db: DB,
        viewer: Current,
        passkey_id: FromPath[int],
        data: URLEncodedBody[dict[str, Any]],
    ) -> Template:
        raw = field(data, "name")
        try:
            passkey = account.rename_passkey(db, actor(request, viewer), passkey_id, raw)
        except Refused as refusal:
            if refusal.status_code != 422:
                raise
            return section(
                request,
                db,
                viewer,
                "passkeys",
                status=422,
                pk_editing=passkey_id,
                pk_name_value=raw[:200],
                pk_error=str(refusal.detail),
            )
        return section(
            request,
            db,
            viewer,
            "passkeys",
            notice=f"Passkey renamed to “{passkey.name}”.",
            change="passkey-renamed",
        )

    @get("/passkeys/{passkey_id:int}/remove", sync_to_thread=True)
    def remove_confirm(
        self, request: Request, db: DB, viewer: Current, passkey_id: FromPath[int]
    ) -> Template:
        try:
            step = account.removal_step(db, actor(request, viewer), passkey_id)
        except Refused as refusal:
            if refusal.status_code != 409:
                raise
            return conflict(request, db, viewer, "passkeys", refusal, pk_refused=passkey_id)
        if step.step == account.STEP_UP:  # the question and "Confirm it's you" as one step
            return section(request, db, viewer, "passkeys", pk_step_up=passkey_id)
        return section(request, db, viewer, "passkeys", pk_confirming=passkey_id)

    @post("/passkeys/{passkey_id:int}/remove", sync_to_thread=True)
    def remove(
        self, request: Request, db: DB, viewer: Current, passkey_id: FromPath[int]
    ) -> Template:
        try:
            done = account.remove_passkey(db, actor(request, viewer), passkey_id)
        except Refused as refusal:
            if refusal.status_code != 409:
                raise
            return conflict(request, db, viewer, "passkeys", refusal, pk_refused=passkey_id)
        if isinstance(done, account.AskFirst):  # not lately: "Confirm it's you" removes
            return section(request, db, viewer, "passkeys", pk_step_up=passkey_id)
        viewer = done.viewer
        return removed(request, db, viewer)

    @post("/passkeys/{passkey_id:int}/remove/start", sync_to_thread=True, opt=JSON)
    def remove_start(
        self, request: Request, db: DB, viewer: Current, passkey_id: FromPath[int]
    ) -> Response:
        rate_limit(request, "ceremony")
        return ceremony_options(
            account.start_remove_passkey(db, actor(request, viewer), passkey_id)
        )

    @post("/passkeys/remove/finish", sync_to_thread=True, opt=JSON)
    def remove_finish(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Template:
        credential, _ = ceremony.read_credential(body)
        done = account.finish_remove_passkey(db, actor(request, viewer), credential)
        viewer, token = done.viewer, done.token
        return removed(request, db, viewer, token=token)

    # ---- Recovery codes --------------------------------------------------------------

    @get("/recovery-codes/regenerate", sync_to_thread=True)
    def regenerate_question(
        self, request: Request, db: DB, viewer: Current, codes_version: FromQuery[str | None] = None
    ) -> Template:
        """The question first: "Your current codes will stop working." (SPEC §4.1b)."""
        seen = codes_version[:32] if codes_version is not None else None
        try:
            asks = account.regenerate_question(db, actor(request, viewer), seen)
        except Refused as refusal:
            if refusal.status_code != 409:
                raise
            return conflict(request, db, viewer, "recovery-codes", refusal)
        mode = "confirm" if asks else "view"
        return section(request, db, viewer, "recovery-codes", rc_mode=mode)

    @post("/recovery-codes/regenerate", sync_to_thread=True)
    def regenerate(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Template:
        """The answer to the question (or "Create recovery codes"): "Confirm it's you" first
        when this session hasn't authenticated lately, then the new codes, once."""
        fields = form_fields(body)
        seen, confirmed = fields.get("codes_version"), fields.get("confirmed") == "yes"
        try:  # our pages always say which codes they show (`seen`)
            done = account.regenerate_codes(db, actor(request, viewer), seen, confirmed=confirmed)
        except Refused as refusal:
            if refusal.status_code != 409:
                raise
            return conflict(request, db, viewer, "recovery-codes", refusal)
        if isinstance(done, account.AskFirst):  # the question, or "Confirm it's you"
            return section(request, db, viewer, "recovery-codes", rc_mode=done.step)
        viewer, codes = done.viewer, done.codes
        return section(
            request,
            db,
            viewer,
            "recovery-codes",
            rc_mode="codes",
            codes=codes,
            change="codes-regenerated",
        )

    @post("/recovery-codes/start", sync_to_thread=True, opt=JSON)
    def regenerate_start(
        self, request: Request, db: DB, viewer: Current, body: RawBody
    ) -> Response:
        seen = ceremony.read_json(body).get("codes_version") if body else None
        rate_limit(request, "ceremony")
        return ceremony_options(account.start_regenerate_codes(db, actor(request, viewer), seen))

    @post("/recovery-codes/finish", sync_to_thread=True, opt=JSON)
    def regenerate_finish(
        self, request: Request, db: DB, viewer: Current, body: RawBody
    ) -> Template:
        credential, _ = ceremony.read_credential(body)
        done = account.finish_regenerate_codes(db, actor(request, viewer), credential)
        viewer, token, codes = done.viewer, done.token, done.codes
        return section(
            request,
            db,
            viewer,
            "recovery-codes",
            rc_mode="codes",
            codes=codes,
            change="codes-regenerated-with-passkey",
            token=token,
        )

    # ---- "Confirm it's you" (recent authentication, SPEC §4.1) -------------------------

    @get("/confirm", sync_to_thread=True)
    def confirm_step(
        self, request: Request, db: DB, viewer: Current, then: FromQuery[str] = ""
    ) -> Template:
        """The section `then` showing the step (the shim loads it after `reauth-required`)."""
        then = account.confirm_target(then)
        if then == "recovery-codes":
            return section(request, db, viewer, then, rc_mode="step-up")
        return section(request, db, viewer, then, confirm_in=then)

    @post("/confirm", sync_to_thread=True)
    def confirm_password(
        self, request: Request, db: DB, viewer: Current, data: URLEncodedBody[dict[str, Any]]
    ) -> Template:
        """The password confirmation (no passkey on the account); works without JavaScript.
        Regeneration goes on at once; adding a passkey is offered again."""
        then = account.confirm_target(field(data, "then"))
        password = field(data, "password")
        try:
            done = account.confirm_with_password(db, actor(request, viewer), then, password)
        except Refused as refusal:
            if refusal.status_code != 422:
                raise
            state: dict[str, Any] = (
                {"rc_mode": "step-up"} if then == "recovery-codes" else {"confirm_in": then}
            )
            return section(
                request, db, viewer, then, status=422, confirm_error=str(refusal.detail), **state
            )
        viewer, token, codes = done.viewer, done.token, done.codes
        if then == "recovery-codes":
            return section(
                request,
                db,
                viewer,
                then,
                rc_mode="codes",
                codes=codes,
                change="codes-regenerated",
                token=token,
            )
        return self._confirmed(request, db, viewer, then, token, "confirmed")

    @post("/confirm/start", sync_to_thread=True, opt=JSON)
    def confirm_start(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Response:
        rate_limit(request, "ceremony")
        then = account.confirm_target(ceremony.read_json(body).get("then"))
        return ceremony_options(account.start_confirm(db, actor(request, viewer), then))

    @post("/confirm/finish", sync_to_thread=True, opt=JSON)
    def confirm_finish(self, request: Request, db: DB, viewer: Current, body: RawBody) -> Template:
        credential, fields = ceremony.read_credential(body)
        then = account.confirm_target(fields.get("then"))
        done = account.finish_confirm(db, actor(request, viewer), credential)
        return self._confirmed(request, db, done.viewer, then, done.token, "confirmed-with-passkey")

    def _confirmed(
        self,
        request: Request,
        db: Session,
        viewer: sessions.Viewer,
        then: str,
        token: str | None,
        change: str,
    ) -> Template:
        """After confirming: the action is offered again (a new ceremony needs a new press)."""
        state: dict[str, Any] = {"notice": "Thanks, that's confirmed. You can go on now."}
        if then == "two-factor":
            state["tf_mode"] = "enroll"
        if then == "password":
            state["pw_mode"] = "change"
        return section(request, db, viewer, then, token=token, change=change, **state)

    # ---- Password (SPEC §5.7) ---------------------------------------------------------

    @get("/password", sync_to_thread=True)
    def password_section(self, request: Request, db: DB, viewer: Current) -> Template:
        return section(request, db, viewer, "password")

    @get("/password/change", sync_to_thread=True)
    def password_form(self, request: Request, db: DB, viewer: Current) -> Template:
        if password_change.needs_confirmation(db, actor(request, viewer)):
            return section(request, db, viewer, "password", confirm_in="password")
        return section(request, db, viewer, "password", pw_mode="change")

    @post("/password", sync_to_thread=True)
    def change_password(
        self, request: Request, db: DB, viewer: Current, data: URLEncodedBody[dict[str, Any]]
    ) -> Template:
        if password_change.needs_confirmation(db, actor(request, viewer)):
            return section(request, db, viewer, "password", confirm_in="password")
        current, new = field(data, "current_password"), field(data, "new_password")
        try:
            changed = password_change.change_password(db, actor(request, viewer), current, new)
        except password_change.PasswordRefused as refusal:
            return section(
                request,
                db,
                viewer,
                "password",
                status=422,
                pw_mode="change",
                pw_error=str(refusal.detail),
                pw_error_field=refusal.field,
            )
        viewer, token = changed.viewer, changed.token
        return section(
            request,
            db,
            viewer,
            "password",
            notice="Your password was changed. Every other session was signed out.",
            change="password-changed",
            token=token,
        )

    # ---- Sessions --------------------------------------------------------------------

    @post("/sessions/{session_id:int}/revoke", sync_to_thread=True)
    def revoke(
        self, request: Request, db: DB, viewer: Current, session_id: FromPath[int]
    ) -> Template:
        account.revoke_session(db, actor(request, viewer), session_id)
        notice = "That session was signed out."
        return section(request, db, viewer, "sessions", notice=notice, change="session-ended")

    @post("/sessions/revoke-others", sync_to_thread=True)
    def revoke_others(self, request: Request, db: DB, viewer: Current) -> Template:
        ended = account.revoke_other_sessions(db, actor(request, viewer))
        notice = f"Signed out of {ended} other session{'s' if ended != 1 else ''}."
        return section(request, db, viewer, "sessions", notice=notice, change="session-ended")
