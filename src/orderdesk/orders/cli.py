"""`orderdesk orders`: list orders and show one with its tracking and refunds."""

from __future__ import annotations

from typing import Annotated

import typer

from orderdesk.cli_support import (
    JSON_OPTION,
    fail,
    print_json,
    print_table,
    project_id_for,
    session_scope,
)

orders_app = typer.Typer(help="List and inspect orders.", no_args_is_help=True)


@orders_app.command("list")
def list_command(
    project: Annotated[str, typer.Option(help="Project name.")] = "demo",
    limit: Annotated[int, typer.Option(min=1, max=100, help="Orders per page.")] = 30,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of a page.")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List a project's orders, newest first."""
    from orderdesk.orders.serialization import serialize_order
    from orderdesk.orders.services import list_orders

    with session_scope(write=False) as (runtime, session):
        page = list_orders(session, project_id_for(session, project), limit, cursor)
        orders = [serialize_order(order, runtime.chains) for order in page.orders]
    if as_json:
        print_json({"data": orders, "nextCursor": page.next_cursor})
        return
    rows = [
        [
            o["orderId"],
            o["phase"],
            o["quote"]["status"],
            o["payment"]["status"],
            o["quote"]["totalPrice"]["amount"],
            o["createdAt"],
        ]
        for o in orders
    ]
    print_table(None, ["order", "phase", "quote", "payment", "total", "created"], rows)
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}")


@orders_app.command("show")
def show_command(
    order_id: Annotated[str, typer.Argument(help="The orderId.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show an order with its line items, tracking and refunds."""
    from orderdesk.orders.access import is_uuid
    from orderdesk.orders.models import Order
    from orderdesk.orders.serialization import serialize_order
    from orderdesk.refunds.schemas import refund_body
    from orderdesk.refunds.services import list_refunds
    from orderdesk.shipping.schemas import package_body
    from orderdesk.shipping.services import list_packages

    with session_scope(write=False) as (runtime, session):
        order = session.get(Order, order_id) if is_uuid(order_id) else None
        if order is None:
            fail(f"No order {order_id!r} exists. List them: orderdesk orders list.")
        data = serialize_order(order, runtime.chains)
        tracking = [package_body(p) for p in list_packages(session, order.id)]
        refunds = [refund_body(r) for r in list_refunds(session, order)]
    if as_json:
        print_json({"order": data, "tracking": tracking, "refunds": refunds})
        return
    print(
        f"order {data['orderId']}  phase {data['phase']}  "
        f"payment {data['payment']['status']}  total "
        f"{data['quote']['totalPrice']['amount']} "
        f"{data['quote']['totalPrice']['currency']}"
    )
    print_table(
        "line items",
        ["#", "product", "qty", "total", "delivery"],
        [
            [
                index,
                item["metadata"]["name"] or item["productLocator"],
                item["quantity"],
                item["quote"].get("totalPrice", {}).get("amount"),
                item["delivery"]["status"],
            ]
            for index, item in enumerate(data["lineItems"])
        ],
    )
    print_table(
        "tracking",
        ["package", "kind", "carrier", "number", "status", "items"],
        [
            [
                p["packageId"],
                p["kind"],
                p["packageTracking"]["carrierName"],
                p["packageTracking"]["carrierTrackingNumber"],
                p["status"],
                ",".join(str(i) for i in p["lineItems"]),
            ]
            for p in tracking
        ],
    )
    print_table(
        "refunds",
        ["refund", "item", "status", "amount", "reason"],
        [
            [
                r["refundId"],
                r["lineItem"],
                r["status"],
                r["amount"]["amount"],
                r["reason"],
            ]
            for r in refunds
        ],
    )
