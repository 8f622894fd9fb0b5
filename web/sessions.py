"""Server-side sessions: cookie → AuthSession → user; sign in, upgrade, sign out.

The cookie holds a 256-bit random token; the database holds only its SHA-256. Expiry is
decided from database timestamps: partial sessions live 10 minutes, full sessions end after
`session_ttl` idle seconds and 24 hours in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote

from litestar import Request, Response
from litestar.concurrency import sync_to_thread
from litestar.di import NamedDependency
from sqlalchemy import Delete, Update, bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, delete, select, update

from models import AuthSession, User, utcnow
from models.session import FULL, PARTIAL
from web import events, twofactor
from web.client import ClientInfo
from web.db import SAFE_METHODS
from web.errors import RedirectTo, htmx
from web.settings import Settings
from web.tokens import digest, new_token
from web.users import lock_user

COOKIE = "barycenter_session"
"""The cookie's name on http://localhost; `__Host-barycenter_session` when Secure."""
TOUCH_EVERY = timedelta(seconds=60)


@dataclass
class Viewer:
    """The signed-in person of a request."""

    user: User
    session: AuthSession


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, and from where: the person and their session (signed in, or
    waiting for a second factor), the settings and the client (IP, user agent). What the
    services of web.account and web.signin are given (web.routes.common.actor builds it)."""

    user: User
    session: AuthSession
    settings: Settings
    client: ClientInfo

    @property
    def binding(self) -> str:
        """What this session's ceremonies are bound to: its token's hash."""
        return self.session.token_hash


def token_of(request: Request) -> str | None:
    """The session token from this request's cookie (its name depends on Secure)."""
    return request.cookies.get(request.app.state.settings.session_cookie)


def stored_form(token: str | None) -> str | None:
    """A cookie's token as the sessions table holds it (its SHA-256); None for no token or
    one no session could have (over 128 characters)."""
    return digest(token) if token and len(token) <= 128 else None


def set_cookie(response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        settings.session_cookie,
        token,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(settings.session_cookie, path="/")


def start_session(
    db: Session,
    user: User,
    settings: Settings,
    client: ClientInfo,
    *,
    amr: list[str],
    mfa_verified: bool,
    partial: bool = False,
    passkey_id: int | None = None,
) -> str:
    """Adds a session row (the caller commits) and returns the token for the cookie."""
    now = utcnow()
    token = new_token()
    lifetime = settings.partial_session_ttl if partial else settings.session_absolute_ttl
    db.add(
        AuthSession(
            token_hash=digest(token),
            user_id=user.pk,
            state=PARTIAL if partial else FULL,
            amr=amr,
            acr="aal2" if mfa_verified else "aal1",
            mfa_verified=mfa_verified,
            auth_time=now,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=lifetime),
            passkey_id=passkey_id,
            # a completed sign-in is recent authentication (§4.1); a partial one is not yet
            reauth_at=None if partial else now,
            user_agent=client.user_agent,
            ip=client.ip,
        )
    )
    return token


def upgrade_session(
    db: Session, session: AuthSession, settings: Settings, *, factor: str, passkey_id: int | None
) -> str:
    """A second factor (passkey or recovery code) completed the sign-in: full, aal2, recent
    authentication, a new token. The caller commits."""
    now = utcnow()
    token = new_token()
    session.expires_at = now + timedelta(seconds=settings.session_absolute_ttl)
    session.token_hash = digest(token)
    session.state = FULL
    session.amr = ["pwd", factor] if "pwd" in session.amr else [factor]
    session.acr = "aal2"
    session.mfa_verified = True
    session.auth_time = now
    session.last_seen_at = now
    session.partial_reason = ""
    session.reauth_at = now
    if passkey_id is not None:
        session.passkey_id = passkey_id
    db.add(session)
    return token


