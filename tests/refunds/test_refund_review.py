"""Refund review over HTTP: accept, reject, return-received, and what they refuse."""

from __future__ import annotations

import json
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from tests.conftest import KeyMaker
from tests.refunds.helpers import (
    fund_treasury,
    get_refund_body,
    jobs_of,
    make_jobs_due,
    refund_row,
    requested,
    review,
    reviewed,
    run_jobs,
    shipped_order,
)
from tests.shipping.helpers import (
    ISO_MS,
    ORDERS,
    UUID,
    order_events,
    post_event,
    table_counts,
    tracking,
)
from tests.webhooks.conftest import create_endpoint, deliveries

from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.labels.exceptions import LabelProviderError
from orderdesk.orders.models import Order
from orderdesk.refunds import returns
from orderdesk.refunds.models import Payout, Refund
from orderdesk.runtime import Runtime

ACCEPTED = "refund-request-accepted"
REJECTED = "refund-request-rejected"
INITIATED = "refund-request-initiated"
COMPLETED = "refund-request-completed"


def refund_in(
    client: TestClient, key: str, runtime: Runtime, status: str
) -> tuple[str, str]:
    """An order and a refund of line item 0 brought to `status` through the API."""
    order = shipped_order(runtime, delivered_days_ago=1)
    refund_id = requested(client, key, order.id)["refundId"]
    if status == REJECTED:
        reviewed(client, key, order.id, refund_id, "reject")
    if status in (ACCEPTED, COMPLETED):
        reviewed(client, key, order.id, refund_id, "accept")
    if status == COMPLETED:
        reviewed(client, key, order.id, refund_id, "return-received")
        fund_treasury(runtime, "100")
        run_jobs(runtime)
    assert refund_row(runtime, refund_id).status == status
    return order.id, refund_id


def snapshot(runtime: Runtime, refund_id: str) -> dict[str, Any]:
    """Every row a review could change: the refund's columns and table counts."""
    refund = refund_row(runtime, refund_id)
    with runtime.session_factory() as session:
        jobs = session.scalar(select(func.count()).select_from(Job))
        payouts = session.scalar(select(func.count()).select_from(Payout))
    return {
        "refund": {
            column.key: getattr(refund, column.key)
            for column in Refund.__table__.columns
        },
        "tables": table_counts(runtime),
        "jobs": jobs,
        "payouts": payouts,
    }


def mail_files(runtime: Runtime) -> list[EmailMessage]:
    directory = Path(runtime.settings.mail_dir)
    return [
        message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for path in sorted(directory.glob("*.eml"))
    ]


# Accept


def test_accept_issues_return_label(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime, delivered_days_ago=1)
    refund_id = requested(client, api_key, order.id, 1)["refundId"]
    refund = reviewed(client, api_key, order.id, refund_id, "accept")

    assert refund["status"] == ACCEPTED
    label = refund["returnLabel"]
    assert label["carrierName"] == "USPS"
    assert label["carrierTrackingNumber"].startswith("9202")
    assert len(label["carrierTrackingNumber"]) == 22
    assert refund["payout"] is None
    assert refund["returnReceivedAt"] is None
    initiated, accepted = refund["history"]
    assert initiated["status"] == INITIATED
    assert accepted["status"] == ACCEPTED
    assert accepted["actor"].startswith("api_key:")
    assert "sk_" not in accepted["actor"]
    assert ISO_MS.fullmatch(accepted["at"])

    packages = tracking(client, api_key, order.id)
    [parcel] = [package for package in packages if package["kind"] == "return"]
    assert parcel["lineItems"] == [1]
    assert parcel["status"] == "pending"
    assert parcel["packageTracking"] == label
    [mail] = jobs_of(runtime, "mail.send")
    assert mail.payload == {"refund_id": refund_id, "kind": "refund_accepted"}
    kinds = [event.kind for event in order_events(runtime, order.id)]
    assert kinds.count("refund.status_changed") == 1
    assert kinds.count("refund.return_label_issued") == 1
    moved = next(
        e for e in order_events(runtime, order.id) if e.kind == "refund.status_changed"
    )
    assert moved.subject_id == refund_id
    assert moved.from_state == INITIATED
    assert moved.to_state == ACCEPTED
    assert moved.actor == accepted["actor"]


