"""The endpoints API: create, list, get, edit, delete, rotate, and bad input."""

from __future__ import annotations

import base64
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.conftest import KeyMaker
from tests.webhooks.conftest import (
    WEBHOOKS,
    Receiver,
    all_settled,
    create_endpoint,
    emit,
    project_id,
    run_jobs_until,
)

from orderdesk.runtime import Runtime
from orderdesk.webhooks import events, services
from orderdesk.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

URL = "https://merchant.example.com/webhooks"


def endpoint_rows(runtime: Runtime) -> list[dict[str, Any]]:
    """Every endpoint column, to show that a rejected request changed nothing."""
    with runtime.session_factory() as session:
        rows = session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))
        return [
            {c.name: getattr(row, c.key) for c in WebhookEndpoint.__mapper__.columns}
            for row in rows
        ]


def count(runtime: Runtime, model: type) -> int:
    with runtime.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_create_shows_secret_once(client: TestClient, api_key: str) -> None:
    headers = {"X-API-KEY": api_key}
    response = client.post(
        WEBHOOKS,
        json={"url": URL, "events": ["orders.payment.succeeded"], "description": "ERP"},
        headers=headers,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["url"] == URL
    assert body["events"] == ["orders.payment.succeeded"]
    assert body["description"] == "ERP"
    assert body["createdAt"].endswith("Z")
    assert body["previousSecretExpiresAt"] is None
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_") :], validate=True)) >= 24
    one = client.get(f"{WEBHOOKS}/{body['id']}", headers=headers)
    assert one.status_code == 200
    assert "secret" not in one.json()
    assert secret not in one.text
    listed = client.get(WEBHOOKS, headers=headers)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["data"]] == [body["id"]]
    assert secret not in listed.text


def test_list_only_own_project(
    client: TestClient, api_key: str, make_key: KeyMaker
) -> None:
    mine = create_endpoint(client, api_key, URL)
    other_key = make_key("webhooks.manage", project="other-project")
    create_endpoint(client, other_key, URL + "/other")

    listed = client.get(WEBHOOKS, headers={"X-API-KEY": api_key}).json()["data"]

    assert [item["id"] for item in listed] == [mine["id"]]


def test_all_events_wildcard(client: TestClient, api_key: str) -> None:
    body = create_endpoint(client, api_key, URL, ["*"])
    assert body["events"] == ["*"]


def test_every_event_type_accepted(client: TestClient, api_key: str) -> None:
    body = create_endpoint(client, api_key, URL, list(events.EVENT_TYPES))
    assert body["events"] == list(events.EVENT_TYPES)
    assert len(events.EVENT_TYPES) == 12


