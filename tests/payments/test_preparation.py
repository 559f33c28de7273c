"""The unsigned payment transaction: its canonical form, and that signing it pays."""

from __future__ import annotations

import rlp
from eth_account import Account
from eth_utils import to_checksum_address
from tests.conftest import LiveServer
from tests.payments.helpers import USDC, devnet_chain, funded_account, transfer

from orderdesk.payments.erc20 import transfer_calldata
from orderdesk.payments.preparation import (
    TRANSFER_GAS_FALLBACK,
    build_preparation,
    token_balance,
)
from orderdesk.payments.verification import Outcome, check_payment
from orderdesk.runtime import Runtime

FIELDS = (
    "chain_id",
    "nonce",
    "max_priority_fee_per_gas",
    "max_fee_per_gas",
    "gas",
    "to",
    "value",
    "data",
    "access_list",
)


def decode(serialized: str) -> dict[str, object]:
    raw = bytes.fromhex(serialized.removeprefix("0x"))
    assert raw[0] == 2
    items = rlp.decode(raw[1:])
    assert len(items) == len(FIELDS)
    values = dict(zip(FIELDS, items, strict=True))
    for name in (
        "chain_id",
        "nonce",
        "max_priority_fee_per_gas",
        "max_fee_per_gas",
        "gas",
        "value",
    ):
        values[name] = int.from_bytes(values[name], "big")  # type: ignore[arg-type]
    return values


def test_preparation_fields_decode(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    token = chain.tokens["usdc"]
    payer = funded_account(chain, "20")
    transfer(chain, payer, Account.create().address, USDC)  # the next nonce is 1
    treasury = Account.create().address
    prepared = build_preparation(
        chain, token, payer.address.lower(), treasury, 12_340_000
    )

    assert prepared["chain"] == "devnet"
    assert prepared["payerAddress"] == payer.address
    fields = decode(prepared["serializedTransaction"])
    base_fee = chain.web3.eth.get_block("latest")["baseFeePerGas"]
    assert fields["chain_id"] == chain.chain_id
    assert fields["nonce"] == 1
    assert fields["max_priority_fee_per_gas"] == 10**9
    assert fields["max_fee_per_gas"] == 2 * base_fee + 10**9
    assert 40_000 < fields["gas"] < TRANSFER_GAS_FALLBACK  # type: ignore[operator]
    assert to_checksum_address(fields["to"]) == token.address  # type: ignore[arg-type]
    assert fields["value"] == 0
    assert fields["data"] == transfer_calldata(treasury, 12_340_000)
    assert fields["access_list"] == []


def test_signed_preparation_pays(runtime: Runtime, live_server: LiveServer) -> None:
    from web3 import HTTPProvider, Web3

    chain = devnet_chain(runtime)
    token = chain.tokens["usdc"]
    payer = funded_account(chain, "20")
    treasury = Account.create().address
    fields = decode(
        build_preparation(chain, token, payer.address, treasury, 20 * USDC)[
            "serializedTransaction"
        ]
    )
    signed = payer.sign_transaction(
        {
            "type": 2,
            "chainId": fields["chain_id"],
            "nonce": fields["nonce"],
            "maxPriorityFeePerGas": fields["max_priority_fee_per_gas"],
            "maxFeePerGas": fields["max_fee_per_gas"],
            "gas": fields["gas"],
            "to": to_checksum_address(fields["to"]),  # type: ignore[arg-type]
            "value": fields["value"],
            "data": fields["data"],
            "accessList": [],
        }
    )
    w3 = Web3(HTTPProvider(live_server.url + "/devnet/rpc"))
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 1
    assert token_balance(chain, token, treasury) == 20 * USDC
    result = check_payment(
        chain, token, tx_hash.to_0x_hex(), treasury, 20 * USDC, payer.address
    )
    assert result.outcome == Outcome.CONFIRMED


def test_unfunded_payer_gets_fallback_gas(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    token = chain.tokens["usdc"]
    payer = Account.create().address
    fields = decode(
        build_preparation(chain, token, payer, Account.create().address, USDC)[
            "serializedTransaction"
        ]
    )
    assert fields["gas"] == TRANSFER_GAS_FALLBACK
    assert fields["nonce"] == 0
    assert token_balance(chain, token, payer) == 0
