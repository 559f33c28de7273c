"""Shipments and tracking: record packages and carrier events, read the tracking.

`POST .../shipments` returns 201 with the package as the tracking array shows it.
`POST .../shipments/{packageId}/events` returns that same package body after the
event is applied: 201 when the event was stored, and 200 when the same event (same
status, occurredAt, description and location) was stored before, in which case
nothing changed. An event never moves a package back, by the rule described in
`shipping.statuses`.
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
from orderdesk.http import RawBody, json_response, parse_json_body, raw_json
from orderdesk.openapi import error_responses
from orderdesk.orders.access import load_order
from orderdesk.shipping import services
from orderdesk.shipping.exceptions import PackageNotFound
from orderdesk.shipping.schemas import (
    ShipmentIn,
    TimeRangeIn,
    TrackingEventIn,
    package_body,
)

router = APIRouter(prefix="/api/unstable/orders", tags=["tracking"])

OrderId = Annotated[str, Path(alias="orderId")]
PackageId = Annotated[str, Path(alias="packageId")]


def _time_range(body: TimeRangeIn | None) -> services.TimeRange | None:
    if body is None:
        return None
    return services.TimeRange(body.lower_bound, body.upper_bound)


@router.post(
    "/{orderId}/shipments",
    status_code=201,
    openapi_extra=raw_json(ShipmentIn),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
def record_shipment(
    order_id: OrderId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> JSONResponse:
    """Record a package holding some of the order's line items."""
    order = load_order(
        session, principal, order_id, "orders.fulfill", request=request, for_update=True
    )
    body = parse_json_body(request, ShipmentIn, raw)
    package = services.record_package(
        session,
        order,
        body.carrier_name,
        body.carrier_tracking_number,
        body.line_items,
        tracking_url=body.tracking_url,
        delivery_time_range=_time_range(body.delivery_time_range),
        actor=principal.actor,
        settings=request.app.state.settings,
    )
    reply = package_body(package)
    session.commit()
    return JSONResponse(reply, status_code=201)


@router.post(
    "/{orderId}/shipments/{packageId}/events",
    status_code=201,
    openapi_extra=raw_json(TrackingEventIn),
    responses={
        200: {
            "description": "The same event was stored before; nothing changed.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **error_responses(400, 401, 403, 404, 413, 415, 429, 503),
    },
)
def record_tracking_event(
    order_id: OrderId,
    package_id: PackageId,
    request: Request,
    raw: RawBody,
    principal: CurrentPrincipal,
    session: DbSession,
) -> JSONResponse:
    """Record a carrier event for a package, storing a repeated event once."""
    order = load_order(
        session, principal, order_id, "orders.fulfill", request=request, for_update=True
    )
    package = services.get_package(session, order, package_id)
    if package is None:
        raise PackageNotFound(package_id, order.id)
    body = parse_json_body(request, TrackingEventIn, raw)
    update = services.record_tracking_event(
        session,
        package,
        body.status,
        body.occurred_at,
        body.description,
        body.location,
        _time_range(body.delivery_time_range),
        actor=principal.actor,
    )
    reply = package_body(update.package)
    session.commit()
    return JSONResponse(reply, status_code=201 if update.created else 200)


@router.get(
    "/{orderId}/tracking",
    response_model=list[dict[str, Any]],
    responses=error_responses(401, 403, 404, 429, 503),
)
def get_tracking(order_id: OrderId, request: Request) -> Response:
    """List the order's packages oldest first, each with its event history."""
    # Clients poll this every few seconds, so it authenticates inside this one
    # thread-pool call and skips the response model check (see `json_response`).
    with authenticated_read(request) as (session, principal):
        order = load_order(
            session,
            principal,
            order_id,
            "orders.read",
            request=request,
            line_items=False,
        )
        packages = services.list_packages(session, order.id)
        return json_response([package_body(package) for package in packages])
