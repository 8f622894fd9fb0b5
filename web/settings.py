"""Settings from the environment (SPEC §2). Nothing reads the environment at import time."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "sqlite:///./data/barycenter.db"
ADMIN_TOKEN_MIN_LENGTH = 32


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


class ConfigError(ValueError):
    """A setting that must stop start-up, with a message that says how to fix it."""


DEFAULT_PORTS = {"https": 443, "http": 80}
HOST_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
"""A DNS name in ASCII (internationalised names as punycode, xn--…)."""


def parse_origin(entry: str, name: str = "BARYCENTER_RELATED_ORIGINS") -> str:
    """One origin as browsers serialise it ("https://login.example.com"): https, or
    http://localhost[:port]; no path, query, fragment or user. Anything else is refused."""
    problem = f"{name}: {entry!r} is not a bare origin such as https://login.example.com"
    if any(ch.isspace() or ord(ch) < 32 for ch in entry):
        raise ConfigError(problem)
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError:
        raise ConfigError(problem) from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme.lower() not in DEFAULT_PORTS
        or not HOST_RE.match(host)
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in entry
        or "#" in entry
    ):
        raise ConfigError(problem)
    scheme = parts.scheme.lower()
    if port == 0:
        raise ConfigError(f"{name}: {entry!r} has port 0, which no browser can use")
    if scheme == "http" and host != "localhost":
        raise ConfigError(f"{name}: {entry!r} must use https (http only for localhost)")
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_origins(value: str, name: str = "BARYCENTER_RELATED_ORIGINS") -> tuple[str, ...]:
    """A comma-separated list of origins: trimmed, checked, without repeats."""
    origins: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            continue
        origin = parse_origin(entry, name)
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


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
    write_secret_file(path, key)
    return key


