"""The unsigned payment transaction a buyer signs, and token balances."""

from __future__ import annotations

import rlp
from eth_utils import to_canonical_address, to_checksum_address
from web3.exceptions import ContractLogicError

from orderdesk.payments.chains import Chain, Token
from orderdesk.payments.erc20 import (
    balance_of_calldata,
    decode_uint256,
    transfer_calldata,
)
from orderdesk.payments.node import node_errors

DYNAMIC_FEE_TRANSACTION_TYPE = b"\x02"
# Used when the node cannot estimate, usually because the payer does not hold the
# tokens yet. A transfer of the devnet token to a new holder uses 51,200 gas.
TRANSFER_GAS_FALLBACK = 100_000
# The node's estimate is exact for the state it ran on, and that state can change
# before the buyer signs, so the gas limit has a margin over it.
GAS_MARGIN_PERCENT = 20


def build_preparation(
    chain: Chain, token: Token, payer: str, treasury: str, base_units: int
) -> dict[str, str]:
    """Build the unsigned EIP-1559 transfer of `base_units` from `payer` to `treasury`.

    `serializedTransaction` is the canonical unsigned form that wallets sign:
    0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas, gas,
    token, 0, calldata, []]), with the payer's next (pending) nonce and the node's
    current fees. The max fee is twice the latest base fee plus the priority fee,
    which stays valid through about six full blocks of base fee increases.
    Raises ChainUnavailable when the node cannot be reached.
    """
    payer = to_checksum_address(payer)
    calldata = transfer_calldata(to_checksum_address(treasury), base_units)
    w3 = chain.web3
    with node_errors(chain):
        nonce = w3.eth.get_transaction_count(payer, "pending")
        priority_fee = int(w3.eth.max_priority_fee)
        base_fee = int(w3.eth.get_block("latest")["baseFeePerGas"])
        gas = _estimate_transfer_gas(chain, token, payer, calldata)
    fields = [
        chain.chain_id,
        nonce,
        priority_fee,
        2 * base_fee + priority_fee,
        gas,
        to_canonical_address(token.address),
        0,
        calldata,
        [],
    ]
    serialized = DYNAMIC_FEE_TRANSACTION_TYPE + rlp.encode(fields)
    return {
        "chain": chain.name,
        "payerAddress": payer,
        "serializedTransaction": "0x" + serialized.hex(),
    }


def _estimate_transfer_gas(
    chain: Chain, token: Token, payer: str, calldata: bytes
) -> int:
    try:
        estimate = chain.web3.eth.estimate_gas(
            {"from": payer, "to": token.address, "data": calldata}
        )
    except ContractLogicError:
        return TRANSFER_GAS_FALLBACK
    return int(estimate) * (100 + GAS_MARGIN_PERCENT) // 100


def token_balance(chain: Chain, token: Token, address: str) -> int:
    """Return the token balance of `address` in base units at the latest block."""
    with node_errors(chain):
        result = chain.web3.eth.call(
            {
                "to": token.address,
                "data": balance_of_calldata(to_checksum_address(address)),
            }
        )
    return decode_uint256(bytes(result))
