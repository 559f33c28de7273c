"""The payout flow against a real JSON-RPC node: ganache from npm, configured through a
chains file like any remote chain.

ganache is installed with npm (see `ganache_cli`). Without node or npm, or when the
install fails, the test is skipped, and with CI=true it fails instead.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from tests.conftest import IN_CI, free_port
from tests.orders.helpers import order_body, seed_catalog
from tests.refunds.helpers import (
    get_refund_body,
    make_jobs_due,
    payouts_of,
    refund_request,
    reviewed,
    run_jobs,
    token_transfers,
    usdc_balance,
)
from tests.shipping.helpers import hours_ago, post_event, shipped
from web3 import HTTPProvider, Web3

from orderdesk.orders.models import Order
from orderdesk.payments.amounts import to_base_units
from orderdesk.payments.contract import compile_devnet_token
from orderdesk.payments.erc20 import mint_calldata, transfer_calldata
from orderdesk.runtime import Runtime

GANACHE_VERSION = "7.9.2"
CHAIN_ID = 13370
CHAIN = "ganache"
ORDERS_API = "/api/2022-06-09/orders"
# A fixed key for ganache's one funded account, which deploys and mints the token.
DEPLOYER = Account.from_key("0x" + "4c" * 32)
DEPLOYER_WEI = 10**24


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI must run the ganache test", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ganache_cli(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    """The command that runs ganache, installing it with npm on first use.

    The install is kept in pytest's cache folder between runs, or made in a
    temporary folder when the cache is turned off (-p no:cacheprovider).
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed to install and run ganache")
    assert node is not None and npm is not None
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        prefix = Path(cache.mkdir(f"ganache-{GANACHE_VERSION}"))
    else:
        prefix = tmp_path_factory.mktemp("ganache")
    cli = prefix / "node_modules" / "ganache" / "dist" / "node" / "cli.js"
    if not cli.exists():
        install = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
        result = subprocess.run(  # noqa: S603 - fixed arguments
            [*install, f"ganache@{GANACHE_VERSION}"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0 or not cli.exists():
            unavailable(f"npm install ganache failed: {result.stderr[-500:]}")
    return [node, str(cli)]


@dataclass
class Ganache:
    url: str
    web3: Web3
    token: str

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.web3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def send(self, account: LocalAccount, **fields: Any) -> str:
        """Sign and send an EIP-1559 transaction and wait for its receipt."""
        base_fee = self.web3.eth.get_block("latest")["baseFeePerGas"]
        transaction = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": self.web3.eth.get_transaction_count(account.address, "pending"),
            "maxPriorityFeePerGas": 10**9,
            "maxFeePerGas": 2 * base_fee + 10**9,
            "gas": 200_000,
            "value": 0,
            "data": b"",
            **fields,
        }
        signed = account.sign_transaction(transaction)
        tx_hash = self.web3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.web3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1
        return "0x" + bytes(tx_hash).hex()


@pytest.fixture
def ganache(ganache_cli: list[str], tmp_path: Path) -> Iterator[Ganache]:
    """ganache on a random loopback port with the test token deployed."""
    port = free_port()
    log = open(tmp_path / "ganache.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [
            *ganache_cli,
            "--server.host", "127.0.0.1",
            "--server.port", str(port),
            "--server.ws", "false",
            "--chain.chainId", str(CHAIN_ID),
            "--wallet.accounts", f"0x{bytes(DEPLOYER.key).hex()},{DEPLOYER_WEI}",
            "--logging.quiet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        web3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 10}))
        _wait_for_node(url, process, tmp_path / "ganache.log")
        compiled = compile_devnet_token()
        constructor = abi_encode(["string", "string", "uint8"], ["USD Coin", "USDC", 6])
        node = Ganache(url, web3, token="")
        deployed = node.send(
            DEPLOYER, data=compiled.bytecode + constructor, gas=3_000_000
        )
        node.token = web3.eth.get_transaction_receipt(deployed)["contractAddress"]
        yield node
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for_node(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ganache exited: {log.read_text(errors='replace')}")
        try:
            if requests.post(url, json=body, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"ganache did not answer at {url} within 60 s")


@pytest.fixture
def settings_overrides(ganache: Ganache, tmp_path: Path) -> dict[str, object]:
    chains_file = tmp_path / "chains.toml"
    chains_file.write_text(
        f"""
[[chains]]
name = "{CHAIN}"
chain_id = {CHAIN_ID}
rpc_url = "{ganache.url}"
confirmations = 2

[chains.tokens.usdc]
address = "{ganache.token}"
decimals = 6
""",
        encoding="utf-8",
    )
    return {
        "chains_file": chains_file,
        "devnet": False,
        "payout_recheck_seconds": 0.05,
        "payment_recheck_seconds": 0.05,
    }


def funded_payer(ganache: Ganache, usdc: str) -> LocalAccount:
    payer = Account.create()
    ganache.send(DEPLOYER, to=payer.address, value=10**18, gas=21_000)
    units = to_base_units(Decimal(usdc), 6)
    ganache.send(DEPLOYER, to=ganache.token, data=mint_calldata(payer.address, units))
    return payer


def pay_order(
    client: TestClient, key: str, runtime: Runtime, ganache: Ganache
) -> tuple[str, LocalAccount]:
    """Create an order on the ganache chain and pay it from a new wallet."""
    payer = funded_payer(ganache, "500")
    body = order_body()
    body["payment"] = {
        "method": CHAIN,
        "currency": "usdc",
        "payerAddress": payer.address,
    }
    created = client.post(ORDERS_API, json=body, headers={"X-API-KEY": key})
    assert created.status_code == 201, created.text
    order = created.json()["order"]
    with runtime.session_factory() as session:
        treasury = session.get_one(Order, order["orderId"]).treasury_address
    total = to_base_units(Decimal(order["quote"]["totalPrice"]["amount"]), 6)
    tx_id = ganache.send(
        payer, to=ganache.token, data=transfer_calldata(treasury, total)
    )
    submitted = client.post(
        f"{ORDERS_API}/{order['orderId']}/payment",
        json={"type": "crypto-tx-id", "txId": tx_id},
        headers={"X-API-KEY": key},
    )
    assert submitted.status_code == 200, submitted.text
    # Two confirmations: the payment completes once one more block is mined.
    ganache.mine()
    make_jobs_due(runtime)
    run_jobs(runtime)
    read = client.get(f"{ORDERS_API}/{order['orderId']}", headers={"X-API-KEY": key})
    assert read.json()["payment"]["status"] == "completed", read.text
    return order["orderId"], payer


def test_ganache_payout_pays_payer(
    client: TestClient, api_key: str, runtime: Runtime, ganache: Ganache
) -> None:
    seed_catalog(runtime)
    order_id, payer = pay_order(client, api_key, runtime, ganache)
    package = shipped(client, api_key, order_id, [0, 1])
    delivered = post_event(
        client, api_key, order_id, package["packageId"], "delivered", hours_ago(2)
    )
    assert delivered.status_code == 201, delivered.text
    request = refund_request(
        client, order_id, {"lineItem": 0, "reason": "Leaks."}, key=api_key
    )
    assert request.status_code == 201, request.text
    refund_id = request.json()["refundId"]
    amount = to_base_units(Decimal(request.json()["amount"]["amount"]), 6)
    reviewed(client, api_key, order_id, refund_id, "accept")
    reviewed(client, api_key, order_id, refund_id, "return-received")
    before = usdc_balance(runtime, payer.address, CHAIN)

    # The treasury has the payment's USDC but no ether for gas on this chain.
    run_jobs(runtime)
    waiting = get_refund_body(client, api_key, order_id, refund_id)
    assert waiting["status"] == "refund-request-accepted"
    assert waiting["payout"]["status"] == "failed-insufficient-gas"
    assert waiting["payout"]["chain"] == CHAIN
    assert payouts_of(runtime, refund_id) == []

    with runtime.session_factory() as session:
        treasury = session.get_one(Order, order_id).treasury_address
    ganache.send(DEPLOYER, to=treasury, value=10**17, gas=21_000)
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    [payout] = payouts_of(runtime, refund_id)
    assert payout.status == "sent"
    submitted = get_refund_body(client, api_key, order_id, refund_id)
    assert submitted["payout"]["status"] == "submitted"
    assert submitted["payout"]["txId"] == payout.tx_hash

    # Mined with one confirmation; the second block completes the refund.
    ganache.mine()
    make_jobs_due(runtime, "refund.payout")
    run_jobs(runtime)
    completed = get_refund_body(client, api_key, order_id, refund_id)
    assert completed["status"] == "refund-request-completed"
    assert completed["payout"]["status"] == "confirmed"
    assert completed["payout"]["txId"] == payout.tx_hash
    assert usdc_balance(runtime, payer.address, CHAIN) - before == amount
    transfers = token_transfers(runtime, treasury, payer.address, CHAIN)
    assert len(transfers) == 1
    receipt = ganache.web3.eth.get_transaction_receipt(payout.tx_hash)
    assert receipt["status"] == 1
    read = client.get(f"{ORDERS_API}/{order_id}", headers={"X-API-KEY": api_key})
    assert read.json()["payment"]["refunded"] == {
        "amount": completed["payout"]["amount"],
        "currency": "usdc",
    }
