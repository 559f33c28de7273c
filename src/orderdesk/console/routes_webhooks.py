"""Webhook endpoints of every project, their deliveries and the resend action."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from orderdesk.console import actions, queries
from orderdesk.console.rendering import redirect, render
from orderdesk.console.web import (
    ActingUser,
    ConsoleRoute,
    DbSession,
    Form,
    SignedIn,
    action_failed,
)
from orderdesk.errors import InvalidInput, OrderDeskError
from orderdesk.webhooks.exceptions import EndpointNotFound
from orderdesk.webhooks.models import DeliveryStatus
from orderdesk.webhooks.services import list_deliveries

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


@router.get("/webhooks")
def endpoints_page(
    request: Request, signed_in: SignedIn, session: DbSession
) -> Response:
    """List every endpoint with its failed and pending delivery counts."""
    rows = queries.list_all_endpoints(session)
    return render(request, "webhooks.html", {"title": "Webhooks", "rows": rows})


@router.get("/webhooks/{endpoint_id}")
def deliveries_page(
    request: Request,
    endpoint_id: str,
    signed_in: SignedIn,
    session: DbSession,
    status: str = "",
    cursor: str | None = None,
) -> Response:
    """Show one endpoint's deliveries, newest first, each with its attempts."""
    endpoint = queries.get_endpoint(session, endpoint_id)
    if endpoint is None:
        raise EndpointNotFound(endpoint_id)
    if status and status not in DeliveryStatus.ALL:
        raise InvalidInput(
            f"Status {status!r} is not a delivery status. Use one of: "
            f"{', '.join(DeliveryStatus.ALL)}."
        )
    page = list_deliveries(
        session, endpoint, queries.PAGE_SIZE, cursor or None, status or None
    )
    return render(
        request,
        "webhook.html",
        {
            "title": "Webhook deliveries",
            "endpoint": endpoint,
            "project": queries.project_names(session).get(endpoint.project_id, ""),
            "page": page,
            "status": status,
            "statuses": DeliveryStatus.ALL,
            "can_act": signed_in.can_act,
        },
    )


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/resend")
def resend(
    request: Request,
    endpoint_id: str,
    delivery_id: str,
    form: Form,
    signed_in: ActingUser,
    session: DbSession,
) -> Response:
    """Send a delivered or failed delivery again, with a fresh retry schedule."""
    target = f"/console/webhooks/{endpoint_id}"
    try:
        actions.resend_webhook(session, endpoint_id, delivery_id, signed_in.actor)
        session.commit()
    except OrderDeskError as exc:
        return action_failed(request, target, exc)
    return redirect(request, target, notice=f"Delivery {delivery_id} queued to resend.")
