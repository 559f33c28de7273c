"""Console pages: order search and detail, the refund queue, webhooks, jobs, keys,
the mail folder, escaping and the security headers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.console import data, helpers

from orderdesk.console.security import CONTENT_SECURITY_POLICY
from orderdesk.runtime import Runtime

ORDER_LINK = re.compile(r'href="/console/orders/([0-9a-f-]{36})"')


@pytest.fixture
def seeded(runtime: Runtime) -> data.Seeded:
    return data.seed(runtime)


def listed_orders(html: str) -> list[str]:
    return list(dict.fromkeys(ORDER_LINK.findall(html)))


def test_search_by_tracking_number(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    for spelling in ("1Z999AA10123456784", "1z999aa1 0123456784"):
        page = operator_client.get("/console/orders", params={"q": spelling})
        assert page.status_code == 200
        assert listed_orders(page.text) == [seeded.order_id]


def test_search_by_email_and_id(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    by_email = operator_client.get(
        "/console/orders", params={"q": "SHOPPER1@example.org"}
    )
    assert listed_orders(by_email.text) == [seeded.other_order_ids[1]]
    by_id = operator_client.get(
        "/console/orders", params={"q": seeded.order_id.upper()}
    )
    assert listed_orders(by_id.text) == [seeded.order_id]
    nothing = operator_client.get("/console/orders", params={"q": "no-such-thing"})
    assert listed_orders(nothing.text) == []
    assert "No orders match." in nothing.text


def test_orders_newest_first(operator_client: TestClient, seeded: data.Seeded) -> None:
    page = operator_client.get("/console/orders")
    assert listed_orders(page.text) == [seeded.order_id, *seeded.other_order_ids]
    assert "4 orders." in page.text


def test_filter_by_phase(
    operator_client: TestClient, seeded: data.Seeded, runtime: Runtime
) -> None:
    from tests import factories

    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        unpaid = factories.make_order(session, owner).id
    delivery = operator_client.get("/console/orders", params={"phase": "delivery"})
    assert unpaid not in listed_orders(delivery.text)
    assert len(listed_orders(delivery.text)) == 4
    payment = operator_client.get("/console/orders", params={"phase": "payment"})
    assert listed_orders(payment.text) == [unpaid]
    assert (
        listed_orders(
            operator_client.get("/console/orders", params={"phase": "completed"}).text
        )
        == []
    )
    bad = operator_client.get("/console/orders", params={"phase": "shipped"})
    assert bad.status_code == 400
    assert "not a phase" in bad.text


def test_orders_paginated(operator_client: TestClient, runtime: Runtime) -> None:
    from tests import factories

    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        order_ids = [
            factories.make_order(session, owner, created_at=data.ago(minutes=index)).id
            for index in range(30)
        ]
    first = operator_client.get("/console/orders")
    second = operator_client.get("/console/orders", params={"page": "2"})
    assert listed_orders(first.text) == order_ids[:25]
    assert listed_orders(second.text) == order_ids[25:]
    assert 'href="/console/orders?page=2"' in first.text
    assert "Page 2 of 2" in second.text
    assert (
        listed_orders(operator_client.get("/console/orders", params={"page": "x"}).text)
        == order_ids[:25]
    )


def test_order_detail_shows_everything(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    page = operator_client.get(f"/console/orders/{seeded.order_id}")
    assert page.status_code == 200
    html = page.text
    # Line items with their prices.
    assert "Trail running shoes" in html
    assert "19.00 USDC" in html
    assert "63.88 USDC" in html
    assert "88.76 USDC" in html
    # The payment and its transaction.
    assert "0xabababab" in html
    assert re.search(r"0x[0-9a-f]{64}", html)
    # The package, its timeline and its delivery window.
    assert seeded.tracking_number in html
    assert "Picked up" in html
    assert "Reno, NV" in html
    assert "Delivery window" in html
    assert html.count("<time ") >= 10
    # Refunds with their history.
    for refund_id in seeded.refund_ids:
        assert f'id="refund-{refund_id}"' in html
    assert "by client_secret" in html
    assert "refund.requested" in html


def test_unknown_order_is_404(operator_client: TestClient) -> None:
    for order_id in ("00000000-0000-4000-8000-000000000000", "not-an-id"):
        page = operator_client.get(f"/console/orders/{order_id}")
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")


def test_buyer_text_is_escaped(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    for path in (f"/console/orders/{seeded.order_id}", "/console/refunds"):
        html = operator_client.get(path).text
        assert "<script>window.pwned" not in html
        assert (
            "&lt;script&gt;window.pwned = 1; alert(&#39;pwned&#39;)&lt;/script&gt;"
            in html
        )
        assert "<img src=x" not in html
    order = operator_client.get(f"/console/orders/{seeded.order_id}").text
    assert "Left at door &lt;script&gt;" in order


def test_refund_queue_order(
    operator_client: TestClient, seeded: data.Seeded, runtime: Runtime
) -> None:
    """Initiated requests come first, oldest first; accepted ones follow."""
    later = data.request_refunds(
        runtime, seeded.other_order_ids[0], ["Too small"], hours_ago=3
    )
    page = operator_client.get("/console/refunds").text
    queue_ids = re.findall(r'<li class="card refund" id="refund-([0-9a-f-]{36})"', page)
    assert queue_ids == [later[0], *seeded.refund_ids]
    assert "3 refunds." in page


def test_pages_send_strict_csp(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    paths = [
        "/console/login",
        "/console/orders",
        f"/console/orders/{seeded.order_id}",
        "/console/refunds",
        "/console/webhooks",
        f"/console/webhooks/{seeded.endpoint_id}",
        "/console/jobs",
        "/console/keys",
        "/console/mail",
        "/console/no-such-page",
        "/console/static/console.css",
        "/console/static/console.js",
    ]
    for path in paths:
        response = operator_client.get(path, follow_redirects=False)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, (
            path
        )
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path
    assert operator_client.get("/console/no-such-page").status_code == 404


def test_pages_have_no_inline_code(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    """The CSP forbids inline script and style, so no page may rely on them."""
    for path in (
        "/console/login",
        "/console/orders",
        f"/console/orders/{seeded.order_id}",
        "/console/refunds",
        f"/console/webhooks/{seeded.endpoint_id}",
        "/console/jobs",
        "/console/keys",
    ):
        html = operator_client.get(path).text
        tags = " ".join(re.findall(r"<[a-zA-Z][^>]*>", html))
        assert re.findall(r"<script(?![^>]*\bsrc=)", tags) == [], path
        assert re.findall(r"<style", tags) == [], path
        assert re.findall(r"\sstyle=", tags) == [], path
        assert re.findall(r"\son[a-z]+=", tags) == [], path
        assert re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", tags) == [], path


def test_viewer_sees_no_actions(viewer_client: TestClient, seeded: data.Seeded) -> None:
    queue = viewer_client.get("/console/refunds").text
    assert "Trail running shoes" in queue
    assert "/accept" not in queue
    assert "/reject" not in queue
    assert (
        "/resend"
        not in viewer_client.get(f"/console/webhooks/{seeded.endpoint_id}").text
    )
    assert "/retry" not in viewer_client.get("/console/jobs").text
    assert "Create key" not in viewer_client.get("/console/keys").text


def test_webhook_pages_list_deliveries(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    endpoints = operator_client.get("/console/webhooks").text
    assert "https://hooks.example.com/orderdesk" in endpoints
    assert f"/console/webhooks/{seeded.endpoint_id}?status=failed" in endpoints
    page = operator_client.get(
        f"/console/webhooks/{seeded.endpoint_id}", params={"status": "failed"}
    ).text
    assert f'id="delivery-{seeded.delivery_id}"' in page
    assert "Service Unavailable" in page
    assert "orders.payment.succeeded" in page
    none = operator_client.get(
        f"/console/webhooks/{seeded.endpoint_id}", params={"status": "delivered"}
    ).text
    assert f'id="delivery-{seeded.delivery_id}"' not in none
    bad = operator_client.get(
        f"/console/webhooks/{seeded.endpoint_id}", params={"status": "lost"}
    )
    assert bad.status_code == 400


def test_jobs_page_lists_failed(
    operator_client: TestClient, seeded: data.Seeded
) -> None:
    page = operator_client.get("/console/jobs").text
    assert f'id="job-{seeded.job_id}"' in page
    assert "SMTPRecipientsRefused (550): &lt;buyer@example.com&gt; unknown" in page


def test_mail_folder_lists_and_shows(
    operator_client: TestClient, runtime: Runtime
) -> None:
    folder = Path(runtime.settings.mail_dir)
    data.write_mail(folder, "Refund <b>accepted</b>", "Hello <script>x()</script>")
    listing = operator_client.get("/console/mail").text
    (name,) = re.findall(r'href="/console/mail/([^"]+\.eml)"', listing)
    assert "Refund &lt;b&gt;accepted&lt;/b&gt;" in listing
    message = operator_client.get(f"/console/mail/{name}")
    assert message.status_code == 200
    assert "Hello &lt;script&gt;x()&lt;/script&gt;" in message.text
    assert "label.pdf" in message.text
    assert "buyer@example.com" in message.text


def test_mail_folder_refuses_paths(
    operator_client: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "secret.eml").write_text("Subject: outside\n\nnot yours\n")
    Path(runtime.settings.mail_dir).mkdir(parents=True, exist_ok=True)
    for name in (
        "..%2Fsecret.eml",
        "%2E%2E%2Fsecret.eml",
        ".hidden.eml",
        "missing.eml",
    ):
        response = operator_client.get(f"/console/mail/{name}")
        assert response.status_code == 404, name
        assert "not yours" not in response.text


@pytest.mark.parametrize(
    "settings_overrides",
    [{"environment": "staging", "console_session_secret": "s" * 40, "devnet": False}],
)
def test_mail_folder_development_only(client: TestClient, runtime: Runtime) -> None:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    secure = TestClient(client.app, base_url="https://testserver")
    assert helpers.log_in(secure, helpers.OPERATOR).status_code == 303
    assert secure.get("/console/orders").status_code == 200
    assert secure.get("/console/mail").status_code == 404
    assert 'href="/console/mail"' not in secure.get("/console/orders").text
