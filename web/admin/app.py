"""The admin listener: GraphQL at POST /graphql behind a Bearer token. Never on the user site."""

from __future__ import annotations

import hmac

from litestar import Litestar, Request
from litestar.middleware import ASGIMiddleware
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Receive, Scope, Send
from strawberry.litestar import make_graphql_controller

from web.admin.schema import schema
from web.db import Database, connect
from web.protection import security_headers
from web.settings import Settings, get_settings


class BearerTokenMiddleware(ASGIMiddleware):
    """401 unless `Authorization: Bearer <BARYCENTER_ADMIN_TOKEN>`; no token configured: 401."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token: str | None = scope["app"].state.settings.admin_token
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        supplied = header[7:] if header[:7].lower() == "bearer " else ""
        if (
            not token
            or not supplied
            or not hmac.compare_digest(supplied.encode("latin-1"), token.encode())
        ):
            response = ASGIResponse(
                body=b'{"errors":[{"message":"Unauthorized"}]}',
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="barycenter-admin"'},
            )
            await response(scope, receive, send)
            return
        await next_app(scope, receive, send)


def create_admin_app(
    settings: Settings | None = None, database: Database | None = None
) -> Litestar:
    settings = settings or get_settings()
    database = database or connect(settings.database_url, settings.sqlite_busy_timeout_ms)

    async def context_getter(request: Request) -> dict:
        return {"database": request.app.state.database, "request": request}

    GraphQL = make_graphql_controller(  # noqa: N806
        schema,
        path="/graphql",
        context_getter=context_getter,
        graphql_ide=None,
        allow_queries_via_get=False,
    )
    app = Litestar(
        route_handlers=[GraphQL],
        middleware=[BearerTokenMiddleware()],
        before_send=[security_headers],
        request_max_body_size=64 * 1024,
        openapi_config=None,
        on_shutdown=[database.dispose],
    )
    database.info["settings"] = settings  # the outbox builds links from the origin
    app.state.settings = settings
    app.state.database = database
    return app
