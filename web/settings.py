"""Settings from the environment (SPEC §2). Nothing reads the environment at import time."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///./data/barycenter.db"


def _bool(value: str | None, default: bool | None, name: str) -> bool | None:
    """true/false, 1/0, yes/no, on/off; anything else is a mistake worth stopping for."""
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def _int(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None


def _data_dir(database_url: str) -> Path:
    """The folder beside a SQLite file, or ./data for any other database."""
    if database_url.startswith("sqlite:///") and not database_url.endswith(":memory:"):
        return Path(database_url.removeprefix("sqlite:///")).parent
    return Path("data")


def _secret_key(data_dir: Path) -> str:
    """A key generated once and kept in the data folder, so restarts keep CSRF tokens valid."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    """Any SQLAlchemy URL; PostgreSQL through postgresql+psycopg://…"""
    port: int = 8000
    """Port of the user site; the default origin is derived from it."""
    rp_id: str = "localhost"
    """WebAuthn relying-party ID."""
    rp_name: str = "Barycenter"
    """Relying-party name shown by the authenticator."""
    origin: str = ""
    """The exact origin the browser uses; empty means http://localhost:<port>."""
    admin_token: str | None = None
    """Bearer token of the admin API; None refuses every admin request."""
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48), repr=False)
    """Signs CSRF tokens."""
    cookie_secure: bool | None = None
    """Secure cookie flag; None means: true unless the origin is http://localhost…"""
    session_ttl: int = 3600
    """Idle lifetime of a full session, in seconds."""
    session_absolute_ttl: int = 24 * 3600
    """Absolute lifetime of a full session, in seconds."""
    partial_session_ttl: int = 600
    """Lifetime of a partial (second factor pending) session, in seconds."""
    ip_limit_per_minute: int = 30
    """Per-IP sign-in attempts and ceremony starts a minute; 0 turns the limit off."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses whose X-Forwarded-For is believed."""
    dev: bool = False
    """Template reload and the /_design gallery."""
    cleanup_interval: int = 300
    """Seconds between runs of the expiry clean-up inside `serve`; 0 turns it off."""
    sqlite_busy_timeout_ms: int = 5000
    """How long a SQLite statement waits for another writer's lock before the request
    answers 503 (milliseconds)."""

    @property
    def effective_origin(self) -> str:
        return self.origin or f"http://localhost:{self.port}"

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return not self.effective_origin.startswith("http://localhost")

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ if env is None else env)
        database_url = env.get("BARYCENTER_DATABASE_URL") or DEFAULT_DATABASE_URL
        cookie_secure = env.get("BARYCENTER_COOKIE_SECURE")
        proxies = env.get("BARYCENTER_TRUSTED_PROXIES", "")
        values: dict[str, object] = {
            "database_url": database_url,
            "port": int(env.get("BARYCENTER_PORT", "8000")),
            "rp_id": env.get("BARYCENTER_RP_ID") or "localhost",
            "rp_name": env.get("BARYCENTER_RP_NAME") or "Barycenter",
            "origin": env.get("BARYCENTER_ORIGIN", "").rstrip("/"),
            "admin_token": env.get("BARYCENTER_ADMIN_TOKEN") or None,
            "cookie_secure": _bool(cookie_secure, None, "BARYCENTER_COOKIE_SECURE"),
            "session_ttl": _int(env, "BARYCENTER_SESSION_TTL", 3600),
            "ip_limit_per_minute": _int(env, "BARYCENTER_IP_LIMIT_PER_MINUTE", 30),
            "trusted_proxies": tuple(p.strip() for p in proxies.split(",") if p.strip()),
            "dev": _bool(env.get("BARYCENTER_DEV"), False, "BARYCENTER_DEV"),
            "sqlite_busy_timeout_ms": _int(env, "BARYCENTER_SQLITE_BUSY_TIMEOUT_MS", 5000),
        }
        values.update(overrides)
        if "secret_key" not in values:
            values["secret_key"] = env.get("BARYCENTER_SECRET_KEY") or _secret_key(
                _data_dir(str(values["database_url"]))
            )
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.session_ttl <= 0:
            raise ValueError("BARYCENTER_SESSION_TTL must be more than 0 seconds")
        if settings.sqlite_busy_timeout_ms < 0:
            raise ValueError("BARYCENTER_SQLITE_BUSY_TIMEOUT_MS must be 0 or more")
        if settings.ip_limit_per_minute < 0:
            raise ValueError("BARYCENTER_IP_LIMIT_PER_MINUTE must be 0 (off) or more")
        return settings


@cache
def get_settings() -> Settings:
    """The settings of the running process."""
    return Settings.from_env()
