"""Errors of the webhook endpoints API, each with a stable code."""

from __future__ import annotations

from orderdesk.errors import Conflict, InvalidInput, NotFound


class InvalidWebhookInput(InvalidInput):
    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field} is invalid: {message}.",
            details=[{"field": field, "message": message}],
        )


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(
            f"No webhook endpoint {endpoint_id!r} exists in this project. Check the id "
            "returned when the endpoint was created."
        )


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"

    def __init__(self, delivery_id: str, endpoint_id: str) -> None:
        super().__init__(
            f"No delivery {delivery_id!r} exists for webhook endpoint {endpoint_id}. "
            "List the endpoint's deliveries to find its ids."
        )


class DeliveryStillPending(Conflict):
    code = "webhook_delivery_pending"

    def __init__(self, delivery_id: str) -> None:
        super().__init__(
            f"Delivery {delivery_id} is still pending, so it cannot be resent yet. "
            "Resend it once it is delivered or failed."
        )


class TooManyEndpoints(Conflict):
    code = "too_many_webhook_endpoints"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This project already has {limit} webhook endpoints, the maximum. Delete "
            "one, or subscribe an existing endpoint to more event types."
        )
