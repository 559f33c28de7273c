"""MIME boundaries derived from every part of a refund email."""

from __future__ import annotations

from email.message import EmailMessage

from tests.mail.test_messages import SENT_AT, SETTINGS, refund_mail

from orderdesk.mail.messages import MailKind, build_refund_message


def boundaries(message: EmailMessage) -> list[str]:
    return [str(part.get_boundary()) for part in message.walk() if part.is_multipart()]


def test_boundary_changes_with_attachment() -> None:
    mail = refund_mail(MailKind.REFUND_ACCEPTED)
    assert mail.label_pdf is not None
    other = refund_mail(MailKind.REFUND_ACCEPTED, label_pdf=mail.label_pdf + b"\n")
    first = build_refund_message(mail, SETTINGS, date=SENT_AT)
    second = build_refund_message(other, SETTINGS, date=SENT_AT)
    assert boundaries(first) != boundaries(second)


def test_boundary_changes_with_text() -> None:
    first = build_refund_message(
        refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS, date=SENT_AT
    )
    second = build_refund_message(
        refund_mail(MailKind.REFUND_ACCEPTED, item_name="Steel Water Bottle"),
        SETTINGS,
        date=SENT_AT,
    )
    assert boundaries(first) != boundaries(second)


def test_boundaries_are_unique_and_absent_from_parts() -> None:
    message = build_refund_message(
        refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS, date=SENT_AT
    )
    found = boundaries(message)
    assert len(found) == 2
    assert len(set(found)) == 2
    for part in message.walk():
        if part.is_multipart():
            continue
        for boundary in found:
            assert boundary.encode() not in part.as_bytes()