def write_secret_file(path: Path, text: str) -> None:
    """Create a file readable by its owner only FROM THE START (0600 at creation: no window
    in which another user could open it, as a chmod after writing leaves)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


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
    smtp_url: str | None = None
    """smtp://[user:pass@]host[:port][?starttls=1][&verify=0] or smtps://…; None: .eml files."""
    mail_from: str = "Barycenter <no-reply@localhost>"
    """Sender of notifications (not put through the rules for users' addresses)."""
    mail_dir: str = ""
    """Where .eml files go without an SMTP server; empty means <data folder>/mail."""
    mail_interval: float = 5.0
    """Seconds between looks at the outbox inside `serve`; 0 turns the sender off."""
    reauth_seconds: int = 600
    """How long a sign-in or a "Confirm it's you" counts as recent authentication (§4.1)."""
    related_origins: tuple[str, ...] = ()
    """Other origins allowed to use this RP ID (WebAuthn related origin requests)."""
    reminder_interval: int = 300
    """Seconds between runs of the grace-period reminder job inside `serve`; 0 turns it off."""

    def __post_init__(self) -> None:
        if self.admin_token and len(self.admin_token) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"BARYCENTER_ADMIN_TOKEN must be at least {ADMIN_TOKEN_MIN_LENGTH} characters "
                f"(it has {len(self.admin_token)}). Generate one with: "
                'python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        if self.origin:  # checked and normalised like related origins (lower case, no :443)
            object.__setattr__(self, "origin", parse_origin(self.origin, "BARYCENTER_ORIGIN"))
        if self.reauth_seconds < 0:
            raise ValueError("BARYCENTER_REAUTH_SECONDS must be 0 (always ask) or more")

    sqlite_busy_timeout_ms: int = 5000
    """How long a SQLite statement waits for another writer's lock before the request
    answers 503 (milliseconds)."""
    page_cache_mb: int = 32
    """Memory of each process for rendered account pages (web/pagecache.py); 0 turns it
    off. Always off with `dev` (templates reload)."""

    @property
    def effective_origin(self) -> str:
        return self.origin or f"http://localhost:{self.port}"

    @property
    def expected_origins(self) -> list[str]:
        """Every origin a ceremony or a state-changing request may come from: ours first."""
        return [
            self.effective_origin,
            *(o for o in self.related_origins if o != self.effective_origin),
        ]

    @property
    def mail_folder(self) -> Path:
        return Path(self.mail_dir) if self.mail_dir else _data_dir(self.database_url) / "mail"

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return not self.effective_origin.startswith("http://localhost")

    def cookie_name(self, name: str, *, narrow_path: bool = False) -> str:
        """SPEC §7/§9: `__Host-` for Path=/ cookies when Secure, `__Secure-` for a cookie
        with a narrower path; plain names on http://localhost."""
        if not self.secure_cookies:
            return name
        return ("__Secure-" if narrow_path else "__Host-") + name

    @property
    def session_cookie(self) -> str:
        return self.cookie_name("barycenter_session")

    @property
    def csrf_cookie(self) -> str:
        return self.cookie_name("barycenter_csrf")

    @property
    def ceremony_cookie(self) -> str:
        return self.cookie_name("barycenter_ceremony", narrow_path=True)

    @property
    def https(self) -> bool:
        return self.effective_origin.startswith("https://")

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]  # mixed kwargs; replace() rejects unknown fields

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
            "origin": env.get("BARYCENTER_ORIGIN", "").strip(),
            "admin_token": env.get("BARYCENTER_ADMIN_TOKEN") or None,
            "cookie_secure": _bool(cookie_secure, None, "BARYCENTER_COOKIE_SECURE"),
            "session_ttl": _int(env, "BARYCENTER_SESSION_TTL", 3600),
            "ip_limit_per_minute": _int(env, "BARYCENTER_IP_LIMIT_PER_MINUTE", 30),
            "reauth_seconds": _int(env, "BARYCENTER_REAUTH_SECONDS", 600),
            "trusted_proxies": tuple(p.strip() for p in proxies.split(",") if p.strip()),
            "dev": _bool(env.get("BARYCENTER_DEV"), False, "BARYCENTER_DEV"),
            "related_origins": parse_origins(env.get("BARYCENTER_RELATED_ORIGINS", "")),
            "smtp_url": env.get("BARYCENTER_SMTP_URL", "").strip() or None,
            "mail_from": env.get("BARYCENTER_MAIL_FROM", "").strip()
            or "Barycenter <no-reply@localhost>",
            "sqlite_busy_timeout_ms": _int(env, "BARYCENTER_SQLITE_BUSY_TIMEOUT_MS", 5000),
            "page_cache_mb": _int(env, "BARYCENTER_PAGE_CACHE_MB", 32),
        }
        values.update(overrides)
        if "secret_key" not in values:
            values["secret_key"] = env.get("BARYCENTER_SECRET_KEY") or _secret_key(
                _data_dir(str(values["database_url"]))
            )
        settings = cls(**values)  # type: ignore[arg-type]  # values parsed per field above; one dict of mixed types
        if settings.session_ttl <= 0:
            raise ValueError("BARYCENTER_SESSION_TTL must be more than 0 seconds")
        if settings.sqlite_busy_timeout_ms < 0:
            raise ValueError("BARYCENTER_SQLITE_BUSY_TIMEOUT_MS must be 0 or more")
        if settings.page_cache_mb < 0:
            raise ValueError("BARYCENTER_PAGE_CACHE_MB must be 0 (off) or more")
        if settings.ip_limit_per_minute < 0:
            raise ValueError("BARYCENTER_IP_LIMIT_PER_MINUTE must be 0 (off) or more")
        from web.mailer import check_mail_from, parse_smtp_url

        if settings.smtp_url:
            parse_smtp_url(settings.smtp_url)  # a mistake stops start-up, with its reason
        check_mail_from(settings.mail_from)
        return settings


@cache
def get_settings() -> Settings:
    """The settings of the running process."""
    return Settings.from_env()
