from fastapi.testclient import TestClient


def test_request_id_generated_and_echoed(client: TestClient) -> None:
    generated = client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    echoed = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"


def test_bad_request_id_replaced(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert response.headers["x-request-id"] != "x" * 500


def test_metrics_count_by_route_template(client: TestClient, api_key: str) -> None:
    client.get("/api/2022-06-09/orders/does-not-exist", headers={"X-API-KEY": api_key})
    page = client.get("/metrics").text
    assert (
        'orderdesk_http_requests_total{method="GET",route="/api/2022-06-09/orders/{order_id}",'
        'status="404"} 1.0'
    ) in page
    assert "does-not-exist" not in page


def test_readyz_checks_database(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


def test_docs_served_without_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
