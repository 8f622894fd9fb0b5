"""Unit fixtures in the flaskr manner: settings → app → client, plus `auth` and `authn`,
`module_app` (one app a module) and `admin` (calls to the admin API).
The clients and `Auth` themselves are in tests/helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.testing import TestClient

from models import User
from tests.helpers import ORIGIN, PASSWORD, Auth, Client
from tests.softauthn import SoftAuthenticator
from web import passwords
from web.admin.app import create_admin_app
from web.app import create_app
from web.db import Database, connect
from web.pagecache import PageCache
from web.settings import Settings
from web.users import create_user

PRODUCT_HASHER = passwords._hasher
SQLITE_BUSY_TIMEOUT_MS = 1000
"""How long a test's SQLite statement waits for another writer: short, so that a test of a
held lock answers its 503 quickly. Tests marked `crowded` (a dozen requests at once that
must end in exactly one success) get the product's own 5 s, as a real server has: with
1 s, a busy machine could turn that one success into a 503."""


@pytest.fixture(autouse=True)
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2id at its lowest cost for every unit test: the default (~0.5 s a hash on a busy
    machine) is a product parameter, tested on its own with `product_hashing`. The cached
    unknown-user hash is cleared on both sides, so it is made by the hasher in force."""
    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    passwords._dummy_hash.cache_clear()
    yield
    passwords._dummy_hash.cache_clear()


@pytest.fixture
def product_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The product's own argon2id parameters, for the tests of hashing itself."""
    monkeypatch.setattr(passwords, "_hasher", PRODUCT_HASHER)
    passwords._dummy_hash.cache_clear()


@pytest.fixture
def settings(database_url: str, request: pytest.FixtureRequest) -> Settings:
    crowded = request.node.get_closest_marker("crowded") is not None
    return Settings(
        database_url=database_url,
        secret_key="test-secret-key-" * 3,
        admin_token="admin-token-for-tests-0123456789abcdef",
        ip_limit_per_minute=0,
        port=8000,
        sqlite_busy_timeout_ms=Settings.sqlite_busy_timeout_ms
        if crowded
        else SQLITE_BUSY_TIMEOUT_MS,
    )


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = connect(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    yield db
    db.dispose()


@pytest.fixture
def app(settings: Settings, database: Database):
    return create_app(settings, database)


@pytest.fixture(scope="module")
def app_cache() -> dict[str, Litestar]:
    return {}


@pytest.fixture
def module_app(settings: Settings, database: Database, app_cache: dict[str, Litestar]) -> Litestar:
    """One app per module, pointed at each test's fresh database and settings: building
    the app and compiling its templates again for every test cost more than most tests.
    Requests reach them only through `app.state` (web.routes.common, web.db.provide_db)."""
    if "app" not in app_cache:
        app_cache["app"] = create_app(settings, database)
    shared = app_cache["app"]
    shared.state.settings = settings
    shared.state.database = database
    # kept pages are keyed by session id and data version, which the next test's fresh
    # database numbers again from 1
    shared.state.pages = PageCache(settings.page_cache_mb * 2**20)
    return shared


@pytest.fixture
def client(app) -> Iterator[Client]:
    with Client(app=app, base_url=ORIGIN) as c:
        yield c


@pytest.fixture
def make_client(app) -> Callable[[], Client]:
    """More browsers for the same app (other sessions). They do not run the app's lifespan
    again (the `client` fixture does): with two or more extra clients entered, Litestar's
    lifespan shutdown hung at teardown. Nothing to release afterwards."""

    def make() -> Client:
        return Client(app=app, base_url=ORIGIN)

    return make


@pytest.fixture
def user(database: Database) -> User:
    with database.session() as db:
        return create_user(db, "alice", PASSWORD, "Alice Example", actor="admin")


@pytest.fixture
def authn() -> SoftAuthenticator:
    return SoftAuthenticator(rp_id="localhost", origin=ORIGIN)


@pytest.fixture
def auth(client: Client, authn: SoftAuthenticator, user: User) -> Auth:
    return Auth(client, authn)


@pytest.fixture
def admin(settings, database):
    """Calls the admin API (its own app, the same database) and returns `data`."""
    app = create_admin_app(settings, database)
    with TestClient(app=app) as api:

        def call(document: str) -> dict:
            response = api.post(
                "/graphql",
                json={"query": document},
                headers={"Authorization": f"Bearer {settings.admin_token}"},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert not body.get("errors"), body
            return body["data"]

        yield call
