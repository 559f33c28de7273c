"""Payment submission: bind a txId to an order, check it on chain, apply the result.

A submission runs in two transactions with the chain check between them, so no
database transaction (on SQLite, the write lock) stays open during a node request:

1. `submit_payment` locks the order, checks it can be paid, binds the txId (unique
   across orders), sets the payment in progress and enqueues a `payment.recheck` job.
2. `apply_check` locks the order again and applies the check, if the payment is still
   in progress with that txId.

The recheck job repeats step 2 until the payment is confirmed, failed or dropped, so
a crash between the steps or a transaction that is not yet confirmed loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.services import enqueue
from orderdesk.orders.models import Order
from orderdesk.orders.serialization import (
    effective_quote_status,
    order_email,
)
from orderdesk.orders.services import record_event
from orderdesk.orders.statuses import (
    DeliveryStatus,
    LineItemQuoteStatus,
    PaymentState,
    Phase,
    QuoteStatus,
)
from orderdesk.payments.amounts import format_amount, from_base_units, to_base_units
from orderdesk.payments.chains import Chain, ChainRegistry, Token
from orderdesk.payments.exceptions import ChainUnavailable, PaymentConflict
from orderdesk.payments.verification import (
    FailureCode,
    Outcome,
    PaymentCheck,
    check_payment,
)

log = structlog.get_logger(__name__)

RECHECK_JOB = "payment.recheck"
FULFILMENT_JOB = "fulfilment.start"
SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class PendingCheck:
    """The inputs of one submission's chain check, copied out of the order."""

    order_id: str
    tx_id: str
    chain: str
    currency: str
    treasury: str
    required_base_units: int
    payer: str | None
    # True once a check may already have seen the transaction, so that a
    # transaction the node no longer has counts as dropped, not as unknown.
    seen_before: bool


def submit_payment(
    session: Session,
    settings: Settings,
    chains: ChainRegistry,
    order: Order,
    tx_id: str,
    actor: str,
) -> PendingCheck | None:
    """Bind `tx_id` to the locked `order` and start checking it (step 1).

    Returns the check to run next, or None when there is nothing to check: the same
    txId already completed this order, or the txId is bound to another order (then
    the order carries failureReason tx-already-used and stays awaiting payment).
    Raises PaymentConflict (409) when the order cannot take a payment now.
    """
    tx_id = tx_id.lower()
    if order.payment_tx_id == tx_id:
        # The same txId again: nothing changes, but an unfinished check runs again.
        if order.payment_state == PaymentState.IN_PROGRESS:
            return pending_check(order, chains, seen_before=True)
        return None
    now = utcnow()
    _check_payable(order, chains, now)
    if _used_elsewhere(session, order, tx_id) or not _bind(session, order, tx_id):
        _record_failure(
            session,
            order,
            FailureCode.TX_ALREADY_USED,
            f"Transaction {tx_id} already paid for another order, and one transaction "
            f"can pay one order only. Send a new transfer of "
            f"{format_amount(order.total_amount)} {order.currency.upper()} and submit "
            "its txId.",
            actor,
            chains,
            tx_id=tx_id,
        )
        return None
    order.payment_state = PaymentState.IN_PROGRESS
    order.failure_code = order.failure_message = None
    order.updated_at = now
    record_event(
        session,
        order,
        "payment.submitted",
        actor,
        from_state=PaymentState.UNPAID,
        to_state=PaymentState.IN_PROGRESS,
        data={"txId": tx_id, "chain": order.payment_method},
    )
    enqueue(
        session,
        RECHECK_JOB,
        {"order_id": order.id, "tx_id": tx_id},
        delay_seconds=settings.payment_recheck_seconds,
    )
    log.info(
        "payment_submitted", order_id=order.id, tx_id=tx_id, chain=order.payment_method
    )
    return pending_check(order, chains, seen_before=False)


