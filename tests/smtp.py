"""A real SMTP server for tests: aiosmtpd on a loopback port, keeping what it receives."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    """The aiosmtpd handler: every accepted message, parsed."""

    messages: list[Received] = field(default_factory=list)
    refuse: bool = False

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.refuse:
            return "451 Try again later"
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def subjects(self, to: str | None = None) -> list[str]:
        return [
            str(m.message["Subject"]) for m in self.messages if to is None or to in m.recipients
        ]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_tls(folder: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (no CA knows
    it: a client that verifies certificates must refuse it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


class SmtpServer:
    """Start and stop at will (an outage is a stopped server on the same port).
    `security`: "none", "starttls" (STARTTLS required) or "tls" (implicit TLS, smtps);
    `login`: (user, password) that AUTH must present."""

    def __init__(
        self,
        port: int | None = None,
        *,
        security: str = "none",
        tls: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None
        self.security = security
        self.tls = tls
        self.login = login

    @property
    def url(self) -> str:
        scheme = "smtps" if self.security == "tls" else "smtp"
        query = "?starttls=1" if self.security == "starttls" else ""
        return f"{scheme}://127.0.0.1:{self.port}{query}"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        expected = self.login or ("", "")
        given = (auth_data.login.decode(), auth_data.password.decode())
        return AuthResult(success=given == expected)

    def start(self) -> SmtpServer:
        options: dict[str, Any] = {}
        if self.security == "starttls":
            options.update(tls_context=self.tls, require_starttls=True)
        if self.security == "tls":  # the whole connection is TLS: AUTH may go at once
            options.update(ssl_context=self.tls, auth_require_tls=False)
        if self.login:
            options.update(authenticator=self._authenticate, auth_required=True)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
