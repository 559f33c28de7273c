"""Errors of refund requests, each with the stable code of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orderdesk.errors import Conflict, InvalidInput, NotFound
from orderdesk.shipping.exceptions import OrderNotPaid
from orderdesk.timefmt import iso

__all__ = [
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "InvalidRefundRequest",
    "InvalidTransition",
    "LineItemNotShipped",
    "OrderNotPaid",
    "RefundAlreadyRequested",
    "RefundNotFound",
    "ReturnAlreadyReceived",
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


class RefundNotFound(NotFound):
    code = "refund_not_found"

    def __init__(self, refund_id: str, order_id: str) -> None:
        super().__init__(
            f"No refund {refund_id[:60]!r} exists on order {order_id}. Check the "
            "refundId returned when the refund was requested."
        )


class InvalidTransition(Conflict):
    """The refund's status does not allow the requested move."""

    code = "invalid_transition"

    def __init__(
        self, refund_id: str, current: str, action: str, allowed: list[str]
    ) -> None:
        if allowed:
            next_steps = f"From {current} it can only move to {', '.join(allowed)}."
        else:
            next_steps = f"{current} is final."
        super().__init__(
            f"Refund {refund_id} is {current}, so it cannot be {action}. {next_steps}",
            extra={"currentStatus": current},
        )


class ReturnAlreadyReceived(Conflict):
    code = "return_already_received"

    def __init__(self, refund_id: str, received_at: datetime) -> None:
        super().__init__(
            f"The return of refund {refund_id} was already marked received at "
            f"{iso(received_at)} and its payout has started. Follow the refund's "
            "payout for its progress.",
            extra={"returnReceivedAt": iso(received_at)},
        )