def _check_payable(order: Order, chains: ChainRegistry, now: datetime) -> None:
    if order.payment_state == PaymentState.COMPLETED:
        raise PaymentConflict(
            f"Order {order.id} is already paid by transaction {order.payment_tx_id}. "
            "Create a new order to buy again.",
            code="order_already_paid",
        )
    if order.payment_state == PaymentState.IN_PROGRESS:
        raise PaymentConflict(
            f"Order {order.id} is already checking transaction {order.payment_tx_id}. "
            "Wait until that check completes or fails, then submit again.",
            code="payment_in_progress",
        )
    quote_status = effective_quote_status(order, now)
    if quote_status == QuoteStatus.EXPIRED:
        raise PaymentConflict(
            f"The quote of order {order.id} expired at {order.expires_at.isoformat()}. "
            "Update the order (PATCH) to get a new quote, then pay.",
            code="quote_expired",
        )
    if quote_status != QuoteStatus.VALID:
        raise PaymentConflict(
            f"Order {order.id} cannot be paid while its quote status is "
            f"{quote_status}. Complete the recipient and address first.",
            code="order_not_payable",
        )
    if not order_email(order):
        raise PaymentConflict(
            f"Order {order.id} has no email for its receipt and delivery updates. "
            "Set recipient.email or payment.receiptEmail, then pay.",
            code="order_not_payable",
        )
    chain = chains.get(order.payment_method)
    if chain is None or order.currency not in chain.tokens:
        raise PaymentConflict(
            f"The payment method {order.payment_method} ({order.currency}) of order "
            f"{order.id} is no longer configured. Update the order's payment with one "
            f"of: {', '.join(chains.names()) or 'none'}.",
            code="order_not_payable",
        )


def _used_elsewhere(session: Session, order: Order, tx_id: str) -> bool:
    query = select(Order.id).where(Order.payment_tx_id == tx_id, Order.id != order.id)
    return session.scalar(query) is not None


def _bind(session: Session, order: Order, tx_id: str) -> bool:
    """Set the txId under the unique constraint; False when another order has it.

    The savepoint turns a concurrent binding of the same txId, which the check above
    cannot see, into a clean failure instead of an aborted transaction.
    """
    try:
        with session.begin_nested():
            order.payment_tx_id = tx_id
            session.flush()
    except IntegrityError:
        log.info("payment_tx_id_taken", order_id=order.id, tx_id=tx_id)
        return False
    return True


def pending_check(
    order: Order, chains: ChainRegistry, *, seen_before: bool
) -> PendingCheck:
    chain, token = _chain_and_token(chains, order)
    assert order.payment_tx_id is not None  # noqa: S101 - set by the caller
    return PendingCheck(
        order_id=order.id,
        tx_id=order.payment_tx_id,
        chain=chain.name,
        currency=token.currency,
        treasury=order.treasury_address,
        required_base_units=to_base_units(order.total_amount, token.decimals),
        payer=order.payer_address,
        seen_before=seen_before,
    )


def _chain_and_token(chains: ChainRegistry, order: Order) -> tuple[Chain, Token]:
    chain = chains.get(order.payment_method)
    if chain is None or order.currency not in chain.tokens:
        raise ChainUnavailable(order.payment_method, "the chain is not configured")
    return chain, chain.tokens[order.currency]


def run_check(chains: ChainRegistry, pending: PendingCheck) -> PaymentCheck:
    """Check the transaction on its chain. Call it with no transaction open.

    Raises ChainUnavailable when the node cannot be reached.
    """
    chain = chains.get(pending.chain)
    if chain is None or pending.currency not in chain.tokens:
        raise ChainUnavailable(pending.chain, "the chain is not configured")
    return check_payment(
        chain,
        chain.tokens[pending.currency],
        pending.tx_id,
        pending.treasury,
        pending.required_base_units,
        pending.payer,
        seen_before=pending.seen_before,
    )