def confirm_identity(
    db: Session, session: AuthSession, *, factor: str | None, passkey_id: int | None
) -> str:
    """ "Confirm it's you" (or another assertion with an existing passkey) in a full session:
    recent authentication now, a new token (§9). The passkey it signed in with stays; a
    confirming passkey joins `confirmed_passkey_ids` (removing it ends this session too).
    A passkey assertion also makes the session aal2. The caller commits."""
    now = utcnow()
    token = new_token()
    session.token_hash = digest(token)
    session.reauth_at = now
    session.last_seen_at = now
    if factor is not None:
        session.amr = ["pwd", factor] if "pwd" in session.amr else [factor]
        session.acr = "aal2"
        session.mfa_verified = True
    if passkey_id is not None and passkey_id != session.passkey_id:
        confirmed = list(session.confirmed_passkey_ids or [])
        if passkey_id not in confirmed:
            session.confirmed_passkey_ids = [*confirmed, passkey_id]
    db.add(session)
    return token


def enrolled(db: Session, session: AuthSession) -> str:
    """2FA turned on in this session with a NEW passkey: a new token, and the session keeps
    meeting the rules (mfa_verified), but registering a credential is no authentication, so
    reauth_at, amr and the confirmed passkeys stay as they were (SPEC §9). The caller commits."""
    token = new_token()
    session.token_hash = digest(token)
    session.mfa_verified = True
    session.last_seen_at = utcnow()
    db.add(session)
    return token


def password_reentered(db: Session, session: AuthSession) -> str:
    """The password entered again on /login/2fa (before enroll-at-login): the partial session
    is now a password sign-in's own (auth_time now, no demotion reason), with a new token.
    The caller commits."""
    now = utcnow()
    token = new_token()
    session.token_hash = digest(token)
    session.auth_time = now
    session.last_seen_at = now
    session.partial_reason = ""
    db.add(session)
    return token


class SessionTimes(Protocol):
    state: str
    expires_at: datetime
    last_seen_at: datetime


def is_expired(session: SessionTimes, settings: Settings, now: datetime | None = None) -> bool:
    now = now or utcnow()
    if now >= session.expires_at:
        return True
    return session.state == FULL and now - session.last_seen_at > timedelta(
        seconds=settings.session_ttl
    )


def _write_now(
    request: Request, db: Session, statement: Update | Delete, *, owner: int | None = None
) -> None:
    """Apply one small change at once. A state-changing request already holds the write
    transaction (SQLite: BEGIN IMMEDIATE), so it goes through the request's own session; a
    GET uses a short write session of its own (its read session never writes).

    A change the account page shows (`owner`: whose) locks the owner's row first, like
    every change of an account: the database then bumps the owner's data_version (migration
    0004), and on PostgreSQL taking the session's row before the user's could deadlock with
    a change that holds the user's and wants the session's."""
    if request.method in SAFE_METHODS:
        with request.app.state.database.session() as writer:
            if owner is not None:
                lock_user(writer, owner)
            writer.exec(statement)
            writer.commit()
    else:
        if owner is not None:
            lock_user(db, owner)
        db.exec(statement)
        db.commit()


# Built once: on every signed-in request, building the statement (and its cache key) cost
# more than running it.
_BY_TOKEN = (
    select(AuthSession, User)
    .join(User, col(User.id) == col(AuthSession.user_id))
    .where(AuthSession.token_hash == bindparam("token_hash"))
)
_LIVE_OF_USER = (
    select(AuthSession)
    .where(AuthSession.user_id == bindparam("user_id"), AuthSession.state == FULL)
    .order_by(col(AuthSession.last_seen_at).desc())
)


