"""Parameters of the devnet's JSON-RPC methods, parsed strictly into Python values.

Quantities are hex strings ("0x1a"). Plain non-negative integers are accepted too,
because some clients send evm_* arguments as JSON numbers. Anything else is an
invalid-params error (-32602) that names the argument.
"""

from __future__ import annotations

import json
import re
from typing import Any

from eth_utils import to_checksum_address

from orderdesk.payments.devnet_state import CallRequest, ChainState

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
EXECUTION_REVERTED = 3

MAX_LOG_BLOCK_RANGE = 10_000
MAX_FEE_HISTORY_BLOCKS = 1024
BLOCK_TAGS = ("latest", "earliest", "pending", "safe", "finalized")
_HEX_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_HEX_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")

Params = list[Any]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def take_arguments(
    params: Params, method: str, required: int, optional: int = 0
) -> Params:
    if not required <= len(params) <= required + optional:
        expected = (
            str(required) if not optional else f"{required} to {required + optional}"
        )
        raise RpcError(
            INVALID_PARAMS,
            f"invalid params: {method} takes {expected} parameters, got {len(params)}",
        )
    return params + [None] * (required + optional - len(params))


def invalid_argument(name: str, expected: str, value: Any) -> RpcError:
    shown = json.dumps(value)[:80] if _jsonable(value) else repr(value)[:80]
    return RpcError(
        INVALID_PARAMS, f"invalid argument {name}: expected {expected}, got {shown}"
    )


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def parse_quantity(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise invalid_argument(name, "a hex quantity such as 0x1a", value)
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and _HEX_QUANTITY.fullmatch(value):
        return int(value, 16)
    raise invalid_argument(name, "a hex quantity such as 0x1a", value)


def parse_data(value: Any, name: str, length: int | None = None) -> bytes:
    if not isinstance(value, str) or not _HEX_DATA.fullmatch(value):
        raise invalid_argument(
            name, "0x-prefixed hex data with an even number of digits", value
        )
    raw = bytes.fromhex(value[2:])
    if length is not None and len(raw) != length:
        raise invalid_argument(name, f"{length} bytes of 0x-hex", value)
    return raw


def parse_account(value: Any, name: str) -> str:
    return to_checksum_address(parse_data(value, name, 20))


def parse_hash(value: Any, name: str) -> bytes:
    return parse_data(value, name, 32)


def parse_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid_argument(name, "true or false", value)
    return value


def parse_block_id(state: ChainState, value: Any, name: str) -> str | int:
    """Parse a block tag, number or EIP-1898 object; None means "latest"."""
    if value is None:
        return "latest"
    if isinstance(value, str) and value in BLOCK_TAGS:
        return value
    if isinstance(value, dict):
        if "blockHash" in value:
            block = state.block_by_hash(
                parse_hash(value["blockHash"], f"{name}.blockHash")
            )
            if block is None:
                raise RpcError(
                    SERVER_ERROR, f"header for hash {value['blockHash']} not found"
                )
            return int(block.number)
        if "blockNumber" in value:
            return parse_block_id(state, value["blockNumber"], f"{name}.blockNumber")
        raise invalid_argument(name, "an object with blockHash or blockNumber", value)
    return parse_quantity(value, name)


def resolve_block_number(state: ChainState, block: str | int) -> int:
    head = int(state.chain.get_canonical_head().block_number)
    if block in ("latest", "safe", "finalized"):
        return head
    if block == "earliest":
        return 0
    if block == "pending":
        return head + 1
    return int(block)


def require_header(state: ChainState, block: str | int) -> Any:
    header = state.header_at(block)
    if header is None:
        raise RpcError(SERVER_ERROR, f"header for block {block} not found")
    return header


def parse_call_request(value: Any, name: str) -> CallRequest:
    if not isinstance(value, dict):
        raise invalid_argument(name, "a transaction call object", value)
    fields: dict[str, Any] = {}
    if value.get("from") is not None:
        fields["sender"] = parse_account(value["from"], f"{name}.from")
    if value.get("to") is not None:
        fields["to"] = parse_account(value["to"], f"{name}.to")
    if value.get("gas") is not None:
        fields["gas"] = parse_quantity(value["gas"], f"{name}.gas")
    if value.get("value") is not None:
        fields["value"] = parse_quantity(value["value"], f"{name}.value")
    inputs = [value[key] for key in ("input", "data") if value.get(key) is not None]
    if len(inputs) == 2 and inputs[0] != inputs[1]:
        raise RpcError(
            INVALID_PARAMS,
            'invalid params: both "data" and "input" are set and differ; send one',
        )
    if inputs:
        fields["data"] = parse_data(inputs[0], f"{name}.input")
    # Fees are checked for form, but calls run without fees, so an account with no
    # ether can still call.
    for fee in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "nonce"):
        if value.get(fee) is not None:
            parse_quantity(value[fee], f"{name}.{fee}")
    return CallRequest(**fields)
