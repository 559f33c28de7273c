"""Read-only queries behind the console pages, over every feature's tables.

Pages are deployment-wide: a console user sees the orders, refunds, endpoints and
keys of every project.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from orderdesk.auth.models import ApiKey, Project
from orderdesk.auth.services import list_api_keys
from orderdesk.db.base import utcnow
from orderdesk.errors import InvalidInput
from orderdesk.jobs.models import Job
from orderdesk.jobs.services import find_jobs
from orderdesk.orders.access import is_uuid
from orderdesk.orders.models import Order, OrderEvent
from orderdesk.orders.serialization import serialize_order
from orderdesk.orders.statuses import PaymentState, Phase, QuoteStatus
from orderdesk.refunds.models import Refund
from orderdesk.refunds.services import list_refunds
from orderdesk.refunds.statuses import RefundStatus
from orderdesk.shipping.models import Package
from orderdesk.shipping.services import list_packages
from orderdesk.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

PAGE_SIZE = 25
MAX_PAGE = 10_000
MAX_SEARCH_LENGTH = 320
OPEN_REFUNDS = "open"
REFUND_FILTERS = (OPEN_REFUNDS, *(status.value for status in RefundStatus), "all")


@dataclass
class Page:
    """One page of rows, numbered from 1."""

    rows: list[Any]
    number: int
    total: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number * PAGE_SIZE < self.total

    @property
    def last(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def parse_page(value: str | None) -> int:
    """Return the page number of a `page` query value, or 1 for anything else."""
    if value is None or not value.isdigit():
        return 1
    return min(max(1, int(value)), MAX_PAGE)


def _paginate(session: Session, query: Any, number: int) -> Page:
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(
        session.execute(query.limit(PAGE_SIZE).offset((number - 1) * PAGE_SIZE))
    )
    return Page([row if len(row) > 1 else row[0] for row in rows], number, total)


def project_names(session: Session) -> dict[str, str]:
    rows = session.execute(select(Project.id, Project.name)).all()
    return {project_id: name for project_id, name in rows}


# Orders


@dataclass
class OrderRow:
    order: Order
    api: dict[str, Any]
    project: str


def find_orders(
    session: Session,
    search: str = "",
    phase: str | None = None,
    page: int = 1,
    now: datetime | None = None,
) -> Page:
    """Return a page of orders, newest first, matching the search and phase.

    The search is an order id, a buyer email (recipient or receipt) or a tracking
    number in any spelling. Raises InvalidInput for an unknown phase.
    """
    now = now or utcnow()
    query = select(Order)
    search = search.strip()[:MAX_SEARCH_LENGTH]
    if search:
        query = query.where(_search_condition(search))
    if phase:
        query = query.where(_phase_condition(phase, now))
    query = query.order_by(Order.created_at.desc(), Order.id.desc())
    result = _paginate(session, query, page)
    names = project_names(session)
    result.rows = [
        OrderRow(
            order, serialize_order(order, None, now), names.get(order.project_id, "")
        )
        for order in result.rows
    ]
    return result


def _search_condition(search: str) -> Any:
    if is_uuid(search.lower()):
        return Order.id == search.lower()
    if "@" in search:
        email = search.lower()
        return or_(
            func.lower(Order.recipient["email"].as_string()) == email,
            func.lower(Order.receipt_email) == email,
        )
    number = search.replace(" ", "").upper()
    with_package = select(Package.order_id).where(Package.tracking_number == number)
    return Order.id.in_(with_package)


def _phase_condition(phase: str, now: datetime) -> Any:
    """Build the SQL test for the phase that `serialize_order` shows. An unpaid
    order is in `payment` while its quote is valid and unexpired, else in `quote`."""
    unpaid = Order.payment_state == PaymentState.UNPAID
    payable = and_(Order.quote_status == QuoteStatus.VALID, Order.expires_at > now)
    if phase == Phase.PAYMENT:
        return and_(unpaid, payable)
    if phase == Phase.QUOTE:
        return and_(unpaid, ~payable)
    if phase in (Phase.DELIVERY, Phase.COMPLETED):
        return and_(~unpaid, Order.phase == phase)
    phases = ", ".join(value.value for value in Phase)
    raise InvalidInput(f"Phase {phase!r} is not a phase. Use one of: {phases}.")


@dataclass
class OrderDetail:
    order: Order
    api: dict[str, Any]
    project: str
    packages: list[Package]
    refunds: list[Refund]
    events: list[OrderEvent]


def get_order_detail(
    session: Session, order_id: str, now: datetime | None = None
) -> OrderDetail | None:
    """Return everything the order page shows, or None for an unknown id."""
    order = session.get(Order, order_id) if is_uuid(order_id) else None
    if order is None:
        return None
    project = session.get(Project, order.project_id)
    events = session.scalars(
        select(OrderEvent)
        .where(OrderEvent.order_id == order.id)
        .order_by(OrderEvent.id)
    )
    return OrderDetail(
        order=order,
        api=serialize_order(order, None, now),
        project=project.name if project else "",
        packages=list_packages(session, order.id),
        refunds=list_refunds(session, order),
        events=list(events),
    )


# Refunds


@dataclass
class RefundRow:
    refund: Refund
    order: Order
    item_name: str


def refund_queue(session: Session, status: str = OPEN_REFUNDS, page: int = 1) -> Page:
    """Return a page of refunds: initiated ones first, each group oldest first.

    `status` is "open" (initiated or accepted), "all" or one refund status.
    """
    query = select(Refund, Order).join(Order, Order.id == Refund.order_id)
    if status == OPEN_REFUNDS:
        query = query.where(
            Refund.status.in_((RefundStatus.INITIATED, RefundStatus.ACCEPTED))
        )
    elif status in {value.value for value in RefundStatus}:
        query = query.where(Refund.status == status)
    elif status != "all":
        raise InvalidInput(
            f"Refund filter {status!r} is unknown. Use one of: "
            f"{', '.join(REFUND_FILTERS)}."
        )
    initiated_first = case((Refund.status == RefundStatus.INITIATED, 0), else_=1)
    query = query.order_by(initiated_first, Refund.created_at, Refund.id)
    result = _paginate(session, query, page)
    result.rows = [
        RefundRow(refund, order, _item_name(order, refund.line_item))
        for refund, order in result.rows
    ]
    return result


def _item_name(order: Order, index: int) -> str:
    for item in order.line_items:
        if item.index == index:
            return item.name or item.locator
    return ""


def count_initiated_refunds(session: Session) -> int:
    query = select(func.count()).where(Refund.status == RefundStatus.INITIATED)
    return int(session.scalar(query) or 0)


# Webhooks


@dataclass
class EndpointRow:
    endpoint: WebhookEndpoint
    project: str
    failed: int
    pending: int


def list_all_endpoints(session: Session) -> list[EndpointRow]:
    """Return every endpoint, oldest first, with its failed and pending counts."""
    counts: dict[tuple[str, str], int] = {
        (endpoint_id, status): count
        for endpoint_id, status, count in session.execute(
            select(
                WebhookDelivery.endpoint_id,
                WebhookDelivery.status,
                func.count(),
            ).group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status)
        ).all()
    }
    names = project_names(session)
    endpoints = session.scalars(
        select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return [
        EndpointRow(
            endpoint,
            names.get(endpoint.project_id, ""),
            counts.get((endpoint.id, DeliveryStatus.FAILED), 0),
            counts.get((endpoint.id, DeliveryStatus.PENDING), 0),
        )
        for endpoint in endpoints
    ]


def get_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint | None:
    """Return the endpoint of any project with this id, or None."""
    return session.get(WebhookEndpoint, endpoint_id) if is_uuid(endpoint_id) else None


# Jobs and keys


def failed_jobs(session: Session) -> list[Job]:
    """Return the failed jobs, most recently failed first."""
    jobs = find_jobs(session, status="failed")
    return sorted(jobs, key=lambda job: (job.updated_at, job.id), reverse=True)


@dataclass
class KeyRow:
    key: ApiKey
    project: str


def list_keys(session: Session) -> list[KeyRow]:
    """Return every API key, newest first, active ones before revoked ones."""
    names = project_names(session)
    keys = list_api_keys(session)
    keys.sort(key=lambda key: key.created_at, reverse=True)
    keys.sort(key=lambda key: key.revoked_at is not None)
    return [KeyRow(key, names.get(key.project_id, "")) for key in keys]
