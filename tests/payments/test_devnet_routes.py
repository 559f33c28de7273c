"""The devnet over HTTP: JSON-RPC for wallet libraries, the faucet, where they exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from fastapi.testclient import TestClient
from tests.conftest import LiveServer, make_settings
from tests.payments.helpers import USDC, devnet_chain
from web3 import HTTPProvider, Web3

from orderdesk.app import create_app
from orderdesk.payments.erc20 import transfer_calldata
from orderdesk.payments.preparation import token_balance
from orderdesk.payments.verification import Outcome, check_payment
from orderdesk.runtime import Runtime

RPC = "/devnet/rpc"
FAUCET = "/devnet/faucet"


def rpc(client: TestClient, method: str, *params: Any) -> dict[str, Any]:
    response = client.post(
        RPC, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_web3_pays_over_http(runtime: Runtime, live_server: LiveServer) -> None:
    payer = Account.create()
    treasury = Account.create().address
    funded = requests.post(
        live_server.url + FAUCET,
        json={"address": payer.address.lower(), "usdc": "25.50"},
        timeout=10,
    )
    assert funded.status_code == 200, funded.text
    assert funded.json()["address"] == payer.address
    assert funded.json()["usdc"] == "25.50"
    assert len(funded.json()["txIds"]) == 2

    w3 = Web3(HTTPProvider(live_server.url + RPC))
    chain = devnet_chain(runtime)
    token = chain.tokens["usdc"]
    assert w3.eth.chain_id == chain.chain_id
    transaction = {
        "type": 2,
        "chainId": w3.eth.chain_id,
        "nonce": w3.eth.get_transaction_count(payer.address, "pending"),
        "to": token.address,
        "value": 0,
        "data": transfer_calldata(treasury, 25_500_000),
        "maxPriorityFeePerGas": w3.eth.max_priority_fee,
        "maxFeePerGas": 2 * w3.eth.get_block("latest")["baseFeePerGas"]
        + w3.eth.max_priority_fee,
    }
    transaction["gas"] = w3.eth.estimate_gas({**transaction, "from": payer.address})
    tx_hash = w3.eth.send_raw_transaction(
        payer.sign_transaction(transaction).raw_transaction
    )
    mined = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)

    assert mined["status"] == 1
    assert token_balance(chain, token, treasury) == 25_500_000
    check = check_payment(chain, token, tx_hash.to_0x_hex(), treasury, 25_500_000)
    assert check.outcome == Outcome.CONFIRMED
    assert check.payer == payer.address
    logs = w3.eth.get_logs(
        {
            "fromBlock": 0,
            "address": token.address,
            "topics": [None, None, "0x" + "00" * 12 + treasury[2:].lower()],
        }
    )
    assert [log["transactionHash"] for log in logs] == [tx_hash]


def test_batch_and_notifications(client: TestClient) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 2, "method": "net_version", "params": []},
        {"jsonrpc": "2.0", "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": 3, "method": "no_such_method"},
    ]
    response = client.post(RPC, json=batch)
    assert response.status_code == 200
    answers = {answer["id"]: answer for answer in response.json()}
    assert answers["a"]["result"] == "0x539"
    assert answers[2]["result"] == "1337"
    assert answers[3]["error"]["code"] == -32601
    assert len(answers) == 3
    only_notification = client.post(
        RPC, json={"jsonrpc": "2.0", "method": "eth_chainId"}
    )
    assert only_notification.status_code == 204


def test_standard_reads(client: TestClient, runtime: Runtime) -> None:
    token = devnet_chain(runtime).tokens["usdc"].address
    assert rpc(client, "web3_clientVersion")["result"].startswith("orderdesk-devnet/")
    assert rpc(client, "eth_blockNumber")["result"] == "0x1"
    block = rpc(client, "eth_getBlockByNumber", "latest", True)["result"]
    assert block["number"] == "0x1"
    deploy = block["transactions"][0]
    assert rpc(client, "eth_getBlockByHash", block["hash"], False)["result"][
        "transactions"
    ] == [deploy["hash"]]
    assert rpc(client, "eth_getBlockByNumber", "0x99", False)["result"] is None
    deployed = rpc(client, "eth_getTransactionReceipt", deploy["hash"])["result"]
    assert deployed["contractAddress"] == token.lower()
    assert deployed["status"] == "0x1"
    assert rpc(client, "eth_getCode", token, "latest")["result"].startswith("0x")
    assert len(rpc(client, "eth_getCode", token, "latest")["result"]) > 100
    assert rpc(client, "eth_getCode", token, "earliest")["result"] == "0x"
    assert (
        rpc(client, "eth_getTransactionCount", deploy["from"], "pending")["result"]
        == "0x1"
    )
    assert int(rpc(client, "eth_gasPrice")["result"], 16) > 10**9
    assert rpc(client, "eth_maxPriorityFeePerGas")["result"] == hex(10**9)
    history = rpc(client, "eth_feeHistory", "0x2", "latest", [50])["result"]
    assert history["oldestBlock"] == "0x0"
    assert len(history["baseFeePerGas"]) == 3
    assert len(history["reward"]) == 2
    assert rpc(client, "eth_getTransactionReceipt", "0x" + "11" * 32)["result"] is None
    assert rpc(client, "eth_getTransactionByHash", "0x" + "11" * 32)["result"] is None


def test_evm_controls(client: TestClient, runtime: Runtime) -> None:
    snapshot = rpc(client, "evm_snapshot")["result"]
    assert rpc(client, "evm_mine")["result"] == "0x0"
    assert rpc(client, "evm_mine", {"blocks": 3})["result"] == "0x0"
    assert rpc(client, "eth_blockNumber")["result"] == "0x5"
    assert rpc(client, "evm_revert", snapshot)["result"] is True
    assert rpc(client, "eth_blockNumber")["result"] == "0x1"
    assert rpc(client, "evm_revert", snapshot)["result"] is False
    assert rpc(client, "evm_increaseTime", 60)["result"] == 60
    assert rpc(client, "miner_stop")["result"] is True
    assert rpc(client, "miner_start")["result"] is True
    assert rpc(client, "evm_setAutomine", False)["result"] is True
    assert devnet_chain(runtime).devnet.automine is False  # type: ignore[union-attr]


ADDRESS = "0x" + "ab" * 20
# None: any error code will do (a parse error or invalid params, by nesting depth).
BAD_REQUESTS: list[tuple[str, Any, int | None]] = [
    ("not json", b"{nope", -32700),
    (
        "deeply nested params",
        b'{"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": '
        + b"[" * 30_000
        + b"]" * 30_000
        + b"}",
        None,
    ),
    ("not utf-8", b"\xff\xfe", -32700),
    ("empty batch", [], -32600),
    ("a number", 5, -32600),
    ("no jsonrpc", {"id": 1, "method": "eth_chainId"}, -32600),
    ("method not a string", {"jsonrpc": "2.0", "id": 1, "method": 5}, -32600),
    ("id an object", {"jsonrpc": "2.0", "id": {}, "method": "eth_chainId"}, -32600),
    ("unknown method", {"jsonrpc": "2.0", "id": 1, "method": "eth_bogus"}, -32601),
    (
        "params an object",
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": {"a": 1}},
        -32602,
    ),
    (
        "too many params",
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": [1]},
        -32602,
    ),
    (
        "too few params",
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": []},
        -32602,
    ),
    (
        "short address",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBalance",
            "params": ["0x12", "latest"],
        },
        -32602,
    ),
    (
        "address a number",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBalance",
            "params": [12, "latest"],
        },
        -32602,
    ),
    (
        "bad block tag",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBalance",
            "params": [ADDRESS, "soon"],
        },
        -32602,
    ),
    (
        "future block",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBalance",
            "params": [ADDRESS, "0xffff"],
        },
        -32000,
    ),
    (
        "negative block",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBalance",
            "params": [ADDRESS, -1],
        },
        -32602,
    ),
    (
        "boolean quantity",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBlockByNumber",
            "params": [True, False],
        },
        -32602,
    ),
    (
        "huge quantity",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBlockByNumber",
            "params": ["0x" + "f" * 65, False],
        },
        -32602,
    ),
    (
        "full not bool",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBlockByNumber",
            "params": ["latest", "yes"],
        },
        -32602,
    ),
    (
        "odd hex",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendRawTransaction",
            "params": ["0xabc"],
        },
        -32602,
    ),
    (
        "garbage tx",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendRawTransaction",
            "params": ["0x02c0ffee"],
        },
        -32000,
    ),
    (
        "empty tx",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendRawTransaction",
            "params": ["0x"],
        },
        -32000,
    ),
    (
        "blob tx",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendRawTransaction",
            "params": ["0x03c0"],
        },
        -32000,
    ),
    (
        "call not object",
        {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": ["x"]},
        -32602,
    ),
    (
        "call data and input differ",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_call",
            "params": [{"to": ADDRESS, "data": "0x00", "input": "0x01"}],
        },
        -32602,
    ),
    (
        "short hash",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getTransactionReceipt",
            "params": ["0x1234"],
        },
        -32602,
    ),
    (
        "logs not object",
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [[]]},
        -32602,
    ),
    (
        "logs five topics",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getLogs",
            "params": [{"topics": [None] * 5}],
        },
        -32602,
    ),
    (
        "logs hash and range",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getLogs",
            "params": [{"blockHash": "0x" + "00" * 32, "fromBlock": "0x0"}],
        },
        -32602,
    ),
    (
        "logs unknown block hash",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getLogs",
            "params": [{"blockHash": "0x" + "00" * 32}],
        },
        -32000,
    ),
    (
        "fee history percentiles",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_feeHistory",
            "params": ["0x1", "latest", [50, 10]],
        },
        -32602,
    ),
    (
        "revert id text",
        {"jsonrpc": "2.0", "id": 1, "method": "evm_revert", "params": ["xyz"]},
        -32602,
    ),
    (
        "mine 5000 blocks",
        {"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": [{"blocks": 5000}]},
        -32000,
    ),
    (
        "mine in the past",
        {"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": [1]},
        -32000,
    ),
    (
        "automine not bool",
        {"jsonrpc": "2.0", "id": 1, "method": "evm_setAutomine", "params": [1]},
        -32602,
    ),
    (
        "send transaction",
        {"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction", "params": [{}]},
        -32000,
    ),
    (
        "estimate reverts",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_estimateGas",
            "params": [{"to": None, "data": "0xfd"}],
        },
        3,
    ),
]


def test_bad_rpc_never_fails_server(client: TestClient) -> None:
    # One chain for the whole table: each case is a separate request.
    for name, payload, code in BAD_REQUESTS:
        if isinstance(payload, bytes):
            response = client.post(
                RPC, content=payload, headers={"content-type": "application/json"}
            )
        else:
            response = client.post(RPC, json=payload)
        assert response.status_code == 200, (name, response.text)
        answer = response.json()
        assert answer["jsonrpc"] == "2.0", name
        if code is not None:
            assert answer["error"]["code"] == code, (name, answer)
        assert answer["error"]["message"], name


def test_revert_carries_data(client: TestClient, runtime: Runtime) -> None:
    token = devnet_chain(runtime).tokens["usdc"].address
    call = {
        "from": ADDRESS,
        "to": token,
        "data": "0x" + transfer_calldata(ADDRESS, 1).hex(),
    }
    answer = rpc(client, "eth_call", call, "latest")
    assert answer["error"]["code"] == 3
    assert "transfer amount exceeds balance" in answer["error"]["message"]
    assert answer["error"]["data"].startswith("0x08c379a0")


FAUCET_BAD_BODIES: list[tuple[str, Any, str]] = [
    ("bad checksum", {"address": "0x" + "aB" * 20, "usdc": "1"}, "address"),
    ("short address", {"address": "0x1234", "usdc": "1"}, "address"),
    ("usdc boolean", {"address": ADDRESS, "usdc": True}, "usdc"),
    ("usdc text", {"address": ADDRESS, "usdc": "ten"}, "usdc"),
    ("usdc exponent", {"address": ADDRESS, "usdc": "1e3"}, "usdc"),
    ("usdc zero", {"address": ADDRESS, "usdc": "0"}, "usdc"),
    ("usdc negative", {"address": ADDRESS, "usdc": -5}, "usdc"),
    ("usdc over limit", {"address": ADDRESS, "usdc": "1000000.01"}, "usdc"),
    ("usdc seven decimals", {"address": ADDRESS, "usdc": "1.0000001"}, "usdc"),
    ("usdc null", {"address": ADDRESS, "usdc": None}, "usdc"),
    ("missing usdc", {"address": ADDRESS}, "usdc"),
    ("extra field", {"address": ADDRESS, "usdc": "1", "eth": "1"}, "eth"),
]


def test_faucet_rejects_bad_bodies(client: TestClient, runtime: Runtime) -> None:
    head = devnet_chain(runtime).web3.eth.block_number
    for name, body, field in FAUCET_BAD_BODIES:
        response = client.post(FAUCET, json=body)
        assert response.status_code == 400, (name, response.text)
        error = response.json()
        assert error["error"] is True, name
        assert error["code"] == "invalid_request", name
        assert [detail["field"] for detail in error["details"]] == [field], name
    assert devnet_chain(runtime).web3.eth.block_number == head


def test_faucet_accepts_numbers_and_checksums(
    client: TestClient, runtime: Runtime
) -> None:
    account = Account.create()
    response = client.post(FAUCET, json={"address": account.address, "usdc": 100.5})
    assert response.status_code == 200, response.text
    assert response.json()["usdc"] == "100.5"
    chain = devnet_chain(runtime)
    assert (
        token_balance(chain, chain.tokens["usdc"], account.address)
        == 100 * USDC + 500_000
    )


def test_faucet_needs_json(client: TestClient) -> None:
    response = client.post(
        FAUCET, content=b"address=x", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    broken = client.post(
        FAUCET, content=b"{", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "invalid_json"


@pytest.fixture(params=[{}, {"devnet": True}], ids=["devnet-default", "devnet-on"])
def staging_client(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[TestClient]:
    settings = make_settings(
        database_url, tmp_path, environment="staging", **request.param
    )
    runtime = Runtime.build(settings)
    with TestClient(
        create_app(runtime=runtime), raise_server_exceptions=False
    ) as client:
        yield client


def test_devnet_routes_absent_in_staging(staging_client: TestClient) -> None:
    for path, body in (
        (RPC, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}),
        (FAUCET, {"address": ADDRESS, "usdc": "1"}),
    ):
        response = staging_client.post(path, json=body)
        assert response.status_code == 404
        assert response.json()["error"] is True
        assert response.json()["code"] == "not_found"