def load(request: Request, db: Session) -> Viewer | None:
    """The session named by the cookie, if it exists and has not expired."""
    token_hash = stored_form(token_of(request))
    if token_hash is None:
        return None
    params = {"token_hash": token_hash}
    database = request.app.state.database
    if request.method in SAFE_METHODS or database.read is database.write:
        row = db.exec(_BY_TOKEN, params=params).first()
    else:
        # SQLite, a request that writes: its session takes the write lock (BEGIN IMMEDIATE)
        # at its first statement, and the handler runs in another pool thread; held across
        # that hop, the lock deadlocks once every pool thread (min(32, CPUs + 4)) waits for
        # it. So read outside it; handlers re-read what they change (lock_user, UPDATE …
        # WHERE), as on PostgreSQL, where this SELECT takes no lock either.
        with database.session(write=False) as reader:
            row = reader.exec(_BY_TOKEN, params=params).first()
        if row is not None:
            db.add_all(row)
    if row is None:
        return None
    session, user = row
    if is_expired(session, request.app.state.settings):
        end = delete(AuthSession).where(col(AuthSession.id) == session.id)
        _write_now(request, db, end, owner=session.user_id)
        return None
    now = utcnow()
    if now - session.last_seen_at > TOUCH_EVERY:
        # not a change the page shows (no owner): migration 0004 leaves last_seen_at out
        touch = update(AuthSession).where(col(AuthSession.id) == session.id)
        _write_now(request, db, touch.values(last_seen_at=now))
        # already written: not a pending change (a GET's read session must never flush)
        set_committed_value(session, "last_seen_at", now)
    return Viewer(user=user, session=session)


def names_a_session(db: Session, token: str | None) -> bool:
    """Whether a cookie's token names a session row (live or expired): a cookie that names
    none was signed out elsewhere (another session, "sign out all other sessions")."""
    token_hash = stored_form(token)
    if token_hash is None:
        return False
    found = db.exec(select(AuthSession.id).where(AuthSession.token_hash == token_hash))
    return found.first() is not None


def _demote(request: Request, db: Session, viewer: Viewer) -> None:
    """A full session that no longer meets the rules becomes a partial one; its
    `partial_reason` says why ("admin-required": /login/2fa tells the user)."""
    settings = request.app.state.settings
    now = utcnow()
    expires = now + timedelta(seconds=settings.partial_session_ttl)
    reason = twofactor.demotion_reason(viewer.user, now)
    statement = (
        update(AuthSession)
        .where(col(AuthSession.id) == viewer.session.id)
        .values(state=PARTIAL, expires_at=expires, partial_reason=reason)
    )
    _write_now(request, db, statement, owner=viewer.user.pk)
    set_committed_value(viewer.session, "state", PARTIAL)
    set_committed_value(viewer.session, "expires_at", expires)
    set_committed_value(viewer.session, "partial_reason", reason)


def login_url(request: Request) -> str:
    """Sign-in, coming back to the page asked for (percent-encoded: it goes into headers)."""
    path = request.url.path
    partial = bool(htmx(request))  # a partial is no place to land
    if request.method == "GET" and not partial and path not in {"/", "/account"}:
        return f"/login?return_to={quote(path, safe='/')}"
    return "/login"


async def provide_viewer(request: Request, db: NamedDependency[Session]) -> Viewer:
    """A full session that meets the rules of §4; otherwise off to sign-in or /login/2fa.

    Most requests are decided on the event loop (`_at_rest`): a thread hop cost GET
    /account more than a third of its throughput. Anything that may write goes to a
    worker thread."""
    viewer = _at_rest(request, db)
    if viewer is None:
        viewer = await sync_to_thread(_checked_viewer, request, db)
    return viewer


def _at_rest(request: Request, db: Session) -> Viewer | None:
    """The common case, without leaving the event loop: see `settled`. One read, through
    the loop's own connection (Database.loop), which never waits for a writer: SQLite's
    readers in WAL mode and PostgreSQL's plain SELECTs take no lock a writer holds.
    None: anything else, for `_checked_viewer` (which may write: touch, expiry, demotion)."""
    token_hash = stored_form(token_of(request))
    if token_hash is None:
        return None
    try:
        with request.app.state.database.loop_session() as reader:
            row = reader.exec(_BY_TOKEN, params={"token_hash": token_hash}).first()
            if row is None:
                return None
            reader.expunge_all()
    except OperationalError:  # busy, or a lost connection: the thread path (db.LOOP_WAIT_MS)
        return None
    session, user = row
    if not settled(session, user, request.app.state.settings, utcnow()):
        return None
    db.add_all(row)  # the request's own objects, as `load` gives them
    return Viewer(user=user, session=session)


