"""Facts about the client of a request: its address (proxy-aware) and user agent."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request


@dataclass(frozen=True)
class ClientInfo:
    ip: str
    user_agent: str


def client_ip(request: Request, trusted_proxies: tuple[str, ...]) -> str:
    """The peer address; X-Forwarded-For is believed only from a configured proxy."""
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in trusted_proxies:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        # the right-most address that is not itself a trusted proxy
        for hop in reversed(hops):
            if hop not in trusted_proxies:
                return hop[:64]
    return peer[:64]


def client_info(request: Request) -> ClientInfo:
    settings = request.app.state.settings
    return ClientInfo(
        ip=client_ip(request, settings.trusted_proxies),
        user_agent=request.headers.get("user-agent", "")[:512],
    )
