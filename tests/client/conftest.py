"""Fixtures of the SDK tests: a live server with the sample catalog, SDK clients on
it, a funded devnet wallet, and a webhook receiver on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from tests.client.helpers import fund_wallet
from tests.conftest import LiveServer
from tests.orders.helpers import seed_catalog

from orderdesk.client import OrderDesk
from orderdesk.runtime import Runtime


@pytest.fixture
def anyio_backend() -> str:
    """Run the async tests on asyncio only."""
    return "asyncio"


@pytest.fixture
def server(live_server: LiveServer, runtime: Runtime) -> LiveServer:
    """The live server with the sample catalog imported."""
    seed_catalog(runtime)
    return live_server


@pytest.fixture
def sdk(server: LiveServer, api_key: str) -> Iterator[OrderDesk]:
    with OrderDesk(api_key, base_url=server.url) as client:
        yield client


@pytest.fixture
def wallet(server: LiveServer) -> LocalAccount:
    """A new devnet account holding 1000 test USDC and gas."""
    return fund_wallet(server.url, "1000")


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on loopback that stores every POST it receives and returns
    status 200."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ReceiverHandler)
        self.server.daemon_threads = True
        self.server.receiver = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.receiver.requests.append(Received(headers, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
