"""Real SMTP servers on loopback (aiosmtpd) and a self-signed certificate for them."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_USER = "mailer@example.com"
SMTP_PASSWORD = "p@ss:w/rd%secret"  # noqa: S105 - a test credential


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key_file), "-out", str(cert_file),
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert_file, key_file)


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it receives, or rejects recipients."""

    reject_with: str | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    tls_sessions: list[bool] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.reject_with:
            return self.reject_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        self.envelopes.append(envelope)
        self.tls_sessions.append(
            server.transport.get_extra_info("ssl_object") is not None
        )
        content = envelope.original_content.replace(b"\r\n", b"\n")
        parsed = message_from_bytes(content, policy=policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 Message accepted"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append((data.login, data.password))
        ok = (
            data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
        )
        # handled=False lets aiosmtpd send the 535 reply on failure.
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    recorder: Recorder
    port: int

    @property
    def messages(self) -> list[EmailMessage]:
        return self.recorder.messages


SmtpServerFactory = Callable[..., SmtpServer]


@pytest.fixture
def smtp_server(certificate: Certificate) -> Iterator[SmtpServerFactory]:
    """Start aiosmtpd servers: smtp_server(tls="none"|"starttls"|"implicit", ...)."""
    controllers: list[Controller] = []

    def start(
        *, tls: str = "none", auth: bool = False, reject_with: str | None = None
    ) -> SmtpServer:
        recorder = Recorder(reject_with=reject_with)
        port = free_port()
        options: dict[str, Any] = {}
        if tls == "starttls":
            options.update(
                tls_context=certificate.server_context(), require_starttls=True
            )
        elif tls == "implicit":
            options.update(ssl_context=certificate.server_context())
        if auth:
            options.update(
                authenticator=recorder.authenticate,
                auth_required=True,
                # aiosmtpd counts only STARTTLS as TLS, so with implicit TLS it
                # would hide AUTH. That connection is encrypted from the start.
                auth_require_tls=tls != "implicit",
            )
        controller = Controller(recorder, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return SmtpServer(recorder, port)

    yield start
    for controller in controllers:
        controller.stop()
