"""Return labels of accepted refunds, and the return parcel reaching the merchant.

The label provider is called outside any database transaction. With EasyPost it is
an HTTP request of up to `easypost_timeout_seconds`, and holding a transaction open
meanwhile would hold the refund's row lock, and on SQLite the write lock of the
whole database. So a label is issued in three steps:

1. claim: lock the refund and mark it claimed for LABEL_CLAIM_SECONDS, then commit;
2. ask the provider (it is idempotent per refund id, so a retry gets the same label);
3. store: lock order and refund, store carrier and tracking number, record the return
   parcel as a package of kind "return", enqueue the acceptance email, and commit.

The claim keeps two processes from requesting a label at once, which with EasyPost
could buy two labels. The accept request runs the steps right after its own commit, so
its reply normally shows the label. The `refund.return_label` job, enqueued by the
accept with a delay of LABEL_CLAIM_SECONDS, issues the label when that attempt failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, lazyload

from orderdesk.db.base import utcnow
from orderdesk.errors import OrderDeskError
from orderdesk.jobs.services import hand_over
from orderdesk.labels.exceptions import LabelError
from orderdesk.labels.providers import (
    IssuedLabel,
    create_return_label,
    issues_labels_locally,
)
from orderdesk.mail.messages import MailKind
from orderdesk.orders.models import Order
from orderdesk.refunds import review, services
from orderdesk.refunds.models import Refund
from orderdesk.refunds.statuses import RefundEvent, RefundStatus
from orderdesk.shipping.models import Package
from orderdesk.shipping.rollup import lock_order
from orderdesk.shipping.services import record_return_package

log = structlog.get_logger(__name__)


class LabelClaimed(Exception):
    """Another process is asking the label provider for this refund's label."""

    def __init__(self, refund_id: str, until: datetime) -> None:
        super().__init__(f"the label of refund {refund_id} is claimed until {until}")
        self.until = until


@dataclass(frozen=True)
class ReturnedItem:
    name: str
    quantity: int


@dataclass(frozen=True)
class LabelClaim:
    """The provider's inputs, copied out of the rows before the commit."""

    refund_id: str
    order_id: str
    order_recipient: dict[str, Any] | None
    item: ReturnedItem


def issue_return_label(
    session: Session, settings: Any, refund_id: str, *, actor: str
) -> None:
    """Issue and store the refund's return label, if it still needs one.

    Commits after the claim and after storing, so call it at the edge (a route, the
    CLI or the job), never inside a transaction with other changes. Raises
    LabelClaimed while another process holds the claim and LabelError when the
    provider fails; the claim is released on LabelError.
    """
    try:
        claim = claim_label(session, refund_id)
    except LabelClaimed:
        session.rollback()
        raise
    session.commit()
    if claim is None:
        return
    try:
        label = create_return_label(
            claim.refund_id, claim.order_recipient, claim.item, settings
        )
    except LabelError:
        release_label_claim(session, refund_id)
        session.commit()
        raise
    store_label(session, claim, label, actor=actor)
    session.commit()


def issue_return_label_in_job(
    session: Session, settings: Any, refund_id: str, *, actor: str
) -> None:
    """Issue and store the refund's return label in the job's own transaction.

    With the local provider this takes no claim and does not commit: rendering calls
    no outside service and gives the same label in every process, and only the
    first label stored counts, so the worker commits the label together with the
    job. A claim that another process holds is still respected (LabelClaimed).
    Other providers are called over the network, outside any transaction, by
    `issue_return_label`, which commits on its own.
    """
    if not issues_labels_locally(settings):
        issue_return_label(session, settings, refund_id, actor=actor)
        return
    # The locks come first, in the order of every writer (order, then refund), so
    # each row is read once. Rendering is local and short, and the locks last until
    # the job commits in any case.
    rows = _lock_order_and_refund(session, refund_id)
    if rows is None:
        return
    order, refund = rows
    if not _needs_label(refund):
        return
    claimed_until = refund.label_claimed_until
    if claimed_until is not None and claimed_until > utcnow():
        raise LabelClaimed(refund.id, claimed_until)
    claim = _claim_from_rows(order, refund)
    label = create_return_label(
        claim.refund_id, claim.order_recipient, claim.item, settings
    )
    _store_locked_label(session, order, refund, label, actor=actor)


def try_issue_return_label(
    session: Session, settings: Any, refund_id: str, *, actor: str
) -> None:
    """Run `issue_return_label` and log a failure instead of raising it, so the
    request that accepted the refund still succeeds. The label job retries later."""
    try:
        issue_return_label(session, settings, refund_id, actor=actor)
    except LabelClaimed:
        log.info("return_label_claimed_elsewhere", refund_id=refund_id)
    except OrderDeskError as exc:
        # A provider failure, or a conflict while storing such as a tracking number
        # recorded on another package.
        session.rollback()
        log.warning(
            "return_label_deferred",
            refund_id=refund_id,
            error=exc.message,
            code=exc.code,
        )


