"""Payment errors with a stable code."""

from __future__ import annotations

from orderdesk.errors import Conflict, ServiceUnavailable


class ChainUnavailable(ServiceUnavailable):
    """The chain's node could not be reached or returned an error.

    Callers keep a payment in progress and check again later.
    """

    code = "chain_unavailable"

    def __init__(self, chain: str, reason: str) -> None:
        super().__init__(
            f"The {chain} node could not be reached ({reason}). Retry shortly.",
            headers={"Retry-After": "5"},
        )
        self.chain = chain
        self.reason = reason


class PaymentConflict(Conflict):
    """The order's state does not allow this payment request."""

    code = "payment_conflict"
