"""Refund requests: create one for a line item, list an order's requests.

`GET .../refunds?lineItem=N` takes N written as a plain integer only: "01", "-1",
"1.0", "+1" and "true" are rejected with 400 like an index out of range.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from orderdesk.auth.dependencies import CurrentPrincipal, DbSession
from orderdesk.http import RawBody, check_json_content_type, parse_json_body, raw_json
from orderdesk.orders.access import load_order
from orderdesk.refunds import idempotency, services
from orderdesk.refunds.schemas import (
    RefundRequestIn,
    parse_line_item_query,
    refund_body,
)

router = APIRouter(prefix="/api/unstable/orders", tags=["refunds"])

OrderId = Annotated[str, Path(alias="orderId")]


@router.post(
    "/{orderId}/refunds", status_code=201, openapi_extra=raw_json(RefundRequestIn)
)
def request_refund(
    order_id: OrderId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> JSONResponse:
    """Request a refund for one line item, replaying the reply for a repeated key."""
    order = load_order(session, principal, order_id, "orders.update", request=request)
    check_json_content_type(request)
    key = idempotency.parse_key(request.headers.getlist(idempotency.HEADER))
    record = None
    if key is not None:
        fingerprint = idempotency.request_hash(request.method, request.url.path, raw)
        scope = idempotency.principal_scope(principal, order)
        claimed = idempotency.claim(session, scope, key, fingerprint)
        if isinstance(claimed, idempotency.StoredResponse):
            return JSONResponse(
                claimed.body,
                status_code=claimed.status_code,
                headers={"Idempotent-Replayed": "true"},
            )
        record = claimed

    body = parse_json_body(request, RefundRequestIn, raw)
    refund = services.create_refund_request(
        session,
        order,
        body.line_item,
        body.reason,
        return_window=timedelta(days=request.app.state.settings.return_window_days),
        actor=principal.actor,
    )
    reply = refund_body(refund)
    if record is not None:
        idempotency.store_response(record, 201, reply)
    session.commit()
    return JSONResponse(reply, status_code=201)


@router.get("/{orderId}/refunds")
def list_refunds(
    order_id: OrderId, request: Request, principal: CurrentPrincipal, session: DbSession
) -> list[dict[str, Any]]:
    """List the order's refund requests oldest first, optionally for one line item."""
    order = load_order(session, principal, order_id, "orders.read", request=request)
    line_item = parse_line_item_query(request.query_params.getlist("lineItem"))
    return [
        refund_body(refund)
        for refund in services.list_refunds(session, order, line_item)
    ]
