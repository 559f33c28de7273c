"""Record packages and their tracking events, and find them again.

These functions take a Session and never commit, so carrier webhooks and fulfilment
providers call them as the HTTP routes do. Writers lock the order row and then the
package row (always in that order), so concurrent events for one order apply one at
a time on PostgreSQL. SQLite serializes writers already.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from orderdesk.db.base import new_id, utcnow
from orderdesk.orders.models import Order, OrderEvent
from orderdesk.orders.revision import record_order_changes
from orderdesk.orders.statuses import PaymentState
from orderdesk.shipping.exceptions import InvalidShipment, OrderNotPaid, PackageExists
from orderdesk.shipping.models import Package, TrackingEvent
from orderdesk.shipping.rollup import lock_order, roll_up_delivery
from orderdesk.shipping.schemas import package_body
from orderdesk.shipping.statuses import PackageKind, PackageStatus, deciding_event
from orderdesk.shipping.tracking_urls import tracking_url as default_tracking_url
from orderdesk.shipping.validation import (
    MAX_CLOCK_SKEW,
    MAX_DEDUPE_KEY_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_LOCATION_LENGTH,
    TimeRange,
    check_line_items,
    check_occurred_at,
    check_status,
    check_time_range,
    check_tracking_url,
    clean_text,
    is_uuid,
    normalize_carrier,
    normalize_tracking_number,
)
from orderdesk.timefmt import iso
from orderdesk.webhooks import notify

__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_DEDUPE_KEY_LENGTH",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_LOCATION_LENGTH",
    "TimeRange",
    "TrackingUpdate",
    "event_dedupe_key",
    "find_package_by_tracking_number",
    "get_package",
    "list_packages",
    "normalize_carrier",
    "normalize_tracking_number",
    "record_package",
    "record_return_package",
    "record_tracking_event",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TrackingUpdate:
    """The outcome of recording one tracking event."""

    package: Package
    event: TrackingEvent
    # False when the same event was stored before: nothing changed.
    created: bool
    previous_status: str
    status: str

    @property
    def status_changed(self) -> bool:
        return self.previous_status != self.status


def find_package_by_tracking_number(
    session: Session, number: str, carrier: str | None = None
) -> Package | None:
    """Find the package with this tracking number in any spelling ("1z 999" matches
    "1Z999"). Without a carrier, return None when two carriers share the number."""
    try:
        normalized = normalize_tracking_number(number)
        code = normalize_carrier(carrier)[1] if carrier is not None else None
    except InvalidShipment:
        return None
    query = select(Package).where(Package.tracking_number == normalized)
    if code is not None:
        query = query.where(Package.carrier_key == code)
    matches = list(session.scalars(query.limit(2)))
    if len(matches) > 1:
        log.warning("tracking_number_ambiguous", tracking_number=normalized)
        return None
    return matches[0] if matches else None


def get_package(session: Session, order: Order, package_id: str) -> Package | None:
    package = session.get(Package, package_id) if is_uuid(package_id) else None
    if package is None or package.order_id != order.id:
        return None
    return package


def list_packages(session: Session, order_id: str) -> list[Package]:
    """Return the order's packages oldest first with their events, in one query."""
    query = (
        select(Package)
        .where(Package.order_id == order_id)
        .options(joinedload(Package.events))
        .order_by(Package.created_at, Package.id)
    )
    return list(session.scalars(query).unique())


def record_package(
    session: Session,
    order: Order,
    carrier: str,
    tracking_number: str,
    line_items: list[int],
    kind: str = PackageKind.OUTBOUND,
    refund_id: str | None = None,
    tracking_url: str | None = None,
    delivery_time_range: TimeRange | None = None,
    *,
    actor: str = "system",
    settings: Any | None = None,
    order_locked: bool = False,
) -> Package:
    """Record a parcel holding some of a paid order's line items.

    Without a tracking URL, the carrier's default page (or the template in
    `settings.tracking_url_templates`) is used. With `order_locked`, the caller has
    locked and reloaded the order in this transaction already (as
    `rollup.lock_order` does), so it is not locked and read again.

    Raises InvalidShipment for bad input, OrderNotPaid, and PackageExists when the
    carrier and tracking number are already recorded (on any order).
    """
    package, order = _new_package(
        session,
        order,
        carrier,
        tracking_number,
        line_items,
        kind,
        refund_id,
        tracking_url,
        delivery_time_range,
        settings=settings,
        order_locked=order_locked,
    )
    _raise_if_recorded(
        session,
        order,
        package.carrier_name,
        package.carrier_key,
        package.tracking_number,
    )
    try:
        # A concurrent request for the same number on another order holds no lock
        # this one waits for, so the unique constraint decides between them.
        with session.begin_nested():
            session.add(package)
    except IntegrityError:
        _raise_if_recorded(
            session,
            order,
            package.carrier_name,
            package.carrier_key,
            package.tracking_number,
        )
        raise
    _record_package_created(session, order, package, actor)
    if package.kind == PackageKind.OUTBOUND:
        roll_up_delivery(session, order, actor)
    return package


