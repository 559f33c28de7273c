"""SMTP connections reused by one thread, and replaced when the server drops them."""

from __future__ import annotations

from aiosmtpd.controller import Controller
from tests.mail.conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    Certificate,
    Recorder,
    SmtpServerFactory,
    free_port,
)
from tests.mail.test_backends import CREDENTIALS, sample_message, smtp_settings

from orderdesk.mail.backends import mail_backend


def test_messages_share_connection(
    smtp_server: SmtpServerFactory, certificate: Certificate
) -> None:
    server = smtp_server(tls="starttls", auth=True)
    settings = smtp_settings(
        f"smtp://{CREDENTIALS}@127.0.0.1:{server.port}", certificate
    )
    for number in range(3):
        # A new backend per message, as send_message builds it.
        mail_backend(settings).send(sample_message(f"<reuse-{number}@shop.test>"))
    ids = [message["Message-ID"] for message in server.messages]
    assert ids == [f"<reuse-{number}@shop.test>" for number in range(3)]
    # One login means one connection carried all three messages.
    assert server.recorder.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    assert server.recorder.tls_sessions == [True, True, True]


def test_restarted_server_gets_message() -> None:
    port = free_port()
    settings = smtp_settings(f"smtp://127.0.0.1:{port}")
    first = Recorder()
    controller = Controller(first, hostname="127.0.0.1", port=port)
    controller.start()
    mail_backend(settings).send(sample_message("<before@shop.test>"))
    # The kept connection dies with the server.
    controller.stop()
    second = Recorder()
    controller = Controller(second, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mail_backend(settings).send(sample_message("<after@shop.test>"))
    finally:
        controller.stop()
    assert [message["Message-ID"] for message in first.messages] == [
        "<before@shop.test>"
    ]
    assert [message["Message-ID"] for message in second.messages] == [
        "<after@shop.test>"
    ]
