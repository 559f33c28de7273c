"""Console actions through their forms: refund review, webhook resend, job retry and
API keys, with CSRF and the viewer role enforced."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.console import data, helpers

from orderdesk.auth.models import ApiKey
from orderdesk.jobs.models import Job
from orderdesk.orders.models import OrderEvent
from orderdesk.refunds.models import Refund
from orderdesk.runtime import Runtime
from orderdesk.webhooks.models import WebhookDelivery


@pytest.fixture
def seeded(runtime: Runtime) -> data.Seeded:
    return data.seed(runtime)


def refund_status(client: TestClient, key: str, order_id: str, refund_id: str) -> dict:
    response = client.get(
        f"/api/unstable/orders/{order_id}/refunds", headers={"X-API-KEY": key}
    )
    assert response.status_code == 200
    return next(r for r in response.json() if r["refundId"] == refund_id)


def refund_url(seeded: data.Seeded, action: str, index: int = 0) -> str:
    refund_id = seeded.refund_ids[index]
    return f"/console/orders/{seeded.order_id}/refunds/{refund_id}/{action}"


def post(client: TestClient, url: str, **fields: str) -> object:
    return client.post(url, data=fields, follow_redirects=False)


def test_accept_refund_by_form(
    operator_client: TestClient, seeded: data.Seeded, api_key: str, runtime: Runtime
) -> None:
    token = helpers.csrf_of(operator_client)
    response = post(
        operator_client,
        refund_url(seeded, "accept"),
        csrf_token=token,
        next="/console/refunds",
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/refunds"
    refund = refund_status(
        operator_client, api_key, seeded.order_id, seeded.refund_ids[0]
    )
    assert refund["status"] == "refund-request-accepted"
    # The label is issued right after the commit, as the API does.
    assert refund["returnLabel"]["carrierTrackingNumber"]
    with runtime.session_factory() as session:
        event = session.scalars(
            select(OrderEvent)
            .where(OrderEvent.subject_id == seeded.refund_ids[0])
            .order_by(OrderEvent.id.desc())
        ).first()
        assert event is not None
        assert event.actor.startswith("console:")
    queue = operator_client.get("/console/refunds").text
    assert "accepted." in queue


def test_accept_twice_shows_conflict(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    token = helpers.csrf_of(operator_client)
    post(operator_client, refund_url(seeded, "accept"), csrf_token=token)
    again = post(
        operator_client,
        refund_url(seeded, "accept"),
        csrf_token=token,
        next="/console/refunds",
    )
    assert again.status_code == 303
    page = operator_client.get("/console/refunds").text
    assert 'class="flash flash-error"' in page
    assert "cannot be accepted" in page


def test_reject_needs_reason(
    operator_client: TestClient, seeded: data.Seeded, api_key: str
) -> None:
    token = helpers.csrf_of(operator_client)
    post(operator_client, refund_url(seeded, "reject"), csrf_token=token, reason="  ")
    page = operator_client.get(f"/console/orders/{seeded.order_id}").text
    assert "reason is invalid" in page
    refund = refund_status(
        operator_client, api_key, seeded.order_id, seeded.refund_ids[0]
    )
    assert refund["status"] == "refund-request-initiated"
    post(
        operator_client,
        refund_url(seeded, "reject"),
        csrf_token=token,
        reason="Outside the policy <b>sorry</b>",
    )
    refund = refund_status(
        operator_client, api_key, seeded.order_id, seeded.refund_ids[0]
    )
    assert refund["status"] == "refund-request-rejected"
    assert refund["rejectionReason"] == "Outside the policy <b>sorry</b>"


def test_return_received_starts_payout(
    operator_client: TestClient, seeded: data.Seeded, api_key: str
) -> None:
    token = helpers.csrf_of(operator_client)
    post(operator_client, refund_url(seeded, "accept", 1), csrf_token=token)
    response = post(
        operator_client, refund_url(seeded, "return-received", 1), csrf_token=token
    )
    assert response.status_code == 303
    refund = refund_status(
        operator_client, api_key, seeded.order_id, seeded.refund_ids[1]
    )
    assert refund["returnReceivedAt"] is not None
    assert refund["payout"]["status"] == "scheduled"


def test_form_without_csrf_is_403(
    operator_client: TestClient, seeded: data.Seeded, runtime: Runtime
) -> None:
    for fields in ({}, {"csrf_token": "forged"}):
        response = post(operator_client, refund_url(seeded, "accept"), **fields)
        assert response.status_code == 403
        assert "security token" in response.text
        assert response.headers["content-security-policy"]
    with runtime.session_factory() as session:
        refund = session.get_one(Refund, seeded.refund_ids[0])
        assert refund.status == "refund-request-initiated"


def test_csrf_token_of_other_session(
    operator_client: TestClient, viewer_client: TestClient, seeded: data.Seeded
) -> None:
    """A viewer's token does not pass for the operator's session."""
    viewer_token = helpers.csrf_of(viewer_client)
    response = post(
        operator_client, refund_url(seeded, "accept"), csrf_token=viewer_token
    )
    assert response.status_code == 403


def test_viewer_cannot_accept(
    viewer_client: TestClient, seeded: data.Seeded, runtime: Runtime
) -> None:
    token = helpers.csrf_of(viewer_client)
    for action in ("accept", "return-received"):
        response = post(viewer_client, refund_url(seeded, action), csrf_token=token)
        assert response.status_code == 403
        assert "viewer" in response.text
    reject = post(
        viewer_client, refund_url(seeded, "reject"), csrf_token=token, reason="x"
    )
    assert reject.status_code == 403
    with runtime.session_factory() as session:
        refund = session.get_one(Refund, seeded.refund_ids[0])
        assert refund.status == "refund-request-initiated"


def test_viewer_cannot_change_others(
    viewer_client: TestClient, seeded: data.Seeded, runtime: Runtime
) -> None:
    token = helpers.csrf_of(viewer_client)
    urls = [
        f"/console/webhooks/{seeded.endpoint_id}/deliveries/{seeded.delivery_id}/resend",
        f"/console/jobs/{seeded.job_id}/retry",
        "/console/keys",
    ]
    for url in urls:
        response = post(
            viewer_client, url, csrf_token=token, project="p", scopes="orders.read"
        )
        assert response.status_code == 403, url
    with runtime.session_factory() as session:
        assert session.get_one(Job, seeded.job_id).status == "failed"
        assert session.scalars(select(ApiKey)).all() == []


def test_resend_failed_delivery(
    operator_client: TestClient, seeded: data.Seeded, runtime: Runtime
) -> None:
    token = helpers.csrf_of(operator_client)
    url = (
        f"/console/webhooks/{seeded.endpoint_id}/deliveries/{seeded.delivery_id}/resend"
    )
    assert post(operator_client, url, csrf_token=token).status_code == 303
    with runtime.session_factory() as session:
        delivery = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.delivery_id == seeded.delivery_id
            )
        ).one()
        assert delivery.status == "pending"
        assert delivery.resend_count == 1
    # A pending delivery cannot be resent again yet.
    post(operator_client, url, csrf_token=token)
    page = operator_client.get(f"/console/webhooks/{seeded.endpoint_id}").text
    assert 'class="flash flash-error"' in page


def test_retry_failed_job(
    operator_client: TestClient, seeded: data.Seeded, runtime: Runtime
) -> None:
    token = helpers.csrf_of(operator_client)
    url = f"/console/jobs/{seeded.job_id}/retry"
    assert post(operator_client, url, csrf_token=token).status_code == 303
    with runtime.session_factory() as session:
        job = session.get_one(Job, seeded.job_id)
        assert job.status == "queued"
        assert job.max_attempts == job.attempts + 1
    post(operator_client, url, csrf_token=token)
    page = operator_client.get("/console/jobs").text
    assert "is queued, not failed" in page


def test_create_key_shown_once(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    token = helpers.csrf_of(operator_client)
    response = operator_client.post(
        "/console/keys",
        data={
            "csrf_token": token,
            "project": "test-project",
            "name": "storefront",
            "scopes": ["orders.read", "refunds.review"],
        },
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    (value,) = re.findall(r'id="new-key">(sk_development_[A-Za-z0-9]+)<', response.text)
    api = operator_client.get(
        f"/api/2022-06-09/orders/{seeded.order_id}", headers={"X-API-KEY": value}
    )
    assert api.status_code == 200
    listing = operator_client.get("/console/keys").text
    assert value not in listing
    assert value[:21] in listing
    assert "orders.read, refunds.review" in listing


def test_create_key_rejects_bad_input(
    operator_client: TestClient, runtime: Runtime
) -> None:
    token = helpers.csrf_of(operator_client)
    response = operator_client.post(
        "/console/keys", data={"csrf_token": token, "project": "shop", "scopes": []}
    )
    assert response.status_code == 400
    assert "at least one scope" in response.text
    with runtime.session_factory() as session:
        assert session.scalars(select(ApiKey)).all() == []


def test_revoke_key(
    operator_client: TestClient, make_key: object, runtime: Runtime, seeded: data.Seeded
) -> None:
    value = make_key("orders.read")  # type: ignore[operator]
    with runtime.session_factory() as session:
        key_id = session.scalars(select(ApiKey.id)).one()
    token = helpers.csrf_of(operator_client)
    response = post(operator_client, f"/console/keys/{key_id}/revoke", csrf_token=token)
    assert response.status_code == 303
    api = operator_client.get(
        f"/api/2022-06-09/orders/{seeded.order_id}", headers={"X-API-KEY": value}
    )
    assert api.status_code == 401
    assert api.json()["code"] == "key_revoked"
