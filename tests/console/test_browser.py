"""The console in headless Chromium: log in, search, review refunds, resend a
webhook, hostile text, local times and screenshots at laptop and phone widths.

Needs the playwright package and Debian's Chromium at /usr/bin/chromium. Without
them the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import IN_CI, LiveServer
from tests.console import data, helpers

from orderdesk.runtime import Runtime
from orderdesk.webhooks.models import WebhookDelivery

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


def _browser_problem() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _browser_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem}; CI must run the browser tests", pytrace=False)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def seeded(runtime: Runtime) -> data.Seeded:
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    return data.seed(runtime)


class Tab:
    """One browser page that records dialogs, so a test can show none opened."""

    def __init__(self, browser: Any, server: LiveServer, **options: Any) -> None:
        self.context = browser.new_context(base_url=server.url, **options)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.page.on("dialog", self._on_dialog)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def log_in(self, email: str = helpers.OPERATOR) -> None:
        self.page.goto("/console/login")
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password]", helpers.PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/console/orders")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, live_server: LiveServer) -> Iterator[Tab]:
    opened = Tab(browser, live_server)
    yield opened
    opened.close()


def api_refunds(server: LiveServer, key: str, order_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/api/unstable/orders/{order_id}/refunds",
        headers={"X-API-KEY": key},
    )
    assert response.status_code == 200, response.text
    return list(response.json())


def test_login_and_find_by_tracking(tab: Tab, seeded: data.Seeded) -> None:
    tab.log_in()
    page = tab.page
    # Lower case with spaces, as an operator might paste it from a carrier email.
    page.fill("input[name=q]", "1z999aa1 0123456784")
    page.click("form[role=search] button")
    page.wait_for_url("**/console/orders?q=*")
    rows = page.locator("table.cards tbody tr")
    assert rows.count() == 1
    rows.first.locator("a").first.click()
    page.wait_for_url(f"**/console/orders/{seeded.order_id}")
    assert page.locator("h1").inner_text() == f"Order {seeded.order_id}"
    assert page.get_by_text("Trail running shoes").count() == 1
    assert page.get_by_text(seeded.tracking_number).count() >= 1


def test_accept_refund_seen_in_api(
    tab: Tab, seeded: data.Seeded, live_server: LiveServer, api_key: str
) -> None:
    tab.log_in()
    page = tab.page
    page.goto("/console/refunds")
    card = page.locator(f"#refund-{seeded.refund_ids[1]}")
    card.get_by_role("button", name="Accept").click()
    page.wait_for_url("**/console/refunds")
    assert "accepted" in page.locator(".flash").inner_text()
    refunds = {
        r["refundId"]: r for r in api_refunds(live_server, api_key, seeded.order_id)
    }
    accepted = refunds[seeded.refund_ids[1]]
    assert accepted["status"] == "refund-request-accepted"
    assert accepted["history"][-1]["actor"].startswith("console:")
    assert refunds[seeded.refund_ids[0]]["status"] == "refund-request-initiated"
    # The accepted request now offers the next step instead of accept and reject.
    card = page.locator(f"#refund-{seeded.refund_ids[1]}")
    assert card.get_by_role("button", name="Return received").count() == 1
    assert card.get_by_role("button", name="Accept").count() == 0


def test_reject_refund_with_reason(
    tab: Tab, seeded: data.Seeded, live_server: LiveServer, api_key: str
) -> None:
    tab.log_in()
    page = tab.page
    page.goto(f"/console/orders/{seeded.order_id}")
    card = page.locator(f"#refund-{seeded.refund_ids[0]}")
    card.locator("input[name=reason]").fill("Damage is not covered after 30 days.")
    card.get_by_role("button", name="Reject").click()
    page.wait_for_url(f"**/console/orders/{seeded.order_id}")
    refunds = {
        r["refundId"]: r for r in api_refunds(live_server, api_key, seeded.order_id)
    }
    rejected = refunds[seeded.refund_ids[0]]
    assert rejected["status"] == "refund-request-rejected"
    assert rejected["rejectionReason"] == "Damage is not covered after 30 days."
    displayed = page.locator(f"#refund-{seeded.refund_ids[0]} .rejection-reason")
    assert displayed.inner_text() == "Damage is not covered after 30 days."


def test_resend_failed_delivery(
    tab: Tab, seeded: data.Seeded, runtime: Runtime
) -> None:
    tab.log_in()
    page = tab.page
    page.goto("/console/webhooks")
    page.get_by_role("link", name="https://hooks.example.com/orderdesk").click()
    card = page.locator(f"#delivery-{seeded.delivery_id}")
    assert card.locator(".status").first.inner_text() == "failed"
    card.get_by_role("button", name="Resend").click()
    page.wait_for_url(f"**/console/webhooks/{seeded.endpoint_id}")
    assert "queued to resend" in page.locator(".flash").inner_text()
    card = page.locator(f"#delivery-{seeded.delivery_id}")
    assert card.locator(".status").first.inner_text() == "pending"
    with runtime.session_factory() as session:
        delivery = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.delivery_id == seeded.delivery_id
            )
        ).one()
        assert delivery.status == "pending"
        assert delivery.resend_count == 1


def test_hostile_text_shown_not_run(tab: Tab, seeded: data.Seeded) -> None:
    tab.log_in()
    page = tab.page
    for path in (f"/console/orders/{seeded.order_id}", "/console/refunds"):
        page.goto(path)
        page.wait_for_load_state("load")
        assert page.evaluate("typeof window.pwned") == "undefined"
        reason = page.locator(f"#refund-{seeded.refund_ids[0]} .refund-reason")
        assert reason.inner_text() == data.HOSTILE_REASON
        # No element came from the text: it stayed characters.
        assert page.locator(".refund-reason script, .refund-reason img").count() == 0
    page.goto(f"/console/orders/{seeded.order_id}")
    description = page.locator(".event-description", has_text="Left at door")
    assert description.inner_text() == data.HOSTILE_EVENT
    assert page.locator(".timeline script").count() == 0
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert tab.dialogs == []


def test_times_local_with_utc_title(
    browser: Any, live_server: LiveServer, seeded: data.Seeded
) -> None:
    local = Tab(browser, live_server, timezone_id="Asia/Tokyo")
    try:
        local.log_in()
        local.page.goto(f"/console/orders/{seeded.order_id}")
        stamp = local.page.locator("time").first
        assert stamp.get_attribute("title", timeout=5000).endswith(" UTC")
        assert stamp.get_attribute("datetime").endswith("Z")
        assert "UTC" not in stamp.inner_text()
        assert "GMT+9" in stamp.inner_text()
    finally:
        local.close()
    plain = Tab(browser, live_server, java_script_enabled=False)
    try:
        plain.log_in()
        plain.page.goto(f"/console/orders/{seeded.order_id}")
        assert plain.page.locator("time").first.inner_text().endswith(" UTC")
    finally:
        plain.close()


def _create_key(page: Any) -> None:
    page.goto("/console/keys")
    page.fill("input[name=project]", "test-project")
    page.fill("input[name=name]", "storefront")
    page.check("input[value='orders.read']")
    page.click("text=Create key")
    page.wait_for_selector("#new-key")


PAGES = {
    "login": "/console/login",
    "orders": "/console/orders",
    "order": "/console/orders/{order_id}",
    "refunds": "/console/refunds",
    "webhooks": "/console/webhooks/{endpoint_id}",
    "jobs": "/console/jobs",
    "keys": "/console/keys",
    "mail": "/console/mail",
}


def test_screenshots_laptop_and_phone(
    browser: Any,
    live_server: LiveServer,
    seeded: data.Seeded,
    runtime: Runtime,
    tmp_path: Path,
    make_key: Any,
) -> None:
    """Shoot each main page at both widths; none may scroll sideways on a phone.

    With ORDERDESK_UPDATE_SCREENSHOTS=1 the pictures replace those in docs/console.
    """
    make_key("orders.create", "orders.read", "orders.update")
    make_key("orders.fulfill", project="warehouse")
    data.write_mail(
        Path(runtime.settings.mail_dir),
        "Your refund request was accepted",
        "Print the attached label and drop the parcel off within 14 days.",
    )
    for width, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        shooter = Tab(browser, live_server, viewport=viewport, timezone_id="UTC")
        try:
            for name, path in PAGES.items():
                if name != "login" and shooter.page.url.endswith("/login"):
                    shooter.log_in()
                url = path.format(
                    order_id=seeded.order_id, endpoint_id=seeded.endpoint_id
                )
                shooter.page.goto(url)
                shooter.page.wait_for_load_state("load")
                overflow = shooter.page.evaluate(
                    "document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"{name} scrolls sideways at {width} width"
                shooter.page.screenshot(
                    path=str(tmp_path / f"{name}-{width}.png"), full_page=True
                )
                if name == "login":
                    shooter.log_in()
            _create_key(shooter.page)
            shooter.page.screenshot(
                path=str(tmp_path / f"key-created-{width}.png"), full_page=True
            )
        finally:
            shooter.close()
    assert len(list(tmp_path.glob("*.png"))) == 2 * len(PAGES) + 2
    if os.environ.get("ORDERDESK_UPDATE_SCREENSHOTS") == "1":
        if runtime.settings.is_sqlite:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for picture in tmp_path.glob("*.png"):
                shutil.copy(picture, SCREENSHOTS / picture.name)
