"""The API key lookup cache: fewer key queries, and a bounded delay on revocation."""

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from tests.conftest import KeyMaker

from orderdesk.auth.cache import KEY_CACHE_SECONDS, TtlCache
from orderdesk.auth.models import ApiKey
from orderdesk.auth.services import hash_secret
from orderdesk.db.base import utcnow
from orderdesk.runtime import Runtime

ORDERS = "/api/2022-06-09/orders"
# Slack for a loaded machine on top of the documented bound.
MARGIN_SECONDS = 2.0


@pytest.fixture
def key_queries(runtime: Runtime) -> Iterator[list[str]]:
    """Every SQL statement that reads the api_keys table, as it runs."""
    statements: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many) -> None:  # noqa: ANN001
        if "FROM api_keys" in statement:
            statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", record)
    yield statements
    event.remove(runtime.engine, "before_cursor_execute", record)


def revoke_elsewhere(runtime: Runtime, value: str) -> None:
    """Revoke with a bare UPDATE, as the CLI or another API process would: this
    process's cache hears nothing of it."""
    with runtime.engine.begin() as connection:
        connection.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_secret(value))
            .values(revoked_at=utcnow())
        )


def test_second_request_skips_key_query(
    client: TestClient, make_key: KeyMaker, key_queries: list[str]
) -> None:
    value = make_key("orders.read")
    assert client.get(ORDERS, headers={"X-API-KEY": value}).status_code == 200
    assert len(key_queries) == 1
    assert client.get(ORDERS, headers={"X-API-KEY": value}).status_code == 200
    assert len(key_queries) == 1


def test_unknown_key_queried_each_time(
    client: TestClient, key_queries: list[str]
) -> None:
    unknown = "sk_development_" + "b" * 32
    for _ in range(2):
        response = client.get(ORDERS, headers={"X-API-KEY": unknown})
        assert response.status_code == 401
    assert len(key_queries) == 2


def test_new_key_works_at_once(
    client: TestClient, make_key: KeyMaker, key_queries: list[str]
) -> None:
    value = make_key("orders.read")
    unknown = client.get(ORDERS, headers={"X-API-KEY": value + "x"})
    assert unknown.status_code == 401
    assert client.get(ORDERS, headers={"X-API-KEY": value}).status_code == 200


def test_revocation_elsewhere_within_bound(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    value = make_key("orders.read")
    headers = {"X-API-KEY": value}
    assert client.get(ORDERS, headers=headers).status_code == 200
    revoke_elsewhere(runtime, value)
    revoked_at = time.monotonic()

    deadline = revoked_at + KEY_CACHE_SECONDS + MARGIN_SECONDS
    statuses = []
    while time.monotonic() < deadline:
        response = client.get(ORDERS, headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 401:
            break
        time.sleep(0.2)
    assert statuses[-1] == 401, f"still {statuses[-1]} after the bound"
    assert response.json()["code"] == "key_revoked"
    assert set(statuses[:-1]) <= {200}
    # Once rejected, it stays rejected.
    assert client.get(ORDERS, headers=headers).status_code == 401


def test_cache_entry_expires() -> None:
    now = [100.0]
    cache: TtlCache[str] = TtlCache(5.0, 10, clock=lambda: now[0])
    cache.put("a", "entry")
    now[0] = 104.9
    assert cache.get("a") == "entry"
    now[0] = 105.0
    assert cache.get("a") is None
    assert len(cache) == 0


def test_cache_drops_oldest_when_full() -> None:
    cache: TtlCache[int] = TtlCache(60.0, 2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None
    assert cache.get("b") == 2
    assert cache.get("c") == 3


def test_cache_discard_removes_entry() -> None:
    cache: TtlCache[int] = TtlCache(60.0, 2)
    cache.put("a", 1)
    cache.discard("a")
    cache.discard("missing")
    assert cache.get("a") is None
