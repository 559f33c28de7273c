"""`orderdesk shipments`: record packages and tracking events by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from orderdesk.cli_support import JSON_OPTION, fail, print_json, session_scope

shipments_app = typer.Typer(
    help="Record shipments and tracking events.", no_args_is_help=True
)


def _order(session, order_id: str):  # type: ignore[no-untyped-def]
    from orderdesk.orders.access import is_uuid
    from orderdesk.orders.models import Order

    order = session.get(Order, order_id) if is_uuid(order_id) else None
    if order is None:
        fail(f"No order {order_id!r} exists. List orders with: orderdesk orders list.")
    return order


def _indexes(raw: str) -> list[int]:
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        fail(f"--line-items {raw!r} must be comma-separated indexes such as 0,1.")


@shipments_app.command("add")
def add_command(
    order_id: Annotated[str, typer.Argument(help="The orderId.")],
    carrier: Annotated[str, typer.Option(help="Carrier name, e.g. UPS.")],
    tracking: Annotated[str, typer.Option(help="The carrier's tracking number.")],
    line_items: Annotated[str, typer.Option(help="Line item indexes, e.g. 0,1.")],
    url: Annotated[str | None, typer.Option(help="Tracking page URL.")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Record a package holding some of an order's line items."""
    from orderdesk.shipping.schemas import package_body
    from orderdesk.shipping.services import record_package

    with session_scope() as (runtime, session):
        package = record_package(
            session,
            _order(session, order_id),
            carrier,
            tracking,
            _indexes(line_items),
            tracking_url=url,
            actor="cli",
            settings=runtime.settings,
        )
        body = package_body(package)
    if as_json:
        print_json(body)
    else:
        print(f"recorded package {body['packageId']} ({body['status']})")


@shipments_app.command("event")
def event_command(
    order_id: Annotated[str, typer.Argument(help="The orderId.")],
    package_id: Annotated[str, typer.Argument(help="The packageId.")],
    status: Annotated[str, typer.Option(help="shipped, delivered, ...")],
    at: Annotated[
        str | None, typer.Option(help="When it happened (RFC 3339); default now.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Carrier's text.")] = None,
    location: Annotated[str | None, typer.Option(help="Where it happened.")] = None,
) -> None:
    """Record a tracking event of a package."""
    from orderdesk.shipping.services import get_package, record_tracking_event
    from orderdesk.timefmt import parse_rfc3339

    try:
        occurred = parse_rfc3339(at) if at else datetime.now(UTC)
    except ValueError as exc:
        fail(f"--at {at!r} is not an RFC 3339 time with an offset: {exc}")
    with session_scope() as (_runtime, session):
        order = _order(session, order_id)
        package = get_package(session, order, package_id)
        if package is None:
            fail(f"Order {order_id} has no package {package_id!r}.")
        record_tracking_event(
            session, package, status, occurred, description, location, actor="cli"
        )
        print(f"package {package.id} is {package.status}")
