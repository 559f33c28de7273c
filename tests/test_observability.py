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


def test_metrics_report_job_backlog(client: TestClient, runtime) -> None:  # type: ignore[no-untyped-def]
    from orderdesk.jobs.models import Job
    from orderdesk.jobs.services import enqueue

    with runtime.session_factory() as session, session.begin():
        enqueue(session, "example.kind", {})
        failed = enqueue(session, "example.kind", {}, dedupe_key="second")
        session.flush()
        session.get(Job, failed.id).status = "failed"
    page = client.get("/metrics").text
    assert 'orderdesk_jobs{kind="example.kind",status="queued"} 1.0' in page
    assert 'orderdesk_jobs{kind="example.kind",status="failed"} 1.0' in page
    assert "orderdesk_payouts_pending 0.0" in page


def test_json_logs_carry_request_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import os
    import subprocess
    import sys
    import time

    import requests
    from tests.conftest import TEST_SECRET, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERDESK_")}
    env.update(ORDERDESK_LOG_FORMAT="json", ORDERDESK_TREASURY_SECRET=TEST_SECRET)
    server = subprocess.Popen(
        [sys.executable, "-m", "orderdesk.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        answer = requests.get(
            f"{base}/api/2022-06-09/orders",
            headers={
                "X-Request-ID": "trace-42",
                "X-API-KEY": "sk_development_" + "x" * 32,
            },
            timeout=10,
        )
        assert answer.status_code == 401
        assert answer.headers["x-request-id"] == "trace-42"
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'route="/api/2022-06-09/orders",status="401"} 1.0' in metrics
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert lines, stderr
    traced = [line for line in lines if line.get("request_id") == "trace-42"]
    assert [line["event"] for line in traced] == ["request_finished"]
    assert traced[0]["status"] == 401
    assert sk_value_absent(stderr)


def sk_value_absent(text: str) -> bool:
    return "sk_development_" + "x" * 32 not in text


def test_request_ids_are_hex_and_distinct(client: TestClient) -> None:
    ids = [client.get("/healthz").headers["x-request-id"] for _ in range(50)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        assert len(value) == 32
        assert int(value, 16) >= 0


def test_new_request_id_keeps_leading_zeros(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from orderdesk import observability

    monkeypatch.setattr(observability._request_ids, "getrandbits", lambda _: 0xABC)
    assert observability._new_request_id() == "0" * 29 + "abc"


def test_metrics_count_each_request_once(client: TestClient) -> None:
    for _ in range(3):
        client.get("/healthz")
    client.get("/no-such-page")
    page = client.get("/metrics").text
    assert (
        'orderdesk_http_requests_total{method="GET",route="/healthz",status="200"} 3.0'
    ) in page
    assert (
        'orderdesk_http_requests_total{method="GET",route="unmatched",status="404"} 1.0'
    ) in page
    assert (
        "orderdesk_http_request_duration_seconds_count"
        '{method="GET",route="/healthz"} 3.0'
    ) in page


def test_metric_children_kept_per_label_set() -> None:
    from orderdesk.observability import Metrics

    metrics = Metrics()
    first = metrics.request_children("/a", "GET", "200")
    assert metrics.request_children("/a", "GET", "200") is first
    assert metrics.request_children("/a", "GET", "404") is not first
    requests, latency = first
    requests.inc()
    latency.observe(0.002)
    assert metrics.requests.labels("/a", "GET", "200")._value.get() == 1.0
    assert (
        metrics.registry.get_sample_value(
            "orderdesk_http_request_duration_seconds_count",
            {"route": "/a", "method": "GET"},
        )
        == 1.0
    )
