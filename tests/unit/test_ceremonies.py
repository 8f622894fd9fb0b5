"""Each passkey ceremony's start/finish pair, driven directly in the service layer
(web.account, web.signin) with the software authenticator — no HTTP, no handler.

For every ceremony: the happy path (the effect, and a result that carries the person and
session as they are now), the finish refused for another purpose, another binding, and
a replay (the same response twice); and the rules asked again at the finish: a refusal
there changes nothing but the consumed challenge. The rules' own helpers added with the
services (Decision.require, enroll_at_login_step, …) are checked at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, delete, select, update

from models import (
    AuthSession,
    Passkey,
    RecoveryCode,
    SecurityEvent,
    User,
    WebAuthnChallenge,
    utcnow,
)
from models.challenge import Purpose
from tests.helpers import PASSWORD
from tests.softauthn import SoftAuthenticator
from web import account, sessions, signin, twofactor
from web.client import ClientInfo
from web.db import Database
from web.errors import RedirectTo, Refused
from web.sessions import Actor
from web.settings import Settings
from web.tokens import digest, new_token
from web.users import create_user

CLIENT = ClientInfo(ip="192.0.2.10", user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
EXPIRED = "expired or was already used"


# ----------------------------------------------------------------------------- the world


@dataclass
class World:
    """One user, their sessions and authenticator; every call is one "request": a fresh
    database session and the Actor of the current session token (or the sign-in nonce)."""

    database: Database
    settings: Settings
    authn: SoftAuthenticator = field(default_factory=SoftAuthenticator)
    user_id: int = 0
    token: str = ""
    nonce: str = ""

    def sign_in(self, *, partial: bool = False, stale: bool = False) -> str:
        with self.database.session() as db:
            user = db.get(User, self.user_id)
            assert user is not None
            token = sessions.start_session(
                db, user, self.settings, CLIENT, amr=["pwd"], mfa_verified=False, partial=partial
            )
            db.commit()
        self.token, self.nonce = token, new_token()
        if stale:
            self.make_stale()
        return token

    def make_stale(self) -> None:
        """This session last authenticated an hour ago (outside the 10-minute window)."""
        with self.database.session() as db:
            db.exec(
                update(AuthSession)
                .where(col(AuthSession.token_hash) == digest(self.token))
                .values(reauth_at=utcnow() - timedelta(hours=1))
            )
            db.commit()

    def actor(self, db: Session) -> Actor:
        session = db.exec(
            select(AuthSession).where(AuthSession.token_hash == digest(self.token))
        ).one()
        user = db.get(User, session.user_id)
        assert user is not None
        return Actor(user, session, self.settings, CLIENT)

    def call(self, service: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.database.session() as db:
            return service(db, self.actor(db), *args, **kwargs)

    def visitor(self) -> signin.Visitor:
        return signin.Visitor(self.settings, CLIENT, binding=digest(self.nonce))

    def adopt(self, result: Any) -> Any:
        """A result's new token becomes this browser's cookie."""
        if getattr(result, "token", None):
            self.token = result.token
        return result

    def set_user(self, **values: Any) -> None:
        with self.database.session() as db:
            db.exec(update(User).where(col(User.id) == self.user_id).values(**values))
            db.commit()

    def user(self) -> User:
        with self.database.session(write=False) as db:
            found = db.get(User, self.user_id)
            assert found is not None
            return found

    def add_passkey(self, name: str = "Laptop") -> account.Added:
        options = self.call(account.start_add_passkey, name)
        return self.call(account.finish_add_passkey, self.register(options), name)

    def register(self, options: dict[str, Any]) -> dict[str, Any]:
        """A new passkey on this authenticator, though it holds one of this account's
        already (the browser would refuse: a second device, in effect)."""
        return self.authn.register({**options, "excludeCredentials": []})

    def enable_2fa(self) -> account.Changed:
        options = self.call(account.start_enable_2fa, mode="existing", name=None)
        return self.adopt(self.call(account.finish_enable_2fa, self.authn.authenticate(options)))

    def passkey_ids(self) -> list[int]:
        with self.database.session(write=False) as db:
            rows = db.exec(select(Passkey.id).where(Passkey.user_id == self.user_id)).all()
            return [i for i in rows if i is not None]

    def codes(self) -> list[str]:
        with self.database.session(write=False) as db:
            rows = db.exec(
                select(RecoveryCode.code_hash).where(RecoveryCode.user_id == self.user_id)
            )
            return sorted(rows)

    def session(self) -> AuthSession:
        with self.database.session(write=False) as db:
            return db.exec(
                select(AuthSession).where(AuthSession.token_hash == digest(self.token))
            ).one()

    def snapshot(self) -> dict[str, Any]:
        """Everything a ceremony may change, challenges aside."""
        with self.database.session(write=False) as db:
            user = db.get(User, self.user_id)
            assert user is not None
            return {
                "user": (user.user_2fa_enabled, user.requires_2fa, user.failed_login_count),
                "passkeys": sorted(
                    (p.id, p.name, p.sign_count, p.last_used_at) for p in db.exec(select(Passkey))
                ),
                "sessions": sorted(
                    (s.id, s.token_hash, s.state, s.mfa_verified, s.reauth_at, s.passkey_id)
                    for s in db.exec(select(AuthSession))
                ),
                "codes": sorted(c.code_hash for c in db.exec(select(RecoveryCode))),
                "events": [
                    e.kind for e in db.exec(select(SecurityEvent).order_by(col(SecurityEvent.id)))
                ],
            }


@pytest.fixture
def world(settings: Settings, database: Database) -> World:
    with database.session() as db:
        user = create_user(db, "alice", PASSWORD, "Alice Example", actor="admin")
    return World(database, settings, user_id=user.pk)


# --------------------------------------------------------------------- the ceremonies


@dataclass(frozen=True)
class Ceremony:
    """One start/finish pair: how to get there, how to start, answer and finish, and what
    its effect is. `session`: the kind of session it runs in ("full", "partial", or
    "none" for a passkey sign-in, bound to the sign-in nonce)."""

    purpose: Purpose
    prepare: Callable[[World], None]
    start: Callable[[World], dict[str, Any]]
    finish: Callable[[World, dict[str, Any]], Any]
    registers: bool
    effect: Callable[[World, Any, dict[str, Any]], None]
    session: str = "full"
    refuse_at_finish: Callable[[World], None] | None = None
    """Changes the facts between start and finish so that the rules refuse the finish."""
    refused_status: int = 409


def with_passkey(w: World) -> None:
    w.sign_in()
    w.add_passkey()


def with_2fa(w: World) -> None:
    with_passkey(w)
    w.enable_2fa()


def partial_with_2fa(w: World) -> None:
    with_2fa(w)
    w.sign_in(partial=True)


def partial_required(w: World) -> None:
    w.set_user(requires_2fa=True)
    w.sign_in(partial=True)


def two_passkeys(w: World) -> None:
    with_passkey(w)
    w.add_passkey("Phone")


def stale_with_passkey(w: World) -> None:
    with_passkey(w)
    w.make_stale()


def signed_in_with_passkey(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, signin.Completed)
    assert result.user.pk == w.user_id and result.codes == []
    w.adopt(result)
    session = w.session()
    assert session.state == "full" and session.mfa_verified and session.passkey_id is not None


def second_factor_done(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, signin.Completed) and result.codes == []  # codes already on record
    w.adopt(result)
    session = w.session()
    assert session.state == "full" and session.mfa_verified
    assert session.amr == ["pwd", "hwk"]


def enrolled(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, signin.Completed) and len(result.codes) == 10
    w.adopt(result)
    assert len(w.passkey_ids()) == 1 and len(w.codes()) == 10
    assert w.session().state == "full"


def enabled(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, account.Changed) and len(result.codes) == 10
    assert result.viewer.user.user_2fa_enabled  # the fresh user, to render from
    assert result.viewer.session.token_hash == digest(result.token)
    assert w.user().user_2fa_enabled and len(w.codes()) == 10


def enabled_with_new(w: World, result: Any, before: dict[str, Any]) -> None:
    enabled(w, result, before)
    assert len(w.passkey_ids()) == 1


def disabled(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, account.Changed) and result.token
    assert not result.viewer.user.user_2fa_enabled
    assert not w.user().user_2fa_enabled and w.codes() == []


def added(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, account.Added) and result.passkey.name == "Phone"
    assert len(w.passkey_ids()) == 2


def removed_one(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, account.Changed) and result.token
    assert len(w.passkey_ids()) == 1
    assert result.viewer.session.reauth_at is not None


def confirmed(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, account.Changed) and result.token
    w.adopt(result)
    assert twofactor.recently_authenticated(w.session(), utcnow(), w.settings.reauth_seconds)


def regenerated(w: World, result: Any, before: dict[str, Any]) -> None:
    assert isinstance(result, account.Changed) and len(result.codes) == 10
    assert w.codes() != before["codes"] and len(w.codes()) == 10


def start_login(w: World) -> dict[str, Any]:
    with w.database.session() as db:
        return signin.start_passkey_sign_in(db, w.settings, digest(w.nonce))


def finish_login(w: World, credential: dict[str, Any]) -> Any:
    with w.database.session() as db:
        return signin.finish_passkey_sign_in(db, w.visitor(), credential)


def first_passkey(w: World) -> int:
    return min(w.passkey_ids())


CEREMONIES: dict[str, Ceremony] = {
    "sign-in": Ceremony(
        Purpose.LOGIN,
        prepare=with_passkey,
        start=start_login,
        finish=finish_login,
        registers=False,
        effect=signed_in_with_passkey,
        session="none",
    ),
    "second-factor": Ceremony(
        Purpose.SECOND_FACTOR,
        prepare=partial_with_2fa,
        start=lambda w: w.call(signin.start_second_factor),
        finish=lambda w, c: w.call(signin.finish_second_factor, c),
        registers=False,
        effect=second_factor_done,
        session="partial",
        # the account locked meanwhile: a locked account finishes no second factor
        refuse_at_finish=lambda w: w.set_user(locked_until=utcnow() + timedelta(minutes=15)),
        refused_status=429,
    ),
    "enroll-at-login": Ceremony(
        Purpose.ENROLL_AT_LOGIN,
        prepare=partial_required,
        start=lambda w: w.call(signin.start_enroll_at_login, "Laptop"),
        finish=lambda w, c: w.call(signin.finish_enroll_at_login, c, "Laptop"),
        registers=True,
        effect=enrolled,
        session="partial",
        # the requirement lifted meanwhile: no enrollment is needed any more
        refuse_at_finish=lambda w: w.set_user(requires_2fa=False),
    ),
    "enable-2fa (existing passkey)": Ceremony(
        Purpose.ENABLE_2FA,
        prepare=with_passkey,
        start=lambda w: w.call(account.start_enable_2fa, mode="existing", name=None),
        finish=lambda w, c: w.call(account.finish_enable_2fa, c),
        registers=False,
        effect=enabled,
        # an administrator required 2FA meanwhile: enabling is refused
        refuse_at_finish=lambda w: w.set_user(requires_2fa=True),
    ),
    "enable-2fa (new passkey)": Ceremony(
        Purpose.ENABLE_2FA,
        prepare=lambda w: w.sign_in(),
        start=lambda w: w.call(account.start_enable_2fa, mode="new", name="Laptop"),
        finish=lambda w, c: w.call(account.finish_enable_2fa, c),
        registers=True,
        effect=enabled_with_new,
        # the recent-authentication window passed meanwhile
        refuse_at_finish=World.make_stale,
        refused_status=403,
    ),
    "disable-2fa": Ceremony(
        Purpose.DISABLE_2FA,
        prepare=with_2fa,
        start=lambda w: w.call(account.start_disable_2fa),
        finish=lambda w, c: w.call(account.finish_disable_2fa, c),
        registers=False,
        effect=disabled,
        refuse_at_finish=lambda w: w.set_user(requires_2fa=True),
        refused_status=403,
    ),
    "add passkey": Ceremony(
        Purpose.REGISTER,
        prepare=with_passkey,
        start=lambda w: w.call(account.start_add_passkey, "Phone"),
        finish=lambda w, c: w.call(account.finish_add_passkey, c, "Phone"),
        registers=True,
        effect=added,
        refuse_at_finish=World.make_stale,
        refused_status=403,
    ),
    "remove passkey (step-up)": Ceremony(
        Purpose.REMOVE_PASSKEY,
        prepare=two_passkeys,
        start=lambda w: w.call(account.start_remove_passkey, first_passkey(w)),
        finish=lambda w, c: w.call(account.finish_remove_passkey, c),
        registers=False,
        effect=removed_one,
    ),
    "confirm it's you (reauth)": Ceremony(
        Purpose.REAUTH,
        prepare=stale_with_passkey,
        start=lambda w: w.call(account.start_confirm, "passkeys"),
        finish=lambda w, c: w.call(account.finish_confirm, c),
        registers=False,
        effect=confirmed,
    ),
    "regenerate codes (step-up)": Ceremony(
        Purpose.RECOVERY_CODES,
        prepare=with_2fa,
        start=lambda w: w.call(account.start_regenerate_codes, None),
        finish=lambda w, c: w.call(account.finish_regenerate_codes, c),
        registers=False,
        effect=regenerated,
        # 2FA turned off meanwhile (another tab): codes don't apply any more
        refuse_at_finish=lambda w: w.set_user(user_2fa_enabled=False),
    ),
}


def test_every_purpose_has_its_ceremony():
    assert {c.purpose for c in CEREMONIES.values()} == set(Purpose)


def answer(w: World, ceremony: Ceremony, options: dict[str, Any]) -> dict[str, Any]:
    return w.register(options) if ceremony.registers else w.authn.authenticate(options)


def started(w: World, ceremony: Ceremony) -> dict[str, Any]:
    """Prepared, started and answered: the credential to finish with."""
    ceremony.prepare(w)
    options = ceremony.start(w)
    with w.database.session(write=False) as db:
        stored = db.exec(
            select(WebAuthnChallenge).order_by(col(WebAuthnChallenge.id).desc())
        ).first()
    assert stored is not None and stored.purpose == ceremony.purpose
    return answer(w, ceremony, options)


def refused_with(status: int, finish: Callable[[], Any]) -> Refused:
    with pytest.raises(Refused) as caught:
        finish()
    assert caught.value.status_code == status, caught.value.detail
    return caught.value


@pytest.mark.parametrize("name", CEREMONIES)
def test_happy_path(world: World, name: str):
    ceremony = CEREMONIES[name]
    credential = started(world, ceremony)
    before = world.snapshot()
    result = ceremony.finish(world, credential)
    ceremony.effect(world, result, before)


@pytest.mark.parametrize("name", CEREMONIES)
def test_a_replay_is_refused_and_changes_nothing(world: World, name: str):
    """The same response again, from the same browser (with the cookie the first finish
    gave it): the challenge is used."""
    ceremony = CEREMONIES[name]
    credential = started(world, ceremony)
    world.adopt(ceremony.finish(world, credential))
    after = world.snapshot()
    refusal = refused_with(400, lambda: ceremony.finish(world, credential))
    assert EXPIRED in str(refusal.detail)
    assert world.snapshot() == after


@pytest.mark.parametrize("name", CEREMONIES)
def test_a_challenge_of_another_purpose_is_refused(world: World, name: str):
    ceremony = CEREMONIES[name]
    credential = started(world, ceremony)
    other = Purpose.REAUTH if ceremony.purpose != Purpose.REAUTH else Purpose.LOGIN
    with world.database.session() as db:
        db.exec(update(WebAuthnChallenge).values(purpose=other))
        db.commit()
    before = world.snapshot()
    refusal = refused_with(400, lambda: ceremony.finish(world, credential))
    assert EXPIRED in str(refusal.detail)
    assert world.snapshot() == before


@pytest.mark.parametrize("name", CEREMONIES)
def test_a_challenge_of_another_browser_is_refused(world: World, name: str):
    """Started in one session (or with one sign-in nonce), finished in another."""
    ceremony = CEREMONIES[name]
    credential = started(world, ceremony)
    if ceremony.session == "none":
        world.nonce = new_token()
    else:
        world.sign_in(partial=ceremony.session == "partial")
    before = world.snapshot()
    refusal = refused_with(400, lambda: ceremony.finish(world, credential))
    assert EXPIRED in str(refusal.detail)
    assert world.snapshot() == before


@pytest.mark.parametrize("name", [n for n, c in CEREMONIES.items() if c.refuse_at_finish])
def test_the_rules_are_asked_again_at_the_finish(world: World, name: str):
    """Allowed at the start, refused at the finish: nothing changes but the challenge,
    which is used up (the same response can't be tried again once the facts change back)."""
    ceremony = CEREMONIES[name]
    credential = started(world, ceremony)
    assert ceremony.refuse_at_finish is not None
    ceremony.refuse_at_finish(world)
    before = world.snapshot()
    refused_with(ceremony.refused_status, lambda: ceremony.finish(world, credential))
    assert world.snapshot() == before  # (a 429 of a locked account counts no failure either)
    with world.database.session(write=False) as db:
        latest = select(WebAuthnChallenge).order_by(col(WebAuthnChallenge.id).desc())
        challenge = db.exec(latest).first()
    assert challenge is not None and challenge.consumed_at is not None


# ------------------------------------------------------------ refused at the start


def required_with_2fa(w: World) -> None:
    with_2fa(w)
    w.set_user(requires_2fa=True)


def demote(w: World) -> None:
    """The session was demoted by an administrator's requirement (SPEC §4.2)."""
    with w.database.session() as db:
        db.exec(
            update(AuthSession)
            .where(col(AuthSession.token_hash) == digest(w.token))
            .values(partial_reason=twofactor.ADMIN_REQUIRED)
        )
        db.commit()


def partial_demoted(w: World) -> None:
    partial_required(w)
    demote(w)


START_REFUSALS: dict[str, tuple[Callable[[World], None], Callable[[World], Any], int, str]] = {
    "enable when already on": (
        with_2fa,
        lambda w: w.call(account.start_enable_2fa, mode="existing", name=None),
        409,
        "already on",
    ),
    "enable with an existing passkey without one": (
        lambda w: w.sign_in(),
        lambda w: w.call(account.start_enable_2fa, mode="existing", name=None),
        409,
        twofactor.NO_PASSKEY_TO_ENABLE_WITH,
    ),
    "enable with a new passkey, stale": (
        lambda w: w.sign_in(stale=True),
        lambda w: w.call(account.start_enable_2fa, mode="new", name="Laptop"),
        403,
        twofactor.CONFIRM_FIRST,
    ),
    "disable while required": (
        required_with_2fa,
        lambda w: w.call(account.start_disable_2fa),
        403,
        twofactor.ADMIN_REQUIRES,
    ),
    "disable when off": (
        with_passkey,
        lambda w: w.call(account.start_disable_2fa),
        409,
        "already off",
    ),
    "add passkey, stale": (
        lambda w: w.sign_in(stale=True),
        lambda w: w.call(account.start_add_passkey, "Laptop"),
        403,
        twofactor.CONFIRM_FIRST,
    ),
    "add passkey without a name": (
        lambda w: w.sign_in(),
        lambda w: w.call(account.start_add_passkey, "  "),
        422,
        "Give the passkey a name.",
    ),
    "remove the last passkey with 2FA on": (
        with_2fa,
        lambda w: w.call(account.start_remove_passkey, first_passkey(w)),
        409,
        twofactor.LAST_PASSKEY,
    ),
    "remove another user's passkey": (
        with_passkey,
        lambda w: w.call(account.start_remove_passkey, first_passkey(w) + 1000),
        404,
        "not found",
    ),
    "regenerate with 2FA off": (
        with_passkey,
        lambda w: w.call(account.start_regenerate_codes, None),
        409,
        twofactor.NO_CODES,
    ),
    "regenerate codes the page didn't show": (
        with_2fa,
        lambda w: w.call(account.start_regenerate_codes, "not-the-version"),
        409,
        twofactor.CODES_CHANGED,
    ),
    "regenerate with a codes_version that isn't text": (
        with_2fa,
        lambda w: w.call(account.start_regenerate_codes, 7),
        400,
        "could not be understood",
    ),
    "confirm with a passkey without one": (
        lambda w: w.sign_in(),
        lambda w: w.call(account.start_confirm, "passkeys"),
        409,
        twofactor.CONFIRM_WITH_PASSWORD,
    ),
    "second factor without a passkey": (
        partial_required,
        lambda w: w.call(signin.start_second_factor),
        409,
        twofactor.NO_PASSKEY_FOR_SECOND_FACTOR,
    ),
    "enroll at login with a passkey already": (
        partial_with_2fa,
        lambda w: w.call(signin.start_enroll_at_login, "Laptop"),
        409,
        twofactor.ALREADY_HAS_PASSKEY,
    ),
    "enroll at login in a demoted session": (
        partial_demoted,
        lambda w: w.call(signin.start_enroll_at_login, "Laptop"),
        403,
        twofactor.PASSWORD_FIRST,
    ),
}


@pytest.mark.parametrize("name", START_REFUSALS)
def test_a_refused_start_stores_no_challenge_and_changes_nothing(world: World, name: str):
    prepare, start, status, words = START_REFUSALS[name]
    prepare(world)
    before = world.snapshot()
    with world.database.session(write=False) as db:
        challenges = len(db.exec(select(WebAuthnChallenge)).all())
    refusal = refused_with(status, lambda: start(world))
    assert words.lower() in str(refusal.detail).lower()
    assert world.snapshot() == before
    with world.database.session(write=False) as db:
        assert len(db.exec(select(WebAuthnChallenge)).all()) == challenges


def test_a_refusal_for_want_of_recent_authentication_names_its_step(world: World):
    world.sign_in(stale=True)
    refusal = refused_with(403, lambda: world.call(account.start_add_passkey, "Laptop"))
    assert refusal.code == twofactor.REAUTH_REQUIRED
    assert refusal.step == "/account/confirm?then=passkeys"


# ---------------------------------------------- the steps that ask first (no ceremony)


def test_removal_asks_with_step_up_in_a_stale_session_and_removes_nothing(world: World):
    two_passkeys(world)
    world.make_stale()
    target = first_passkey(world)
    assert world.call(account.removal_step, target) == account.AskFirst(account.STEP_UP)
    before = world.snapshot()
    assert world.call(account.remove_passkey, target) == account.AskFirst(account.STEP_UP)
    assert world.snapshot() == before


def test_removal_in_a_recent_session_removes_at_once(world: World):
    two_passkeys(world)
    target = first_passkey(world)
    assert world.call(account.removal_step, target) == account.AskFirst(account.CONFIRM)
    done = world.call(account.remove_passkey, target)
    assert isinstance(done, account.Changed) and done.token is None
    assert target not in world.passkey_ids()


def test_regenerating_asks_first_then_steps_up_then_replaces(world: World):
    with_2fa(world)
    version = None
    assert world.call(account.regenerate_question, version) is True
    before = world.snapshot()
    asked = world.call(account.regenerate_codes, version, confirmed=False)
    assert asked == account.AskFirst(account.CONFIRM)
    world.make_stale()
    assert world.call(account.regenerate_codes, version, confirmed=True) == account.AskFirst(
        account.STEP_UP
    )
    assert world.snapshot()["codes"] == before["codes"]
    options = world.call(account.start_confirm, "recovery-codes")
    world.adopt(world.call(account.finish_confirm, world.authn.authenticate(options)))
    done = world.call(account.regenerate_codes, version, confirmed=True)
    assert isinstance(done, account.Changed) and len(done.codes) == 10
    assert world.codes() != before["codes"]


def test_confirming_with_the_password_regenerates_in_the_same_step(world: World):
    world.set_user(requires_2fa=True)  # effective 2FA without a passkey (enrolls at login)
    world.sign_in(stale=True)
    done = world.call(account.confirm_with_password, "recovery-codes", PASSWORD)
    assert isinstance(done, account.Changed) and done.token and len(done.codes) == 10
    assert done.viewer.session.reauth_at is not None


def test_a_wrong_password_confirms_nothing(world: World):
    world.sign_in(stale=True)
    before = world.snapshot()
    refusal = refused_with(
        422, lambda: world.call(account.confirm_with_password, "passkeys", "not it")
    )
    assert refusal.detail == account.WRONG_PASSWORD
    after = world.snapshot()
    assert after["events"] == [*before["events"], "reauth_failed"]  # counted, nothing else
    assert after["sessions"] == before["sessions"]


# ----------------------------------------------------------- the rules added with them


def test_decision_require():
    twofactor.ALLOWED.require()  # nothing happens
    with pytest.raises(Refused) as caught:
        twofactor.refuse(409, "No.").require(then="passkeys")
    assert (caught.value.status_code, caught.value.detail, caught.value.step) == (409, "No.", "")
    with pytest.raises(Refused) as caught:
        twofactor.refuse(403, "Confirm.", twofactor.REAUTH_REQUIRED).require(then="two-factor")
    assert caught.value.code == twofactor.REAUTH_REQUIRED
    assert caught.value.step == "/account/confirm?then=two-factor"


@dataclass
class Flags:
    requires_2fa: bool = False
    user_2fa_enabled: bool = False
    requires_2fa_from: Any = None


@dataclass
class Partial:
    state: str = "partial"
    auth_time: Any = None
    partial_reason: str = ""


def test_enroll_at_login_step():
    now = utcnow()
    fresh, old = Partial(auth_time=now), Partial(auth_time=now - timedelta(hours=1))
    demoted = Partial(auth_time=now, partial_reason=twofactor.ADMIN_REQUIRED)
    required = Flags(requires_2fa=True)
    assert twofactor.enroll_at_login_step(required, fresh, 0, now, 600) == "register"
    assert twofactor.enroll_at_login_step(required, old, 0, now, 600) == "password"
    assert twofactor.enroll_at_login_step(required, demoted, 0, now, 600) == "password"
    assert twofactor.enroll_at_login_step(required, fresh, 1, now, 600) == ""
    assert twofactor.enroll_at_login_step(Flags(), fresh, 0, now, 600) == ""


def test_reentering_the_password_at_login_is_only_for_enrollment():
    required = Flags(requires_2fa=True)
    assert twofactor.can_reenter_password_at_login(required, 0).allowed
    refused = twofactor.can_reenter_password_at_login(required, 1)
    assert (refused.status, refused.message) == (409, twofactor.ALREADY_HAS_PASSKEY)
    assert not twofactor.can_reenter_password_at_login(Flags(), 0).allowed


def test_codes_seen():
    assert twofactor.can_act_on_codes_seen(None, "41").allowed
    assert twofactor.can_act_on_codes_seen("41", "41").allowed
    refused = twofactor.can_act_on_codes_seen("41", "52")
    assert (refused.status, refused.message) == (409, twofactor.CODES_CHANGED)


def test_keeps_recovery_codes():
    assert twofactor.keeps_recovery_codes(Flags(user_2fa_enabled=True))
    assert twofactor.keeps_recovery_codes(Flags(requires_2fa=True))
    pending = Flags(requires_2fa=True, requires_2fa_from=utcnow() + timedelta(days=2))
    assert not twofactor.keeps_recovery_codes(pending)
    assert not twofactor.keeps_recovery_codes(Flags())


# ------------------------------------------------------------------- the login page


def test_the_login_page_asks_the_rules_of_a_signed_in_session(auth, client, database):
    """A full session goes on where it was going; one that stopped meeting the rules (an
    administrator required 2FA meanwhile) goes to the second factor instead."""
    auth.login()
    going_on = client.get("/login?return_to=/account", follow_redirects=False)
    assert (going_on.status_code, going_on.headers["location"]) == (303, "/account")
    with database.session() as db:
        db.exec(update(User).where(col(User.username_key) == "alice").values(requires_2fa=True))
        db.commit()
    demoted = client.get("/login?return_to=/account", follow_redirects=False)
    assert (demoted.status_code, demoted.headers["location"]) == (303, "/login/2fa")


# ---- a change asked for by a session that another request ended meanwhile ---------------


def _snapshot(world: World) -> tuple[Any, ...]:
    with world.database.session(write=False) as db:
        return (
            sorted(db.exec(select(SecurityEvent.kind)).all()),
            sorted(db.exec(select(AuthSession.id)).all()),
            sorted(db.exec(select(Passkey.name)).all()),
            world.codes(),
        )


@pytest.mark.parametrize(
    "change",
    ["revoke_other_sessions", "revoke_session", "regenerate_codes", "rename_passkey"],
)
def test_a_change_from_a_session_ended_meanwhile_is_not_made(world, change):
    """The request passed the sign-in check, then waited while another one (a password
    change, "sign out all other sessions") ended its session: it changes nothing and sends
    the browser to sign in, as if the other request had come first."""
    world.sign_in()
    world.add_passkey("Laptop")
    world.enable_2fa()
    other = world.token
    world.sign_in()  # a second session, the one that asks
    asking = world.token
    with world.database.session() as db:
        actor = world.actor(db)
        other_id = db.exec(
            select(AuthSession.id).where(AuthSession.token_hash == digest(other))
        ).one()
        [passkey_id] = world.passkey_ids()
        calls = {
            "revoke_other_sessions": lambda: account.revoke_other_sessions(db, actor),
            "revoke_session": lambda: account.revoke_session(db, actor, other_id),
            "regenerate_codes": lambda: account.regenerate_codes(db, actor, None, confirmed=True),
            "rename_passkey": lambda: account.rename_passkey(db, actor, passkey_id, "Renamed"),
        }
        db.commit()
        with world.database.session() as elsewhere:  # the other request ends this session
            elsewhere.exec(delete(AuthSession).where(AuthSession.token_hash == digest(asking)))
            elsewhere.commit()
        before = _snapshot(world)
        with pytest.raises(RedirectTo) as sent:
            calls[change]()
    assert sent.value.location == "/login"
    assert _snapshot(world) == before
