"""SMTP and file backends against real servers on loopback and a temporary folder."""

from __future__ import annotations

import os
import socket
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from tests.mail.conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    Certificate,
    SmtpServerFactory,
    free_port,
)

from orderdesk.mail.backends import (
    FileBackend,
    MailConfigurationError,
    MailDeliveryError,
    SmtpBackend,
    mail_backend,
    parse_smtp_url,
)

CREDENTIALS = f"{quote(SMTP_USER, safe='')}:{quote(SMTP_PASSWORD, safe='')}"


def sample_message(message_id: str = "<refund-1-accepted@shop.test>") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Shop <orders@shop.test>"
    message["To"] = "Jordan <jordan@example.com>"
    message["Subject"] = "Hello"
    message["Message-ID"] = message_id
    message.set_content("Body text\n")
    return message


def smtp_settings(url: str, certificate: Certificate | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        smtp_url=url,
        smtp_timeout_seconds=5.0,
        smtp_ca_file=certificate.cert_file if certificate else None,
        mail_dir=Path("unused"),
    )


# -- URL parsing ---------------------------------------------------------------------


def test_url_decodes_credentials() -> None:
    parsed = parse_smtp_url(f"smtp://{CREDENTIALS}@mail.example.com:587")
    assert parsed.username == SMTP_USER
    assert parsed.password == SMTP_PASSWORD
    assert parsed.host == "mail.example.com"
    assert parsed.port == 587
    assert parsed.starttls == "require"
    assert parsed.implicit_tls is False


def test_url_without_auth_is_opportunistic() -> None:
    parsed = parse_smtp_url("smtp://relay.internal")
    assert parsed.port == 25
    assert parsed.username is None
    assert parsed.starttls == "auto"


def test_smtps_url_is_implicit_tls() -> None:
    parsed = parse_smtp_url("smtps://user:pw@mail.example.com")
    assert parsed.port == 465
    assert parsed.implicit_tls is True
    assert parsed.starttls == "off"


def test_url_starttls_override() -> None:
    assert parse_smtp_url("smtp://u:p@h:587?starttls=off").starttls == "off"
    assert parse_smtp_url("smtp://h?starttls=require").starttls == "require"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2secret@h",
        "smtp://user:hunter2secret@",
        "smtp://user:hunter2secret@h:99999",
        "smtp://user:hunter2secret@h/path",
        "smtp://user:hunter2secret@h?verify=no",
        "smtp://user:hunter2secret@h?starttls=maybe",
        "smtps://user:hunter2secret@h?starttls=auto",
    ],
)
def test_bad_url_hides_password(url: str) -> None:
    with pytest.raises(MailConfigurationError) as raised:
        parse_smtp_url(url)
    assert "hunter2secret" not in str(raised.value)


def test_repr_hides_password() -> None:
    backend = SmtpBackend(parse_smtp_url("smtp://user:hunter2secret@h:587"))
    assert "hunter2secret" not in repr(backend)
    assert "hunter2secret" not in repr(backend.smtp)


def test_backend_choice_follows_settings(tmp_path: Path) -> None:
    file_settings = SimpleNamespace(smtp_url=None, mail_dir=tmp_path)
    assert isinstance(mail_backend(file_settings), FileBackend)
    assert isinstance(mail_backend(smtp_settings("smtp://h:2525")), SmtpBackend)


# -- SMTP on loopback ----------------------------------------------------------------


def test_plain_relay_delivers(smtp_server: SmtpServerFactory) -> None:
    server = smtp_server()
    backend = mail_backend(smtp_settings(f"smtp://127.0.0.1:{server.port}"))
    backend.send(sample_message())
    assert len(server.messages) == 1
    received = server.messages[0]
    assert received["Message-ID"] == "<refund-1-accepted@shop.test>"
    assert received.get_content() == "Body text\n"
    assert server.recorder.envelopes[0].rcpt_tos == ["jordan@example.com"]
    assert server.recorder.tls_sessions == [False]


def test_starttls_with_auth_delivers(
    smtp_server: SmtpServerFactory, certificate: Certificate
) -> None:
    server = smtp_server(tls="starttls", auth=True)
    url = f"smtp://{CREDENTIALS}@127.0.0.1:{server.port}"
    mail_backend(smtp_settings(url, certificate)).send(sample_message())
    assert len(server.messages) == 1
    assert server.recorder.tls_sessions == [True]
    assert server.recorder.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]


