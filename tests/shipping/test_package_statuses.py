import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from orderdesk.shipping.statuses import (
    STATUS_RANK,
    TERMINAL_STATUSES,
    PackageStatus,
    deciding_event,
    parse_status,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    status: str
    occurred_at: datetime


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def status_of(*events: Event) -> str | None:
    event = deciding_event(events)
    return event.status if event else None


def test_vocabulary_matches_api() -> None:
    assert [status.value for status in PackageStatus] == [
        "pending",
        "shipped",
        "out-for-delivery",
        "delivery-attempted",
        "available-for-pickup",
        "delivered",
        "exception",
        "returned-to-sender",
    ]
    assert set(STATUS_RANK) == set(PackageStatus)
    assert TERMINAL_STATUSES == {"delivered", "returned-to-sender"}


def test_parse_status_rejects_unknown() -> None:
    assert parse_status("shipped") is PackageStatus.SHIPPED
    with pytest.raises(ValueError, match="'Shipped' is not a package status"):
        parse_status("Shipped")


def test_no_events_no_status() -> None:
    assert status_of() is None


def test_latest_event_wins() -> None:
    assert status_of(Event("shipped", at(0)), Event("out-for-delivery", at(1))) == (
        "out-for-delivery"
    )


def test_late_earlier_event_ignored() -> None:
    assert status_of(Event("out-for-delivery", at(2)), Event("shipped", at(1))) == (
        "out-for-delivery"
    )


def test_same_instant_higher_rank_wins() -> None:
    assert status_of(Event("shipped", at(1)), Event("pending", at(1))) == "shipped"
    assert status_of(Event("exception", at(1)), Event("shipped", at(1))) == "shipped"


def test_exception_then_progress() -> None:
    events = [
        Event("shipped", at(0)),
        Event("exception", at(1)),
        Event("out-for-delivery", at(2)),
    ]
    assert status_of(*events) == "out-for-delivery"
    assert status_of(*events[:2]) == "exception"


def test_terminal_absorbs_later_events() -> None:
    delivered = Event("delivered", at(3))
    assert status_of(delivered, Event("exception", at(4))) == "delivered"
    assert status_of(delivered, Event("shipped", at(5))) == "delivered"
    assert status_of(delivered, Event("returned-to-sender", at(6))) == "delivered"


def test_earlier_terminal_wins() -> None:
    returned = Event("returned-to-sender", at(2))
    delivered = Event("delivered", at(5))
    assert status_of(delivered, returned) == "returned-to-sender"


def test_any_arrival_order_converges() -> None:
    events = [
        Event("pending", at(0)),
        Event("shipped", at(1)),
        Event("exception", at(2)),
        Event("out-for-delivery", at(3)),
        Event("delivered", at(4)),
        Event("exception", at(5)),
    ]
    results = {deciding_event(order) for order in itertools.permutations(events)}
    assert results == {events[4]}
