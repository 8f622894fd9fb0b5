"""The application factory: `create_app(settings)` builds the user site; tests, the CLI and
`make run` all go through it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jinja2 import StrictUndefined
from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from sqlalchemy.exc import OperationalError

from web.db import SAFE_METHODS, Database, connect, provide_db
from web.errors import (
    RedirectTo,
    database_busy_handler,
    http_exception_handler,
    internal_error_handler,
    redirect_handler,
)
from web.pagecache import PageCache
from web.protection import check_request, security_headers
from web.routes.account import AccountController, home
from web.routes.health import healthz
from web.routes.login import LoginController, SecondFactorController, logout
from web.routes.wellknown import favicon, webauthn_origins
from web.settings import Settings, get_settings
from web.views import when

ROOT = Path(__file__).resolve().parent.parent
MAX_BODY = 64 * 1024
HTMX_FILE = "htmx-2.0.11.min.js"


def configure_templates(settings: Settings) -> Callable[[JinjaTemplateEngine], None]:
    def callback(engine: JinjaTemplateEngine) -> None:
        env = engine.engine
        env.undefined = StrictUndefined
        env.auto_reload = settings.dev
        env.globals["htmx_file"] = HTMX_FILE
        env.globals["dev"] = settings.dev
        env.filters["when"] = when

    return callback


def create_app(settings: Settings | None = None, database: Database | None = None) -> Litestar:
    settings = settings or get_settings()
    database = database or connect(settings.database_url, settings.sqlite_busy_timeout_ms)

    route_handlers: list = [
        home,
        healthz,
        webauthn_origins,
        favicon,
        logout,
        LoginController,
        SecondFactorController,
        AccountController,
        create_static_files_router(path="/static", directories=[ROOT / "static"], name="static"),
    ]
    if settings.dev:
        from web.routes.design import design_email_text, design_gallery, design_sample

        route_handlers += [design_gallery, design_sample, design_email_text]

    def dispose() -> None:
        database.dispose()

    app = Litestar(
        route_handlers=route_handlers,
        dependencies={"db": Provide(provide_db)},
        plugins=[HTMXPlugin()],  # every request is an HTMXRequest: request.htmx
        template_config=TemplateConfig(
            directory=ROOT / "templates",
            engine=JinjaTemplateEngine,
            engine_callback=configure_templates(settings),
        ),
        csrf_config=CSRFConfig(
            secret=settings.secret_key,
            cookie_name=settings.csrf_cookie,
            header_name="x-csrftoken",
            cookie_secure=settings.secure_cookies,
            cookie_httponly=True,
            cookie_samesite="strict",
            safe_methods=set(SAFE_METHODS),
        ),
        before_send=[security_headers],
        before_request=check_request,
        exception_handlers={
            RedirectTo: redirect_handler,
            HTTPException: http_exception_handler,
            OperationalError: database_busy_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=MAX_BODY,
        on_shutdown=[dispose],
        debug=False,
        openapi_config=None,
    )
    database.info["settings"] = settings  # the outbox builds links from the origin
    app.state.settings = settings
    app.state.database = database
    # rendered account pages (web/pagecache.py); not while templates reload
    cache_bytes = 0 if settings.dev else settings.page_cache_mb * 2**20
    app.state.pages = PageCache(cache_bytes) if cache_bytes else None
    return app
