"""The bench's yardstick: a bare Litestar app with one JSON endpoint, served by the same
uvicorn as ours (`python -m uvicorn bench.bare:app --workers 2`). Our `/healthz` against
its `/` measures what our middleware stack costs on a route that does nothing."""

from __future__ import annotations

from litestar import Litestar, get


@get("/", sync_to_thread=False)
def index() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[index], openapi_config=None, debug=False)