def record_return_package(
    session: Session,
    order: Order,
    carrier: str,
    tracking_number: str,
    line_item: int,
    refund_id: str,
    *,
    actor: str = "system",
) -> Package:
    """Record the parcel that returns a refund's line item, on an order that the
    caller has locked and reloaded in this transaction.

    It writes the same rows as `record_package` with kind "return" and raises the
    same errors. The package is inserted with ON CONFLICT DO NOTHING on its carrier
    and tracking number, which replaces the lookup before the insert and the
    savepoint around it, and the package's event is flushed with the caller's next
    writes. Only when the insert finds the number recorded is the other package
    read, to raise PackageExists.
    """
    package, order = _new_package(
        session,
        order,
        carrier,
        tracking_number,
        [line_item],
        PackageKind.RETURN,
        refund_id,
        order_locked=True,
    )
    package.id = new_id()
    inserted = _insert_unless_recorded(session, package)
    if inserted is None:
        _raise_if_recorded(
            session,
            order,
            package.carrier_name,
            package.carrier_key,
            package.tracking_number,
        )
        # The other package was deleted since the insert found it. A plain insert
        # now records this one, or fails on the unique constraint.
        session.add(package)
        session.flush()
    else:
        package = inserted
    # Nothing that is flushed changes which webhook endpoints subscribe, so the
    # event waits for the caller's next flush instead of flushing on its own.
    with session.no_autoflush:
        # Timed here rather than by the column default at the flush, so the event
        # has the columns of the refund's events and is inserted with them.
        _record_package_created(session, order, package, actor, created_at=utcnow())
    return package


def _new_package(
    session: Session,
    order: Order,
    carrier: str,
    tracking_number: str,
    line_items: list[int],
    kind: str,
    refund_id: str | None,
    tracking_url: str | None = None,
    delivery_time_range: TimeRange | None = None,
    *,
    settings: Any | None = None,
    order_locked: bool,
) -> tuple[Package, Order]:
    """Check the input and build the package, not yet added to the session. Lock
    and reload the order unless `order_locked`. Return the package and the order."""
    carrier_name, carrier_key = normalize_carrier(carrier)
    number = normalize_tracking_number(tracking_number)
    indexes = check_line_items(order, line_items)
    tracking_url = check_tracking_url(tracking_url) or default_tracking_url(
        carrier_name, number, settings
    )
    estimate = check_time_range(delivery_time_range, "deliveryTimeRange")
    package_kind = PackageKind(kind)

    if not order_locked:
        order = lock_order(session, order.id)
    if order.payment_state != PaymentState.COMPLETED:
        raise OrderNotPaid(order.id, order.payment_state, "recording a shipment")

    now = utcnow()
    package = Package(
        order_id=order.id,
        kind=package_kind,
        refund_id=refund_id,
        carrier_name=carrier_name,
        carrier_key=carrier_key,
        tracking_number=number,
        tracking_url=tracking_url,
        line_items=indexes,
        status=PackageStatus.PENDING,
        created_at=now,
        updated_at=now,
        events=[],
    )
    if estimate is not None:
        package.lower_bound = estimate.lower_bound
        package.upper_bound = estimate.upper_bound
        package.estimate_at = now
    return package, order


def _insert_unless_recorded(session: Session, package: Package) -> Package | None:
    """Insert the transient `package` in one statement unless its carrier and
    tracking number are recorded. Return the inserted row, or None."""
    values = {
        column.key: getattr(package, column.key) for column in Package.__table__.columns
    }
    statement = _insert_unless_recorded_statement(session.get_bind().dialect.name)
    # NOTE: the ORM leaves None values out of such an INSERT, so a column left
    # None would get its column default. `_new_package` sets every column that has
    # one, and the caller sets the id.
    inserted = session.scalars(statement, values).first()
    if inserted is None:
        return None
    # A new package has no tracking events, and the revision listener records only
    # the rows that the session flushes.
    set_committed_value(inserted, "events", [])
    record_order_changes(session, [package.order_id])
    return inserted


