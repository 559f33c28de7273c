"""The message policy's caching header factory gives the bytes of policy.default."""

from __future__ import annotations

from email import policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from io import BytesIO

import pytest
from tests.mail.test_messages import SENT_AT, SETTINGS, XSS, refund_mail

from orderdesk.mail import messages
from orderdesk.mail.messages import MESSAGE_POLICY, MailKind, build_refund_message

VARIANTS = [
    {},
    {"to_name": "Zoë Ångström-Łukasiewicz"},
    {"to_name": None},
    {"item_name": "Bouteille isotherme « été » " * 6},
    {"rejection_reason": XSS},
    {"to_name": "A very long display name " * 5, "to_email": "long@example.com"},
]


def smtp_bytes(message: EmailMessage) -> bytes:
    """Serialize as smtplib's send_message does for an ASCII message."""
    buffer = BytesIO()
    BytesGenerator(buffer, policy=message.policy.clone(utf8=False)).flatten(
        message, linesep="\r\n"
    )
    return buffer.getvalue()


@pytest.mark.parametrize("kind", list(MailKind))
@pytest.mark.parametrize("changes", VARIANTS)
def test_cached_headers_same_bytes(
    kind: MailKind, changes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    mail = refund_mail(kind, **changes)
    # Twice, so that the second message is built from cached headers.
    build_refund_message(mail, SETTINGS, date=SENT_AT)
    cached = build_refund_message(mail, SETTINGS, date=SENT_AT)
    monkeypatch.setattr(messages, "MESSAGE_POLICY", policy.default)
    plain = build_refund_message(mail, SETTINGS, date=SENT_AT)

    assert cached.policy is MESSAGE_POLICY
    assert plain.policy is policy.default
    assert cached.as_bytes(policy=policy.default) == plain.as_bytes(
        policy=policy.default
    )
    assert smtp_bytes(cached) == smtp_bytes(plain)


def test_header_parsed_once() -> None:
    first = build_refund_message(
        refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS, date=SENT_AT
    )
    second = build_refund_message(
        refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS, date=SENT_AT
    )
    assert first["From"] is second["From"]
    assert first["Subject"] is second["Subject"]
    assert type(first["From"]) is type(second["From"])


def test_header_classes_built_once() -> None:
    factory = MESSAGE_POLICY.header_factory
    assert factory["Content-Type"] is factory["content-type"]
    assert factory["X-Unknown"] is factory["X-UNKNOWN"]
    assert factory["To"] is not factory["Subject"]
