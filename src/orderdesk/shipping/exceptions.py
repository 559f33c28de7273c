"""Errors of shipments and tracking, each with the stable code of the API."""

from __future__ import annotations

from typing import Any

from orderdesk.errors import Conflict, InvalidInput, NotFound


class InvalidShipment(InvalidInput):
    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field} is invalid: {message}.",
            details=[{"field": field, "message": message}],
        )


class OrderNotPaid(Conflict):
    code = "order_not_paid"

    def __init__(self, order_id: str, payment_state: str, action: str) -> None:
        super().__init__(
            f"Order {order_id} is not paid (payment is {payment_state}), so {action} "
            "is not possible yet. Wait until its payment completes."
        )


class PackageExists(Conflict):
    code = "package_exists"

    def __init__(
        self, carrier: str, tracking_number: str, package: dict[str, Any] | None = None
    ) -> None:
        # The existing package is shown only when it belongs to the same order, so a
        # tracking number cannot reveal another project's order.
        super().__init__(
            f"A package with carrier {carrier!r} and tracking number {tracking_number} "
            "is already recorded. Record each parcel once.",
            extra={"package": package} if package is not None else None,
        )


class PackageNotFound(NotFound):
    code = "package_not_found"

    def __init__(self, package_id: str, order_id: str) -> None:
        super().__init__(
            f"No package {package_id!r} exists on order {order_id}. Check the "
            "packageId returned when the shipment was recorded."
        )
