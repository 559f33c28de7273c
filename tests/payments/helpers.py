"""Accounts, token transfers and contracts on the devnet, shared by payment tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from orderdesk.payments.chains import Chain
from orderdesk.payments.contract import compile_devnet_token
from orderdesk.payments.devnet import Devnet
from orderdesk.payments.devnet_state import contract_address
from orderdesk.payments.erc20 import mint_calldata, transfer_calldata
from orderdesk.runtime import Runtime

USDC = 10**6


def devnet_chain(runtime: Runtime) -> Chain:
    chain = runtime.chains.get("devnet")
    assert chain is not None
    return chain


def devnet_of(chain: Chain) -> Devnet:
    assert chain.devnet is not None
    return chain.devnet


def funded_account(chain: Chain, usdc: str = "100") -> LocalAccount:
    account = Account.create()
    devnet_of(chain).fund(account.address, Decimal(usdc))
    return account


def sign(chain: Chain, account: LocalAccount, **fields: Any) -> bytes:
    """Sign an EIP-1559 transaction with the node's nonce and fees unless given."""
    w3 = chain.web3
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    transaction: dict[str, Any] = {
        "type": 2,
        "chainId": chain.chain_id,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "maxPriorityFeePerGas": 10**9,
        "maxFeePerGas": 2 * base_fee + 10**9,
        "gas": 100_000,
        "value": 0,
        "data": b"",
    }
    transaction.update(fields)
    return bytes(account.sign_transaction(transaction).raw_transaction)


def send(chain: Chain, raw: bytes) -> str:
    return "0x" + bytes(chain.web3.eth.send_raw_transaction(raw)).hex()


def transfer(
    chain: Chain,
    account: LocalAccount,
    recipient: str,
    base_units: int,
    *,
    token: str | None = None,
    **fields: Any,
) -> str:
    """Send an ERC-20 transfer (of the devnet USDC unless `token`) and return its id."""
    token = token or chain.tokens["usdc"].address
    data = transfer_calldata(recipient, base_units)
    return send(chain, sign(chain, account, to=token, data=data, **fields))


def deploy_token(chain: Chain, owner: LocalAccount, mint_units: int) -> str:
    """Deploy a second copy of the test token owned by `owner`, minting it some."""
    compiled = compile_devnet_token()
    constructor = abi_encode(["string", "string", "uint8"], ["Other", "OTH", 6])
    nonce = chain.web3.eth.get_transaction_count(owner.address, "pending")
    send(chain, sign(chain, owner, data=compiled.bytecode + constructor, gas=3_000_000))
    address = contract_address(owner.address, nonce)
    send(
        chain,
        sign(chain, owner, to=address, data=mint_calldata(owner.address, mint_units)),
    )
    return address


def receipt(chain: Chain, tx_id: str) -> Any:
    return chain.web3.eth.get_transaction_receipt(tx_id)


RELAY_SOURCE = """
# pragma version ~=0.4.0
from ethereum.ercs import IERC20

@external
def pay_from_two(
    token: IERC20,
    first: address,
    second: address,
    to: address,
    first_amount: uint256,
    second_amount: uint256,
):
    extcall token.transferFrom(first, to, first_amount)
    extcall token.transferFrom(second, to, second_amount)
"""
_relay_bytecode: list[bytes] = []


def deploy_relay(chain: Chain, owner: LocalAccount) -> str:
    """Deploy a contract that moves tokens of two approved holders in one call."""
    if not _relay_bytecode:
        import vyper

        output = vyper.compile_code(RELAY_SOURCE, output_formats=["bytecode"])
        _relay_bytecode.append(bytes.fromhex(output["bytecode"][2:]))
    nonce = chain.web3.eth.get_transaction_count(owner.address, "pending")
    send(chain, sign(chain, owner, data=_relay_bytecode[0], gas=1_000_000))
    return contract_address(owner.address, nonce)


def approve(chain: Chain, owner: LocalAccount, spender: str, base_units: int) -> None:
    data = keccak(b"approve(address,uint256)")[:4] + abi_encode(
        ["address", "uint256"], [spender, base_units]
    )
    send(chain, sign(chain, owner, to=chain.tokens["usdc"].address, data=data))


def relay_payment(
    chain: Chain,
    relay: str,
    sender: LocalAccount,
    holders: tuple[str, str],
    recipient: str,
    amounts: tuple[int, int],
) -> str:
    data = keccak(b"pay_from_two(address,address,address,address,uint256,uint256)")[
        :4
    ] + abi_encode(
        ["address", "address", "address", "address", "uint256", "uint256"],
        [chain.tokens["usdc"].address, holders[0], holders[1], recipient, *amounts],
    )
    return send(chain, sign(chain, sender, to=relay, data=data, gas=200_000))
