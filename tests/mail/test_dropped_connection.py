"""A kept SMTP connection that the server closed: the message goes over a new one,
and only a closed connection makes the backend send a message a second time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from tests.mail.conftest import Recorder, free_port
from tests.mail.test_backends import sample_message, smtp_settings

from orderdesk.mail.backends import MailDeliveryError, mail_backend


@dataclass
class RefusingRecorder(Recorder):
    """Replies `refusal` to the MAIL command of the message number `refuse_at`
    (counted from 1), and counts MAIL commands and sessions."""

    refuse_at: int = 0
    refusal: str = ""
    mail_commands: int = 0
    greetings: list[str] = field(default_factory=list)

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: Any
    ) -> Any:
        self.greetings.append(hostname)
        # aiosmtpd leaves recording the greeting to a handler with this hook.
        session.host_name = hostname
        return responses

    async def handle_MAIL(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.mail_commands += 1
        if self.mail_commands == self.refuse_at:
            return self.refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


def send_two(recorder: RefusingRecorder) -> None:
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    settings = smtp_settings(f"smtp://127.0.0.1:{port}")
    try:
        mail_backend(settings).send(sample_message("<first@shop.test>"))
        mail_backend(settings).send(sample_message("<second@shop.test>"))
    finally:
        controller.stop()


def test_closing_reply_resends_over_new_connection() -> None:
    recorder = RefusingRecorder(refuse_at=2, refusal="421 4.3.2 Closing channel")
    send_two(recorder)
    ids = [message["Message-ID"] for message in recorder.messages]
    assert ids == ["<first@shop.test>", "<second@shop.test>"]
    assert recorder.mail_commands == 3
    # The refused session was replaced by a second one.
    assert len(recorder.greetings) == 2


def test_temporary_refusal_is_not_resent() -> None:
    recorder = RefusingRecorder(refuse_at=2, refusal="451 4.3.0 Try again later")
    with pytest.raises(MailDeliveryError, match="451"):
        send_two(recorder)
    assert [message["Message-ID"] for message in recorder.messages] == [
        "<first@shop.test>"
    ]
    assert recorder.mail_commands == 2
    assert len(recorder.greetings) == 1


def test_kept_connection_carries_next_message() -> None:
    recorder = RefusingRecorder()
    send_two(recorder)
    assert len(recorder.messages) == 2
    assert len(recorder.greetings) == 1
