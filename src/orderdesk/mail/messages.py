"""Build the refund emails: a text and an HTML part from Jinja2 templates.

HTML templates render with autoescaping, so a merchant's reason such as
`<script>` arrives as text. Plain-text templates render without escaping. Each
message has a Message-ID made from the refund id and the kind, and given the same
inputs and date the built message is byte for byte the same, MIME boundaries
included, so a retried job re-sends an identical message.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from enum import StrEnum
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from orderdesk.db.base import utcnow
from orderdesk.mail.backends import MailError
from orderdesk.payments.amounts import format_amount

DEFAULT_DOMAIN = "orderdesk.localhost"


class MailKind(StrEnum):
    REFUND_ACCEPTED = "refund_accepted"
    REFUND_REJECTED = "refund_rejected"
    REFUND_COMPLETED = "refund_completed"


# The part of the Message-ID that names the kind, and the fields each kind needs.
_ID_SUFFIX = {
    MailKind.REFUND_ACCEPTED: "accepted",
    MailKind.REFUND_REJECTED: "rejected",
    MailKind.REFUND_COMPLETED: "completed",
}
_REQUIRED = {
    MailKind.REFUND_ACCEPTED: ("carrier", "tracking_number", "label_pdf"),
    MailKind.REFUND_REJECTED: ("rejection_reason",),
    MailKind.REFUND_COMPLETED: ("payout_tx_id", "payout_chain"),
}
_SUBJECTS = {
    MailKind.REFUND_ACCEPTED: "Your return is approved: label for RMA {refund_id}",
    MailKind.REFUND_REJECTED: "Your return request was not approved (RMA {refund_id})",
    MailKind.REFUND_COMPLETED: "Your refund is complete (RMA {refund_id})",
}

_LOADER = PackageLoader("orderdesk.mail", "templates")
HTML_TEMPLATES = Environment(loader=_LOADER, autoescape=True, undefined=StrictUndefined)
# Plain-text parts are not HTML, so escaping would only corrupt them.
TEXT_TEMPLATES = Environment(
    loader=_LOADER,
    autoescape=False,  # noqa: S701
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


class _HeaderFactory(HeaderRegistry):
    """A header registry that builds each header class once and reuses the parsed
    header of a recent name and value.

    The standard registry builds a new class for every header it parses. Building
    an acceptance email parses 23 headers, most of them the same in every message
    (From, MIME-Version, the parts' Content-Type). A header object is an immutable
    str, so a shared one serializes exactly as a freshly parsed one does.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = super().__getitem__(name)
            self._classes[key] = cls
        return cls

    def __call__(self, name: str, value: str) -> BaseHeader:
        if type(value) is str:
            return _parse_header(self, name, value)
        return self[name](name, value)


@functools.lru_cache(maxsize=256)
def _parse_header(factory: _HeaderFactory, name: str, value: str) -> BaseHeader:
    return factory[name](name, value)


# policy.default with the caching header factory. A message built with it has the
# bytes of one built with policy.default (tests/mail/test_header_cache.py).
MESSAGE_POLICY = policy.default.clone(header_factory=_HeaderFactory())


class MailContentError(MailError):
    """A message lacks what its kind needs, or its recipient address is invalid."""


@dataclass(frozen=True)
class RefundMail:
    """The content of one refund email. Each kind needs the fields in _REQUIRED."""

    kind: MailKind
    refund_id: str
    order_id: str
    to_email: str
    to_name: str | None
    item_name: str
    quantity: int
    amount: Decimal
    currency: str
    carrier: str | None = None
    tracking_number: str | None = None
    label_pdf: bytes | None = field(default=None, repr=False)
    rejection_reason: str | None = None
    payout_tx_id: str | None = None
    payout_chain: str | None = None
    payout_address: str | None = None


def message_domain(settings: Any) -> str:
    """Return the Message-ID domain: that of `mail_from`, else orderdesk.localhost."""
    _name, address = parseaddr(str(getattr(settings, "mail_from", "") or ""))
    _local, at, domain = address.rpartition("@")
    domain = domain.strip().lower()
    return domain if at and domain and domain.isascii() else DEFAULT_DOMAIN


def refund_message_id(refund_id: str, kind: MailKind, domain: str) -> str:
    """Return the Message-ID of a refund email, fixed for one refund and kind."""
    return f"<refund-{refund_id}-{_ID_SUFFIX[MailKind(kind)]}@{domain}>"


def build_refund_message(
    mail: RefundMail, settings: Any, *, date: datetime | None = None
) -> EmailMessage:
    """Build the email for `mail`, dated `date` (default now).

    Raises MailContentError when a field the kind needs is missing or the recipient
    address is not a valid email address.
    """
    kind = MailKind(mail.kind)
    missing = [name for name in _REQUIRED[kind] if not getattr(mail, name)]
    if missing:
        raise MailContentError(
            f"A {kind} email for refund {mail.refund_id} needs {', '.join(missing)}."
        )
    message_id = refund_message_id(mail.refund_id, kind, message_domain(settings))
    subject = _SUBJECTS[kind].format(refund_id=mail.refund_id)
    context = _template_context(mail, subject)

    message = EmailMessage(policy=MESSAGE_POLICY)
    message["From"] = str(
        getattr(settings, "mail_from", "") or f"orders@{DEFAULT_DOMAIN}"
    )
    message["To"] = _recipient(mail)
    message["Subject"] = subject
    message["Date"] = format_datetime((date or utcnow()).astimezone(UTC))
    message["Message-ID"] = message_id
    # Marks the message as sent by a program, so autoresponders do not reply.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(TEXT_TEMPLATES.get_template(f"{kind}.txt").render(context))
    html = HTML_TEMPLATES.get_template(f"{kind}.html").render(context)
    message.add_alternative(html, subtype="html")
    if kind is MailKind.REFUND_ACCEPTED and mail.label_pdf:
        message.add_attachment(
            mail.label_pdf,
            maintype="application",
            subtype="pdf",
            filename=context["label_filename"],
        )
    _set_stable_boundaries(message)
    return message


def _template_context(mail: RefundMail, subject: str) -> dict[str, Any]:
    context = asdict(mail)
    context.pop("label_pdf")
    context.update(
        subject=subject,
        amount=format_amount(mail.amount),
        currency=mail.currency.upper(),
        label_filename=f"return-label-{mail.refund_id}.pdf",
    )
    return context


def _recipient(mail: RefundMail) -> str:
    try:
        return str(Address(display_name=mail.to_name or "", addr_spec=mail.to_email))
    except (ValueError, IndexError) as exc:
        raise MailContentError(
            f"The recipient address of refund {mail.refund_id} is not a valid email "
            f"address: {exc}."
        ) from exc


def _set_stable_boundaries(message: EmailMessage) -> None:
    """Replace the random MIME boundaries by ones derived from the content.

    A boundary is a hash of every part's headers and encoded body, which together
    fix the part's bytes, so a part could contain it only by containing a hash of
    itself. The parts are hashed as stored rather than serialized, which would take
    longer than building the message.
    """
    digest = hashlib.sha256()
    for part in message.walk():
        if part.is_multipart():
            continue
        for name, value in part.items():
            digest.update(f"{name}: {value}\n".encode("utf-8", "surrogateescape"))
        payload = part.get_payload()
        digest.update(f"\n{payload}\x00".encode("utf-8", "surrogateescape"))
    prefix = digest.hexdigest()[:32]
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_orderdesk_{prefix}_{index}")
