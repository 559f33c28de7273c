"""Package statuses and the rule that picks a package's status from its events.

Events are applied by the time they happened, not by the order they arrive in: the
status is what replaying the events in `occurred_at` order gives, where

- a later event replaces an earlier one, and at the same instant the event of higher
  rank wins (`STATUS_RANK`), so a repeated or late event never moves a package back;
- a terminal status (`delivered`, `returned-to-sender`) is final. Events that happened
  after it, such as an `exception` for a delivered parcel reported damaged, are kept
  in the history but do not change the status. A damaged delivery is a refund matter.

The result depends only on the set of events, so carriers that resend or reorder
their feeds all converge on the same status.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Protocol, TypeVar


class PackageStatus(StrEnum):
    PENDING = "pending"
    SHIPPED = "shipped"
    OUT_FOR_DELIVERY = "out-for-delivery"
    DELIVERY_ATTEMPTED = "delivery-attempted"
    AVAILABLE_FOR_PICKUP = "available-for-pickup"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    RETURNED_TO_SENDER = "returned-to-sender"


class PackageKind(StrEnum):
    OUTBOUND = "outbound"
    # The parcel a buyer sends back for a refund.
    RETURN = "return"


TERMINAL_STATUSES = frozenset(
    {PackageStatus.DELIVERED, PackageStatus.RETURNED_TO_SENDER}
)

# Progress along the usual path. It only breaks ties between events of the same
# instant. An `exception` ranks low, so progress reported at the same instant wins.
STATUS_RANK: dict[PackageStatus, int] = {
    PackageStatus.PENDING: 0,
    PackageStatus.EXCEPTION: 1,
    PackageStatus.SHIPPED: 2,
    PackageStatus.OUT_FOR_DELIVERY: 3,
    PackageStatus.DELIVERY_ATTEMPTED: 4,
    PackageStatus.AVAILABLE_FOR_PICKUP: 5,
    PackageStatus.RETURNED_TO_SENDER: 6,
    PackageStatus.DELIVERED: 7,
}


class StatusEvent(Protocol):
    """An event as the status rule reads it. TrackingEvent rows fit."""

    @property
    def status(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...


EventT = TypeVar("EventT", bound=StatusEvent)


def parse_status(value: str) -> PackageStatus:
    """Return the status named by `value`, raising ValueError for any other text."""
    try:
        return PackageStatus(value)
    except ValueError:
        allowed = ", ".join(status.value for status in PackageStatus)
        raise ValueError(
            f"{value!r} is not a package status. Use one of {allowed}"
        ) from None


def event_order(event: StatusEvent) -> tuple[datetime, int]:
    return event.occurred_at, STATUS_RANK[PackageStatus(event.status)]


def deciding_event(events: Iterable[EventT]) -> EventT | None:
    """Return the event that sets the package's status, or None when there is none."""
    current: EventT | None = None
    for event in sorted(events, key=event_order):
        if current is not None and current.status in TERMINAL_STATUSES:
            break
        current = event
    return current