def test_accept_takes_empty_object(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    response = review(client, api_key, order.id, refund_id, "accept", {})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == ACCEPTED


def test_accept_rejects_unknown_field(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    before = snapshot(runtime, refund_id)
    response = review(client, api_key, order.id, refund_id, "accept", {"now": True})
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "now"
    assert snapshot(runtime, refund_id) == before


def test_accept_without_address_conflicts(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(Order)
            .where(Order.id == order.id)
            .values(recipient={"email": "buyer@example.com"})
        )
    before = snapshot(runtime, refund_id)
    response = review(client, api_key, order.id, refund_id, "accept")
    assert response.status_code == 409
    assert response.json()["code"] == "missing_physical_address"
    assert snapshot(runtime, refund_id) == before


def test_label_job_retries_failed_label(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    real = returns.create_return_label

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise LabelProviderError("the carrier API timed out")

    monkeypatch.setattr(returns, "create_return_label", unavailable)
    refund = reviewed(client, api_key, order.id, refund_id, "accept")
    assert refund["status"] == ACCEPTED
    assert refund["returnLabel"] is None
    assert refund_row(runtime, refund_id).label_claimed_until is None
    [job] = jobs_of(runtime, "refund.return_label")
    assert job.run_at > utcnow()
    assert jobs_of(runtime, "mail.send") == []

    monkeypatch.setattr(returns, "create_return_label", real)
    make_jobs_due(runtime, "refund.return_label")
    run_jobs(runtime)
    issued = get_refund_body(client, api_key, order.id, refund_id)
    assert issued["returnLabel"]["carrierName"] == "USPS"
    [mail] = jobs_of(runtime, "mail.send")
    assert mail.payload["kind"] == "refund_accepted"
    [parcel] = [p for p in tracking(client, api_key, order.id) if p["kind"] == "return"]
    assert parcel["packageTracking"] == issued["returnLabel"]


def test_label_job_waits_for_claim(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While another process has the label claim, the job requests no label."""
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    monkeypatch.setattr(returns, "try_issue_return_label", lambda *a, **k: None)
    reviewed(client, api_key, order.id, refund_id, "accept")
    with runtime.session_factory() as session, session.begin():
        claim = returns.claim_label(session, refund_id)
    assert claim is not None
    calls: list[str] = []
    monkeypatch.setattr(
        returns, "create_return_label", lambda *a, **k: calls.append("called")
    )
    make_jobs_due(runtime, "refund.return_label")
    run_jobs(runtime)
    [job] = jobs_of(runtime, "refund.return_label")
    assert job.status == "queued"
    assert job.run_at > utcnow()
    assert calls == []
    assert refund_row(runtime, refund_id).return_tracking_number is None


# Reject


def test_reject_records_reason(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    response = review(
        client, api_key, order.id, refund_id, "reject", {"reason": "  Worn twice. "}
    )
    assert response.status_code == 200, response.text
    refund = response.json()
    assert refund["status"] == REJECTED
    assert refund["rejectionReason"] == "Worn twice."
    assert refund["returnLabel"] is None
    assert [entry["status"] for entry in refund["history"]] == [INITIATED, REJECTED]
    [mail] = jobs_of(runtime, "mail.send")
    assert mail.payload == {"refund_id": refund_id, "kind": "refund_rejected"}
    event = order_events(runtime, order.id)[-1]
    assert event.kind == "refund.status_changed"
    assert event.data == {"reason": "Worn twice."}
    # A rejection frees the line item for a new request.
    again = requested(client, api_key, order.id)
    assert again["refundId"] != refund_id


def test_rejection_html_escaped_in_mail(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    reason = '<script>alert("x")</script> & <b>no</b>'
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    response = review(
        client, api_key, order.id, refund_id, "reject", {"reason": reason}
    )
    assert response.status_code == 200, response.text
    run_jobs(runtime)

    [message] = mail_files(runtime)
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    content = html.get_content()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;no" in (
        content
    )
    assert "<script>" not in content
    assert "<b>no</b>" not in content
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    assert reason in plain.get_content()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": " \n "}, "reason"),
        ({"reason": 5}, "reason"),
        ({"reason": None}, "reason"),
        ({"reason": "bad\x00byte"}, "reason"),
        ({"reason": "x" * 1001}, "reason"),
        ({"reason": "ok", "refund": False}, "refund"),
    ],
)
def test_reject_validates_reason(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    body: dict[str, Any],
    field: str,
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    before = snapshot(runtime, refund_id)
    response = review(client, api_key, order.id, refund_id, "reject", body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error"] is True
    assert answer["code"] == "invalid_request"
    assert [detail["field"] for detail in answer["details"]] == [field]
    assert snapshot(runtime, refund_id) == before


def test_reject_needs_json_body(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    path = f"{ORDERS}/{order.id}/refunds/{refund_id}/reject"
    headers = {"X-API-KEY": api_key}
    empty = client.post(path, headers={**headers, "Content-Type": "application/json"})
    assert empty.status_code == 400
    assert empty.json()["code"] == "invalid_json"
    text = client.post(
        path, content=b"reason", headers={**headers, "Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    assert refund_row(runtime, refund_id).status == INITIATED


# Return received


def test_return_received_schedules_payout(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id, refund_id = refund_in(client, api_key, runtime, ACCEPTED)
    refund = reviewed(client, api_key, order_id, refund_id, "return-received")
    assert refund["status"] == ACCEPTED
    assert ISO_MS.fullmatch(refund["returnReceivedAt"])
    assert refund["payout"] == {
        "status": "scheduled",
        "txId": None,
        "chain": "devnet",
        "amount": refund["amount"]["amount"],
        "currency": "usdc",
        "message": None,
    }
    [job] = jobs_of(runtime, "refund.payout")
    assert job.payload == {"refund_id": refund_id}
    assert job.dedupe_key == f"refund.payout:{refund_id}"
    event = order_events(runtime, order_id)[-1]
    assert event.kind == "refund.return_received"
    assert event.data == {"source": "api"}

    again = review(client, api_key, order_id, refund_id, "return-received")
    assert again.status_code == 409
    assert again.json()["code"] == "return_already_received"
    assert len(jobs_of(runtime, "refund.payout")) == 1


def test_return_delivery_starts_payout_once(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id, refund_id = refund_in(client, api_key, runtime, ACCEPTED)
    [parcel] = [p for p in tracking(client, api_key, order_id) if p["kind"] == "return"]
    now = utcnow()
    for status, when in [
        ("shipped", now - timedelta(hours=3)),
        ("delivered", now - timedelta(hours=1)),
        ("delivered", now - timedelta(minutes=30)),
    ]:
        answer = post_event(
            client, api_key, order_id, parcel["packageId"], status, when
        )
        assert answer.status_code == 201, answer.text
    [job] = jobs_of(runtime, "refund.payout")
    assert job.payload == {"refund_id": refund_id}
    received = next(
        event
        for event in order_events(runtime, order_id)
        if event.kind == "refund.return_received"
    )
    assert received.data == {"source": "tracking"}

    again = review(client, api_key, order_id, refund_id, "return-received")
    assert again.status_code == 409
    assert again.json()["code"] == "return_already_received"
    fund_treasury(runtime, "100")
    run_jobs(runtime)
    assert refund_row(runtime, refund_id).status == COMPLETED
    assert len(jobs_of(runtime, "refund.payout")) == 1


# Disallowed moves, unknown refunds and missing scopes


DISALLOWED = [
    (INITIATED, "return-received"),
    (ACCEPTED, "accept"),
    (ACCEPTED, "reject"),
    (REJECTED, "accept"),
    (REJECTED, "reject"),
    (REJECTED, "return-received"),
    (COMPLETED, "accept"),
    (COMPLETED, "reject"),
    (COMPLETED, "return-received"),
]


@pytest.mark.parametrize(("status", "action"), DISALLOWED)
def test_disallowed_move_changes_nothing(
    client: TestClient, api_key: str, runtime: Runtime, status: str, action: str
) -> None:
    order_id, refund_id = refund_in(client, api_key, runtime, status)
    before = snapshot(runtime, refund_id)
    response = review(client, api_key, order_id, refund_id, action)
    assert response.status_code == 409, response.text
    answer = response.json()
    assert answer["error"] is True
    assert answer["code"] == "invalid_transition"
    assert answer["currentStatus"] == status
    assert f"is {status}" in answer["message"]
    assert snapshot(runtime, refund_id) == before


def test_unknown_refund_not_found(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order_id, refund_id = refund_in(client, api_key, runtime, INITIATED)
    other = shipped_order(runtime)
    other_refund = requested(client, api_key, other.id)["refundId"]
    before = snapshot(runtime, refund_id)
    for action in ("accept", "reject", "return-received"):
        for missing in (
            "00000000-0000-4000-8000-000000000000",
            "not-a-uuid",
            refund_id.upper(),
            other_refund,
        ):
            response = review(client, api_key, order_id, missing, action)
            assert response.status_code == 404, (action, missing, response.text)
            assert response.json()["code"] == "refund_not_found"
    assert snapshot(runtime, refund_id) == before
    assert refund_row(runtime, other_refund).status == INITIATED


def test_other_project_gets_404(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    key = make_key()
    order_id, refund_id = refund_in(client, key, runtime, INITIATED)
    stranger = make_key("refunds.review", project="another-project")
    response = review(client, stranger, order_id, refund_id, "accept")
    assert response.status_code == 404
    assert response.json()["code"] == "order_not_found"
    assert refund_row(runtime, refund_id).status == INITIATED


def test_review_needs_review_scope(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    key = make_key()
    order = shipped_order(runtime)
    refund_id = requested(client, key, order.id)["refundId"]
    before = snapshot(runtime, refund_id)
    narrow = make_key("orders.read", "orders.update", "orders.fulfill")
    for action in ("accept", "reject", "return-received"):
        response = review(client, narrow, order.id, refund_id, action)
        assert response.status_code == 403
        assert "refunds.review" in response.json()["message"]
        by_secret = client.post(
            f"{ORDERS}/{order.id}/refunds/{refund_id}/{action}",
            json={"reason": "x"},
            headers={"Authorization": order.client_secret},
        )
        assert by_secret.status_code == 403
        assert "refunds.review" in by_secret.json()["message"]
    assert snapshot(runtime, refund_id) == before


def test_review_key_accepts(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, make_key(), order.id)["refundId"]
    reviewer = make_key("refunds.review")
    refund = reviewed(client, reviewer, order.id, refund_id, "accept")
    assert UUID.fullmatch(refund["refundId"])
    assert refund["status"] == ACCEPTED


def test_review_moves_emit_webhooks(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    create_endpoint(client, api_key, "http://127.0.0.1:9/hooks")
    order = shipped_order(runtime, delivered_days_ago=1)
    first = requested(client, api_key, order.id, 0)["refundId"]
    second = requested(client, api_key, order.id, 1)["refundId"]
    reviewed(client, api_key, order.id, first, "accept")
    reviewed(client, api_key, order.id, second, "reject")
    reviewed(client, api_key, order.id, first, "return-received")
    fund_treasury(runtime, "100")
    run_jobs(runtime)

    sent = [(row.event_type, row.body) for row in deliveries(runtime)]
    types = [event_type for event_type, _body in sent]
    assert types == [
        "orders.refund.initiated",
        "orders.refund.initiated",
        "orders.refund.accepted",
        # Accepting records the return parcel, which is tracked like any package.
        "orders.tracking.updated",
        "orders.refund.rejected",
        "orders.refund.completed",
    ]
    completed = json.loads(sent[-1][1])["data"]
    assert completed["refundId"] == first
    assert completed["status"] == COMPLETED
    assert completed["payout"]["status"] == "confirmed"
