"""Errors of refund requests, each with the stable code of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orderdesk.errors import Conflict, InvalidInput
from orderdesk.shipping.exceptions import OrderNotPaid
from orderdesk.timefmt import iso

__all__ = [
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "InvalidRefundRequest",
    "LineItemNotShipped",
    "OrderNotPaid",
    "RefundAlreadyRequested",
    "ReturnWindowExpired",
]


class InvalidRefundRequest(InvalidInput):
    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field} is invalid: {message}.",
            details=[{"field": field, "message": message}],
        )


class LineItemNotShipped(Conflict):
    code = "line_item_not_shipped"

    def __init__(self, order_id: str, line_item: int) -> None:
        super().__init__(
            f"Line item {line_item} of order {order_id} has not shipped yet, so it "
            "cannot be refunded. Request the refund once a package holds it."
        )


class ReturnWindowExpired(Conflict):
    code = "return_window_expired"

    def __init__(
        self, line_item: int, delivered_at: datetime, closed_at: datetime
    ) -> None:
        super().__init__(
            f"The return window of line item {line_item} closed at {iso(closed_at)}, "
            f"{(closed_at - delivered_at).days} days after its delivery at "
            f"{iso(delivered_at)}. It can no longer be refunded.",
            extra={
                "deliveredAt": iso(delivered_at),
                "returnWindowClosedAt": iso(closed_at),
            },
        )


class RefundAlreadyRequested(Conflict):
    code = "refund_already_requested"

    def __init__(self, line_item: int, refund: dict[str, Any]) -> None:
        super().__init__(
            f"Line item {line_item} already has refund request {refund['refundId']} "
            f"({refund['status']}). Follow that request: a new one is possible "
            "only after it is rejected.",
            extra={"refund": refund},
        )


class InvalidIdempotencyKey(InvalidInput):
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request in "
            "the last 24 hours. Send a new key for a new request."
        )
