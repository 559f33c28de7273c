"""Refund requests: create one for a line item, list an order's requests, review.

`GET .../refunds?lineItem=N` takes N written as a plain integer only: "01", "-1",
"1.0", "+1" and "true" are rejected with 400 like an index out of range.

Review (`.../refunds/{refundId}/accept`, `/reject`, `/return-received`) needs a
server key with the refunds.review scope and returns 200 with the refund. Accept and
return-received take no fields: an empty body or `{}`. A move the refund's status
does not allow gets 409 invalid_transition and changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from orderdesk.auth.dependencies import (
    CurrentPrincipal,
    DbSession,
    authenticated_read,
)
from orderdesk.http import (
    RawBody,
    check_json_content_type,
    json_response,
    parse_json_body,
    raw_json,
)
from orderdesk.openapi import error_responses, optional_empty_body
from orderdesk.orders.access import load_order
from orderdesk.refunds import idempotency, returns, review, services
from orderdesk.refunds.schemas import (
    NoFieldsIn,
    RefundRequestIn,
    RejectionIn,
    parse_line_item_query,
    refund_body,
)
from orderdesk.refunds.statuses import RefundStatus

router = APIRouter(prefix="/api/unstable/orders", tags=["refunds"])

OrderId = Annotated[str, Path(alias="orderId")]
RefundId = Annotated[str, Path(alias="refundId")]
REVIEW_SCOPE = "refunds.review"


@router.post(
    "/{orderId}/refunds",
    status_code=201,
    openapi_extra={
        **raw_json(RefundRequestIn),
        "parameters": [
            {
                "name": idempotency.HEADER,
                "in": "header",
                "required": False,
                "description": "Replays the first reply of a request with the same "
                "key and body for 24 hours.",
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
            }
        ],
    },
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def request_refund(
    order_id: OrderId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> Response:
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
    settings = request.app.state.settings
    refund = review.request_refund(
        session, settings, order, body.line_item, body.reason, actor=principal.actor
    )
    reply = refund_body(refund)
    if record is not None:
        idempotency.store_response(record, 201, reply)
    session.commit()
    if refund.status == RefundStatus.ACCEPTED:
        # Accepted by the policy: issue the label now, as an accept request does.
        returns.try_issue_return_label(session, settings, refund.id, actor="system")
        reply = refund_body(services.get_refund(session, order, refund.id))
    # orjson, as the lean path in refunds.lean encodes it: the same bytes either way.
    return json_response(reply, status_code=201)


@router.get(
    "/{orderId}/refunds",
    response_model=list[dict[str, Any]],
    openapi_extra={
        "parameters": [
            {
                "name": "lineItem",
                "in": "query",
                "required": False,
                "description": "Only the requests of this line item index.",
                "schema": {"type": "integer", "minimum": 0},
            }
        ]
    },
    responses=error_responses(400, 401, 403, 404, 429, 503),
)
def list_refunds(order_id: OrderId, request: Request) -> Response:
    """List the order's refund requests oldest first, optionally for one line item."""
    # A polled read: one thread-pool call and no response model check.
    with authenticated_read(request) as (session, principal):
        order = load_order(
            session,
            principal,
            order_id,
            "orders.read",
            request=request,
            line_items=False,
        )
        line_item = parse_line_item_query(request.query_params.getlist("lineItem"))
        refunds = services.list_refunds(session, order, line_item)
        return json_response([refund_body(refund) for refund in refunds])


@router.post(
    "/{orderId}/refunds/{refundId}/accept",
    openapi_extra=optional_empty_body(),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def accept_refund(
    order_id: OrderId,
    refund_id: RefundId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> dict[str, Any]:
    """Accept a refund request; its return label is issued and emailed to the buyer."""
    order = load_order(
        session, principal, order_id, REVIEW_SCOPE, request=request, for_update=True
    )
    refund = services.get_refund(session, order, refund_id, for_update=True)
    _check_no_fields(request, raw)
    review.accept_refund(session, order, refund, actor=principal.actor)
    session.commit()
    returns.try_issue_return_label(
        session, request.app.state.settings, refund.id, actor=principal.actor
    )
    return refund_body(services.get_refund(session, order, refund.id))


@router.post(
    "/{orderId}/refunds/{refundId}/reject",
    openapi_extra=raw_json(RejectionIn),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def reject_refund(
    order_id: OrderId,
    refund_id: RefundId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> dict[str, Any]:
    """Reject a refund request with a reason, which is emailed to the buyer."""
    order = load_order(
        session, principal, order_id, REVIEW_SCOPE, request=request, for_update=True
    )
    refund = services.get_refund(session, order, refund_id, for_update=True)
    body = parse_json_body(request, RejectionIn, raw)
    review.reject_refund(session, order, refund, body.reason, actor=principal.actor)
    reply = refund_body(refund)
    session.commit()
    return reply


@router.post(
    "/{orderId}/refunds/{refundId}/return-received",
    openapi_extra=optional_empty_body(),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def receive_return(
    order_id: OrderId,
    refund_id: RefundId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> dict[str, Any]:
    """Mark the returned item received, which starts the payout to the payer."""
    order = load_order(
        session, principal, order_id, REVIEW_SCOPE, request=request, for_update=True
    )
    refund = services.get_refund(session, order, refund_id, for_update=True)
    _check_no_fields(request, raw)
    review.receive_return(session, order, refund, actor=principal.actor, source="api")
    reply = refund_body(refund)
    session.commit()
    return reply


def _check_no_fields(request: Request, raw: bytes) -> None:
    """Accept an empty body or `{}`; reject any field, like every body of ours."""
    if raw.strip():
        parse_json_body(request, NoFieldsIn, raw)