class SettledFacts(SessionTimes, twofactor.SessionFacts, Protocol):
    pass


def settled(
    session: SettledFacts, user: twofactor.UserFlags, settings: Settings, now: datetime
) -> bool:
    """Nothing to write and nothing to refuse: the session is live, was touched within the
    minute, is full and meets the rules. The one test of both quick paths (`_at_rest`,
    `at_rest`); whatever fails it takes the whole path (`_checked_viewer`)."""
    return (
        not is_expired(session, settings, now)
        and now - session.last_seen_at <= TOUCH_EVERY
        and session.state == FULL
        and twofactor.session_meets_rules(user, session, now)
    )


@dataclass
class AtRest:
    """A settled request's session (`at_rest`): its facts and its user's flags."""

    session_id: int
    token_hash: str
    user_id: int
    state: str
    mfa_verified: bool
    reauth_at: datetime | None
    expires_at: datetime
    last_seen_at: datetime
    requires_2fa: bool
    user_2fa_enabled: bool
    requires_2fa_from: datetime | None
    data_version: int


# What `at_rest` reads, in AtRest's order (Core: a row, no objects; about a third of the
# cost of the ORM lookup).
_AT_REST = sa_select(
    col(AuthSession.id),
    col(AuthSession.token_hash),
    col(AuthSession.user_id),
    col(AuthSession.state),
    col(AuthSession.mfa_verified),
    col(AuthSession.reauth_at),
    col(AuthSession.expires_at),
    col(AuthSession.last_seen_at),
    col(User.requires_2fa),
    col(User.user_2fa_enabled),
    col(User.requires_2fa_from),
    col(User.data_version),
).where(
    col(AuthSession.token_hash) == bindparam("token_hash"),
    col(User.id) == col(AuthSession.user_id),
)


def at_rest(request: Request) -> AtRest | None:
    """The session of a request that needs nothing but reading (`settled`); None: take
    the whole path (provide_viewer). For a page kept in memory (web.pagecache), which needs
    no objects. On the event loop, through its own connection, like `_at_rest`."""
    token_hash = stored_form(token_of(request))
    if token_hash is None:
        return None
    try:
        with request.app.state.database.loop.connect() as connection:
            row = connection.execute(_AT_REST, {"token_hash": token_hash}).first()
    except OperationalError:  # busy, or a lost connection: the thread path (db.LOOP_WAIT_MS)
        return None
    if row is None:
        return None
    found = AtRest(*row)
    return found if settled(found, found, request.app.state.settings, utcnow()) else None


def _checked_viewer(request: Request, db: Session) -> Viewer:
    """The session lookup with all its bookkeeping (in a worker thread: it may write)."""
    viewer = load(request, db)
    if viewer is None:
        raise RedirectTo(login_url(request), status=401, message="Please sign in.")
    if viewer.session.state == FULL and not twofactor.session_meets_rules(
        viewer.user, viewer.session, utcnow()
    ):
        _demote(request, db, viewer)
    if viewer.session.state != FULL:
        raise RedirectTo(
            "/login/2fa", status=401, message="Finish two-factor authentication first."
        )
    return viewer


def provide_pending(request: Request, db: NamedDependency[Session]) -> Viewer:
    """A session waiting for its second factor (partial, or full but no longer enough)."""
    viewer = load(request, db)
    if viewer is None:
        raise RedirectTo(
            "/login", status=401, message="Your sign-in expired. Please sign in again."
        )
    if viewer.session.state == FULL:
        if twofactor.session_meets_rules(viewer.user, viewer.session, utcnow()):
            raise RedirectTo("/account", status=409, message="You are already signed in.")
        _demote(request, db, viewer)
    return viewer