def test_patch_changes_fields(client: TestClient, api_key: str) -> None:
    endpoint = create_endpoint(client, api_key, URL, description="old")
    path = f"{WEBHOOKS}/{endpoint['id']}"
    headers = {"X-API-KEY": api_key}

    changed = client.patch(
        path,
        json={"url": URL + "/v2", "events": ["orders.refund.initiated"]},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == URL + "/v2"
    assert changed.json()["events"] == ["orders.refund.initiated"]
    assert changed.json()["description"] == "old"
    assert "secret" not in changed.json()
    cleared = client.patch(path, json={"description": None}, headers=headers)
    assert cleared.status_code == 200
    assert cleared.json()["description"] is None
    assert client.get(path, headers=headers).json() == cleared.json()


def test_delete_removes_history(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    emit(runtime, events.ORDERS_QUOTE_CREATED, {"n": 1})
    run_jobs_until(runtime, all_settled(runtime))
    headers = {"X-API-KEY": api_key}

    response = client.delete(f"{WEBHOOKS}/{endpoint['id']}", headers=headers)

    assert response.status_code == 204
    assert response.content == b""
    assert (
        client.get(f"{WEBHOOKS}/{endpoint['id']}", headers=headers).status_code == 404
    )
    assert count(runtime, WebhookDelivery) == 0
    assert count(runtime, WebhookAttempt) == 0
    again = client.delete(f"{WEBHOOKS}/{endpoint['id']}", headers=headers)
    assert again.status_code == 404


def test_rotate_keeps_old_for_a_day(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    endpoint = create_endpoint(client, api_key, URL)

    response = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/rotate-secret", headers={"X-API-KEY": api_key}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != endpoint["secret"]
    grace = parse_time(body["previousSecretExpiresAt"]) - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < grace <= timedelta(hours=24)
    [row] = endpoint_rows(runtime)
    assert row["secret"] == body["secret"]
    assert row["previous_secret"] == endpoint["secret"]


def test_rotate_twice_drops_oldest(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    endpoint = create_endpoint(client, api_key, URL)
    path = f"{WEBHOOKS}/{endpoint['id']}/rotate-secret"
    second = client.post(path, headers={"X-API-KEY": api_key}).json()["secret"]
    third = client.post(path, json={}, headers={"X-API-KEY": api_key}).json()["secret"]

    [row] = endpoint_rows(runtime)
    assert row["secret"] == third
    assert row["previous_secret"] == second


def test_scope_required(client: TestClient, make_key: KeyMaker, api_key: str) -> None:
    endpoint = create_endpoint(client, api_key, URL)
    reader = make_key("orders.read", "orders.update", "orders.fulfill")

    for method, path in routes(endpoint["id"], "0" * 8 + "-0000-4000-8000-" + "0" * 12):
        response = client.request(
            method, path, json=None, headers={"X-API-KEY": reader}
        )
        assert response.status_code == 403, (method, path)
        assert "webhooks.manage" in response.json()["message"]
        secret = client.request(method, path, headers={"Authorization": "cs_whatever"})
        assert secret.status_code == 403, (method, path)
    anonymous = client.get(WEBHOOKS)
    assert anonymous.status_code == 401


def routes(endpoint_id: str, delivery_id: str) -> list[tuple[str, str]]:
    return [
        ("POST", WEBHOOKS),
        ("GET", WEBHOOKS),
        ("GET", f"{WEBHOOKS}/{endpoint_id}"),
        ("PATCH", f"{WEBHOOKS}/{endpoint_id}"),
        ("DELETE", f"{WEBHOOKS}/{endpoint_id}"),
        ("POST", f"{WEBHOOKS}/{endpoint_id}/rotate-secret"),
        ("GET", f"{WEBHOOKS}/{endpoint_id}/deliveries"),
        ("POST", f"{WEBHOOKS}/{endpoint_id}/deliveries/{delivery_id}/resend"),
    ]


def test_other_project_gets_404(
    client: TestClient,
    api_key: str,
    make_key: KeyMaker,
    runtime: Runtime,
    receiver: Receiver,
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    [delivery_id] = emit(runtime, events.ORDERS_QUOTE_CREATED, {"n": 1})
    run_jobs_until(runtime, all_settled(runtime))
    before = endpoint_rows(runtime)
    stranger = make_key("webhooks.manage", project="other-project")
    bodies = {"PATCH": {"description": "mine now"}}

    for method, path in routes(endpoint["id"], delivery_id)[2:]:
        response = client.request(
            method, path, json=bodies.get(method), headers={"X-API-KEY": stranger}
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "webhook_endpoint_not_found"

    assert endpoint_rows(runtime) == before
    assert len(receiver.requests) == 1


def test_unknown_ids_get_404(client: TestClient, api_key: str) -> None:
    endpoint = create_endpoint(client, api_key, URL)
    headers = {"X-API-KEY": api_key}
    unknown = "6f0b8a52-4a8e-4d0e-8d55-5a1b2f0e9c11"

    for endpoint_id in (unknown, "not-a-uuid", unknown.upper()):
        response = client.get(f"{WEBHOOKS}/{endpoint_id}", headers=headers)
        assert response.status_code == 404, endpoint_id
    for delivery_id in (unknown, "42"):
        response = client.post(
            f"{WEBHOOKS}/{endpoint['id']}/deliveries/{delivery_id}/resend",
            headers=headers,
        )
        assert response.status_code == 404
        assert response.json()["code"] == "webhook_delivery_not_found"


CREATE_BAD_BODIES: list[tuple[Any, str]] = [
    ({"url": URL, "events": ["*"], "secret": "whsec_x"}, "secret"),
    ({"events": ["*"]}, "url"),
    ({"url": URL}, "events"),
    ({"url": 5, "events": ["*"]}, "url"),
    ({"url": None, "events": ["*"]}, "url"),
    ({"url": "ftp://merchant.example.com/x", "events": ["*"]}, "url"),
    ({"url": "merchant.example.com/hook", "events": ["*"]}, "url"),
    ({"url": "https://", "events": ["*"]}, "url"),
    ({"url": "https://exa mple.com/", "events": ["*"]}, "url"),
    ({"url": "https://example.com/\n", "events": ["*"]}, "url"),
    ({"url": "https://example.com:99999/", "events": ["*"]}, "url"),
    ({"url": "https://example.com/" + "a" * 2030, "events": ["*"]}, "url"),
    ({"url": URL, "events": []}, "events"),
    ({"url": URL, "events": "*"}, "events"),
    ({"url": URL, "events": ["orders.shipped"]}, "events"),
    ({"url": URL, "events": ["*", "orders.quote.created"]}, "events"),
    (
        {"url": URL, "events": ["orders.quote.created", "orders.quote.created"]},
        "events",
    ),
    ({"url": URL, "events": [1]}, "events.0"),
    ({"url": URL, "events": ["*"], "description": 5}, "description"),
    ({"url": URL, "events": ["*"], "description": "x" * 501}, "description"),
    ({"url": URL, "events": ["*"], "description": "line\nbreak"}, "description"),
    ([URL], "body"),
]


@pytest.mark.parametrize(("body", "field"), CREATE_BAD_BODIES)
def test_create_rejects_bad_body(
    client: TestClient, api_key: str, runtime: Runtime, body: Any, field: str
) -> None:
    response = client.post(WEBHOOKS, json=body, headers={"X-API-KEY": api_key})

    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] is True
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]], error
    assert count(runtime, WebhookEndpoint) == 0


def test_create_rejects_non_json(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    headers = {"X-API-KEY": api_key}
    broken = client.post(
        WEBHOOKS,
        content=b"{not json",
        headers={**headers, "content-type": "application/json"},
    )
    text = client.post(
        WEBHOOKS, content=b"url=x", headers={**headers, "content-type": "text/plain"}
    )
    empty = client.post(WEBHOOKS, headers=headers)

    assert broken.status_code == 400
    assert broken.json()["code"] == "invalid_json"
    assert text.status_code == 415
    assert empty.status_code == 415
    assert count(runtime, WebhookEndpoint) == 0


PATCH_BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "body"),
    ({"secret": "whsec_x"}, "secret"),
    ({"url": None}, "url"),
    ({"events": None}, "events"),
    ({"url": "javascript:alert(1)"}, "url"),
    ({"events": []}, "events"),
    ({"events": ["orders.nope"]}, "events"),
    ({"description": ["x"]}, "description"),
    ({"url": "https://ok.example.com/", "events": ["bad"]}, "events"),
]


@pytest.mark.parametrize(("body", "field"), PATCH_BAD_BODIES)
def test_patch_rejects_bad_body(
    client: TestClient, api_key: str, runtime: Runtime, body: Any, field: str
) -> None:
    endpoint = create_endpoint(client, api_key, URL, description="kept")
    before = endpoint_rows(runtime)

    response = client.patch(
        f"{WEBHOOKS}/{endpoint['id']}", json=body, headers={"X-API-KEY": api_key}
    )

    assert response.status_code == 400, response.text
    assert field in [d["field"] for d in response.json()["details"]]
    assert endpoint_rows(runtime) == before


@pytest.mark.parametrize("body", [{"reason": "x"}, [], "now"])
def test_actions_reject_bodies(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    receiver: Receiver,
    body: Any,
) -> None:
    endpoint = create_endpoint(client, api_key, receiver.url)
    [delivery_id] = emit(runtime, events.ORDERS_QUOTE_CREATED, {"n": 1})
    run_jobs_until(runtime, all_settled(runtime))
    before = endpoint_rows(runtime)
    headers = {"X-API-KEY": api_key}

    rotate = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/rotate-secret", json=body, headers=headers
    )
    resend = client.post(
        f"{WEBHOOKS}/{endpoint['id']}/deliveries/{delivery_id}/resend",
        json=body,
        headers=headers,
    )

    assert rotate.status_code == 400, rotate.text
    assert resend.status_code == 400, resend.text
    assert endpoint_rows(runtime) == before
    with runtime.session_factory() as session:
        [row] = session.scalars(select(WebhookDelivery)).all()
        assert row.status == "delivered"
        assert row.resend_count == 0


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "1.5"},
        {"limit": "true"},
        {"cursor": "bogus"},
        {"cursor": base64.urlsafe_b64encode(b'["next", "1"]').decode()},
        {"status": "lost"},
    ],
)
def test_deliveries_reject_bad_query(
    client: TestClient, api_key: str, params: dict[str, Any]
) -> None:
    endpoint = create_endpoint(client, api_key, URL)

    response = client.get(
        f"{WEBHOOKS}/{endpoint['id']}/deliveries",
        params=params,
        headers={"X-API-KEY": api_key},
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"] is True


def test_endpoint_count_limited(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    owner = project_id(runtime)
    with runtime.session_factory() as session, session.begin():
        for n in range(services.MAX_ENDPOINTS_PER_PROJECT):
            services.create_endpoint(
                session,
                runtime.settings,
                owner,
                "test",
                url=f"{URL}/{n}",
                events=["*"],
            )

    response = client.post(
        WEBHOOKS, json={"url": URL, "events": ["*"]}, headers={"X-API-KEY": api_key}
    )

    assert response.status_code == 409
    assert response.json()["code"] == "too_many_webhook_endpoints"
    assert count(runtime, WebhookEndpoint) == services.MAX_ENDPOINTS_PER_PROJECT


def test_delete_waits_for_emit(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    endpoint = create_endpoint(client, api_key, URL)
    owner = project_id(runtime)
    results: list[int] = []

    def delete() -> None:
        response = client.delete(
            f"{WEBHOOKS}/{endpoint['id']}", headers={"X-API-KEY": api_key}
        )
        results.append(response.status_code)

    with runtime.session_factory() as session, session.begin():
        [row] = services.emit_event(session, owner, events.ORDERS_QUOTE_CREATED, {})
        deleter = threading.Thread(target=delete)
        deleter.start()
        time.sleep(0.3)
        # The delete waits for the emitting transaction instead of breaking it.
        assert deleter.is_alive()
    deleter.join(timeout=30)

    assert results == [204]
    assert count(runtime, WebhookEndpoint) == 0
    assert count(runtime, WebhookDelivery) == 0
