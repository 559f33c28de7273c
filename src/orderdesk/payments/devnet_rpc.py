"""Ethereum JSON-RPC 2.0 for the devnet, served over HTTP and in process to web3.py.

Standard eth_* methods follow the Ethereum execution API; evm_* and miner_* control
the chain the way ganache and hardhat do. Errors use the JSON-RPC codes: -32700
parse error, -32600 invalid request, -32601 unknown method, -32602 invalid params,
-32603 internal error, -32000 a rejected transaction or unknown block, and 3 for an
execution that reverted, with the revert data.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from orderdesk.payments.devnet import Devnet, DevnetReplayError, DevnetUnavailable
from orderdesk.payments.devnet_format import data
from orderdesk.payments.devnet_methods import METHODS
from orderdesk.payments.devnet_params import (
    EXECUTION_REVERTED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_ERROR,
    RpcError,
)
from orderdesk.payments.devnet_state import (
    DevnetError,
    ExecutionReverted,
    InvalidDevnetRequest,
    TransactionRejected,
)

log = structlog.get_logger(__name__)


class DevnetRpc:
    """Dispatch JSON-RPC requests, single or batched, to a devnet."""

    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet

    def handle_json(self, raw: bytes) -> Any | None:
        """Return the response to a raw request body, or None for only notifications."""
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return _error_response(None, RpcError(PARSE_ERROR, f"parse error: {exc}"))
        return self.handle(payload)

    def handle(self, payload: Any) -> Any | None:
        if isinstance(payload, list):
            if not payload:
                error = RpcError(INVALID_REQUEST, "invalid request: empty batch")
                return _error_response(None, error)
            responses = [self._handle_one(item) for item in payload]
            answered = [response for response in responses if response is not None]
            return answered or None
        return self._handle_one(payload)

    def call(self, method: str, params: Any) -> Any:
        """Run one method and return its result; raises RpcError."""
        handler = METHODS.get(method)
        if handler is None:
            raise RpcError(
                METHOD_NOT_FOUND, f"the method {method} does not exist/is not available"
            )
        if params is None:
            params = []
        if not isinstance(params, list):
            raise RpcError(INVALID_PARAMS, "invalid params: params must be an array")
        try:
            return handler(self.devnet, params)
        except ExecutionReverted as exc:
            raise RpcError(EXECUTION_REVERTED, str(exc), data(exc.data)) from exc
        except (TransactionRejected, InvalidDevnetRequest) as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        except DevnetUnavailable as exc:
            raise RpcError(SERVER_ERROR, f"{exc}; retry the request") from exc
        except DevnetReplayError as exc:
            raise RpcError(INTERNAL_ERROR, str(exc)) from exc

    def _handle_one(self, request: Any) -> dict[str, Any] | None:
        request_id = request.get("id") if isinstance(request, dict) else None
        if not _valid_id(request_id):
            request_id = None
        problem = _request_problem(request)
        if problem:
            return _error_response(request_id, RpcError(INVALID_REQUEST, problem))
        is_notification = "id" not in request
        try:
            result = self.call(request["method"], request.get("params"))
        except RpcError as exc:
            response = _error_response(request_id, exc)
        except DevnetError as exc:
            log.warning("devnet_rpc_error", method=request["method"], error=repr(exc))
            response = _error_response(request_id, RpcError(INTERNAL_ERROR, str(exc)))
        except Exception:
            log.exception("devnet_rpc_failed", method=request["method"])
            error = RpcError(INTERNAL_ERROR, "internal error; the node logged it")
            response = _error_response(request_id, error)
        else:
            response = {"jsonrpc": "2.0", "id": request_id, "result": result}
        return None if is_notification else response


def _valid_id(value: Any) -> bool:
    return value is None or (
        isinstance(value, str | int) and not isinstance(value, bool)
    )


def _request_problem(request: Any) -> str | None:
    if not isinstance(request, dict):
        return "invalid request: a request must be a JSON object"
    if request.get("jsonrpc") != "2.0":
        return 'invalid request: "jsonrpc" must be "2.0"'
    if not isinstance(request.get("method"), str):
        return 'invalid request: "method" must be a string'
    if "id" in request and not _valid_id(request["id"]):
        return 'invalid request: "id" must be a string, an integer or null'
    return None


def _error_response(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.body()}


class DevnetProvider(JSONBaseProvider):
    """A web3.py provider that hands requests to the devnet in this process.

    Requests and responses go through JSON, so web3.py gets the same responses as
    an HTTP client.
    """

    def __init__(self, rpc: DevnetRpc) -> None:
        super().__init__()
        self.rpc = rpc

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        response = self.rpc.handle_json(self.encode_rpc_request(method, params))
        return self._round_trip(response)

    def make_batch_request(
        self, requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse]:
        payload = [
            json.loads(self.encode_rpc_request(method, params))
            for method, params in requests
        ]
        response = self.rpc.handle(payload)
        return self._round_trip(response)  # type: ignore[return-value]

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True

    def _round_trip(self, response: Any) -> RPCResponse:
        return self.decode_rpc_response(json.dumps(response).encode())
