"""In production, webhooks reach only public addresses, checked on save and on send.

Every URL here is an IP literal or `localhost`, so no test sends a DNS query, and
requests go only to the receiver on loopback.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.webhooks.conftest import (
    WEBHOOKS,
    Receiver,
    all_settled,
    create_endpoint,
    deliveries,
    emit,
    run_jobs_until,
)

from orderdesk.runtime import Runtime
from orderdesk.webhooks import events, urls
from orderdesk.webhooks.models import WebhookAttempt, WebhookEndpoint


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"environment": "production"}


def endpoint_count(runtime: Runtime) -> int:
    with runtime.session_factory() as session:
        return int(
            session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0
        )


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8000/hooks", "loopback"),
        ("http://localhost/hooks", "loopback"),
        ("http://[::1]/hooks", "loopback"),
        ("http://10.0.0.5/hooks", "private"),
        ("http://192.168.0.10/hooks", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
    ],
)
def test_internal_url_rejected(
    client: TestClient, api_key: str, runtime: Runtime, url: str, kind: str
) -> None:
    response = client.post(
        WEBHOOKS, json={"url": url, "events": ["*"]}, headers={"X-API-KEY": api_key}
    )

    assert response.status_code == 400, response.text
    [detail] = response.json()["details"]
    assert detail["field"] == "url"
    assert kind in detail["message"]
    assert endpoint_count(runtime) == 0


def test_public_url_accepted(client: TestClient, api_key: str) -> None:
    # Saved only: no event is emitted, so nothing is sent to this address.
    body = create_endpoint(client, api_key, "https://93.184.216.34/hooks")
    assert body["url"] == "https://93.184.216.34/hooks"


def test_patch_to_internal_rejected(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    endpoint = create_endpoint(client, api_key, "https://93.184.216.34/hooks")

    response = client.patch(
        f"{WEBHOOKS}/{endpoint['id']}",
        json={"url": "http://127.0.0.1/hooks"},
        headers={"X-API-KEY": api_key},
    )

    assert response.status_code == 400
    with runtime.session_factory() as session:
        [row] = session.scalars(select(WebhookEndpoint)).all()
        assert row.url == "https://93.184.216.34/hooks"


def test_setting_allows_internal_urls(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    runtime.settings.webhook_allow_private_urls = True  # type: ignore[attr-defined]
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    emit(runtime, events.ORDERS_QUOTE_CREATED, {"n": 1})

    run_jobs_until(runtime, all_settled(runtime))

    assert [r.verified_by for r in receiver.requests] == [[endpoint["secret"]]]


def test_send_time_check_blocks(
    client: TestClient, api_key: str, runtime: Runtime, receiver: Receiver
) -> None:
    # Saved while allowed, then the rule applies again, as if DNS had changed.
    runtime.settings.webhook_allow_private_urls = True  # type: ignore[attr-defined]
    create_endpoint(client, api_key, receiver.url)
    runtime.settings.webhook_allow_private_urls = False  # type: ignore[attr-defined]
    emit(runtime, events.ORDERS_QUOTE_CREATED, {"n": 1})

    run_jobs_until(runtime, lambda: _attempts(runtime) == 1)

    assert receiver.requests == []
    with runtime.session_factory() as session:
        [attempt] = session.scalars(select(WebhookAttempt)).all()
    assert attempt.status_code is None
    assert attempt.error is not None
    assert "host 127.0.0.1 is a loopback address" in attempt.error
    assert deliveries(runtime)[0].status == "pending"


def _attempts(runtime: Runtime) -> int:
    with runtime.session_factory() as session:
        return int(
            session.scalar(select(func.count()).select_from(WebhookAttempt)) or 0
        )


def test_request_pinned_to_checked_address(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolved = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    if resolved[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    # Treat loopback as public, so the production path runs against the receiver:
    # resolve, check, then connect to that address with the name in Host.
    monkeypatch.setattr(
        urls,
        "address_problem",
        lambda address: None if address == ipaddress.ip_address("127.0.0.1") else "no",
    )
    port = receiver.server.server_address[1]
    endpoint = create_endpoint(client, api_key, f"http://localhost:{port}/hooks")
    receiver.secrets = [endpoint["secret"]]
    emit(runtime, events.ORDERS_QUOTE_CREATED, {"n": 1})

    run_jobs_until(runtime, all_settled(runtime))

    [request] = receiver.requests
    assert request.headers["host"] == f"localhost:{port}"
    assert request.verified_by == [endpoint["secret"]]
    assert deliveries(runtime)[0].status == "delivered"
