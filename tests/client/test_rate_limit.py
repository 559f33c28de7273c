"""The server's own 429 reaches the caller as RateLimited once retries run out."""

from __future__ import annotations

import pytest
from tests.conftest import LiveServer

from orderdesk.client import OrderDesk, RateLimited


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"rate_limit_reads_per_minute": 2}


def test_server_rate_limit_raised(server: LiveServer, api_key: str) -> None:
    with OrderDesk(api_key, base_url=server.url, max_retries=0) as sdk:
        sdk.orders.list()
        sdk.orders.list()
        with pytest.raises(RateLimited) as raised:
            sdk.orders.list()
    error = raised.value
    assert error.status_code == 429
    assert error.code == "rate_limited"
    assert error.retry_after is not None
    assert 1 <= error.retry_after <= 60
    assert error.response is not None
    assert error.response.headers["retry-after"] == str(int(error.retry_after))
