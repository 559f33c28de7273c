"""Line items returned to the sender are refunded automatically, with no return."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from tests.refunds.helpers import (
    fund_treasury,
    jobs_of,
    refund_request,
    refunds_of,
    run_jobs,
    usdc_balance,
)
from tests.shipping.helpers import (
    ISO_MS,
    ORDERS,
    hours_ago,
    line_items_of,
    new_paid_order,
    order_events,
    order_row,
    post_event,
    shipped,
)

from orderdesk.payments.amounts import to_base_units
from orderdesk.refunds.automatic import DELIVERY_FAILED_REASON
from orderdesk.runtime import Runtime


def refunds_body(client: TestClient, key: str, order_id: str) -> list[dict]:
    response = client.get(f"{ORDERS}/{order_id}/refunds", headers={"X-API-KEY": key})
    assert response.status_code == 200, response.text
    return response.json()


def test_returned_parcel_refunds_items(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    package = shipped(client, api_key, order.id, [0, 1])
    for status, hours in (("shipped", 30), ("returned-to-sender", 2)):
        response = post_event(
            client, api_key, order.id, package["packageId"], status, hours_ago(hours)
        )
        assert response.status_code == 201, response.text
    assert [item.delivery_status for item in line_items_of(runtime, order.id)] == [
        "failed",
        "failed",
    ]

    first, second = refunds_body(client, api_key, order.id)
    for index, refund in enumerate((first, second)):
        assert refund["lineItem"] == index
        assert refund["status"] == "refund-request-accepted"
        assert refund["origin"] == "delivery-failed"
        assert refund["reason"] == DELIVERY_FAILED_REASON
        assert refund["returnLabel"] is None
        assert ISO_MS.fullmatch(refund["returnReceivedAt"])
        assert refund["payout"]["status"] == "scheduled"
        assert refund["amount"]["amount"] == format(order.line_item_totals[index], "f")
        [entry] = refund["history"]
        assert entry == {
            "status": "refund-request-accepted",
            "at": entry["at"],
            "actor": "system",
        }
    created = [e for e in order_events(runtime, order.id) if e.kind == "refund.created"]
    assert len(created) == 2
    assert created[0].data["causedBy"].startswith("api_key:")
    assert len(jobs_of(runtime, "refund.payout")) == 2
    assert jobs_of(runtime, "refund.return_label") == []

    fund_treasury(runtime, "500")
    run_jobs(runtime)
    statuses = [refund.status for refund in refunds_of(runtime, order.id)]
    assert statuses == ["refund-request-completed"] * 2
    total = sum(order.line_item_totals)
    payer = order_row(runtime, order.id).paid_from
    assert payer is not None
    assert usdc_balance(runtime, payer) == to_base_units(total, 6)
    assert order_row(runtime, order.id).refunded_amount == total
    kinds = sorted(job.payload["kind"] for job in jobs_of(runtime, "mail.send"))
    assert kinds == ["refund_completed", "refund_completed"]
    mails = sorted(Path(runtime.settings.mail_dir).glob("*.eml"))
    assert [path.name.split("-")[-1] for path in mails] == [
        "completed@orderdesk.localhost.eml"
    ] * 2


def test_active_request_blocks_automatic_refund(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    package = shipped(client, api_key, order.id, [0, 1])
    request = refund_request(
        client, order.id, {"lineItem": 0, "reason": "Never arrived"}, key=api_key
    )
    assert request.status_code == 201, request.text
    response = post_event(
        client,
        api_key,
        order.id,
        package["packageId"],
        "returned-to-sender",
        hours_ago(1),
    )
    assert response.status_code == 201, response.text

    requested, automatic = refunds_body(client, api_key, order.id)
    assert requested["refundId"] == request.json()["refundId"]
    assert requested["status"] == "refund-request-initiated"
    assert automatic["lineItem"] == 1
    assert automatic["origin"] == "delivery-failed"
    assert len(jobs_of(runtime, "refund.payout")) == 1


def test_only_returned_items_refunded(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    first = shipped(client, api_key, order.id, [0], number="1Z999AA10123456784")
    second = shipped(client, api_key, order.id, [1], number="1Z999AA10123456791")
    when = hours_ago(1)
    for package, status in ((first, "delivered"), (second, "returned-to-sender")):
        response = post_event(
            client, api_key, order.id, package["packageId"], status, when
        )
        assert response.status_code == 201, response.text
    [refund] = refunds_body(client, api_key, order.id)
    assert refund["lineItem"] == 1
    # Neither the same event again nor a later one for the returned parcel adds a
    # second refund.
    for occurred_at, code in ((when, 200), (hours_ago(0.5), 201)):
        again = post_event(
            client,
            api_key,
            order.id,
            second["packageId"],
            "returned-to-sender",
            occurred_at,
        )
        assert again.status_code == code, again.text
    assert len(refunds_body(client, api_key, order.id)) == 1
    assert order_row(runtime, order.id).phase == "completed"
