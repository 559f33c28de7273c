"""The API documentation renders in Chromium with every non-loopback request cut off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.conftest import IN_CI, LiveServer
from tests.console.test_browser import CHROMIUM, CHROMIUM_ARGS, _browser_problem

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    problem = _browser_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem}; CI must run the browser tests", pytrace=False)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def test_docs_render_offline(chromium: Any, live_server: LiveServer) -> None:
    page = chromium.new_page()
    blocked: list[str] = []

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "orderdesk" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag", timeout=30_000)
    tags = page.locator(".opblock-tag").all_inner_texts()
    assert any("orders" in tag for tag in tags)
    assert blocked == []
    page.close()
