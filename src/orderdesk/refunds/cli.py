"""`orderdesk refunds`: review refund requests from the command line.

The commands act as the operator on this machine (actor "cli") through the same
services as the API, on any order of any project. accept, reject and received print
the refund as the API returns it, as JSON.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from orderdesk.orders.models import Order
    from orderdesk.runtime import Runtime

CLI_ACTOR = "cli"

refunds_app = typer.Typer(
    help="Review refunds: accept, reject, mark returns received, list.",
    no_args_is_help=True,
)

OrderIdArgument = Annotated[str, typer.Argument(help="The order's orderId.")]
RefundIdArgument = Annotated[str, typer.Argument(help="The refund's refundId.")]


@refunds_app.command("accept")
def accept(order_id: OrderIdArgument, refund_id: RefundIdArgument) -> None:
    """Accept a refund request: issue its return label and email it to the buyer."""
    from orderdesk.refunds import returns, review, services

    def run(runtime: Runtime, session: Session) -> dict[str, Any]:
        order = _lock_order(session, order_id)
        refund = services.get_refund(session, order, refund_id, for_update=True)
        review.accept_refund(session, order, refund, actor=CLI_ACTOR)
        session.commit()
        returns.try_issue_return_label(
            session, runtime.settings, refund.id, actor=CLI_ACTOR
        )
        return _body(services.get_refund(session, order, refund.id))

    _print(_with_session(run))


@refunds_app.command("reject")
def reject(
    order_id: OrderIdArgument,
    refund_id: RefundIdArgument,
    reason: Annotated[
        str,
        typer.Option(help="Why the request is rejected; emailed to the buyer."),
    ],
) -> None:
    """Reject a refund request with a reason."""
    from orderdesk.refunds import review, services

    def run(runtime: Runtime, session: Session) -> dict[str, Any]:
        order = _lock_order(session, order_id)
        refund = services.get_refund(session, order, refund_id, for_update=True)
        review.reject_refund(session, order, refund, reason, actor=CLI_ACTOR)
        reply = _body(refund)
        session.commit()
        return reply

    _print(_with_session(run))


@refunds_app.command("received")
def received(order_id: OrderIdArgument, refund_id: RefundIdArgument) -> None:
    """Mark an accepted refund's return received, which starts its payout."""
    from orderdesk.refunds import review, services

    def run(runtime: Runtime, session: Session) -> dict[str, Any]:
        order = _lock_order(session, order_id)
        refund = services.get_refund(session, order, refund_id, for_update=True)
        review.receive_return(session, order, refund, actor=CLI_ACTOR, source="cli")
        reply = _body(refund)
        session.commit()
        return reply

    _print(_with_session(run))


@refunds_app.command("list")
def list_order_refunds(order_id: OrderIdArgument) -> None:
    """List an order's refunds oldest first: id, line item, status, amount, payout."""
    from orderdesk.refunds import services

    def run(runtime: Runtime, session: Session) -> list[str]:
        order = _lock_order(session, order_id, for_update=False)
        lines = []
        for refund in services.list_refunds(session, order):
            payout = refund.payout_status or "-"
            if refund.payout_tx_id:
                payout += f" {refund.payout_tx_id}"
            lines.append(
                f"{refund.id}  item {refund.line_item}  {refund.status}  "
                f"{refund.amount} {refund.currency}  payout {payout}"
            )
        return lines

    for line in _with_session(run):
        print(line)


def _with_session(run: Any) -> Any:
    """Run `run(runtime, session)`, printing a domain error and exiting with 1."""
    from orderdesk.cli import _runtime, fail
    from orderdesk.errors import OrderDeskError

    runtime = _runtime()
    try:
        with runtime.session_factory() as session:
            return run(runtime, session)
    except OrderDeskError as exc:
        fail(exc.message)
    finally:
        runtime.close()


def _lock_order(session: Session, order_id: str, *, for_update: bool = True) -> Order:
    from orderdesk.orders.access import is_uuid, order_not_found
    from orderdesk.orders.models import Order

    query = select(Order).where(Order.id == order_id)
    if for_update:
        query = query.with_for_update()
    order = session.scalar(query) if is_uuid(order_id) else None
    if order is None:
        raise order_not_found(order_id)
    return order


def _body(refund: Any) -> dict[str, Any]:
    from orderdesk.refunds.schemas import refund_body

    return refund_body(refund)


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body, indent=2), flush=True)
