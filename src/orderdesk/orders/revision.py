"""Order revisions: a counter per order that every committed write to the order raises.

A process that built a reply for an order earlier (its tracking, its refunds, the
order itself) compares the revision it built it at with the current one, in the same
primary-key read that checks the caller's access, to know whether the reply is still
current. That holds across processes because the counter is raised inside the
writing transaction, so the new rows and the new revision become visible together.

Every Session collects, at each flush, the orders that its new, changed or deleted
rows belong to (tables in OWNER_COLUMNS, and orders themselves). Just before the
transaction commits, it raises each collected order's revision by one, in a single
upsert of `order_revisions`. Readers only ever see committed states, so one increase
per transaction tells any two of them apart.

The counter has a table of its own and is raised last, because of row locks on
PostgreSQL. Writers lock the order before its refund, but payout and label steps lock
only the refund. If the counter sat on the order row, a payout step that holds a
refund and raises the counter would wait for an accept request that holds the order
and waits for that refund: a deadlock. Raised last on a row that nothing else locks,
the counter is the final lock a transaction takes, so no cycle can form. The table
has no foreign key for the same reason: checking one takes a share lock on the order.

Code that writes these tables with Core statements instead of the ORM must call
`record_order_changes` itself. No code path does so today.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Insert, event, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from orderdesk.orders.models import Order, OrderRevision

# The column naming the owner of a row in each table whose rows appear in an order's
# replies: the order itself, or the package or refund the row belongs to.
OWNER_COLUMNS: dict[str, str] = {
    "order_line_items": "order_id",
    "order_events": "order_id",
    "packages": "order_id",
    "refunds": "order_id",
    "tracking_events": "package_id",
    "refund_payouts": "refund_id",
}
# Tables that name an order but are in none of its replies, so writing them leaves
# the revision as it is.
NOT_IN_REPLIES = frozenset({"webhook_deliveries", "idempotency_records"})

_CHANGED_ORDERS = "orderdesk_changed_orders"


def record_order_changes(session: Session, order_ids: Iterable[str]) -> None:
    """Raise the revision of these orders when the session's transaction commits.

    The flush listener calls this for ORM writes. Call it for Core writes too.
    """
    session.info.setdefault(_CHANGED_ORDERS, set()).update(order_ids)


def raise_revisions(session: Session, order_ids: Iterable[str]) -> None:
    """Raise each order's revision by one now, creating its row at 1 if missing."""
    ids = sorted(set(order_ids))
    if not ids:
        return
    connection = session.connection()
    if len(ids) == 1:
        # The common case. Its values are execution parameters, so the statement
        # is compiled once per dialect, while a multi-row VALUES is compiled on
        # every call.
        statement = _raise_revision_statement(connection.dialect.name)
        connection.execute(statement, {"order_id": ids[0], "revision": 1})
        return
    table = OrderRevision.__table__
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    # Sorted ids make two transactions that touch the same orders lock their rows
    # in the same order.
    statement = dialect.insert(table).values(
        [{"order_id": order_id, "revision": 1} for order_id in ids]
    )
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.order_id],
        set_={"revision": table.c.revision + 1},
    )
    connection.execute(statement)


@functools.cache
def _raise_revision_statement(dialect_name: str) -> Insert:
    """Build the upsert that raises one order's revision, given `order_id` and
    `revision` (1) as execution parameters."""
    table = OrderRevision.__table__
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_update(
        index_elements=[table.c.order_id],
        set_={"revision": table.c.revision + 1},
    )


def _owner_ids(session: Session, instances: Iterable[Any]) -> set[str]:
    """Return the ids of the orders that `instances` belong to."""
    owners: dict[str, set[str]] = {"order_id": set(), "package_id": set()}
    owners["refund_id"] = set()
    for instance in instances:
        if isinstance(instance, Order):
            if instance.id is not None:
                # A new order has no id until its insert, and no revision to raise.
                owners["order_id"].add(instance.id)
            continue
        table = inspect(instance).mapper.local_table.name
        column = OWNER_COLUMNS.get(table)
        if column is None:
            continue
        value = getattr(instance, column)
        if value is not None:
            owners[column].add(value)
        # Otherwise the row was added through its parent's collection and gets its
        # key during the flush. The parent is changed too and counted itself.
    order_ids = owners["order_id"]
    order_ids |= _parent_order_ids(session, "packages", owners["package_id"])
    order_ids |= _parent_order_ids(session, "refunds", owners["refund_id"])
    return order_ids


def _parent_order_ids(session: Session, table_name: str, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    table = Order.metadata.tables[table_name]
    rows = session.connection().execute(
        select(table.c.order_id).where(table.c.id.in_(sorted(ids)))
    )
    return {row[0] for row in rows}


@event.listens_for(Session, "before_flush")
def _collect_changes(
    session: Session, _context: UOWTransaction, _instances: Any
) -> None:
    changed = [
        instance
        for instance in session.dirty
        if session.is_modified(instance, include_collections=True)
    ]
    instances = [*session.new, *changed, *session.deleted]
    if instances:
        record_order_changes(session, _owner_ids(session, instances))


@event.listens_for(Session, "before_commit")
def _raise_on_commit(session: Session) -> None:
    if session.in_nested_transaction():
        # A savepoint is being released: the outer transaction raises at its commit.
        return
    # The commit flushes what is still pending after this hook, so flush first to
    # collect those rows too.
    session.flush()
    raise_revisions(session, session.info.pop(_CHANGED_ORDERS, ()))


@event.listens_for(Session, "after_transaction_end")
def _forget_changes(session: Session, transaction: SessionTransaction) -> None:
    # A rolled back transaction raises nothing. Savepoints and the flush's own inner
    # transactions end inside the outer one, which keeps what they collected.
    if transaction.parent is None:
        session.info.pop(_CHANGED_ORDERS, None)
