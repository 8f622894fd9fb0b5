"""A benchmark population, written straight into the tables with SQLAlchemy Core
executemany (argon2 for 100,000 passwords would take longer than the whole benchmark, so
one password hash and one recovery-code hash are computed once and reused).

Every passkey's public key comes from a small pool of P-256 keys whose private halves the
benchmark holds, so any seeded passkey could be used; the "active" users (2FA on, three
passkeys each, spread evenly over the id range) are the ones whose ceremonies are timed.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, create_engine, insert, select, text

from models import AuthSession, Passkey, RecoveryCode, SecurityEvent, User
from tests.softauthn import SoftAuthenticator, SoftCredential
from web.db import is_sqlite
from web.passwords import hash_password
from web.tokens import digest, new_token

PASSWORD = "bench-password-123"  # noqa: S105 (a seeded test account)
ACTIVE_USERS = 10
KEY_POOL = 8
CHUNK = 5000
USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
BROWSER_UA = USER_AGENTS[0]
PASSKEY_NAMES = ("Chrome on Linux", "iCloud Keychain", "YubiKey 5", "Pixel 9", "Windows Hello")
AAGUIDS = (
    "fbfc3007-154e-4ecc-8c0b-6e020557d7bd",
    "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
    "cb69481e-8ff7-4039-93ec-0a2729a154a8",
    "00000000-0000-0000-0000-000000000000",
)


@dataclass
class BenchUser:
    """A user whose passkeys the benchmark can sign with."""

    id: int
    username: str
    handle: bytes
    credential_ids: list[bytes]


@dataclass
class Population:
    users: int
    active: list[BenchUser]
    measured: BenchUser
    authenticator: SoftAuthenticator
    account_token: str
    """Cookie of a full aal2 session of the measured user (GET /account)."""
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)


def engine_for(url: str) -> Engine:
    """A plain engine for seeding (no BEGIN IMMEDIATE, a generous busy timeout)."""
    if is_sqlite(url):
        return create_engine(url, connect_args={"timeout": 30})
    return create_engine(url)


def credential_id(user_id: int, n: int) -> bytes:
    return hashlib.sha256(f"bench-credential:{user_id}:{n}".encode()).digest()[:16]


def user_handle(user_id: int) -> bytes:
    return hashlib.sha256(f"bench-handle:{user_id}".encode()).digest()


def active_ids(users: int) -> list[int]:
    """ACTIVE_USERS ids spread evenly over 1..users."""
    count = min(ACTIVE_USERS, users)
    return [1 + i * users // count for i in range(count)]


def _chunks(rows: Iterable[dict[str, Any]], size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _natives(dialect: str) -> tuple[Callable[[datetime], Any], Callable[[Any], str]]:
    """Values as the driver takes them: the seed hands rows straight to the driver's
    executemany, skipping SQLAlchemy's per-value processing (most of the time of a
    million-row seed)."""
    if dialect == "sqlite":  # what SQLAlchemy's SQLite DATETIME stores: naive UTC text

        def ts(moment: datetime) -> str:  # every moment here is UTC, with microseconds
            return str(moment.replace(tzinfo=None))

        return ts, json.dumps
    return (lambda moment: moment), json.dumps  # psycopg: str is "unknown", cast to json


def seed(url: str, users: int) -> Population:
    """Fill an empty, migrated database with `users` users; return what the load needs."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond or 1)  # str() drops a zero fraction
    pool = [ec.generate_private_key(ec.SECP256R1()) for _ in range(KEY_POOL)]
    cose = [
        SoftCredential(credential_id=b"", private_key=k, rp_id="", user_handle=b"").cose_public_key
        for k in pool
    ]
    password_hash = hash_password(PASSWORD)
    code_hash = hash_password("0000-0000-0000")
    active = set(active_ids(users))
    engine = engine_for(url)
    ts, js = _natives(engine.dialect.name)

    transports, amr_2fa, amr_pwd = js(["internal", "hybrid"]), js(["pwd", "swk"]), js(["pwd"])

    def is_2fa(uid: int) -> bool:
        return uid in active or uid % 4 == 0

    def passkeys_for(uid: int) -> int:
        return 3 if uid in active else 1 + uid % 3

    def user_rows() -> Iterator[dict[str, Any]]:
        for uid in range(1, users + 1):
            created = now - timedelta(days=400, seconds=uid)
            yield {
                "id": uid,
                "subject": str(uuid.uuid4()),
                "username": f"user{uid:06d}",
                "username_key": f"user{uid:06d}",
                "display_name": f"Bench User {uid}",
                "password_hash": password_hash,
                "webauthn_handle": user_handle(uid),
                "requires_2fa": uid % 20 == 0,
                "user_2fa_enabled": is_2fa(uid),
                "user_2fa_enabled_at": ts(created + timedelta(days=1)) if is_2fa(uid) else None,
                "failed_login_count": 0,
                "locked_until": None,
                "created_at": ts(created),
            }

    def passkey_rows() -> Iterator[dict[str, Any]]:
        for uid in range(1, users + 1):
            for n in range(passkeys_for(uid)):
                synced = uid in active or n % 2 == 0
                yield {
                    "credential_id": credential_id(uid, n),
                    "user_id": uid,
                    "public_key": cose[(uid + n) % KEY_POOL],
                    "sign_count": 0,
                    "transports": transports,
                    "aaguid": AAGUIDS[(uid + n) % len(AAGUIDS)],
                    "backup_eligible": synced,
                    "backup_state": synced,
                    "name": PASSKEY_NAMES[(uid + n) % len(PASSKEY_NAMES)],
                    "created_at": ts(now - timedelta(days=300 - n, seconds=uid)),
                    "last_used_at": ts(now - timedelta(days=n + 1)) if n < 2 else None,
                }

    def event_rows() -> Iterator[dict[str, Any]]:
        kinds = [
            ("user_created", "admin", js({})),
            ("passkey_added", "user", js({"name": "Chrome on Linux"})),
            ("2fa_enabled", "user", js({})),
            ("sign_in_failed", "user", js({})),
            ("sign_in", "user", js({"method": "pwd+passkey", "name": "Chrome on Linux"})),
        ]
        for uid in range(1, users + 1):
            count = 30 if uid in active else 5
            for n in range(count):
                kind, actor, detail = kinds[min(n, len(kinds) - 1)]
                yield {
                    "user_id": uid,
                    "kind": kind,
                    "actor": actor,
                    "created_at": ts(now - timedelta(days=count - n, seconds=uid)),
                    "ip": f"198.51.100.{uid % 250 + 1}",
                    "detail": detail,
                }

    def session_rows() -> Iterator[dict[str, Any]]:
        for uid in range(1, users + 1):
            for n in range(3 if uid in active else 1):
                seen = now - timedelta(minutes=5 + n * 7, seconds=uid % 60)
                yield {
                    "token_hash": digest(new_token()),
                    "user_id": uid,
                    "state": "full",
                    "amr": amr_2fa if is_2fa(uid) else amr_pwd,
                    "acr": "aal2" if is_2fa(uid) else "aal1",
                    "mfa_verified": is_2fa(uid),
                    "auth_time": ts(seen - timedelta(hours=1)),
                    "created_at": ts(seen - timedelta(hours=1)),
                    "last_seen_at": ts(seen),
                    "expires_at": ts(seen + timedelta(hours=20)),
                    "passkey_id": None,
                    "reauth_at": None,
                    "user_agent": USER_AGENTS[(uid + n + 1) % len(USER_AGENTS)],
                    "ip": f"203.0.113.{uid % 250 + 1}",
                }

    def code_rows() -> Iterator[dict[str, Any]]:
        for uid in range(1, users + 1):
            if is_2fa(uid):
                for _ in range(10):
                    yield {"user_id": uid, "code_hash": code_hash, "used_at": None}

    rows: dict[str, int] = {}
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    tables = [
        (User, user_rows()),
        (Passkey, passkey_rows()),
        (SecurityEvent, event_rows()),
        (AuthSession, session_rows()),
        (RecoveryCode, code_rows()),
    ]
    with engine.begin() as connection:
        for model, generated in tables:
            name, count = model.__tablename__, 0
            for batch in _chunks(generated):
                columns = ", ".join(batch[0])
                values = [tuple(row.values()) for row in batch]
                if engine.dialect.name == "postgresql":  # COPY: ten times executemany's pace
                    cursor = connection.connection.driver_connection.cursor()
                    with cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as copy:
                        for value in values:
                            copy.write_row(value)
                else:
                    marks = ", ".join([mark] * len(batch[0]))
                    sql = f"INSERT INTO {name} ({columns}) VALUES ({marks})"  # noqa: S608 (our names)
                    connection.exec_driver_sql(sql, values)
                count += len(batch)
            rows[name] = count
        if engine.dialect.name == "postgresql":  # ids given explicitly: move the sequence on
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('users', 'id'), :n)"), {"n": users}
            )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))

    authenticator = SoftAuthenticator(
        origin="http://localhost", backup_eligible=True, backup_state=True
    )
    bench_users = []
    for uid in sorted(active):
        ids = [credential_id(uid, n) for n in range(3)]
        for n, cid in enumerate(ids):
            authenticator.credentials[cid] = SoftCredential(
                credential_id=cid,
                private_key=pool[(uid + n) % KEY_POOL],
                rp_id="localhost",
                user_handle=user_handle(uid),
            )
        bench_users.append(BenchUser(uid, f"user{uid:06d}", user_handle(uid), ids))
    measured = bench_users[len(bench_users) // 2]
    token = full_session(engine, measured)
    engine.dispose()
    return Population(
        users=users,
        active=bench_users,
        measured=measured,
        authenticator=authenticator,
        account_token=token,
        seconds=time.perf_counter() - started,
        rows=rows,
    )


def _session_row(user: BenchUser, token: str, *, full: bool, passkey_id: int | None):
    now = datetime.now(UTC)
    return {
        "token_hash": digest(token),
        "user_id": user.id,
        "state": "full" if full else "partial",
        "amr": ["pwd", "swk"] if full else ["pwd"],
        "acr": "aal2" if full else "aal1",
        "mfa_verified": full,
        "auth_time": now,
        "created_at": now,
        "last_seen_at": now,
        "expires_at": now + timedelta(hours=24 if full else 0, minutes=0 if full else 10),
        "passkey_id": passkey_id,
        "reauth_at": now if passkey_id else None,
        "user_agent": BROWSER_UA,
        "ip": "127.0.0.1",
    }


def full_session(engine: Engine, user: BenchUser) -> str:
    """A signed-in aal2 session (password + passkey) for `user`; returns its cookie."""
    token = new_token()
    table = Passkey.__table__
    with engine.begin() as connection:
        passkey_id = connection.execute(
            select(table.c.id).where(table.c.credential_id == user.credential_ids[0])
        ).scalar_one()
        connection.execute(
            insert(AuthSession.__table__),
            [_session_row(user, token, full=True, passkey_id=passkey_id)],
        )
    return token


def partial_sessions(url: str, users: list[BenchUser], count: int) -> list[tuple[str, BenchUser]]:
    """`count` sessions waiting for their second factor (what a correct password leaves),
    round-robin over `users`; returns (cookie token, user) pairs."""
    pairs = [(new_token(), users[i % len(users)]) for i in range(count)]
    engine = engine_for(url)
    with engine.begin() as connection:
        for batch in _chunks(
            _session_row(user, token, full=False, passkey_id=None) for token, user in pairs
        ):
            connection.execute(insert(AuthSession.__table__), batch)
    engine.dispose()
    return pairs