def claim_label(
    session: Session, refund_id: str, now: datetime | None = None
) -> LabelClaim | None:
    """Lock the refund and claim its label for LABEL_CLAIM_SECONDS.

    Returns None when no label is needed: the refund is not accepted, has a label,
    its return was already received, or it is an automatic refund. Raises
    LabelClaimed while another process holds the claim.
    """
    now = now or utcnow()
    refund = services.lock_refund(session, refund_id)
    if refund is None or not _needs_label(refund):
        return None
    if refund.label_claimed_until is not None and refund.label_claimed_until > now:
        raise LabelClaimed(refund.id, refund.label_claimed_until)
    refund.label_claimed_until = now + timedelta(seconds=review.LABEL_CLAIM_SECONDS)
    return _claim_of(session, refund)


def _claim_of(session: Session, refund: Refund) -> LabelClaim:
    return _claim_from_rows(session.get_one(Order, refund.order_id), refund)


def _claim_from_rows(order: Order, refund: Refund) -> LabelClaim:
    line = next(item for item in order.line_items if item.index == refund.line_item)
    return LabelClaim(
        refund_id=refund.id,
        order_id=order.id,
        order_recipient=order.recipient,
        item=ReturnedItem(name=line.name or line.locator, quantity=line.quantity),
    )


def release_label_claim(session: Session, refund_id: str) -> None:
    refund = services.lock_refund(session, refund_id)
    if refund is not None:
        refund.label_claimed_until = None


def store_label(
    session: Session, claim: LabelClaim, label: IssuedLabel, *, actor: str
) -> Package | None:
    """Store the issued label on the refund and record its return parcel.

    Returns the package, or None when the refund no longer needs the label (another
    process stored one, or the refund moved on meanwhile).
    """
    order = lock_order(session, claim.order_id)
    refund = services.lock_refund(session, claim.refund_id)
    if refund is None:
        return None
    return _store_locked_label(session, order, refund, label, actor=actor)


def _store_locked_label(
    session: Session, order: Order, refund: Refund, label: IssuedLabel, *, actor: str
) -> Package | None:
    """Store the label on the refund, whose order and refund rows the caller has
    locked. Return the package, or None when the refund no longer needs a label."""
    refund.label_claimed_until = None
    if not _needs_label(refund):
        return None
    package = record_return_package(
        session,
        order,
        label.carrier,
        label.tracking_number,
        refund.line_item,
        refund.id,
        actor=actor,
    )
    refund.return_carrier = package.carrier_name
    refund.return_tracking_number = package.tracking_number
    refund.updated_at = utcnow()
    services.record_refund_event(
        session,
        refund,
        RefundEvent.RETURN_LABEL_ISSUED,
        actor,
        data={
            "carrierName": package.carrier_name,
            "carrierTrackingNumber": package.tracking_number,
            "packageId": package.id,
        },
    )
    review.enqueue_mail(session, refund, MailKind.REFUND_ACCEPTED)
    # Both rows stay locked until the commit, so the acceptance email, when it runs
    # next in this worker, reads them as committed.
    hand_over(session, order, refund)
    log.info(
        "return_label_issued",
        order_id=order.id,
        refund_id=refund.id,
        package_id=package.id,
    )
    return package


def receive_return_parcel(session: Session, package: Package, actor: str) -> None:
    """Start the payout of the refund whose return parcel was delivered.

    Shipping calls this with the order locked, when a return package becomes
    delivered. A refund that is not accepted, or whose return was already marked
    received, is left as it is.
    """
    if package.refund_id is None:
        return
    refund = services.lock_refund(session, package.refund_id)
    if (
        refund is None
        or refund.status != RefundStatus.ACCEPTED
        or refund.return_received_at is not None
    ):
        log.info(
            "return_parcel_delivered_ignored",
            package_id=package.id,
            refund_id=package.refund_id,
            refund_status=refund.status if refund else None,
        )
        return
    order = session.get_one(Order, package.order_id)
    review.receive_return(session, order, refund, actor=actor, source="tracking")


def _lock_order_and_refund(
    session: Session, refund_id: str
) -> tuple[Order, Refund] | None:
    """Lock and reload the refund and its order with the order's line items, in one
    query. Return None when the refund is not found.

    `FOR UPDATE OF orders, refunds` makes PostgreSQL lock each joined row in the
    order of that list (ExecLockRows follows the query's row marks), so the order
    is locked before the refund as every writer does. The refund's history is not
    loaded, because issuing a label does not read it.
    """
    query = (
        select(Order, Refund)
        .join(Refund, Refund.order_id == Order.id)
        .where(Refund.id == refund_id)
        .options(joinedload(Order.line_items), lazyload(Refund.history_events))
        .with_for_update(of=[Order, Refund])
        .execution_options(populate_existing=True)
    )
    row = session.execute(query).unique().first()
    if row is None:
        return None
    order, refund = row
    return order, refund


def _needs_label(refund: Refund) -> bool:
    return (
        refund.status == RefundStatus.ACCEPTED
        and refund.return_tracking_number is None
        and refund.return_received_at is None
    )
