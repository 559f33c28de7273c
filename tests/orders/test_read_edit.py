import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import KeyMaker
from tests.orders.helpers import ADDRESS, ORDERS, create, seed_catalog

from orderdesk.orders.models import OrderEvent
from orderdesk.runtime import Runtime


@pytest.fixture(autouse=True)
def _catalog(runtime: Runtime) -> None:
    seed_catalog(runtime)


def test_get_with_key_and_secret(client: TestClient, api_key: str) -> None:
    answer = create(client, api_key)
    order_id = answer["order"]["orderId"]
    by_key = client.get(f"{ORDERS}/{order_id}", headers={"X-API-KEY": api_key})
    by_secret = client.get(
        f"{ORDERS}/{order_id}", headers={"Authorization": answer["clientSecret"]}
    )
    assert by_key.status_code == 200
    assert by_secret.status_code == 200
    assert by_key.json()["orderId"] == order_id
    assert by_secret.json()["quote"] == by_key.json()["quote"]


def test_secret_of_other_order_rejected(client: TestClient, api_key: str) -> None:
    first = create(client, api_key)
    second = create(client, api_key)
    response = client.get(
        f"{ORDERS}/{second['order']['orderId']}",
        headers={"Authorization": first["clientSecret"]},
    )
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_client_secret"


def test_bearer_prefix_is_not_a_secret(client: TestClient, api_key: str) -> None:
    answer = create(client, api_key)
    response = client.get(
        f"{ORDERS}/{answer['order']['orderId']}",
        headers={"Authorization": f"Bearer {answer['clientSecret']}"},
    )
    assert response.status_code == 401


def test_secret_cannot_list_orders(client: TestClient, api_key: str) -> None:
    answer = create(client, api_key)
    response = client.get(ORDERS, headers={"Authorization": answer["clientSecret"]})
    assert response.status_code == 403


@pytest.mark.parametrize(
    "order_id", ["nope", "1", str(uuid.uuid4()), str(uuid.uuid4()).upper(), "%20"]
)
def test_unknown_or_malformed_id_404(
    client: TestClient, api_key: str, order_id: str
) -> None:
    response = client.get(f"{ORDERS}/{order_id}", headers={"X-API-KEY": api_key})
    assert response.status_code == 404
    assert response.json()["code"] == "order_not_found"


def test_other_project_gets_404(
    client: TestClient, api_key: str, make_key: KeyMaker
) -> None:
    order_id = create(client, api_key)["order"]["orderId"]
    other = make_key("orders.read", "orders.update", project="other-project")
    assert (
        client.get(f"{ORDERS}/{order_id}", headers={"X-API-KEY": other}).status_code
        == 404
    )
    patch = client.patch(
        f"{ORDERS}/{order_id}", json={"locale": "fr-FR"}, headers={"X-API-KEY": other}
    )
    assert patch.status_code == 404


def test_list_newest_first_with_cursors(client: TestClient, api_key: str) -> None:
    ids = [create(client, api_key)["order"]["orderId"] for _ in range(7)]
    newest_first = list(reversed(ids))
    headers = {"X-API-KEY": api_key}
    page1 = client.get(ORDERS, params={"limit": 3}, headers=headers).json()
    assert [o["orderId"] for o in page1["data"]] == newest_first[:3]
    assert page1["previousCursor"] is None
    page2 = client.get(
        ORDERS, params={"limit": 3, "cursor": page1["nextCursor"]}, headers=headers
    ).json()
    assert [o["orderId"] for o in page2["data"]] == newest_first[3:6]
    page3 = client.get(
        ORDERS, params={"limit": 3, "cursor": page2["nextCursor"]}, headers=headers
    ).json()
    assert [o["orderId"] for o in page3["data"]] == newest_first[6:]
    assert page3["nextCursor"] is None
    back = client.get(
        ORDERS, params={"limit": 3, "cursor": page3["previousCursor"]}, headers=headers
    ).json()
    assert [o["orderId"] for o in back["data"]] == newest_first[3:6]


