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
from orderdesk.shipping.services import record_package
from orderdesk.shipping.statuses import PackageKind

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
    order = _lock_order_of(session, refund_id)
    if order is None:
        return
    refund = _lock_refund(session, refund_id)
    if refund is None or not _needs_label(refund):
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
    package = record_package(
        session,
        order,
        label.carrier,
        label.tracking_number,
        [refund.line_item],
        kind=PackageKind.RETURN,
        refund_id=refund.id,
        actor=actor,
        order_locked=True,
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


def _lock_order_of(session: Session, refund_id: str) -> Order | None:
    """Lock and reload the order of the refund with its line items, in one query,
    as `shipping.rollup.lock_order` locks it."""
    order_id = select(Refund.order_id).where(Refund.id == refund_id)
    query = (
        select(Order)
        .where(Order.id == order_id.scalar_subquery())
        .options(joinedload(Order.line_items))
        .with_for_update(of=Order)
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).unique().first()


def _lock_refund(session: Session, refund_id: str) -> Refund | None:
    """Lock and reload the refund like `services.lock_refund`, without loading its
    history, which issuing a label does not read."""
    query = (
        select(Refund)
        .where(Refund.id == refund_id)
        .options(lazyload(Refund.history_events))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def _needs_label(refund: Refund) -> bool:
    return (
        refund.status == RefundStatus.ACCEPTED
        and refund.return_tracking_number is None
        and refund.return_received_at is None
    )
