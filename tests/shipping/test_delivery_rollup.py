from fastapi.testclient import TestClient
from tests.shipping.helpers import (
    hours_ago,
    line_items_of,
    new_paid_order,
    order_events,
    order_row,
    post_event,
    shipped,
)

from orderdesk.runtime import Runtime
from orderdesk.shipping.services import record_package


def statuses(runtime: Runtime, order_id: str) -> list[str]:
    return [item.delivery_status for item in line_items_of(runtime, order_id)]


def test_split_shipment_completes_last(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    first = shipped(client, api_key, order.id, [0, 1], number="1ZSPLIT0001")
    second = shipped(client, api_key, order.id, [0], number="1ZSPLIT0002")

    first_delivery = hours_ago(10)
    post_event(
        client, api_key, order.id, first["packageId"], "delivered", first_delivery
    )
    assert statuses(runtime, order.id) == ["in-progress", "completed"]
    items = line_items_of(runtime, order.id)
    assert items[0].delivered_at is None
    assert items[1].delivered_at == first_delivery
    assert order_row(runtime, order.id).phase == "delivery"

    second_delivery = hours_ago(2)
    post_event(
        client, api_key, order.id, second["packageId"], "delivered", second_delivery
    )
    assert statuses(runtime, order.id) == ["completed", "completed"]
    assert line_items_of(runtime, order.id)[0].delivered_at == second_delivery
    assert order_row(runtime, order.id).phase == "completed"


def test_delivered_at_is_latest_delivery(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    first = shipped(client, api_key, order.id, [0], number="1ZLATEST001")
    second = shipped(client, api_key, order.id, [0], number="1ZLATEST002")
    later, earlier = hours_ago(1), hours_ago(20)
    # The package delivered last is reported first.
    post_event(client, api_key, order.id, second["packageId"], "delivered", later)
    post_event(client, api_key, order.id, first["packageId"], "delivered", earlier)
    item = line_items_of(runtime, order.id)[0]
    assert item.delivery_status == "completed"
    assert item.delivered_at == later


def test_returned_to_sender_fails_item(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    lost = shipped(client, api_key, order.id, [0], number="1ZRETURN001")
    fine = shipped(client, api_key, order.id, [1], number="1ZRETURN002")
    post_event(
        client, api_key, order.id, lost["packageId"], "returned-to-sender", hours_ago(3)
    )
    assert statuses(runtime, order.id) == ["failed", "in-progress"]
    assert order_row(runtime, order.id).phase == "delivery"
    post_event(client, api_key, order.id, fine["packageId"], "delivered", hours_ago(1))
    assert statuses(runtime, order.id) == ["failed", "completed"]
    assert order_row(runtime, order.id).phase == "completed"


def test_one_returned_part_fails_item(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    first = shipped(client, api_key, order.id, [0], number="1ZPART0001")
    second = shipped(client, api_key, order.id, [0], number="1ZPART0002")
    post_event(client, api_key, order.id, first["packageId"], "delivered", hours_ago(5))
    post_event(
        client,
        api_key,
        order.id,
        second["packageId"],
        "returned-to-sender",
        hours_ago(1),
    )
    item = line_items_of(runtime, order.id)[0]
    assert item.delivery_status == "failed"
    assert item.delivered_at is None
    assert order_row(runtime, order.id).phase == "completed"


def test_late_return_overrides_delivery(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    package = shipped(client, api_key, order.id, [0])
    post_event(
        client, api_key, order.id, package["packageId"], "delivered", hours_ago(1)
    )
    assert statuses(runtime, order.id) == ["completed"]
    # The carrier's earlier return scan arrives late: it happened first, so it decides.
    answer = post_event(
        client,
        api_key,
        order.id,
        package["packageId"],
        "returned-to-sender",
        hours_ago(4),
    )
    assert answer.json()["status"] == "returned-to-sender"
    assert statuses(runtime, order.id) == ["failed"]


def test_new_package_reopens_order(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    first = shipped(client, api_key, order.id, [0], number="1ZREOPEN001")
    post_event(client, api_key, order.id, first["packageId"], "delivered", hours_ago(1))
    assert order_row(runtime, order.id).phase == "completed"
    shipped(client, api_key, order.id, [0], number="1ZREOPEN002")
    item = line_items_of(runtime, order.id)[0]
    assert item.delivery_status == "in-progress"
    assert item.delivered_at is None
    assert order_row(runtime, order.id).phase == "delivery"


def test_rollup_records_events(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    package = shipped(client, api_key, order.id, [0])
    post_event(
        client, api_key, order.id, package["packageId"], "delivered", hours_ago(1)
    )
    events = order_events(runtime, order.id)
    item_event = next(
        e for e in events if e.kind == "line_item.delivery_status_changed"
    )
    assert item_event.from_state == "in-progress"
    assert item_event.to_state == "completed"
    assert item_event.data == {"lineItem": 0}
    assert item_event.actor.startswith("api_key:")
    phase_event = next(e for e in events if e.kind == "order.phase_changed")
    assert phase_event.from_state == "delivery"
    assert phase_event.to_state == "completed"
    assert (
        order_row(runtime, order.id).updated_at
        > order_row(runtime, order.id).created_at
    )


def test_return_parcel_not_counted(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime, items=1)
    outbound = shipped(client, api_key, order.id, [0])
    post_event(
        client, api_key, order.id, outbound["packageId"], "delivered", hours_ago(5)
    )
    with runtime.session_factory() as session, session.begin():
        row = order_row(runtime, order.id)
        returned = record_package(
            session,
            session.merge(row),
            "USPS",
            "9400100000000000000001",
            [0],
            kind="return",
            actor="system",
        )
        assert returned.kind == "return"
    item = line_items_of(runtime, order.id)[0]
    assert item.delivery_status == "completed"
    assert order_row(runtime, order.id).phase == "completed"
