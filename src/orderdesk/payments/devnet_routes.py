"""HTTP endpoints of the embedded devnet: JSON-RPC and the faucet.

The app mounts this router only in development with the devnet on.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from starlette.concurrency import run_in_threadpool

from orderdesk.errors import InvalidInput, NotFound, ServiceUnavailable
from orderdesk.http import json_body, raw_json
from orderdesk.openapi import error_responses
from orderdesk.payments.addresses import InvalidAddress, parse_address
from orderdesk.payments.devnet import (
    DEVNET_TOKEN_DECIMALS,
    FAUCET_MAX_USDC,
    Devnet,
    DevnetUnavailable,
)
from orderdesk.payments.devnet_rpc import DevnetRpc
from orderdesk.payments.devnet_state import InvalidDevnetRequest

router = APIRouter(tags=["devnet"])

_PLAIN_DECIMAL = re.compile(r"\d{1,16}(\.\d{1,30})?")
# The longest string _PLAIN_DECIMAL matches: 16 digits, the point and 30 digits.
_MAX_DECIMAL_LENGTH = 47
_USDC_SCHEMA = {
    "anyOf": [
        {"type": "number"},
        {
            "type": "string",
            "pattern": _PLAIN_DECIMAL.pattern,
            "maxLength": _MAX_DECIMAL_LENGTH,
        },
    ]
}


class FaucetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    address: Annotated[str, StringConstraints(max_length=42)]
    usdc: Annotated[Decimal, WithJsonSchema(_USDC_SCHEMA, mode="validation")]

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        try:
            return parse_address(value)
        except InvalidAddress as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("usdc", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Decimal:
        # A JSON number reaches this validator as an int or a float. A float with at
        # most six decimals and a value up to FAUCET_MAX_USDC prints back exactly.
        if isinstance(value, bool):
            raise ValueError("usdc must be a decimal string or a number, not a boolean")
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("usdc must be a finite number")
            return Decimal(repr(value))
        if not isinstance(value, str) or not _PLAIN_DECIMAL.fullmatch(value):
            raise ValueError('usdc must be a decimal such as "100.50" or 100.5')
        try:
            return Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the pattern rules it out
            raise ValueError('usdc must be a decimal such as "100.50"') from exc

    @field_validator("usdc")
    @classmethod
    def _in_range(cls, value: Decimal) -> Decimal:
        if not Decimal(0) < value <= FAUCET_MAX_USDC:
            raise ValueError(f"usdc must be more than 0 and at most {FAUCET_MAX_USDC}")
        if value.as_tuple().exponent < -DEVNET_TOKEN_DECIMALS:  # type: ignore[operator]
            raise ValueError(
                f"usdc has more than {DEVNET_TOKEN_DECIMALS} decimal places, the "
                "token's precision; round it"
            )
        return value


def _devnet(request: Request) -> Devnet:
    chains = request.app.state.runtime.chains
    devnet = chains.devnet if chains is not None else None
    if devnet is None:
        raise NotFound(
            "The devnet is not running in this deployment.", code="not_found"
        )
    return devnet


@router.post(
    "/devnet/rpc",
    summary="Ethereum JSON-RPC of the embedded devnet",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A JSON-RPC 2.0 request or batch. Errors are JSON-RPC "
            "error objects in a 200 answer.",
            "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
        }
    },
    responses={
        204: {"description": "The request held only notifications."},
        **error_responses(404, 413, 503),
    },
)
async def rpc(request: Request) -> Response:
    devnet = _devnet(request)
    raw = await request.body()
    answer = await run_in_threadpool(DevnetRpc(devnet).handle_json, raw)
    if answer is None:  # only notifications: JSON-RPC sends no response body
        return Response(status_code=204)
    return JSONResponse(answer)


@router.post(
    "/devnet/faucet",
    summary="Send test USDC and gas to an address",
    openapi_extra=raw_json(FaucetRequest),
    responses=error_responses(400, 404, 413, 415, 503),
)
async def faucet(
    request: Request,
    body: Annotated[FaucetRequest, Depends(json_body(FaucetRequest))],
) -> dict[str, Any]:
    devnet = _devnet(request)
    try:
        tx_ids = await run_in_threadpool(devnet.fund, body.address, body.usdc)
    except InvalidDevnetRequest as exc:
        raise InvalidInput(str(exc), code="invalid_request") from exc
    except DevnetUnavailable as exc:
        raise ServiceUnavailable(
            f"{exc}. Retry shortly.", code="devnet_unavailable"
        ) from exc
    return {"address": body.address, "usdc": format(body.usdc, "f"), "txIds": tx_ids}
