import threading
from datetime import timedelta
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests import factories
from tests.conftest import KeyMaker, LiveServer
from tests.refunds.helpers import refund_request, refunds_of, shipped_order
from tests.shipping.helpers import ORDERS, new_paid_order, table_counts

from orderdesk.db.base import utcnow
from orderdesk.refunds.idempotency import purge_expired
from orderdesk.refunds.models import IdempotencyRecord
from orderdesk.runtime import Runtime

BODY = {"lineItem": 0, "reason": "Arrived broken"}


def records(runtime: Runtime) -> list[IdempotencyRecord]:
    with runtime.session_factory() as session:
        return list(
            session.scalars(select(IdempotencyRecord).order_by(IdempotencyRecord.id))
        )


def test_same_key_replays_response(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    first = refund_request(client, order.id, BODY, key=api_key, idempotency_key="key-1")
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    before = table_counts(runtime)
    again = refund_request(client, order.id, BODY, key=api_key, idempotency_key="key-1")
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert table_counts(runtime) == before
    assert len(refunds_of(runtime, order.id)) == 1
    [record] = records(runtime)
    assert record.key == "key-1"
    assert record.principal.startswith("project:")
    assert record.status_code == 201
    assert record.body == first.json()


def test_reformatted_body_replays(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    first = refund_request(client, order.id, BODY, key=api_key, idempotency_key="key-2")
    again = client.post(
        f"{ORDERS}/{order.id}/refunds",
        content=b'{ "reason" : "Arrived broken",\n  "lineItem": 0 }',
        headers={
            "X-API-KEY": api_key,
            "Idempotency-Key": "key-2",
            "Content-Type": "application/json",
        },
    )
    assert again.status_code == 201
    assert again.json() == first.json()


@pytest.mark.parametrize(
    "other",
    [
        {"lineItem": 1, "reason": "Arrived broken"},
        {"lineItem": 0, "reason": "Arrived broken!"},
        {"lineItem": 0, "reason": "Arrived broken", "extra": True},
    ],
)
def test_other_body_conflicts(
    client: TestClient, api_key: str, runtime: Runtime, other: dict[str, Any]
) -> None:
    order = shipped_order(runtime)
    refund_request(client, order.id, BODY, key=api_key, idempotency_key="key-3")
    before = table_counts(runtime)
    response = refund_request(
        client, order.id, other, key=api_key, idempotency_key="key-3"
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "idempotency_key_reused"
    assert "key-3" in body["message"]
    assert table_counts(runtime) == before


def test_other_order_conflicts(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    first, second = shipped_order(runtime), shipped_order(runtime)
    refund_request(client, first.id, BODY, key=api_key, idempotency_key="key-4")
    response = refund_request(
        client, second.id, BODY, key=api_key, idempotency_key="key-4"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"
    assert refunds_of(runtime, second.id) == []


def test_keys_scoped_per_principal(
    client: TestClient, make_key: KeyMaker, runtime: Runtime
) -> None:
    mine = make_key("orders.update")
    theirs = make_key("orders.update", project="other-project")
    my_order = shipped_order(runtime)
    their_order = shipped_order(runtime, project="other-project")
    assert (
        refund_request(
            client, my_order.id, BODY, key=mine, idempotency_key="shared"
        ).status_code
        == 201
    )
    response = refund_request(
        client, their_order.id, BODY, key=theirs, idempotency_key="shared"
    )
    assert response.status_code == 201
    assert response.json()["orderId"] == their_order.id
    # A client secret has its own key space, apart from the project's.
    by_secret = refund_request(
        client,
        my_order.id,
        {"lineItem": 1, "reason": "x"},
        secret=my_order.client_secret,
        idempotency_key="shared",
    )
    assert by_secret.status_code == 201
    assert by_secret.json()["lineItem"] == 1
    scopes = sorted(record.principal.split(":")[0] for record in records(runtime))
    assert scopes == ["order", "project", "project"]


def test_secret_key_replays(client: TestClient, runtime: Runtime) -> None:
    order = shipped_order(runtime)
    first = refund_request(
        client, order.id, BODY, secret=order.client_secret, idempotency_key="k"
    )
    again = refund_request(
        client, order.id, BODY, secret=order.client_secret, idempotency_key="k"
    )
    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json() == first.json()
    [record] = records(runtime)
    assert record.principal == f"order:{order.id}"


@pytest.mark.parametrize(
    "key",
    ["", " ", "has space", "tab\tkey", "caf\u00e9", "k" * 256, " leading", "trailing "],
)
def test_invalid_key_rejected(
    client: TestClient, api_key: str, runtime: Runtime, key: str
) -> None:
    order = shipped_order(runtime)
    before = table_counts(runtime)
    response = client.post(
        f"{ORDERS}/{order.id}/refunds",
        json=BODY,
        headers={"X-API-KEY": api_key, "Idempotency-Key": key.encode("latin-1")},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_idempotency_key"
    assert table_counts(runtime) == before


def test_longest_key_accepted(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    key = "!~" + "K" * 253
    response = refund_request(client, order.id, BODY, key=api_key, idempotency_key=key)
    assert response.status_code == 201
    assert records(runtime)[0].key == key


def test_errors_are_not_stored(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = new_paid_order(runtime)
    rejected = refund_request(
        client, order.id, BODY, key=api_key, idempotency_key="retry"
    )
    assert rejected.status_code == 409
    assert rejected.json()["code"] == "line_item_not_shipped"
    assert records(runtime) == []
    invalid = refund_request(
        client,
        order.id,
        {"lineItem": "0", "reason": "x"},
        key=api_key,
        idempotency_key="retry",
    )
    assert invalid.status_code == 400
    assert records(runtime) == []
    with runtime.session_factory() as session, session.begin():
        factories.make_package(session, order.id, [0])
    accepted = refund_request(
        client, order.id, BODY, key=api_key, idempotency_key="retry"
    )
    assert accepted.status_code == 201
    assert len(records(runtime)) == 1


def test_expired_key_ignored(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_request(client, order.id, BODY, key=api_key, idempotency_key="old")
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(IdempotencyRecord).values(
                created_at=utcnow() - timedelta(hours=24, seconds=1)
            )
        )
    other = {"lineItem": 1, "reason": "Different item"}
    response = refund_request(
        client, order.id, other, key=api_key, idempotency_key="old"
    )
    assert response.status_code == 201, response.text
    assert response.json()["lineItem"] == 1
    [record] = records(runtime)
    assert record.body == response.json()


def test_recent_key_still_kept(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_request(client, order.id, BODY, key=api_key, idempotency_key="recent")
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(IdempotencyRecord).values(
                created_at=utcnow() - timedelta(hours=23, minutes=59)
            )
        )
    other = {"lineItem": 1, "reason": "Different item"}
    response = refund_request(
        client, order.id, other, key=api_key, idempotency_key="recent"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"


def test_purge_deletes_old_records(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    refund_request(client, order.id, BODY, key=api_key, idempotency_key="a")
    refund_request(
        client,
        order.id,
        {"lineItem": 1, "reason": "x"},
        key=api_key,
        idempotency_key="b",
    )
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "a")
            .values(created_at=utcnow() - timedelta(hours=25))
        )
    with runtime.session_factory() as session, session.begin():
        assert purge_expired(session) == 1
    assert [record.key for record in records(runtime)] == ["b"]


def test_concurrent_same_key_one_refund(
    live_server: LiveServer, api_key: str, runtime: Runtime
) -> None:
    order = shipped_order(runtime)
    barrier = threading.Barrier(10)
    answers: list[requests.Response] = []

    def post() -> None:
        barrier.wait()
        answers.append(
            requests.post(
                f"{live_server.url}{ORDERS}/{order.id}/refunds",
                json=BODY,
                headers={"X-API-KEY": api_key, "Idempotency-Key": "together"},
                timeout=60,
            )
        )

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.status_code for answer in answers] == [201] * 10
    assert len({answer.json()["refundId"] for answer in answers}) == 1
    assert sum("idempotent-replayed" in answer.headers for answer in answers) == 9
    assert len(refunds_of(runtime, order.id)) == 1
    assert len(records(runtime)) == 1