def test_list_stable_under_inserts(client: TestClient, api_key: str) -> None:
    headers = {"X-API-KEY": api_key}
    ids = [create(client, api_key)["order"]["orderId"] for _ in range(4)]
    page1 = client.get(ORDERS, params={"limit": 2}, headers=headers).json()
    for _ in range(3):
        create(client, api_key)
    page2 = client.get(
        ORDERS, params={"limit": 2, "cursor": page1["nextCursor"]}, headers=headers
    ).json()
    assert [o["orderId"] for o in page2["data"]] == [ids[1], ids[0]]


def test_list_only_own_project(
    client: TestClient, api_key: str, make_key: KeyMaker
) -> None:
    create(client, api_key)
    other = make_key("orders.read", project="other-project")
    assert client.get(ORDERS, headers={"X-API-KEY": other}).json()["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "abc"},
        {"limit": "1.5"},
        {"limit": "true"},
        {"cursor": "garbage"},
        {"cursor": "W10"},
    ],
)
def test_list_bad_parameters(client: TestClient, api_key: str, params: dict) -> None:
    response = client.get(ORDERS, params=params, headers={"X-API-KEY": api_key})
    assert response.status_code == 400
    assert response.json()["error"] is True


def test_patch_requotes(client: TestClient, api_key: str, runtime: Runtime) -> None:
    answer = create(client, api_key, recipient=None)
    order_id = answer["order"]["orderId"]
    assert answer["order"]["quote"]["status"] == "requires-recipient"
    response = client.patch(
        f"{ORDERS}/{order_id}",
        json={
            "recipient": {"email": "new@example.com", "physicalAddress": ADDRESS},
            "locale": "es-ES",
        },
        headers={"Authorization": answer["clientSecret"]},
    )
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["quote"]["status"] == "valid"
    assert order["locale"] == "es-ES"
    assert order["quote"]["quotedAt"] >= answer["order"]["quote"]["quotedAt"]
    with runtime.session_factory() as session:
        kinds = list(
            session.scalars(
                select(OrderEvent.kind).where(OrderEvent.order_id == order_id)
            )
        )
    assert kinds == ["order.created", "order.updated"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            {"lineItems": [{"productLocator": "amazon:B08N5WRWNW"}]},
            "line_items_immutable",
        ),
        ({"quote": {}}, "invalid_request"),
        ({"payment": {"method": "devnet"}}, "invalid_request"),
        ({"payment": None}, "invalid_request"),
        ({"locale": 5}, "invalid_request"),
    ],
)
def test_patch_rejects_bad_body(
    client: TestClient, api_key: str, body: dict, code: str
) -> None:
    answer = create(client, api_key)
    order_id = answer["order"]["orderId"]
    response = client.patch(
        f"{ORDERS}/{order_id}", json=body, headers={"X-API-KEY": api_key}
    )
    assert response.status_code == 400
    assert response.json()["code"] == code
    after = client.get(f"{ORDERS}/{order_id}", headers={"X-API-KEY": api_key}).json()
    assert after["quote"] == answer["order"]["quote"]


def test_patch_needs_update_scope(
    client: TestClient, api_key: str, make_key: KeyMaker
) -> None:
    order_id = create(client, api_key)["order"]["orderId"]
    reader = make_key("orders.read")
    response = client.patch(
        f"{ORDERS}/{order_id}", json={"locale": "fr-FR"}, headers={"X-API-KEY": reader}
    )
    assert response.status_code == 403
    assert "orders.update" in response.json()["message"]


def test_concurrent_creates_all_stored(live_server, api_key: str) -> None:
    import requests
    from tests.orders.helpers import order_body

    def make(_: int) -> int:
        return requests.post(
            f"{live_server.url}{ORDERS}",
            json=order_body(),
            headers={"X-API-KEY": api_key},
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(make, range(16)))
    assert statuses == [201] * 16
    listed = requests.get(
        f"{live_server.url}{ORDERS}",
        params={"limit": 100},
        headers={"X-API-KEY": api_key},
        timeout=30,
    ).json()
    assert len(listed["data"]) == 16
