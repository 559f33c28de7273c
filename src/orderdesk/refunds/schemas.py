"""Wire shapes of refund requests: the strict request body, the query and the reply."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Protocol

from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from orderdesk.orders.models import OrderEvent
from orderdesk.payments.amounts import format_amount
from orderdesk.refunds.exceptions import InvalidRefundRequest
from orderdesk.shipping.schemas import (
    LineItemIndex,
    StrictBody,
    first_control_character,
    json_repr,
)
from orderdesk.timefmt import iso

MAX_REASON_LENGTH = 1000
# A query value must be written as a plain JSON integer would be: no sign, no leading
# zero, no decimal point. Nine digits are far past any order and well inside the
# database's integer type.
_QUERY_INDEX = re.compile(r"0|[1-9][0-9]{0,8}", re.ASCII)


def check_reason(value: str) -> str:
    """Return the reason trimmed, raising ValueError unless it is 1 to 1000 characters
    after trimming and has no control characters other than newline and tab.

    Control characters are looked for before trimming, because Python's strip()
    also removes some of them (U+001C to U+001F, U+0085). Carriage return is a
    control character too, so CRLF line ends are rejected.
    """
    character = first_control_character(value, "\n\t")
    if character is not None:
        raise ValueError(
            f"must not contain control characters other than newline and tab "
            f"(found U+{ord(character):04X})"
        )
    text = value.strip()
    if not text:
        raise ValueError(
            "must not be empty or only whitespace, so describe the problem"
        )
    if len(text) > MAX_REASON_LENGTH:
        raise ValueError(
            f"must be at most {MAX_REASON_LENGTH} characters after trimming, "
            f"not {len(text)}"
        )
    return text


def _reason(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "reason_type", "Must be a string, not {value}.", {"value": json_repr(value)}
        )
    try:
        return check_reason(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "reason_invalid", "Reason {problem}.", {"problem": str(exc)}
        ) from exc


# The bounds hold after trimming, so the text as sent may carry more whitespace.
Reason = Annotated[
    str,
    PlainValidator(_reason),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_REASON_LENGTH},
        mode="validation",
    ),
]


class RefundRequestIn(StrictBody):
    line_item: LineItemIndex = Field(alias="lineItem")
    reason: Reason


def parse_line_item_query(values: list[str]) -> int | None:
    """Return the `lineItem` query value as an index, or None when absent.

    Raises InvalidRefundRequest for a repeated parameter or any text but a plain
    integer, so "01", "-1", "1.0", "+1" and "true" are rejected.
    """
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRefundRequest("lineItem", "must be given once")
    if not _QUERY_INDEX.fullmatch(values[0]):
        raise InvalidRefundRequest(
            "lineItem",
            f"{values[0][:40]!r} must be a line item index written as a plain integer "
            "such as 0",
        )
    return int(values[0])


class RejectionIn(StrictBody):
    reason: Reason


class NoFieldsIn(StrictBody):
    """A review request that takes no fields: an empty body or `{}`."""


class RefundView(Protocol):
    """The columns of a refund that its reply shows: a Refund row, or the values of
    a refund written without the ORM (see `refunds.lean`)."""

    @property
    def id(self) -> str: ...
    @property
    def order_id(self) -> str: ...
    @property
    def line_item(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def origin(self) -> str: ...
    @property
    def rejection_reason(self) -> str | None: ...
    @property
    def return_carrier(self) -> str | None: ...
    @property
    def return_tracking_number(self) -> str | None: ...
    @property
    def return_received_at(self) -> datetime | None: ...
    @property
    def payout_status(self) -> str | None: ...
    @property
    def payout_tx_id(self) -> str | None: ...
    @property
    def payout_chain(self) -> str | None: ...
    @property
    def payout_message(self) -> str | None: ...
    @property
    def history_events(self) -> list[OrderEvent]: ...


def refund_body(
    refund: RefundView, history: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The refund as the API shows it. `history` replaces the entries of the
    refund's loaded history, for a refund written without the ORM."""
    if history is None:
        history = [_history_entry(event) for event in refund.history_events]
    return_label = None
    if refund.return_tracking_number:
        return_label = {
            "carrierName": refund.return_carrier,
            "carrierTrackingNumber": refund.return_tracking_number,
        }
    return {
        "orderId": refund.order_id,
        "lineItem": refund.line_item,
        "reason": refund.reason,
        "status": refund.status,
        "refundId": refund.id,
        "createdAt": iso(refund.created_at),
        "updatedAt": iso(refund.updated_at),
        "amount": {"amount": format_amount(refund.amount), "currency": refund.currency},
        "origin": refund.origin,
        "rejectionReason": refund.rejection_reason,
        "returnLabel": return_label,
        "returnReceivedAt": iso(refund.return_received_at),
        "payout": payout_body(refund),
        "history": history,
    }


def _history_entry(event: OrderEvent) -> dict[str, Any]:
    # The actor is an id such as "api_key:<key id>" or "system", never a secret.
    return {"status": event.to_state, "at": iso(event.created_at), "actor": event.actor}


def payout_body(refund: RefundView) -> dict[str, Any] | None:
    """The refund's payout once its return is received, else None.

    `txId` is null until a transfer is signed. `message` describes the last problem,
    such as a treasury short of funds, and is null once the payout is confirmed.
    """
    if refund.payout_status is None:
        return None
    return {
        "status": refund.payout_status,
        "txId": refund.payout_tx_id,
        "chain": refund.payout_chain,
        "amount": format_amount(refund.amount),
        "currency": refund.currency,
        "message": refund.payout_message,
    }