def apply_check(
    session: Session,
    chains: ChainRegistry,
    pending: PendingCheck,
    check: PaymentCheck,
    actor: str = SYSTEM_ACTOR,
) -> Order | None:
    """Apply a chain check to the order (step 2), if it still awaits this txId.

    Confirmed completes the payment and starts fulfilment; failed and dropped unbind
    the txId and put the payment back to awaiting payment; pending changes nothing.
    Returns the order, or None when it no longer exists.
    """
    order = session.scalar(
        select(Order)
        .where(Order.id == pending.order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if order is None:
        return None
    if (
        order.payment_state != PaymentState.IN_PROGRESS
        or order.payment_tx_id != pending.tx_id
    ):
        return order  # another check already applied a result
    if check.outcome == Outcome.CONFIRMED:
        _complete(session, chains, order, pending, check, actor)
    elif check.outcome == Outcome.FAILED:
        assert check.code is not None and check.message is not None  # noqa: S101
        _unbind(session, chains, order, check.code, check.message, actor)
    elif check.outcome == Outcome.DROPPED:
        # The API has no code of its own for this: to the buyer the transaction is
        # no longer found, and the message states that it dropped out of the chain.
        _unbind(
            session,
            chains,
            order,
            FailureCode.TX_ID_NOT_FOUND,
            check.message or "",
            actor,
        )
    return order


def _complete(
    session: Session,
    chains: ChainRegistry,
    order: Order,
    pending: PendingCheck,
    check: PaymentCheck,
    actor: str,
) -> None:
    _chain, token = _chain_and_token(chains, order)
    received = check.received_base_units or 0
    amount = from_base_units(received, token.decimals)
    now = utcnow()
    order.payment_state = PaymentState.COMPLETED
    order.paid_from = check.payer
    order.received_base_units = str(received)
    order.received_amount = amount
    order.paid_at = now
    order.failure_code = order.failure_message = None
    order.updated_at = now
    record_event(
        session,
        order,
        "payment.received",
        actor,
        from_state=PaymentState.IN_PROGRESS,
        to_state=PaymentState.COMPLETED,
        data={
            "amount": format_amount(amount),
            "currency": order.currency,
            "txId": pending.tx_id,
            "chain": order.payment_method,
            "payer": check.payer,
            "baseUnits": str(received),
            "blockNumber": check.block_number,
        },
    )

    _start_delivery(session, order, actor)
    _emit(session, chains, order, "orders.payment.succeeded")
    _emit(session, chains, order, "orders.delivery.initiated")
    log.info(
        "payment_completed", order_id=order.id, tx_id=pending.tx_id, base_units=received
    )


def _start_delivery(session: Session, order: Order, actor: str) -> None:
    """Move a paid order to phase delivery and enqueue its fulfilment."""
    record_event(
        session,
        order,
        "order.phase_changed",
        actor,
        from_state=order.phase,
        to_state=Phase.DELIVERY,
    )
    order.phase = Phase.DELIVERY
    for item in order.line_items:
        # Unavailable items were not charged, so they are not delivered either.
        if item.quote_status != LineItemQuoteStatus.VALID:
            continue
        if item.delivery_status != DeliveryStatus.AWAITING_PAYMENT:
            continue
        record_event(
            session,
            order,
            "line_item.delivery_status_changed",
            actor,
            subject_id=item.id,
            from_state=item.delivery_status,
            to_state=DeliveryStatus.IN_PROGRESS,
            data={"lineItem": item.index},
        )
        item.delivery_status = DeliveryStatus.IN_PROGRESS
    enqueue(
        session,
        FULFILMENT_JOB,
        {"order_id": order.id},
        dedupe_key=f"{FULFILMENT_JOB}:{order.id}",
    )


def _unbind(
    session: Session,
    chains: ChainRegistry,
    order: Order,
    code: str,
    message: str,
    actor: str,
) -> None:
    tx_id = order.payment_tx_id
    order.payment_tx_id = None
    order.payment_state = PaymentState.UNPAID
    _record_failure(
        session,
        order,
        code,
        message,
        actor,
        chains,
        tx_id=tx_id,
        from_state=PaymentState.IN_PROGRESS,
    )


def _record_failure(
    session: Session,
    order: Order,
    code: str,
    message: str,
    actor: str,
    chains: ChainRegistry,
    *,
    tx_id: str | None,
    from_state: str = PaymentState.UNPAID,
) -> None:
    order.failure_code = code
    order.failure_message = message
    order.updated_at = utcnow()
    record_event(
        session,
        order,
        "payment.failed",
        actor,
        from_state=from_state,
        to_state=PaymentState.UNPAID,
        data={"txId": tx_id, "code": str(code), "message": message},
    )
    _emit(session, chains, order, "orders.payment.failed")
    log.info("payment_failed", order_id=order.id, tx_id=tx_id, code=str(code))


def _emit(
    session: Session, chains: ChainRegistry, order: Order, event_type: str
) -> None:
    from orderdesk.webhooks.notify import order_event

    order_event(session, order, event_type, chains)
