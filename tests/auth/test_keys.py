import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import KeyMaker

from orderdesk.auth.models import ApiKey
from orderdesk.auth.services import revoke_api_key
from orderdesk.runtime import Runtime

ORDERS = "/api/2022-06-09/orders"


def test_key_stored_only_as_hash(make_key: KeyMaker, runtime: Runtime) -> None:
    value = make_key("orders.read")
    assert value.startswith("sk_development_")
    with runtime.session_factory() as session:
        keys = list(session.scalars(select(ApiKey)))
    assert len(keys) == 1
    assert keys[0].key_hash == hashlib.sha256(value.encode()).hexdigest()
    assert value not in (keys[0].display_prefix, keys[0].key_hash, keys[0].scopes)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"X-API-KEY": "nonsense"}, "unauthorized"),
        ({"X-API-KEY": "sk_development_" + "a" * 32}, "unauthorized"),
        ({"x-api-key": "sk_production_" + "a" * 32}, "environment_mismatch"),
        ({"X-Api-Key": "sk_staging_" + "a" * 32}, "environment_mismatch"),
    ],
)
def test_bad_credentials_get_401(client: TestClient, headers: dict, code: str) -> None:
    response = client.get(ORDERS, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response.json()["error"] is True


def test_environment_mismatch_names_both(client: TestClient) -> None:
    body = client.get(ORDERS, headers={"X-API-KEY": "sk_production_" + "a" * 32}).json()
    assert "production" in body["message"]
    assert "development" in body["message"]


def test_revoked_key_gets_401(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    value = make_key("orders.read")
    assert client.get(ORDERS, headers={"X-API-KEY": value}).status_code == 200
    with runtime.session_factory() as session, session.begin():
        revoke_api_key(session, value)
    response = client.get(ORDERS, headers={"X-API-KEY": value})
    assert response.status_code == 401
    assert response.json()["code"] == "key_revoked"


def test_missing_scope_names_it(client: TestClient, make_key: KeyMaker) -> None:
    reader = make_key("orders.read")
    response = client.post(ORDERS, json={}, headers={"X-API-KEY": reader})
    assert response.status_code == 403
    assert "orders.create" in response.json()["message"]


def test_scope_never_implies_another(client: TestClient, make_key: KeyMaker) -> None:
    writer = make_key(
        "orders.create",
        "orders.update",
        "orders.fulfill",
        "refunds.review",
        "webhooks.manage",
    )
    assert client.get(ORDERS, headers={"X-API-KEY": writer}).status_code == 403


def test_unknown_route_json_404(client: TestClient) -> None:
    response = client.get("/api/2022-06-09/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] is True