@functools.cache
def _insert_unless_recorded_statement(dialect_name: str) -> Insert:
    """Build the insert of `_insert_unless_recorded`. Its values are execution
    parameters, so it is built and compiled once per dialect."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (
        dialect.insert(Package)
        .on_conflict_do_nothing(
            index_elements=[Package.carrier_key, Package.tracking_number]
        )
        .returning(Package)
        .options(lazyload(Package.events))
    )


def _record_package_created(
    session: Session,
    order: Order,
    package: Package,
    actor: str,
    *,
    created_at: datetime | None = None,
) -> None:
    event = OrderEvent(
        order_id=order.id,
        kind="package.created",
        subject_id=package.id,
        to_state=package.status,
        actor=actor,
        data={
            "kind": package.kind,
            "carrierName": package.carrier_name,
            "carrierTrackingNumber": package.tracking_number,
            "lineItems": package.line_items,
        },
    )
    if created_at is not None:
        event.created_at = created_at
    session.add(event)
    log.info(
        "package_recorded", order_id=order.id, package_id=package.id, kind=package.kind
    )
    notify.tracking_updated(session, order, package)


def _raise_if_recorded(
    session: Session, order: Order, carrier_name: str, carrier_key: str, number: str
) -> None:
    existing = session.scalar(
        select(Package).where(
            Package.carrier_key == carrier_key, Package.tracking_number == number
        )
    )
    if existing is not None:
        shown = package_body(existing) if existing.order_id == order.id else None
        raise PackageExists(carrier_name, number, shown)


def record_tracking_event(
    session: Session,
    package: Package,
    status: str,
    occurred_at: datetime,
    description: str | None = None,
    location: str | None = None,
    delivery_time_range: TimeRange | None = None,
    dedupe_key: str | None = None,
    source: str = "api",
    *,
    raw: dict[str, Any] | None = None,
    actor: str = "system",
    now: datetime | None = None,
) -> TrackingUpdate:
    """Store a carrier event for a package and apply it by the time it happened.

    An event already stored (same dedupe key: the provider's event id, or else status,
    time, description and location) changes nothing and comes back with created False.
    The status follows `shipping.statuses`. The estimate is replaced only by one from
    an event at least as recent as the estimate's. A return parcel that becomes
    delivered marks its refund's return received, which starts the payout (see
    `refunds.returns`). Raises InvalidShipment.
    """
    now = now or utcnow()
    package_status = check_status(status)
    occurred_at = check_occurred_at(occurred_at, now)
    description = clean_text(
        description, "description", MAX_DESCRIPTION_LENGTH, multiline=True
    )
    location = clean_text(location, "location", MAX_LOCATION_LENGTH, multiline=False)
    estimate = check_time_range(delivery_time_range, "deliveryTimeRange")
    key = dedupe_key or event_dedupe_key(
        package_status, occurred_at, description, location
    )
    if len(key) > MAX_DEDUPE_KEY_LENGTH:
        raise InvalidShipment(
            "dedupeKey", f"must be at most {MAX_DEDUPE_KEY_LENGTH} characters"
        )

    order = lock_order(session, package.order_id)
    package = _lock_package(session, package.id)
    previous_status = package.status
    previous_status_at = package.status_at
    stored = next((event for event in package.events if event.dedupe_key == key), None)
    if stored is not None:
        log.info("tracking_event_duplicate", package_id=package.id, event_id=stored.id)
        return TrackingUpdate(package, stored, False, previous_status, previous_status)

    event = TrackingEvent(
        package_id=package.id,
        status=package_status,
        occurred_at=occurred_at,
        description=description,
        location=location,
        dedupe_key=key,
        source=source,
        raw=raw,
        created_at=now,
    )
    package.events.append(event)
    session.flush()
    _apply_events(package, estimate, occurred_at)
    package.updated_at = now
    changed = package.status != previous_status

    session.add(
        OrderEvent(
            order_id=order.id,
            kind="package.status_changed" if changed else "package.event_recorded",
            subject_id=package.id,
            from_state=previous_status,
            to_state=package.status,
            actor=actor,
            data={
                "eventId": event.id,
                "status": event.status,
                "occurredAt": iso(occurred_at),
                "source": source,
            },
        )
    )
    log.info(
        "tracking_event_recorded",
        package_id=package.id,
        event_id=event.id,
        event_status=event.status,
        from_status=previous_status,
        to_status=package.status,
    )
    notify.tracking_updated(session, order, package)
    # An earlier delivery that arrives late keeps the status but moves its time,
    # which the line items' delivered_at (the start of the return window) follows.
    moved = changed or package.status_at != previous_status_at
    if moved and package.kind == PackageKind.OUTBOUND:
        roll_up_delivery(session, order, actor)
    if (
        changed
        and package.kind == PackageKind.RETURN
        and package.status == PackageStatus.DELIVERED
    ):
        # Imported here because refunds imports this module for its return parcels.
        from orderdesk.refunds.returns import receive_return_parcel

        receive_return_parcel(session, package, actor)
    return TrackingUpdate(package, event, True, previous_status, package.status)


def event_dedupe_key(
    status: str, occurred_at: datetime, description: str | None, location: str | None
) -> str:
    """Hash what makes two events the same, for feeds that give no event id."""
    canonical = json.dumps([status, occurred_at.isoformat(), description, location])
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _apply_events(
    package: Package, estimate: TimeRange | None, occurred_at: datetime
) -> None:
    deciding = deciding_event(package.events)
    if deciding is not None:
        package.status = deciding.status
        package.status_at = deciding.occurred_at
    newer = package.estimate_at is None or occurred_at >= package.estimate_at
    if estimate is not None and newer:
        package.lower_bound = estimate.lower_bound
        package.upper_bound = estimate.upper_bound
        package.estimate_at = occurred_at


def _lock_package(session: Session, package_id: str) -> Package:
    """Lock the package row and reload it and its events from the database."""
    query = (
        select(Package)
        .where(Package.id == package_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    package = session.scalars(query).one()
    session.refresh(package, ["events"])
    return package