def test_starttls_untrusted_certificate_fails(smtp_server: SmtpServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True)
    url = f"smtp://{CREDENTIALS}@127.0.0.1:{server.port}"
    with pytest.raises(MailDeliveryError) as raised:
        mail_backend(smtp_settings(url)).send(sample_message())
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert server.recorder.logins == []
    assert server.messages == []


def test_missing_starttls_keeps_password(smtp_server: SmtpServerFactory) -> None:
    server = smtp_server(tls="none")
    url = f"smtp://{CREDENTIALS}@127.0.0.1:{server.port}"
    with pytest.raises(MailDeliveryError) as raised:
        mail_backend(smtp_settings(url)).send(sample_message())
    assert "does not offer STARTTLS" in str(raised.value)
    assert SMTP_PASSWORD not in str(raised.value)
    assert server.recorder.logins == []
    assert server.messages == []


def test_wrong_password_fails(
    smtp_server: SmtpServerFactory, certificate: Certificate
) -> None:
    server = smtp_server(tls="starttls", auth=True)
    url = f"smtp://{quote(SMTP_USER)}:wrong-password@127.0.0.1:{server.port}"
    with pytest.raises(MailDeliveryError) as raised:
        mail_backend(smtp_settings(url, certificate)).send(sample_message())
    assert "SMTPAuthenticationError 535" in str(raised.value)
    assert "wrong-password" not in str(raised.value)
    assert server.messages == []


# aiosmtpd warns because it does not count implicit TLS as TLS for AUTH.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_delivers(
    smtp_server: SmtpServerFactory, certificate: Certificate
) -> None:
    server = smtp_server(tls="implicit", auth=True)
    url = f"smtps://{CREDENTIALS}@127.0.0.1:{server.port}"
    mail_backend(smtp_settings(url, certificate)).send(sample_message())
    assert len(server.messages) == 1
    assert server.recorder.tls_sessions == [True]


def test_temporary_refusal_raises(smtp_server: SmtpServerFactory) -> None:
    server = smtp_server(reject_with="451 4.3.0 Try again later")
    backend = mail_backend(smtp_settings(f"smtp://127.0.0.1:{server.port}"))
    with pytest.raises(MailDeliveryError) as raised:
        backend.send(sample_message())
    assert "451" in str(raised.value)
    assert "<refund-1-accepted@shop.test>" in str(raised.value)
    assert server.messages == []


def test_unreachable_server_raises() -> None:
    port = free_port()
    backend = mail_backend(smtp_settings(f"smtp://127.0.0.1:{port}"))
    with pytest.raises(MailDeliveryError) as raised:
        backend.send(sample_message())
    assert "ConnectionRefusedError" in str(raised.value)
    assert f"127.0.0.1:{port}" in str(raised.value)


def test_silent_server_times_out() -> None:
    # A socket that accepts connections but never sends the SMTP greeting.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    thread.start()
    settings = smtp_settings(f"smtp://127.0.0.1:{port}")
    settings.smtp_timeout_seconds = 0.5
    try:
        with pytest.raises(MailDeliveryError) as raised:
            mail_backend(settings).send(sample_message())
        assert "timed out" in str(raised.value)
    finally:
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


# -- files ---------------------------------------------------------------------------


def test_file_backend_writes_eml(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "mail")
    backend.send(sample_message())
    files = list((tmp_path / "mail").iterdir())
    assert [path.name for path in files] == ["refund-1-accepted@shop.test.eml"]
    stored = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert stored["Message-ID"] == "<refund-1-accepted@shop.test>"
    assert stored.get_content() == "Body text\n"


def test_file_retry_overwrites(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    first = sample_message()
    backend.send(first)
    second = sample_message()
    second.replace_header("Subject", "Hello again")
    backend.send(second)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    assert b"Subject: Hello again" in files[0].read_bytes()


def test_file_names_are_safe(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    path = backend.path_for(sample_message("<../../etc/passwd@x>"))
    assert path.parent == tmp_path
    assert "/" not in path.name
    other = backend.path_for(sample_message("<.._.._etc_passwd@x>"))
    assert other != path


def test_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(source: str, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        FileBackend(tmp_path).send(sample_message())
    assert list(tmp_path.iterdir()) == []
