"""Order pages: search and list, and one order with everything that belongs to it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from orderdesk.console import queries
from orderdesk.console.rendering import render
from orderdesk.console.web import ConsoleRoute, DbSession, SignedIn
from orderdesk.orders.access import order_not_found
from orderdesk.orders.statuses import Phase
from orderdesk.shipping.schemas import delivery_time_range_body

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)


@router.get("/orders")
def orders_page(
    request: Request,
    signed_in: SignedIn,
    session: DbSession,
    q: str = "",
    phase: str = "",
    page: str | None = None,
) -> Response:
    """List orders newest first, searched by order id, buyer email or tracking
    number and filtered by phase."""
    result = queries.find_orders(session, q, phase or None, queries.parse_page(page))
    return render(
        request,
        "orders.html",
        {
            "title": "Orders",
            "page": result,
            "search": q.strip(),
            "phase": phase,
            "phases": [value.value for value in Phase],
        },
    )


@router.get("/orders/{order_id}")
def order_page(
    request: Request, order_id: str, signed_in: SignedIn, session: DbSession
) -> Response:
    """Show one order: line items, payment, packages, refunds and its history."""
    detail = queries.get_order_detail(session, order_id)
    if detail is None:
        raise order_not_found(order_id)
    windows = {
        package.id: delivery_time_range_body(package) for package in detail.packages
    }
    return render(
        request,
        "order.html",
        {
            "title": f"Order {detail.order.id[:8]}",
            "detail": detail,
            "windows": windows,
            "can_act": signed_in.can_act,
        },
    )
