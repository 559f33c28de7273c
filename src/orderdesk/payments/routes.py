"""Payments API: submit the transaction that pays an order."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request

from orderdesk.auth.dependencies import CurrentPrincipal, DbSession
from orderdesk.http import RawBody, parse_json_body, raw_json
from orderdesk.openapi import error_responses
from orderdesk.orders.access import load_order
from orderdesk.orders.serialization import serialize_order
from orderdesk.payments import services
from orderdesk.payments.exceptions import ChainUnavailable
from orderdesk.payments.schemas import PaymentSubmission

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/2022-06-09/orders", tags=["payments"])


@router.post(
    "/{order_id}/payment",
    openapi_extra=raw_json(PaymentSubmission),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def submit_payment(
    order_id: str,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> dict[str, Any]:
    """Submit the txId of the transfer that pays the order, and check it on chain."""
    chains = request.app.state.runtime.chains
    order = load_order(
        session, principal, order_id, "orders.update", request=request, for_update=True
    )
    body = parse_json_body(request, PaymentSubmission, raw)
    pending = services.submit_payment(
        session, request.app.state.settings, chains, order, body.tx_id, principal.actor
    )
    session.commit()
    if pending is not None:
        try:
            check = services.run_check(chains, pending)
        except ChainUnavailable as exc:
            # The payment stays in progress; the recheck job checks again later.
            log.warning("payment_check_deferred", order_id=order.id, error=exc.reason)
        else:
            order = (
                services.apply_check(session, chains, pending, check, principal.actor)
                or order
            )
            session.commit()
    return serialize_order(order, chains)
