"""Refund request statuses, the moves allowed between them, and payout states."""

from __future__ import annotations

from enum import StrEnum

from orderdesk.refunds.models import (
    ACTIVE_STATUSES,
    HISTORY_EVENT_KINDS,
    LIVE_PAYOUT_STATES,
)


class RefundStatus(StrEnum):
    INITIATED = "refund-request-initiated"
    ACCEPTED = "refund-request-accepted"
    REJECTED = "refund-request-rejected"
    COMPLETED = "refund-request-completed"


# Every other move is rejected with 409 invalid_transition.
ALLOWED_MOVES: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.INITIATED: frozenset({RefundStatus.ACCEPTED, RefundStatus.REJECTED}),
    RefundStatus.ACCEPTED: frozenset({RefundStatus.COMPLETED}),
    RefundStatus.REJECTED: frozenset(),
    RefundStatus.COMPLETED: frozenset(),
}

# A request in one of these statuses blocks a new one for the same line item. The
# partial unique index in refunds.models lists the same values in SQL.
ACTIVE = frozenset(RefundStatus(status) for status in ACTIVE_STATUSES)


def can_move(current: str, target: RefundStatus) -> bool:
    return target in ALLOWED_MOVES.get(RefundStatus(current), frozenset())


class RefundOrigin(StrEnum):
    # A buyer's request, reviewed by the merchant.
    BUYER = "buyer"
    # Created by the service when the outbound parcel went back to the sender: there
    # is nothing to return, so it starts accepted with the return received.
    DELIVERY_FAILED = "delivery-failed"


class PayoutStatus(StrEnum):
    """`payout.status` of a refund, as the API shows it."""

    # The return is received and the payout job is queued.
    SCHEDULED = "scheduled"
    # A transfer is signed, and it is being sent or waits for confirmations.
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    # The treasury has less of the token than the refund amount. Retried.
    FAILED_INSUFFICIENT_FUNDS = "failed-insufficient-funds"
    # The treasury cannot pay the gas of the transfer (real chains only). Retried.
    FAILED_INSUFFICIENT_GAS = "failed-insufficient-gas"
    # Nothing to pay with or to: the chain or token is no longer configured, or the
    # order has no recorded payer. Retried, so fixing the configuration resumes it.
    FAILED_NOT_PAYABLE = "failed-not-payable"
    # The transfer was mined but its receipt shows no matching Transfer event. Not
    # retried: an operator has to look at it before anything is sent again.
    FAILED_TRANSFER_MISMATCH = "failed-transfer-mismatch"


class TransactionState(StrEnum):
    """The state of one signed payout transaction (a `Payout` row)."""

    # Stored and committed, but maybe not yet sent to any node.
    SIGNED = "signed"
    # A node accepted it at least once.
    SENT = "sent"
    CONFIRMED = "confirmed"
    # Proven never to move tokens: it reverted, or its nonce was taken by another
    # transaction in a confirmed block. Only then is a new transfer signed.
    DEAD = "dead"


# The partial unique index in refunds.models lists the same values in SQL.
LIVE_TRANSACTION_STATES = frozenset(TransactionState(s) for s in LIVE_PAYOUT_STATES)


class RefundEvent(StrEnum):
    """`OrderEvent.kind` values written for refunds."""

    REQUESTED = "refund.requested"
    # An automatic refund, created already accepted.
    CREATED = "refund.created"
    STATUS_CHANGED = "refund.status_changed"
    RETURN_LABEL_ISSUED = "refund.return_label_issued"
    RETURN_RECEIVED = "refund.return_received"
    PAYOUT_SIGNED = "refund.payout_signed"
    PAYOUT_FAILED = "refund.payout_failed"
    PAYOUT_REPLACED = "refund.payout_replaced"


# The events that make up a refund's `history`, each setting its status. The
# relationship Refund.history_events selects the same kinds.
HISTORY_EVENTS = frozenset(RefundEvent(kind) for kind in HISTORY_EVENT_KINDS)
