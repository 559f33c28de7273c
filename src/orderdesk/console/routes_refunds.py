"""The refund queue and the review actions: accept, reject with a reason, and mark
the return received."""

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
    safe_next,
)
from orderdesk.errors import OrderDeskError
from orderdesk.refunds.returns import try_issue_return_label

router = APIRouter(include_in_schema=False, route_class=ConsoleRoute)

QUEUE = "/console/refunds"


def back_to(form: dict[str, str], order_id: str) -> str:
    """The page the form came from: the queue or the order."""
    return safe_next(form.get("next"), f"/console/orders/{order_id}")


@router.get("/refunds")
def refunds_page(
    request: Request,
    signed_in: SignedIn,
    session: DbSession,
    status: str = queries.OPEN_REFUNDS,
    page: str | None = None,
) -> Response:
    """List refunds to review: initiated first, then accepted, each oldest first."""
    result = queries.refund_queue(session, status, queries.parse_page(page))
    return render(
        request,
        "refunds.html",
        {
            "title": "Refunds",
            "page": result,
            "status": status,
            "filters": queries.REFUND_FILTERS,
            "can_act": signed_in.can_act,
        },
    )


@router.post("/orders/{order_id}/refunds/{refund_id}/accept")
def accept(
    request: Request,
    order_id: str,
    refund_id: str,
    form: Form,
    signed_in: ActingUser,
    session: DbSession,
) -> Response:
    """Accept the request; the return label is issued right after the commit."""
    target = back_to(form, order_id)
    try:
        actions.accept_refund(session, order_id, refund_id, signed_in.actor)
        session.commit()
    except OrderDeskError as exc:
        return action_failed(request, target, exc)
    try_issue_return_label(
        session, request.app.state.settings, refund_id, actor=signed_in.actor
    )
    return redirect(request, target, notice=f"Refund {refund_id} accepted.")


@router.post("/orders/{order_id}/refunds/{refund_id}/reject")
def reject(
    request: Request,
    order_id: str,
    refund_id: str,
    form: Form,
    signed_in: ActingUser,
    session: DbSession,
) -> Response:
    """Reject the request with the reason emailed to the buyer."""
    target = back_to(form, order_id)
    try:
        actions.reject_refund(
            session, order_id, refund_id, form.get("reason", ""), signed_in.actor
        )
        session.commit()
    except OrderDeskError as exc:
        return action_failed(request, target, exc)
    return redirect(request, target, notice=f"Refund {refund_id} rejected.")


@router.post("/orders/{order_id}/refunds/{refund_id}/return-received")
def return_received(
    request: Request,
    order_id: str,
    refund_id: str,
    form: Form,
    signed_in: ActingUser,
    session: DbSession,
) -> Response:
    """Record that the returned item arrived, which starts the payout."""
    target = back_to(form, order_id)
    try:
        actions.receive_return(session, order_id, refund_id, signed_in.actor)
        session.commit()
    except OrderDeskError as exc:
        return action_failed(request, target, exc)
    return redirect(
        request, target, notice=f"Return of refund {refund_id} received; payout queued."
    )
