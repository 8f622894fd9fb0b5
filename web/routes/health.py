from litestar import get


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness, and the benchmark's baseline route."""
    return {"status": "ok"}
