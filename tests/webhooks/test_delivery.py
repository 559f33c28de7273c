"""Delivery to a real receiver on loopback: signatures, retries, timeouts, resends."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from svix.webhooks import Webhook
from tests.conftest import KeyMaker, make_settings
from tests.webhooks.conftest import (
    HANG,
    WEBHOOKS,
    Receiver,
    all_settled,
    create_endpoint,
    deliveries,
    emit,
    run_jobs_until,
)

from orderdesk.config import Settings
from orderdesk.config import Settings as WebhookSettings
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.runtime import Runtime
from orderdesk.webhooks import delivery as delivery_module
from orderdesk.webhooks import events
from orderdesk.webhooks.models import WebhookAttempt, WebhookEndpoint

ORDER = {"orderId": "4f1c1e3e-5d0e-4b3a-9a57-0b7f3f0c2d11", "phase": "payment"}


def attempts(runtime: Runtime) -> list[WebhookAttempt]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)))


def test_delivery_signed_and_verified(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER, order_id=ORDER["orderId"])

    run_jobs_until(runtime, all_settled(runtime))

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.verified_by == [endpoint["secret"]]
    assert request.headers["content-type"] == "application/json"
    assert request.message_id.startswith("msg_")
    assert abs(int(request.headers["svix-timestamp"]) - time.time()) < 10
    assert request.payload["type"] == "orders.quote.created"
    assert request.payload["data"] == ORDER
    assert request.payload["timestamp"].endswith("Z")
    [row] = deliveries(runtime)
    assert row.status == "delivered"
    assert row.attempt_count == 1
    [attempt] = attempts(runtime)
    assert attempt.succeeded is True
    assert attempt.status_code == 200
    assert attempt.response_body == '{"ok": true}'
    assert attempt.url == receiver.url
    assert attempt.duration_ms >= 0


def test_two_failures_then_delivered(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.001  # type: ignore[attr-defined]
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    receiver.behaviour = lambda _r: 500 if len(receiver.requests) <= 2 else 200
    emit(runtime, events.ORDERS_PAYMENT_SUCCEEDED, ORDER, order_id=ORDER["orderId"])

    run_jobs_until(runtime, all_settled(runtime))

    assert len(receiver.requests) == 3
    first, second, third = receiver.requests
    # 5 s and 5 min, scaled by 0.001.
    assert second.at - first.at >= 0.005
    assert third.at - second.at >= 0.3
    assert {r.message_id for r in receiver.requests} == {first.message_id}
    assert all(r.verified_by == [endpoint["secret"]] for r in receiver.requests)
    assert [r.body for r in receiver.requests] == [first.body] * 3
    [row] = deliveries(runtime)
    assert row.status == "delivered"
    assert row.attempt_count == 3
    assert row.next_attempt_at is None
    stored = attempts(runtime)
    assert [a.status_code for a in stored] == [500, 500, 200]
    assert [a.succeeded for a in stored] == [False, False, True]
    assert [a.attempt_number for a in stored] == [1, 2, 3]
    assert [a.resend_number for a in stored] == [0, 0, 0]


def test_never_2xx_fails_then_resend(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.00001  # type: ignore[attr-defined]
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    receiver.behaviour = lambda _r: 503
    emit(runtime, events.ORDERS_DELIVERY_FAILED, ORDER, order_id=ORDER["orderId"])

    run_jobs_until(runtime, all_settled(runtime))

    assert len(receiver.requests) == delivery_module.MAX_ATTEMPTS == 8
    [row] = deliveries(runtime)
    assert row.status == "failed"
    assert row.next_attempt_at is None
    assert [a.status_code for a in attempts(runtime)] == [503] * 8

    receiver.behaviour = lambda _r: 204
    response = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/deliveries/{row.delivery_id}/resend",
        headers={"X-API-KEY": api_key},
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert response.json()["resendCount"] == 1
    run_jobs_until(runtime, all_settled(runtime))

    assert len(receiver.requests) == 9
    assert receiver.requests[-1].message_id == receiver.requests[0].message_id
    assert receiver.requests[-1].verified_by == [endpoint["secret"]]
    [row] = deliveries(runtime)
    assert row.status == "delivered"
    last = attempts(runtime)[-1]
    assert (last.resend_number, last.attempt_number, last.status_code) == (1, 1, 204)


def test_resend_of_delivered_message(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    [delivery_id] = emit(runtime, events.ORDERS_QUOTE_UPDATED, ORDER)
    run_jobs_until(runtime, all_settled(runtime))

    response = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/deliveries/{delivery_id}/resend",
        headers={"X-API-KEY": api_key},
    )
    assert response.status_code == 202, response.text
    again = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/deliveries/{delivery_id}/resend",
        headers={"X-API-KEY": api_key},
    )
    assert again.status_code == 409
    assert again.json()["code"] == "webhook_delivery_pending"
    run_jobs_until(runtime, all_settled(runtime))

    assert len(receiver.requests) == 2
    assert receiver.requests[0].message_id == receiver.requests[1].message_id
    assert receiver.requests[0].body == receiver.requests[1].body


def test_hanging_receiver_cut_off(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_timeout_seconds = 0.5  # type: ignore[attr-defined]
    create_endpoint(client, api_key, receiver.url)
    receiver.behaviour = lambda _r: HANG
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)

    started = time.monotonic()
    run_jobs_until(runtime, lambda: len(attempts(runtime)) == 1)
    elapsed = time.monotonic() - started

    [attempt] = attempts(runtime)
    assert attempt.succeeded is False
    assert attempt.status_code is None
    assert attempt.error == "timed out after 0.5 s"
    assert 450 <= attempt.duration_ms < 3000
    assert elapsed < 5
    [row] = deliveries(runtime)
    assert row.status == "pending"
    assert row.next_attempt_at is not None


def test_timeout_default_fifteen_seconds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plain = make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    declared = WebhookSettings()

    assert delivery_module.timeout_seconds(plain) == 15.0
    assert delivery_module.timeout_seconds(declared) == 15.0
    assert delivery_module.DEFAULT_TIMEOUT_SECONDS == 15.0


def test_retry_schedule_and_scale(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plain: Settings = make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    scaled = WebhookSettings(webhook_retry_scale=0.5)

    delays = [delivery_module.retry_delay(plain, n) for n in range(1, 9)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert delivery_module.retry_delay(scaled, 2) == 150


def test_redirect_not_followed(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    create_endpoint(client, api_key, receiver.url)
    target = receiver.url + "/elsewhere"
    receiver.behaviour = lambda r: (
        200 if r.path.endswith("elsewhere") else (307, b"", {"location": target})
    )
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)

    run_jobs_until(runtime, lambda: len(attempts(runtime)) == 1)

    assert [r.path for r in receiver.requests] == ["/hooks"]
    [attempt] = attempts(runtime)
    assert attempt.succeeded is False
    assert attempt.status_code == 307
    assert attempt.error is not None
    assert "not followed" in attempt.error


def test_response_body_bounded(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    create_endpoint(client, api_key, receiver.url)
    # Multi-byte characters and a NUL: stored text stays within 2048 UTF-8 bytes.
    content = ("é" * 3000 + "\x00").encode()
    receiver.behaviour = lambda _r: (200, content, {})
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)

    run_jobs_until(runtime, all_settled(runtime))

    [attempt] = attempts(runtime)
    assert attempt.response_body is not None
    assert 2000 <= len(attempt.response_body.encode()) <= 2048
    assert set(attempt.response_body) == {"é"}


def test_connection_refused_recorded(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    url = receiver.url
    receiver.close()
    create_endpoint(client, api_key, url)
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)

    run_jobs_until(runtime, lambda: len(attempts(runtime)) == 1)

    [attempt] = attempts(runtime)
    assert attempt.status_code is None
    assert attempt.error is not None
    assert attempt.error.startswith("connection failed")
    assert deliveries(runtime)[0].status == "pending"


def test_rotation_both_signatures_verify(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    old = endpoint["secret"]
    response = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/rotate-secret", headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 200, response.text
    new = response.json()["secret"]
    assert new != old
    receiver.secrets = [old, new]
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)
    run_jobs_until(runtime, all_settled(runtime))

    [request] = receiver.requests
    assert request.verified_by == [old, new]
    signatures = request.headers["svix-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    # Each secret alone verifies, as a receiver that has only one of them would.
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)

    # Once the 24 hours are over, only the new secret signs.
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(WebhookEndpoint).values(
                previous_secret_expires_at=utcnow() - timedelta(seconds=1)
            )
        )
    emit(runtime, events.ORDERS_QUOTE_UPDATED, ORDER)
    run_jobs_until(runtime, all_settled(runtime))

    later = receiver.requests[1]
    assert later.verified_by == [new]
    assert len(later.headers["svix-signature"].split(" ")) == 1


def test_each_attempt_signed_afresh(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.25  # type: ignore[attr-defined]
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    # The retry comes 5 s x 0.25 after the first attempt, so in a later second.
    receiver.behaviour = lambda _r: 500 if len(receiver.requests) < 2 else 200
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)

    run_jobs_until(runtime, all_settled(runtime))

    stamps = [int(r.headers["svix-timestamp"]) for r in receiver.requests]
    assert len(stamps) == 2
    assert stamps[1] > stamps[0]
    assert all(r.verified_by == [endpoint["secret"]] for r in receiver.requests)
    assert len({r.headers["svix-signature"] for r in receiver.requests}) == 2


def test_payload_frozen_at_emit(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    create_endpoint(client, api_key, receiver.url)
    data = {"orderId": ORDER["orderId"], "lineItems": [{"quantity": 1}]}
    emit(runtime, events.ORDERS_QUOTE_CREATED, data)
    data["lineItems"][0]["quantity"] = 2
    run_jobs_until(runtime, all_settled(runtime))

    [request] = receiver.requests
    assert request.payload["data"]["lineItems"] == [{"quantity": 1}]
    assert set(request.payload) == {"type", "timestamp", "data"}
    # The body is ASCII JSON, so a non-ASCII value arrives escaped and intact.
    assert request.body.isascii()


def test_only_subscribed_endpoints_receive(
    client: TestClient,
    api_key: str,
    make_key: KeyMaker,
    runtime: Runtime,
    receiver: Receiver,
) -> None:
    paid = create_endpoint(
        client, api_key, receiver.url + "/paid", [events.ORDERS_PAYMENT_SUCCEEDED]
    )
    create_endpoint(
        client, api_key, receiver.url + "/refunds", ["orders.refund.accepted"]
    )
    create_endpoint(client, api_key, receiver.url + "/all", ["*"])
    other_key = make_key("webhooks.manage", project="other-project")
    create_endpoint(client, other_key, receiver.url + "/other", ["*"])

    ids = emit(runtime, events.ORDERS_PAYMENT_SUCCEEDED, ORDER)
    run_jobs_until(runtime, all_settled(runtime))

    assert len(ids) == 2
    assert sorted(r.path for r in receiver.requests) == ["/hooks/all", "/hooks/paid"]
    # One event is one message: every endpoint gets the same svix-id.
    assert len({r.message_id for r in receiver.requests}) == 1
    rows = deliveries(runtime)
    assert {row.endpoint_id for row in rows} >= {paid["id"]}


def test_no_endpoint_no_delivery(runtime: Runtime) -> None:
    assert emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER) == []
    with runtime.session_factory() as session:
        assert session.scalars(select(Job)).all() == []


def test_unknown_event_type_rejected(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="unknown webhook event type"):
        emit(runtime, "orders.shipped", ORDER)


def test_unserialised_data_rejected(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    from decimal import Decimal

    create_endpoint(client, api_key, receiver.url)
    with pytest.raises(TypeError):
        emit(runtime, events.ORDERS_QUOTE_CREATED, {"amount": Decimal("1.00")})
    assert deliveries(runtime) == []


def test_deleted_endpoint_stops_delivery(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)
    response = client.delete(
        f"{WEBHOOKS}/{endpoint['id']}", headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 204

    with runtime.session_factory() as session:
        job_ids = [job.id for job in session.scalars(select(Job))]
    run_jobs_until(runtime, lambda: _jobs_done(runtime, job_ids))

    assert receiver.requests == []
    assert deliveries(runtime) == []


def _jobs_done(runtime: Runtime, job_ids: list[int]) -> bool:
    with runtime.session_factory() as session:
        rows = session.scalars(select(Job).where(Job.id.in_(job_ids))).all()
        return all(job.status == "done" for job in rows)


def test_url_change_applies_to_retries(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_retry_scale = 0.0001  # type: ignore[attr-defined]
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.behaviour = lambda r: 200 if r.path.endswith("/v2") else 500
    emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)
    run_jobs_until(runtime, lambda: len(attempts(runtime)) >= 1)

    response = client.patch(
        f"{WEBHOOKS}/{endpoint['id']}",
        json={"url": receiver.url + "/v2"},
        headers={"X-API-KEY": api_key},
    )
    assert response.status_code == 200, response.text
    run_jobs_until(runtime, all_settled(runtime))

    assert receiver.requests[0].path == "/hooks"
    assert receiver.requests[-1].path == "/hooks/v2"
    assert attempts(runtime)[-1].url == receiver.url + "/v2"


def test_stale_job_does_nothing(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    create_endpoint(client, api_key, receiver.url)
    [delivery_id] = emit(runtime, events.ORDERS_QUOTE_CREATED, ORDER)
    run_jobs_until(runtime, all_settled(runtime))

    # A second job for the attempt already made, as a duplicate wake-up would add.
    with runtime.session_factory() as session, session.begin():
        session.add(
            Job(
                kind=delivery_module.JOB_KIND,
                payload={"delivery": delivery_id, "resend": 0, "attempt": 1},
                run_at=utcnow(),
            )
        )
        session.add(
            Job(
                kind=delivery_module.JOB_KIND,
                payload={"delivery": str(uuid.uuid4()), "resend": 0, "attempt": 1},
                run_at=utcnow(),
            )
        )
    run_jobs_until(runtime, lambda: _all_jobs_done(runtime))

    assert len(receiver.requests) == 1
    assert len(attempts(runtime)) == 1


def _all_jobs_done(runtime: Runtime) -> bool:
    with runtime.session_factory() as session:
        return all(job.status == "done" for job in session.scalars(select(Job)))


def test_deliveries_listed_newest_first(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.behaviour = lambda r: 500 if r.payload["data"]["n"] == 1 else 200
    for n in range(5):
        emit(runtime, events.ORDERS_TRACKING_UPDATED, {"n": n})
    run_jobs_until(runtime, lambda: len(attempts(runtime)) >= 5)
    path = f"{WEBHOOKS}/{endpoint['id']}/deliveries"
    headers = {"X-API-KEY": api_key}

    first = client.get(path, params={"limit": 2}, headers=headers).json()
    second = client.get(
        path, params={"limit": 2, "cursor": first["nextCursor"]}, headers=headers
    ).json()
    third = client.get(
        path, params={"limit": 2, "cursor": second["nextCursor"]}, headers=headers
    ).json()
    back = client.get(
        path, params={"limit": 2, "cursor": second["previousCursor"]}, headers=headers
    ).json()
    pending = client.get(path, params={"status": "pending"}, headers=headers).json()

    def numbers(page: dict) -> list[int]:  # type: ignore[type-arg]
        return [item["payload"]["data"]["n"] for item in page["data"]]

    assert numbers(first) == [4, 3]
    assert first["previousCursor"] is None
    assert numbers(second) == [2, 1]
    assert numbers(third) == [0]
    assert third["nextCursor"] is None
    assert numbers(back) == [4, 3]
    assert numbers(pending) == [1]
    item = first["data"][0]
    assert item["status"] == "delivered"
    assert item["eventType"] == "orders.tracking.updated"
    assert item["endpointId"] == endpoint["id"]
    assert item["messageId"].startswith("msg_")
    assert item["createdAt"].endswith("Z")
    [attempt] = item["attempts"]
    assert attempt["statusCode"] == 200
    assert attempt["succeeded"] is True
    assert attempt["attemptNumber"] == 1
    assert attempt["resendNumber"] == 0
    assert attempt["responseBody"] == '{"ok": true}'
    assert attempt["attemptedAt"].endswith("Z")
    assert isinstance(attempt["durationMs"], int)
    assert json.loads(json.dumps(item)) == item
    failing = pending["data"][0]
    assert failing["attempts"][0]["statusCode"] == 500
    assert failing["nextAttemptAt"] is not None
