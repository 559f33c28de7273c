"""Refund emails built from the templates."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from orderdesk.labels.pdf import Address, ReturnLabel, render_return_label
from orderdesk.mail.messages import (
    MailContentError,
    MailKind,
    RefundMail,
    build_refund_message,
    message_domain,
    refund_message_id,
)

REFUND_ID = "6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"
ORDER_ID = "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a"
TRACKING = "9202123456789012345678"
SETTINGS = SimpleNamespace(mail_from="Lumen Home <orders@lumen.example>")
SENT_AT = datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)
XSS = '<script>alert(1)</script> & "quotes"'


def label_pdf() -> bytes:
    address = Address("Jordan Lee", "350 Fifth Avenue", "New York", "10118", "US")
    label = ReturnLabel(REFUND_ID, "USPS", TRACKING, address, address, "Bottle", 2)
    return render_return_label(label)


def refund_mail(kind: MailKind, **changes: object) -> RefundMail:
    mail = RefundMail(
        kind=kind,
        refund_id=REFUND_ID,
        order_id=ORDER_ID,
        to_email="jordan@example.com",
        to_name="Jordan Lee",
        item_name="Insulated Water Bottle",
        quantity=2,
        amount=Decimal("53.4"),
        currency="usdc",
        carrier="USPS",
        tracking_number=TRACKING,
        label_pdf=label_pdf(),
        rejection_reason="The seal is broken.",
        payout_tx_id="0x" + "ab" * 32,
        payout_chain="devnet",
        payout_address="0x" + "cd" * 20,
    )
    return replace(mail, **changes)  # type: ignore[arg-type]


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


def test_message_id_is_stable() -> None:
    first = build_refund_message(refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS)
    second = build_refund_message(refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS)
    expected = f"<refund-{REFUND_ID}-accepted@lumen.example>"
    assert first["Message-ID"] == expected
    assert second["Message-ID"] == expected
    assert refund_message_id(REFUND_ID, MailKind.REFUND_ACCEPTED, "lumen.example") == (
        expected
    )


def test_message_id_differs_by_kind() -> None:
    ids = {
        build_refund_message(refund_mail(kind), SETTINGS)["Message-ID"]
        for kind in MailKind
    }
    assert len(ids) == 3


def test_same_inputs_same_bytes() -> None:
    mail = refund_mail(MailKind.REFUND_ACCEPTED)
    first = build_refund_message(mail, SETTINGS, date=SENT_AT).as_bytes()
    second = build_refund_message(mail, SETTINGS, date=SENT_AT).as_bytes()
    assert first == second


def test_headers_are_set() -> None:
    message = build_refund_message(
        refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS, date=SENT_AT
    )
    assert message["From"] == "Lumen Home <orders@lumen.example>"
    assert message["To"] == "Jordan Lee <jordan@example.com>"
    assert message["Date"] == "Sun, 01 Mar 2026 17:05:09 +0000"
    assert message["Auto-Submitted"] == "auto-generated"
    assert REFUND_ID in message["Subject"]


def test_accepted_has_label_attachment() -> None:
    message = build_refund_message(refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS)
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    attachment = attachments[0]
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"return-label-{REFUND_ID}.pdf"
    text = PdfReader(io.BytesIO(attachment.get_content())).pages[0].extract_text()
    assert TRACKING in text
    assert REFUND_ID in text


def test_accepted_states_instructions() -> None:
    message = build_refund_message(refund_mail(MailKind.REFUND_ACCEPTED), SETTINGS)
    text, html = parts(message)
    for body in (text, html):
        assert REFUND_ID in body
        assert TRACKING in body
        assert "USPS" in body
        assert "Print the attached return label" in body
        assert "53.40 USDC" in body


def test_rejected_reason_escaped_in_html() -> None:
    mail = refund_mail(MailKind.REFUND_REJECTED, rejection_reason=XSS)
    text, html = parts(build_refund_message(mail, SETTINGS))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34;" in html
    assert XSS in text
    assert "&lt;" not in text


def test_item_name_escaped_in_html() -> None:
    mail = refund_mail(MailKind.REFUND_ACCEPTED, item_name="<b>Mug</b>")
    text, html = parts(build_refund_message(mail, SETTINGS))
    assert "<b>Mug</b>" not in html
    assert "&lt;b&gt;Mug&lt;/b&gt;" in html
    assert "<b>Mug</b>" in text


def test_rejected_has_no_attachment() -> None:
    message = build_refund_message(refund_mail(MailKind.REFUND_REJECTED), SETTINGS)
    assert list(message.iter_attachments()) == []


def test_completed_is_a_receipt() -> None:
    message = build_refund_message(refund_mail(MailKind.REFUND_COMPLETED), SETTINGS)
    text, html = parts(message)
    for body in (text, html):
        assert "53.40 USDC" in body
        assert "0x" + "ab" * 32 in body
        assert "devnet" in body
        assert "0x" + "cd" * 20 in body
    assert list(message.iter_attachments()) == []


def test_non_ascii_content_survives() -> None:
    mail = refund_mail(
        MailKind.REFUND_REJECTED, to_name="Zoë Ørsted", rejection_reason="Größe – 日本"
    )
    raw = build_refund_message(mail, SETTINGS).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["To"] == "Zoë Ørsted <jordan@example.com>"
    text, html = parts(parsed)  # type: ignore[arg-type]
    assert "Größe – 日本" in text
    assert "Größe – 日本" in html


@pytest.mark.parametrize(
    ("kind", "missing"),
    [
        (MailKind.REFUND_ACCEPTED, {"tracking_number": None}),
        (MailKind.REFUND_ACCEPTED, {"label_pdf": None}),
        (MailKind.REFUND_REJECTED, {"rejection_reason": None}),
        (MailKind.REFUND_COMPLETED, {"payout_tx_id": None}),
    ],
)
def test_missing_field_is_rejected(kind: MailKind, missing: dict[str, None]) -> None:
    with pytest.raises(MailContentError) as raised:
        build_refund_message(refund_mail(kind, **missing), SETTINGS)
    assert next(iter(missing)) in str(raised.value)


@pytest.mark.parametrize("address", ["not-an-address", "a@b\r\nBcc: x@evil.test"])
def test_invalid_recipient_is_rejected(address: str) -> None:
    mail = refund_mail(MailKind.REFUND_REJECTED, to_email=address)
    with pytest.raises(MailContentError, match="not a valid email address"):
        build_refund_message(mail, SETTINGS)


def test_domain_comes_from_sender() -> None:
    assert message_domain(SETTINGS) == "lumen.example"
    assert message_domain(SimpleNamespace(mail_from="no-domain")) == (
        "orderdesk.localhost"
    )
