"""The methods of the devnet's JSON-RPC, registered by name in METHODS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_bloom import BloomFilter
from eth_utils import keccak

from orderdesk import __version__
from orderdesk.payments.devnet import PRIORITY_FEE_WEI, Devnet
from orderdesk.payments.devnet_format import (
    data,
    effective_gas_price,
    format_block,
    format_logs,
    format_receipt,
    format_transaction,
    quantity,
)
from orderdesk.payments.devnet_params import (
    INVALID_PARAMS,
    MAX_FEE_HISTORY_BLOCKS,
    MAX_LOG_BLOCK_RANGE,
    SERVER_ERROR,
    Params,
    RpcError,
    invalid_argument,
    parse_account,
    parse_block_id,
    parse_bool,
    parse_call_request,
    parse_data,
    parse_hash,
    parse_quantity,
    require_header,
    resolve_block_number,
    take_arguments,
)
from orderdesk.payments.devnet_state import CallRequest, ChainState, base_fee

MethodHandler = Callable[[Devnet, Params], Any]

METHODS: dict[str, MethodHandler] = {}


def method(name: str) -> Callable[[MethodHandler], MethodHandler]:
    def register(function: MethodHandler) -> MethodHandler:
        METHODS[name] = function
        return function

    return register


@method("web3_clientVersion")
def _client_version(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "web3_clientVersion", 0)
    return f"orderdesk-devnet/{__version__}/eth-tester-py-evm"


@method("web3_sha3")
def _sha3(devnet: Devnet, params: Params) -> str:
    (value,) = take_arguments(params, "web3_sha3", 1)
    return data(keccak(parse_data(value, "data")))


@method("net_version")
def _net_version(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "net_version", 0)
    return str(devnet.chain_id)


@method("net_listening")
def _net_listening(devnet: Devnet, params: Params) -> bool:
    take_arguments(params, "net_listening", 0)
    return True


@method("net_peerCount")
def _net_peer_count(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "net_peerCount", 0)
    return quantity(0)


@method("eth_chainId")
def _chain_id(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "eth_chainId", 0)
    return quantity(devnet.chain_id)


@method("eth_syncing")
def _syncing(devnet: Devnet, params: Params) -> bool:
    take_arguments(params, "eth_syncing", 0)
    return False


@method("eth_accounts")
def _accounts(devnet: Devnet, params: Params) -> list[str]:
    # The node has no keys: clients sign locally and use eth_sendRawTransaction.
    take_arguments(params, "eth_accounts", 0)
    return []


@method("eth_sendTransaction")
def _send_transaction(devnet: Devnet, params: Params) -> Any:
    raise RpcError(
        SERVER_ERROR,
        "the devnet holds no unlocked accounts; sign the transaction locally and "
        "send it with eth_sendRawTransaction",
    )


@method("eth_blockNumber")
def _block_number_method(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "eth_blockNumber", 0)
    with devnet.reading() as state:
        return quantity(state.chain.get_canonical_head().block_number)


def _state_method(
    name: str, read: Callable[[Any, bytes, Params], Any], extra: int = 0
) -> MethodHandler:
    def handler(devnet: Devnet, params: Params) -> Any:
        arguments = take_arguments(params, name, 1 + extra, 1)
        account = bytes.fromhex(parse_account(arguments[0], "address")[2:])
        with devnet.reading() as state:
            block = parse_block_id(state, arguments[1 + extra], "block")
            evm_state = state.chain.get_vm(require_header(state, block)).state
            return read(evm_state, account, arguments[1 : 1 + extra])

    return handler


METHODS["eth_getBalance"] = _state_method(
    "eth_getBalance", lambda state, account, _: quantity(state.get_balance(account))
)
METHODS["eth_getTransactionCount"] = _state_method(
    "eth_getTransactionCount",
    lambda state, account, _: quantity(state.get_nonce(account)),
)
METHODS["eth_getCode"] = _state_method(
    "eth_getCode", lambda state, account, _: data(state.get_code(account))
)
METHODS["eth_getStorageAt"] = _state_method(
    "eth_getStorageAt",
    lambda state, account, args: data(
        state.get_storage(account, parse_quantity(args[0], "slot")).to_bytes(32, "big")
    ),
    extra=1,
)


@method("eth_gasPrice")
def _gas_price(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "eth_gasPrice", 0)
    with devnet.reading() as state:
        return quantity(base_fee(state.chain.header) + PRIORITY_FEE_WEI)


@method("eth_maxPriorityFeePerGas")
def _max_priority_fee(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "eth_maxPriorityFeePerGas", 0)
    return quantity(PRIORITY_FEE_WEI)


@method("eth_feeHistory")
def _fee_history(devnet: Devnet, params: Params) -> dict[str, Any]:
    count_param, newest_param, percentiles_param = take_arguments(
        params, "eth_feeHistory", 2, 1
    )
    count = parse_quantity(count_param, "blockCount")
    percentiles = _percentiles(percentiles_param)
    with devnet.reading() as state:
        head = int(state.chain.get_canonical_head().block_number)
        newest = min(
            resolve_block_number(
                state, parse_block_id(state, newest_param, "newestBlock")
            ),
            head,
        )
        count = max(1, min(count, MAX_FEE_HISTORY_BLOCKS, newest + 1))
        oldest = newest - count + 1
        blocks = state.mined_blocks(oldest, newest)
        after = state.canonical_block(newest + 1) or state.pending_block()
        result: dict[str, Any] = {
            "oldestBlock": quantity(oldest),
            "baseFeePerGas": [quantity(base_fee(b.header)) for b in blocks]
            + [quantity(base_fee(after.header))],
            "gasUsedRatio": [b.header.gas_used / b.header.gas_limit for b in blocks],
        }
        if percentiles is not None:
            result["reward"] = [_rewards(state, b, percentiles) for b in blocks]
        return result


def _percentiles(value: Any) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise invalid_argument(
            "rewardPercentiles", "an array of at most 100 numbers", value
        )
    previous = -1.0
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise invalid_argument("rewardPercentiles", "numbers from 0 to 100", value)
        if not 0 <= item <= 100 or item < previous:
            raise invalid_argument(
                "rewardPercentiles", "increasing numbers from 0 to 100", value
            )
        previous = float(item)
    return [float(item) for item in value]


def _rewards(state: ChainState, block: Any, percentiles: list[float]) -> list[str]:
    """Return the priority fee at each percentile of the block's gas used, with the
    transactions sorted by tip."""
    if not block.transactions:
        return [quantity(0) for _ in percentiles]
    receipts = state.receipts(block)
    block_base_fee = base_fee(block.header)
    paid = []
    previous = 0
    for transaction, receipt in zip(block.transactions, receipts, strict=True):
        tip = effective_gas_price(transaction, block.header) - block_base_fee
        paid.append((tip, receipt.gas_used - previous))
        previous = receipt.gas_used
    paid.sort()
    rewards = []
    for percentile in percentiles:
        threshold = block.header.gas_used * percentile / 100
        total, chosen = 0, paid[-1][0]
        for tip, gas in paid:
            total += gas
            if total >= threshold:
                chosen = tip
                break
        rewards.append(quantity(chosen))
    return rewards


@method("eth_call")
def _eth_call(devnet: Devnet, params: Params) -> str:
    call_param, block_param = take_arguments(params, "eth_call", 1, 1)
    request = parse_call_request(call_param, "transaction")
    with devnet.reading() as state:
        header = require_header(state, parse_block_id(state, block_param, "block"))
        return data(state.call(_capped(request, header), header))


@method("eth_estimateGas")
def _estimate_gas(devnet: Devnet, params: Params) -> str:
    call_param, block_param = take_arguments(params, "eth_estimateGas", 1, 1)
    request = parse_call_request(call_param, "transaction")
    with devnet.reading() as state:
        header = require_header(state, parse_block_id(state, block_param, "block"))
        return quantity(state.estimate_gas(_capped(request, header), header))


def _capped(request: CallRequest, header: Any) -> CallRequest:
    if request.gas is not None and request.gas > header.gas_limit:
        return CallRequest(
            sender=request.sender,
            to=request.to,
            data=request.data,
            value=request.value,
            gas=header.gas_limit,
        )
    return request


@method("eth_sendRawTransaction")
def _send_raw_transaction(devnet: Devnet, params: Params) -> str:
    (raw_param,) = take_arguments(params, "eth_sendRawTransaction", 1)
    return data(devnet.send_raw_transaction(parse_data(raw_param, "transaction")))


@method("eth_getTransactionByHash")
def _transaction_by_hash(devnet: Devnet, params: Params) -> dict[str, Any] | None:
    (hash_param,) = take_arguments(params, "eth_getTransactionByHash", 1)
    tx_hash = parse_hash(hash_param, "hash")
    with devnet.reading() as state:
        found = state.find_transaction(tx_hash)
        return None if found is None else format_transaction(found)


@method("eth_getTransactionReceipt")
def _transaction_receipt(devnet: Devnet, params: Params) -> dict[str, Any] | None:
    (hash_param,) = take_arguments(params, "eth_getTransactionReceipt", 1)
    tx_hash = parse_hash(hash_param, "hash")
    with devnet.reading() as state:
        found = state.find_transaction(tx_hash)
        if found is None or found.pending:
            return None
        return format_receipt(state, found)


def _block_from_id(state: ChainState, block: str | int) -> tuple[Any, bool] | None:
    if block == "pending":
        return state.pending_block(), True
    found = state.canonical_block(resolve_block_number(state, block))
    return None if found is None else (found, False)


@method("eth_getBlockByNumber")
def _block_by_number(devnet: Devnet, params: Params) -> dict[str, Any] | None:
    block_param, full_param = take_arguments(params, "eth_getBlockByNumber", 1, 1)
    full = False if full_param is None else parse_bool(full_param, "fullTransactions")
    with devnet.reading() as state:
        found = _block_from_id(state, parse_block_id(state, block_param, "block"))
        if found is None:
            return None
        return format_block(found[0], full=full, pending=found[1])


@method("eth_getBlockByHash")
def _block_by_hash_method(devnet: Devnet, params: Params) -> dict[str, Any] | None:
    hash_param, full_param = take_arguments(params, "eth_getBlockByHash", 1, 1)
    block_hash = parse_hash(hash_param, "hash")
    full = False if full_param is None else parse_bool(full_param, "fullTransactions")
    with devnet.reading() as state:
        block = state.block_by_hash(block_hash)
        return None if block is None else format_block(block, full=full, pending=False)


@method("eth_getBlockTransactionCountByNumber")
def _transaction_count_by_number(devnet: Devnet, params: Params) -> str | None:
    (block_param,) = take_arguments(params, "eth_getBlockTransactionCountByNumber", 1)
    with devnet.reading() as state:
        found = _block_from_id(state, parse_block_id(state, block_param, "block"))
        return None if found is None else quantity(len(found[0].transactions))


@method("eth_getBlockReceipts")
def _block_receipts(devnet: Devnet, params: Params) -> list[dict[str, Any]] | None:
    (block_param,) = take_arguments(params, "eth_getBlockReceipts", 1)
    with devnet.reading() as state:
        found = _block_from_id(state, parse_block_id(state, block_param, "block"))
        if found is None or found[1]:
            return None
        block = found[0]
        return [
            format_receipt(state, state.find_transaction(transaction.hash))  # type: ignore[arg-type]
            for transaction in block.transactions
        ]


@method("eth_getLogs")
def _get_logs(devnet: Devnet, params: Params) -> list[dict[str, Any]]:
    (filter_param,) = take_arguments(params, "eth_getLogs", 1)
    if not isinstance(filter_param, dict):
        raise invalid_argument("filter", "a filter object", filter_param)
    addresses = _filter_addresses(filter_param.get("address"))
    topics = _filter_topics(filter_param.get("topics"))
    with devnet.reading() as state:
        blocks = _filter_blocks(state, filter_param)
        logs: list[dict[str, Any]] = []
        for block in blocks:
            logs.extend(_matching_logs(state, block, addresses, topics))
        return logs


def _filter_addresses(value: Any) -> set[bytes] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return {parse_data(item, "filter.address", 20) for item in items}


def _filter_topics(value: Any) -> list[set[bytes] | None]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 4:
        raise invalid_argument(
            "filter.topics", "an array of at most 4 topic filters", value
        )
    topics: list[set[bytes] | None] = []
    for position, item in enumerate(value):
        name = f"filter.topics[{position}]"
        if item is None:
            topics.append(None)
        elif isinstance(item, list):
            topics.append({parse_hash(topic, name) for topic in item} or None)
        else:
            topics.append({parse_hash(item, name)})
    return topics


def _filter_blocks(state: ChainState, value: dict[str, Any]) -> list[Any]:
    if value.get("blockHash") is not None:
        if value.get("fromBlock") is not None or value.get("toBlock") is not None:
            raise RpcError(
                INVALID_PARAMS,
                "invalid params: blockHash cannot be combined with fromBlock or "
                "toBlock",
            )
        block = state.block_by_hash(parse_hash(value["blockHash"], "filter.blockHash"))
        if block is None:
            raise RpcError(SERVER_ERROR, f"unknown block {value['blockHash']}")
        return [block]
    head = int(state.chain.get_canonical_head().block_number)
    first = min(
        resolve_block_number(
            state, parse_block_id(state, value.get("fromBlock"), "fromBlock")
        ),
        head,
    )
    last = min(
        resolve_block_number(
            state, parse_block_id(state, value.get("toBlock"), "toBlock")
        ),
        head,
    )
    if last - first + 1 > MAX_LOG_BLOCK_RANGE:
        raise RpcError(
            INVALID_PARAMS,
            f"invalid params: the block range {first} to {last} is longer than "
            f"{MAX_LOG_BLOCK_RANGE} blocks; query a shorter range",
        )
    return state.mined_blocks(first, last)


def _matching_logs(
    state: ChainState,
    block: Any,
    addresses: set[bytes] | None,
    topics: list[set[bytes] | None],
) -> list[dict[str, Any]]:
    bloom = BloomFilter(block.header.bloom)
    if addresses is not None and not any(item in bloom for item in addresses):
        return []
    matches: list[dict[str, Any]] = []
    first_log_index = 0
    for index, (transaction, receipt) in enumerate(
        zip(block.transactions, state.receipts(block), strict=True)
    ):
        formatted = format_logs(block, transaction, index, receipt, first_log_index)
        first_log_index += len(receipt.logs)
        for log_entry, entry in zip(receipt.logs, formatted, strict=True):
            if _log_matches(log_entry, addresses, topics):
                matches.append(entry)
    return matches


def _log_matches(
    log_entry: Any, addresses: set[bytes] | None, topics: list[set[bytes] | None]
) -> bool:
    if addresses is not None and bytes(log_entry.address) not in addresses:
        return False
    if len(topics) > len(log_entry.topics):
        return False
    for wanted, topic in zip(topics, log_entry.topics, strict=False):
        if wanted is not None and topic.to_bytes(32, "big") not in wanted:
            return False
    return True


@method("evm_mine")
def _evm_mine(devnet: Devnet, params: Params) -> str:
    (options,) = take_arguments(params, "evm_mine", 0, 1)
    blocks, timestamp = 1, None
    if isinstance(options, dict):
        if options.get("blocks") is not None:
            blocks = parse_quantity(options["blocks"], "options.blocks")
        if options.get("timestamp") is not None:
            timestamp = parse_quantity(options["timestamp"], "options.timestamp")
    elif options is not None:
        timestamp = parse_quantity(options, "timestamp")
    devnet.mine(blocks, timestamp)
    return quantity(0)


@method("evm_snapshot")
def _evm_snapshot(devnet: Devnet, params: Params) -> str:
    take_arguments(params, "evm_snapshot", 0)
    return quantity(devnet.snapshot())


@method("evm_revert")
def _evm_revert(devnet: Devnet, params: Params) -> bool:
    (snapshot_param,) = take_arguments(params, "evm_revert", 1)
    return devnet.revert(parse_quantity(snapshot_param, "snapshotId"))


@method("evm_increaseTime")
def _evm_increase_time(devnet: Devnet, params: Params) -> int:
    (seconds_param,) = take_arguments(params, "evm_increaseTime", 1)
    return devnet.increase_time(parse_quantity(seconds_param, "seconds"))


@method("evm_setAutomine")
def _evm_set_automine(devnet: Devnet, params: Params) -> bool:
    (enabled_param,) = take_arguments(params, "evm_setAutomine", 1)
    devnet.set_automine(parse_bool(enabled_param, "enabled"))
    return True


@method("miner_stop")
def _miner_stop(devnet: Devnet, params: Params) -> bool:
    take_arguments(params, "miner_stop", 0)
    devnet.set_automine(False)
    return True


@method("miner_start")
def _miner_start(devnet: Devnet, params: Params) -> bool:
    # An optional argument (a thread count on other nodes) is accepted and ignored.
    take_arguments(params, "miner_start", 0, 1)
    devnet.set_automine(True)
    return True