def end_session(db: Session, session_id: int) -> None:
    db.exec(delete(AuthSession).where(col(AuthSession.id) == session_id))


def reread(db: Session, session_id: int) -> AuthSession:
    """The session row as the database has it now, locked for this transaction. When
    another request ended it meanwhile (sign out elsewhere, "sign out all other sessions", a
    password change), the browser goes to the sign-in page, as it would have had that
    request come first (htmx: HX-Redirect; the shim: 401 with `redirect`)."""
    session = db.get(AuthSession, session_id, populate_existing=True, with_for_update=True)
    if session is None:
        raise RedirectTo("/login", status=401, message="Your session ended. Please sign in again.")
    return session


def record_incomplete(db: Session, doomed: list[AuthSession]) -> None:
    """SPEC §9: a pending second factor that ends without completing is recorded ("Password
    entered; sign-in not completed"). Sessions demoted by an administrator's new requirement
    were not a password just entered: not recorded."""
    for row in doomed:
        if row.state == PARTIAL and not row.partial_reason:
            events.record(db, row.user_id, "sign_in_incomplete", ip=row.ip)


def end_partial_sessions(db: Session, user_id: int) -> None:
    """A lockout ends every sign-in of the user that is still waiting for a second factor."""
    pending = db.exec(
        select(AuthSession).where(
            col(AuthSession.user_id) == user_id, col(AuthSession.state) == PARTIAL
        )
    ).all()
    record_incomplete(db, list(pending))
    db.exec(
        delete(AuthSession).where(
            col(AuthSession.user_id) == user_id, col(AuthSession.state) == PARTIAL
        )
    )


def lock_for_sign_in(db: Session, user_id: int, replaces: str | None) -> User:
    """Lock the user signing in and the owner of the session it replaces (the browser's
    old one, maybe another account's), in the order of their ids: ending that session
    changes its owner too (users.data_version). Locked one after the other as they came, two
    sign-ins replacing each other's sessions could wait for each other (PostgreSQL)."""
    token_hash = stored_form(replaces)
    owners = {user_id}
    if token_hash is not None:
        other = db.exec(
            select(AuthSession.user_id).where(col(AuthSession.token_hash) == token_hash)
        ).first()
        if other is not None:
            owners.add(other)
    locked = {owner: lock_user(db, owner) for owner in sorted(owners)}
    return locked[user_id]


def end_session_by_token(db: Session, token: str | None) -> None:
    """End the session a cookie names (a new sign-in replaces the browser's old session);
    its owner is locked first (`lock_for_sign_in`)."""
    token_hash = stored_form(token)
    if token_hash is not None:
        db.exec(delete(AuthSession).where(col(AuthSession.token_hash) == token_hash))


def end_other_sessions(db: Session, user_id: int, keep_id: int | None) -> int:
    query = delete(AuthSession).where(col(AuthSession.user_id) == user_id)
    if keep_id is not None:
        query = query.where(col(AuthSession.id) != keep_id)
    return db.exec(query).rowcount


def end_sessions_with_passkey(db: Session, user_id: int, passkey_id: int, keep_id: int) -> int:
    """End every other session of the user that signed in with the passkey or confirmed its
    identity with it (a JSON list: filtered here, the same on SQLite and PostgreSQL)."""
    rows = db.exec(
        select(AuthSession.id, AuthSession.passkey_id, AuthSession.confirmed_passkey_ids).where(
            col(AuthSession.user_id) == user_id, col(AuthSession.id) != keep_id
        )
    ).all()
    doomed = [
        row_id
        for row_id, signed_in_with, confirmed in rows
        if signed_in_with == passkey_id or passkey_id in (confirmed or [])
    ]
    if not doomed:
        return 0
    db.exec(delete(AuthSession).where(col(AuthSession.id).in_(doomed)))
    return len(doomed)


def sessions_of(db: Session, user_id: int) -> list[AuthSession]:
    return list(db.exec(_LIVE_OF_USER, params={"user_id": user_id}))
