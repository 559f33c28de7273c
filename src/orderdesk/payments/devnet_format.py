"""Blocks, transactions, receipts and logs of the devnet in Ethereum JSON-RPC form.

Quantities are hex without leading zeros ("0x0" for zero) and byte strings are
0x-hex, as the Ethereum execution API specification writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rlp
from eth.abc import BlockAPI, BlockHeaderAPI, ReceiptAPI, SignedTransactionAPI

from orderdesk.payments.devnet_state import (
    ChainState,
    FoundTransaction,
    base_fee,
    contract_address,
)

DYNAMIC_FEE_TYPE = 2


def quantity(value: int) -> str:
    return hex(value)


def data(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def address(value: bytes) -> str | None:
    return "0x" + bytes(value).hex() if value else None


def word(value: int) -> str:
    return data(value.to_bytes(32, "big"))


def transaction_type(transaction: SignedTransactionAPI) -> int:
    return int(getattr(transaction, "type_id", None) or 0)


def effective_gas_price(
    transaction: SignedTransactionAPI, header: BlockHeaderAPI
) -> int:
    if transaction_type(transaction) >= DYNAMIC_FEE_TYPE:
        tip_cap = transaction.max_priority_fee_per_gas
        return int(min(transaction.max_fee_per_gas, tip_cap + base_fee(header)))
    return int(transaction.gas_price)


def format_transaction(found: FoundTransaction) -> dict[str, Any]:
    transaction, block = found.transaction, found.block
    kind = transaction_type(transaction)
    result: dict[str, Any] = {
        "type": quantity(kind),
        "hash": data(transaction.hash),
        "nonce": quantity(transaction.nonce),
        "blockHash": None if found.pending else data(block.hash),
        "blockNumber": None if found.pending else quantity(block.number),
        "transactionIndex": None if found.pending else quantity(found.index),
        "from": address(transaction.sender),
        "to": address(transaction.to),
        "value": quantity(transaction.value),
        "gas": quantity(transaction.gas),
        "input": data(transaction.data),
    }
    if kind >= DYNAMIC_FEE_TYPE:
        result["maxFeePerGas"] = quantity(transaction.max_fee_per_gas)
        result["maxPriorityFeePerGas"] = quantity(transaction.max_priority_fee_per_gas)
        price = transaction.max_fee_per_gas
        if not found.pending:
            price = effective_gas_price(transaction, block.header)
        result["gasPrice"] = quantity(price)
    else:
        result["gasPrice"] = quantity(transaction.gas_price)
    if kind > 0:
        result["chainId"] = quantity(int(transaction.chain_id or 0))
        result["accessList"] = _access_list(transaction.access_list)
        y_parity = int(transaction.y_parity or 0)
        result["yParity"] = quantity(y_parity)
        result["v"] = quantity(y_parity)
    else:
        v = int(getattr(transaction, "v", 0))  # legacy: v, not y_parity
        result["v"] = quantity(v)
        if v >= 35:
            result["chainId"] = quantity((v - 35) // 2)
    result["r"] = quantity(transaction.r)
    result["s"] = quantity(transaction.s)
    return result


def _access_list(entries: Any) -> list[dict[str, Any]]:
    return [
        {"address": address(account), "storageKeys": [word(key) for key in keys]}
        for account, keys in entries
    ]


def format_receipt(state: ChainState, found: FoundTransaction) -> dict[str, Any]:
    """Return the receipt of a mined transaction."""
    block, transaction, index = found.block, found.transaction, found.index
    receipts = state.receipts(block)
    receipt = receipts[index]
    previous_gas = receipts[index - 1].gas_used if index else 0
    first_log_index = sum(len(earlier.logs) for earlier in receipts[:index])
    created = None
    if not transaction.to:
        created = contract_address(
            "0x" + bytes(transaction.sender).hex(), transaction.nonce
        ).lower()
    return {
        "type": quantity(transaction_type(transaction)),
        "transactionHash": data(transaction.hash),
        "transactionIndex": quantity(index),
        "blockHash": data(block.hash),
        "blockNumber": quantity(block.number),
        "from": address(transaction.sender),
        "to": address(transaction.to),
        "cumulativeGasUsed": quantity(receipt.gas_used),
        "gasUsed": quantity(receipt.gas_used - previous_gas),
        "effectiveGasPrice": quantity(effective_gas_price(transaction, block.header)),
        "contractAddress": created,
        "logs": format_logs(block, transaction, index, receipt, first_log_index),
        "logsBloom": data(receipt.bloom.to_bytes(256, "big")),
        "status": quantity(_status(receipt)),
    }


def _status(receipt: ReceiptAPI) -> int:
    # Since Byzantium the receipt's first field is the status: b"\x01" or b"".
    return 1 if receipt.state_root == b"\x01" else 0


def format_logs(
    block: BlockAPI,
    transaction: SignedTransactionAPI,
    index: int,
    receipt: ReceiptAPI,
    first_log_index: int,
) -> list[dict[str, Any]]:
    return [
        {
            "removed": False,
            "logIndex": quantity(first_log_index + position),
            "transactionIndex": quantity(index),
            "transactionHash": data(transaction.hash),
            "blockHash": data(block.hash),
            "blockNumber": quantity(block.number),
            "address": address(log.address),
            "data": data(log.data),
            "topics": [word(topic) for topic in log.topics],
        }
        for position, log in enumerate(receipt.logs)
    ]


def format_block(block: BlockAPI, *, full: bool, pending: bool) -> dict[str, Any]:
    header = block.header
    if full:
        transactions: list[Any] = [
            format_transaction(FoundTransaction(block, transaction, index, pending))
            for index, transaction in enumerate(block.transactions)
        ]
    else:
        transactions = [data(transaction.hash) for transaction in block.transactions]
    result: dict[str, Any] = {
        "number": quantity(header.block_number),
        # A pending block has no final hash yet.
        "hash": None if pending else data(header.hash),
        "parentHash": data(header.parent_hash),
        "nonce": data(header.nonce),
        "mixHash": data(header.mix_hash),
        "sha3Uncles": data(header.uncles_hash),
        "logsBloom": data(header.bloom.to_bytes(256, "big")),
        "transactionsRoot": data(header.transaction_root),
        "stateRoot": data(header.state_root),
        "receiptsRoot": data(header.receipt_root),
        "miner": data(header.coinbase),
        "difficulty": quantity(header.difficulty),
        "totalDifficulty": quantity(header.difficulty),
        "extraData": data(header.extra_data),
        "size": quantity(len(rlp.encode(block))),
        "gasLimit": quantity(header.gas_limit),
        "gasUsed": quantity(header.gas_used),
        "timestamp": quantity(header.timestamp),
        "transactions": transactions,
        "uncles": [],
        "baseFeePerGas": quantity(base_fee(header)),
    }
    optional: dict[str, tuple[str, Callable[[Any], str]]] = {
        "withdrawalsRoot": ("withdrawals_root", data),
        "blobGasUsed": ("blob_gas_used", quantity),
        "excessBlobGas": ("excess_blob_gas", quantity),
        "parentBeaconBlockRoot": ("parent_beacon_block_root", data),
        "requestsHash": ("requests_hash", data),
    }
    for key, (attribute, formatter) in optional.items():
        value = getattr(header, attribute, None)
        if value is not None:
            result[key] = formatter(value)
    if "withdrawalsRoot" in result:
        result["withdrawals"] = []
    return result
