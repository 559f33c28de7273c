"""A lean path for refund requests, in front of the FastAPI router.

`POST /api/unstable/orders/{orderId}/refunds` is served here, without the router,
when it is the common case. That is an API key in the key cache (or a client
secret), no Idempotency-Key header, a JSON body that `RefundRequestIn` accepts, and
an order where the request succeeds: paid, the line item shipped, no active request
for it, the return window open, and an amount the review policy does not accept at
once. The checks and writes are the ones the route makes through the ORM
(`refunds.services.create_refund_request`), as plain SQL statements on a
connection of this path's own: the refund, its history event, one webhook
delivery and job per subscribed endpoint, and the order's revision.

Requests in flight together are written in batches, one transaction per batch
(a group commit, see _Batches), so that BEGIN, COMMIT and their round trips are
paid once per batch. Each request still ends as it would alone. On SQLite a
batch runs on the event loop, since none of its statements waits: the write lock
is taken only when it is free. Each request's statements sit between a savepoint
and its release, so a request that fails is undone alone. On PostgreSQL a batch
runs on the event loop too, on one of POSTGRES_WRITERS async psycopg
connections, with one query that checks all its requests and one pipeline of
inserts. A request that fails there sends the whole batch to the router.

Everything else goes to the router with its body replayed, before anything is
written: other paths, a key the cache does not hold, any request the router would
reject (so every error body comes from the route), an Idempotency-Key, a database
that stays busy for BUSY_WAIT_SECONDS, a request for the same line item that
committed first, and any database error. The route then decides the request from
the start.

The rate limit is counted only when this path serves the request, just before it
writes, and the request is marked as counted so that the router does not count it
again if the write then fails over to it.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import anyio
import orjson
import psycopg
import structlog
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderdesk.auth.dependencies import RATE_COUNTED
from orderdesk.auth.services import (
    KeyPrincipal,
    SecretPrincipal,
    authenticate_key,
    hash_secret,
)
from orderdesk.db.base import UTCDateTime, utcnow
from orderdesk.db.engine import SQLITE_BUSY_TIMEOUT_MS
from orderdesk.errors import OrderDeskError
from orderdesk.fastpath import _KeyNotCached, _no_key_lookup
from orderdesk.http import error_response, send_json
from orderdesk.jobs.models import Job
from orderdesk.jobs.services import NOTIFY_CHANNEL
from orderdesk.logs import write_info_line
from orderdesk.orders.access import is_uuid
from orderdesk.orders.models import LineItem, OrderEvent
from orderdesk.orders.statuses import PaymentState
from orderdesk.payments.amounts import format_amount
from orderdesk.refunds.models import ACTIVE_STATUSES, Refund
from orderdesk.refunds.schemas import RefundRequestIn, refund_body
from orderdesk.refunds.services import paid_total
from orderdesk.refunds.statuses import RefundEvent, RefundOrigin, RefundStatus
from orderdesk.request_timeout import (
    claim_commit,
    has_timed_out,
    release_commit,
    seconds_left,
    until_timed_out,
)
from orderdesk.shipping.statuses import PackageKind
from orderdesk.timefmt import iso
from orderdesk.webhooks import events as webhook_events
from orderdesk.webhooks.delivery import JOB_KIND, JOB_MAX_ATTEMPTS
from orderdesk.webhooks.events import subscribes_to
from orderdesk.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from orderdesk.webhooks.services import encode_payload

log = structlog.get_logger(__name__)

UPDATE_SCOPE = "orders.update"
ROUTE_TEMPLATE = "/api/unstable/orders/{orderId}/refunds"
_PREFIX = "/api/unstable/orders/"
# A refund request body is two short fields; anything longer goes to the router,
# which applies the full body limit.
MAX_LEAN_BODY_BYTES = 16 * 1024
_JSON_TYPES = frozenset(
    {
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/json;charset=utf-8",
    }
)
# No order has more line items than this, and larger indexes overflow the
# database's integer type.
MAX_LINE_ITEM_INDEX = 2**31 - 1
# PostgreSQL connections of this path, each used by one batch at a time. Fewer
# connections make larger batches, because one batch gathers requests while the
# other is written. With 32 requests in flight, two gave about 13% more refunds per
# second than eight in alternating runs of the benchmark's refund load.
POSTGRES_WRITERS = 2
# The maximum number of requests that one transaction of this path writes (see
# _Batches).
MAX_BATCH = 64
# How long opening one of them may take before the request goes to the router.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
# How long a request waits, in short sleeps, for the SQLite write lock before it
# goes to the router: as long as the router's own writers wait for the lock.
# Sending it on sooner would only queue one more writer for the same lock.
BUSY_WAIT_SECONDS = SQLITE_BUSY_TIMEOUT_MS / 1000
# A PostgreSQL statement of this path that waits longer for a lock fails, and the
# router takes the request over. The request timeout still applies meanwhile.
POSTGRES_STATEMENT_TIMEOUT_MS = 5000
# A request with less time left than this when its batch fails counts as timed out.
_DEADLINE_SLACK_SECONDS = 0.01


# The statements of this path, with "?" for each parameter.
_STATEMENTS = {
    # The order, whether the line item has an active refund request, whether an
    # outbound package contains it, and the line item's price columns (NULL when
    # the order has no such line item). SQLite only.
    "order": "SELECT o.project_id, o.client_secret_hash, o.payment_state, "
    "o.currency, "
    "EXISTS (SELECT 1 FROM refunds WHERE order_id = o.id AND line_item = ? "
    "AND status IN (?, ?, ?)), "
    "EXISTS (SELECT 1 FROM packages AS p, json_each(p.line_items) AS item "
    "WHERE p.order_id = o.id AND p.kind = ? AND item.value = ?), "
    'li."index", li.quantity, li.unit_price, li.sales_tax, li.shipping, li.total, '
    "li.delivered_at FROM orders AS o LEFT JOIN ("
    'SELECT "index", quantity, unit_price, sales_tax, shipping, total, delivered_at '
    'FROM order_line_items WHERE order_id = ? ORDER BY "index" LIMIT 1 OFFSET ?'
    ") AS li WHERE o.id = ?",
    "endpoints": "SELECT id, events FROM webhook_endpoints WHERE project_id = ? "
    "ORDER BY created_at, id",
    "notify": "SELECT pg_notify(?, ?)",
}


# The "order" and "endpoints" statements as one, for PostgreSQL, for every
# request of a batch: the parameters are the outbound kind, the arrays of order
# ids and line items, and the active statuses. Each row starts with the
# request's position in those arrays (from 1), and a request whose order does
# not exist has no row. The endpoints come as a JSON array of [id, events]
# pairs, in the order `emit_event` reads them. They are locked FOR KEY SHARE, as
# `emit_event` locks them, so an endpoint deleted at the same time waits for
# this transaction. The active request is looked up in a LATERAL subquery with
# LIMIT 1, so that it is one probe of the partial unique index per request: as
# an EXISTS, the planner may read every active refund into a hash instead.
_POSTGRES_ORDERS = (
    "SELECT r.position, o.project_id, o.client_secret_hash, o.payment_state, "
    "o.currency, active.found IS NOT NULL, "
    "EXISTS (SELECT 1 FROM packages WHERE order_id = o.id AND kind = %s "
    "AND line_items::jsonb @> to_jsonb(r.line_item)), "
    'li."index", li.quantity, li.unit_price, li.sales_tax, li.shipping, li.total, '
    "li.delivered_at, "
    "(SELECT json_agg(json_build_array(e.id, e.events) ORDER BY e.created_at, e.id) "
    "FROM (SELECT id, events, created_at FROM webhook_endpoints "
    "WHERE project_id = o.project_id FOR KEY SHARE) AS e) "
    "FROM unnest(%s::text[], %s::integer[]) WITH ORDINALITY "
    "AS r(order_id, line_item, position) "
    "JOIN orders AS o ON o.id = r.order_id "
    "LEFT JOIN LATERAL (SELECT true AS found FROM refunds WHERE order_id = o.id "
    "AND line_item = r.line_item AND status IN (%s, %s, %s) LIMIT 1) AS active "
    "ON true "
    "LEFT JOIN LATERAL ("
    'SELECT "index", quantity, unit_price, sales_tax, shipping, total, delivered_at '
    'FROM order_line_items WHERE order_id = o.id ORDER BY "index" '
    "LIMIT 1 OFFSET r.line_item"
    ") AS li ON true"
)
# The revisions of every order that a PostgreSQL batch wrote, raised in one
# statement after all its other rows, in order id order, so that the revision
# rows stay the last locks a transaction takes (see orders.revision).
_POSTGRES_REVISIONS = (
    "INSERT INTO order_revisions (order_id, revision) "
    "SELECT order_id, 1 FROM unnest(%s::text[]) AS order_id "
    "ON CONFLICT (order_id) DO UPDATE SET revision = order_revisions.revision + 1"
)
# Sets statement_timeout for the rest of the transaction only.
_POSTGRES_SET_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"


@dataclass(slots=True)
class NewRefund:
    """A refund request as this path writes it, for `refund_body`."""

    id: str
    order_id: str
    line_item: int
    reason: str
    status: str
    amount: Decimal
    currency: str
    origin: str
    created_at: datetime
    updated_at: datetime
    rejection_reason: str | None = None
    return_carrier: str | None = None
    return_tracking_number: str | None = None
    return_received_at: datetime | None = None
    payout_status: str | None = None
    payout_tx_id: str | None = None
    payout_chain: str | None = None
    payout_message: str | None = None
    history_events: list[OrderEvent] = field(default_factory=list)


class Busy(Exception):
    """Another writer holds the SQLite write lock, so the request waits and tries
    again."""


@dataclass
class Draft:
    """A checked request inside its open transaction, waiting to be written."""

    order_id: str
    project_id: str
    currency: str
    line_item: int
    reason: str
    amount: Decimal
    endpoints: list[str]


class _Insert:
    """One INSERT statement of a table in the driver's own parameter style, with
    each value converted by the column's SQLAlchemy type, as the ORM stores it.

    `columns` are the values the caller gives. Every other column gets its scalar
    default, or NULL, as an ORM insert would; a column whose default is computed
    must be given. Integer primary keys are left to the database.
    """

    def __init__(self, table: Any, engine: Engine, columns: Sequence[str]) -> None:
        dialect = engine.dialect
        marker = "?" if dialect.name == "sqlite" else "%s"
        self.caller_columns = frozenset(columns)
        self.defaults: dict[str, Any] = {}
        for column in table.columns:
            if column.name in self.caller_columns:
                continue
            if column.primary_key and column.autoincrement in (True, "auto"):
                continue
            default = column.default
            if default is not None and not default.is_scalar:
                raise ValueError(f"{table.name}.{column.name} must be given")
            self.defaults[column.name] = None if default is None else default.arg
        self.columns = (*columns, *self.defaults)
        self.processors: list[Callable[[Any], Any] | None] = [
            _bind_processor(table.c[name], dialect) for name in self.columns
        ]
        names = ", ".join(f'"{name}"' for name in self.columns)
        markers = ", ".join(marker for _ in self.columns)
        # Only column names of our own tables and placeholders are interpolated.
        self.sql = f"INSERT INTO {table.name} ({names}) VALUES ({markers})"  # noqa: S608
        # The defaults are converted once. Each call converts only the caller's
        # values, which come first in `columns`.
        self._given = tuple(zip(columns, self.processors[: len(columns)], strict=True))
        self._converted_defaults = tuple(
            value if processor is None else processor(value)
            for value, processor in zip(
                self.defaults.values(), self.processors[len(columns) :], strict=True
            )
        )

    def numbered_sql_for_rows(self, count: int, first: int) -> str:
        """Return the statement that inserts `count` rows, with PostgreSQL's own
        numbered placeholders from `$first`: the parameters of each row in turn."""
        width = len(self.columns)
        rows = ", ".join(
            "("
            + ", ".join(f"${first + row * width + column}" for column in range(width))
            + ")"
            for row in range(count)
        )
        return self.sql.split(" VALUES ", 1)[0] + f" VALUES {rows}"

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        given = [
            values[name] if processor is None else processor(values[name])
            for name, processor in self._given
        ]
        return (*given, *self._converted_defaults)


def _bind_processor(column: Any, dialect: Any) -> Callable[[Any], Any] | None:
    if dialect.name == "sqlite" and isinstance(column.type, UTCDateTime):
        return sqlite_utc_text
    processor: Callable[[Any], Any] | None = column.type.dialect_impl(
        dialect
    ).bind_processor(dialect)
    return processor


def sqlite_utc_text(value: datetime | None) -> str | None:
    """Return a UTCDateTime value as SQLAlchemy stores it in SQLite (the UTC time
    as fixed-width text), without the calls of its two chained processors."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} cannot be stored; attach UTC")
    utc = value.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}"
    )


def _result(table: Any, column: str, engine: Engine) -> Callable[[Any], Any]:
    column_type = table.c[column].type.dialect_impl(engine.dialect)
    processor = column_type.result_processor(engine.dialect, None)
    return processor or (lambda value: value)


class NumberedSql(str):
    """A PostgreSQL statement written with numbered placeholders ($1, $2, ...),
    which the writer sends as it is, on a raw cursor.

    psycopg rewrites each `%s` statement into this form, and caches the result
    only for statements of at most 4,096 characters and 50 parameters. A batch's
    multi-row insert is longer, so it would be parsed again on every batch: about
    a sixth of the server's time in a profile of 32 concurrent refund requests.
    """

    __slots__ = ()


@dataclass
class _WritePlan:
    """The statements that write a draft, in order, and the reply they make."""

    statements: list[tuple[str, tuple[Any, ...]]]
    reply: dict[str, Any]
    # The webhook event's message id, when an endpoint subscribes.
    message_id: str | None


class _RefundRows:
    """The checks and the row values of the lean path for one engine, with each
    statement in the driver's own parameter style."""

    def __init__(self, engine: Engine) -> None:
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.sql = {
            name: statement if self.is_sqlite else statement.replace("?", "%s")
            for name, statement in _STATEMENTS.items()
        }
        items = LineItem.__table__
        self.decimal = _result(items, "unit_price", engine)
        self.datetime = _result(items, "delivered_at", engine)
        self.events_json = _result(WebhookEndpoint.__table__, "events", engine)
        self.refund = _Insert(
            Refund.__table__,
            engine,
            (
                "id", "order_id", "line_item", "reason", "status", "amount",
                "currency", "origin", "created_at", "updated_at",
            ),
        )  # fmt: skip
        self.event = _Insert(
            OrderEvent.__table__,
            engine,
            (
                "order_id",
                "kind",
                "subject_id",
                "to_state",
                "actor",
                "data",
                "created_at",
            ),
        )
        self.delivery = _Insert(
            WebhookDelivery.__table__,
            engine,
            (
                "delivery_id", "endpoint_id", "project_id", "message_id",
                "event_type", "order_id", "body", "status", "resend_count",
                "attempt_count", "next_attempt_at", "created_at", "updated_at",
            ),
        )  # fmt: skip
        self.job = _Insert(
            Job.__table__,
            engine,
            (
                "kind", "payload", "status", "attempts", "max_attempts", "run_at",
                "dedupe_key", "created_at", "updated_at",
            ),
        )  # fmt: skip
        # On PostgreSQL, for a project without subscribed endpoints, the refund
        # and its event go in one statement of data-modifying WITH queries: one
        # driver call instead of two. The batch raises the revisions after them.
        self.rows_at_once: str | None = None
        if not self.is_sqlite:
            self.rows_at_once = f"WITH refund AS ({self.refund.sql}) {self.event.sql}"
        # The refund rows of a PostgreSQL batch's requests without webhook rows,
        # by the number of requests (see rows_of_many).
        self._many: dict[int, NumberedSql] = {}

    def rows_of_many(self, plans: Sequence[_WritePlan]) -> tuple[str, tuple[Any, ...]]:
        """Return one statement that writes the refunds and history events of
        `plans`, each made by `plan` as one `rows_at_once` statement."""
        count = len(plans)
        sql = self._many.get(count)
        if sql is None:
            refunds = self.refund.numbered_sql_for_rows(count, 1)
            after = 1 + count * len(self.refund.columns)
            events = self.event.numbered_sql_for_rows(count, after)
            sql = self._many[count] = NumberedSql(
                f"WITH refund AS ({refunds}) {events}"
            )
        width = len(self.refund.columns)
        refund_values: list[Any] = []
        event_values: list[Any] = []
        for plan in plans:
            [(_sql, parameters)] = plan.statements
            refund_values.extend(parameters[:width])
            event_values.extend(parameters[width:])
        return sql, (*refund_values, *event_values)

    def amount(
        self,
        row: Sequence[Any],
        line_item: int,
        principal: KeyPrincipal | SecretPrincipal,
        return_window: timedelta,
        auto_accept_below: Decimal | None,
        now: datetime,
    ) -> Decimal | None:
        """Return the amount to refund when the request succeeds, from the order's
        row (see RefundWriter._read_order), or None when the router must decide.
        """
        project_id, secret_hash, payment_state, _currency, requested, shipped = row[:6]
        item_row = row[6:13]
        if requested or not shipped:
            return None

        if isinstance(principal, KeyPrincipal):
            if project_id != principal.project_id:
                return None
        elif not hmac.compare_digest(principal.secret_hash, secret_hash):
            return None
        if payment_state != PaymentState.COMPLETED:
            return None
        if item_row[0] != line_item:
            return None
        delivered_at = self.datetime(item_row[6])
        if delivered_at is not None and now > delivered_at + return_window:
            return None

        decimal = self.decimal
        amount = paid_total(
            decimal(item_row[5]),
            decimal(item_row[2]),
            item_row[1],
            decimal(item_row[3]),
            decimal(item_row[4]),
        )
        if auto_accept_below is not None and amount < auto_accept_below:
            return None
        return amount

    def subscribed(self, endpoints: Iterable[Sequence[Any]]) -> list[str]:
        """Return the ids of the (id, events) endpoints that receive the
        refund-initiated event."""
        event_type = webhook_events.ORDERS_REFUND_INITIATED
        return [
            endpoint_id
            for endpoint_id, events in endpoints
            if subscribes_to(self.events_json(events), event_type)
        ]

    def plan(self, draft: Draft, actor: str, now: datetime) -> _WritePlan:
        """Return the statements that write the draft's rows as the route writes
        them: the refund, its history event and the webhook rows. The batch raises
        the order's revision after every request's rows."""
        refund_id = str(uuid.uuid4())
        status = str(RefundStatus.INITIATED)
        refund = NewRefund(
            id=refund_id,
            order_id=draft.order_id,
            line_item=draft.line_item,
            reason=draft.reason,
            status=status,
            amount=draft.amount,
            currency=draft.currency,
            origin=str(RefundOrigin.BUYER),
            created_at=now,
            updated_at=now,
        )
        refund_values = self.refund.parameters(
            {name: getattr(refund, name) for name in self.refund.caller_columns}
        )

        event_at = utcnow()
        event_values = self.event.parameters(
            {
                "order_id": draft.order_id,
                "kind": str(RefundEvent.REQUESTED),
                "subject_id": refund_id,
                "to_state": status,
                "actor": actor,
                "data": {
                    "lineItem": draft.line_item,
                    "amount": format_amount(draft.amount),
                },
                "created_at": event_at,
            }
        )
        history = [{"status": status, "at": iso(event_at), "actor": actor}]
        reply = refund_body(refund, history)

        if self.rows_at_once is not None and not draft.endpoints:
            statement = (self.rows_at_once, (*refund_values, *event_values))
            return _WritePlan([statement], reply, None)
        statements = [(self.refund.sql, refund_values), (self.event.sql, event_values)]
        message_id = self._emit(statements, draft, reply)
        return _WritePlan(statements, reply, message_id)

    def _emit(
        self,
        statements: list[tuple[str, tuple[Any, ...]]],
        draft: Draft,
        data: dict[str, Any],
    ) -> str | None:
        """Add the inserts that queue the refund-initiated webhook for each
        subscribed endpoint, as `webhooks.services.emit_event` does, and return
        the event's message id (None when no endpoint subscribes)."""
        if not draft.endpoints:
            return None
        now = utcnow()
        event_type = webhook_events.ORDERS_REFUND_INITIATED
        body = encode_payload(event_type, now, data)
        message_id = "msg_" + uuid.uuid4().hex
        for endpoint_id in draft.endpoints:
            delivery_id = str(uuid.uuid4())
            delivery = self.delivery.parameters(
                {
                    "delivery_id": delivery_id,
                    "endpoint_id": endpoint_id,
                    "project_id": draft.project_id,
                    "message_id": message_id,
                    "event_type": event_type,
                    "order_id": draft.order_id,
                    "body": body,
                    "status": DeliveryStatus.PENDING,
                    "resend_count": 0,
                    "attempt_count": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            job = self.job.parameters(
                {
                    "kind": JOB_KIND,
                    "payload": {"delivery": delivery_id, "resend": 0, "attempt": 1},
                    "status": "queued",
                    "attempts": 0,
                    "max_attempts": JOB_MAX_ATTEMPTS,
                    "run_at": now,
                    "dedupe_key": f"{JOB_KIND}:{delivery_id}:0:1",
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
            )
            statements.append((self.delivery.sql, delivery))
            statements.append((self.job.sql, job))
        if not self.is_sqlite:
            statements.append((self.sql["notify"], (NOTIFY_CHANNEL, JOB_KIND)))
        return message_id


def _log_emitted(draft: Draft, message_id: str) -> None:
    log.info(
        "webhook_event_emitted",
        event_type=webhook_events.ORDERS_REFUND_INITIATED,
        message_id=message_id,
        order_id=draft.order_id,
        endpoints=len(draft.endpoints),
    )


class RefundWriter:
    """Runs the lean path's transactions on one DBAPI connection of a SQLite
    engine.

    Used by one batch at a time (see _write_sqlite_batch). A batch begins one
    transaction, checks and writes each request between a savepoint and its
    release, and commits once.
    """

    def __init__(self, engine: Engine, rows: _RefundRows) -> None:
        self.engine = engine
        self.rows = rows
        self._connection: Any = None
        self._open_lock = threading.Lock()
        # The subscribed endpoints of each project, by project id, read in the
        # current transaction.
        self._endpoints: dict[str, list[str]] = {}

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def open(self) -> None:
        """Check a connection out of the engine's pool. It may wait for the pool,
        so call it off the event loop."""
        with self._open_lock:
            if self._connection is not None:
                return
            connection = self.engine.raw_connection()
            cursor = connection.cursor()
            # BEGIN IMMEDIATE then fails at once while another process writes,
            # so the event loop does not wait in SQLite's busy handler.
            cursor.execute("PRAGMA busy_timeout=0")
            cursor.close()
            self._connection = connection

    def close(self) -> None:
        with self._open_lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            # The pool hands this connection to others: no setting of ours stays.
            connection.invalidate()

    def begin(self) -> None:
        """Begin a write transaction. Raises Busy when another SQLite writer holds
        the lock, and the driver's error when BEGIN fails otherwise."""
        if self._connection is None:
            raise ConnectionError("the writer's connection is not open")
        self._begin()
        # The transaction holds the write lock, so no endpoint changes until it
        # ends: each project's endpoints are read once per batch.
        self._endpoints = {}

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def savepoint(self) -> None:
        """Mark where the next request's statements start, so that they can be
        undone alone (see rollback_to_savepoint)."""
        self._connection.driver_connection.execute("SAVEPOINT lean_request")

    def release_savepoint(self) -> None:
        self._connection.driver_connection.execute("RELEASE lean_request")

    def rollback_to_savepoint(self) -> None:
        dbapi = self._connection.driver_connection
        dbapi.execute("ROLLBACK TO lean_request")
        dbapi.execute("RELEASE lean_request")

    def check_rows(
        self,
        request: _Request,
        *,
        return_window: timedelta,
        auto_accept_below: Decimal | None,
        now: datetime,
    ) -> Draft | None:
        """Check, inside the open transaction, that the request succeeds. Returns
        the draft to write, or None when the router must decide the request."""
        draft = self._check(
            request.order_id,
            request.line_item,
            request.principal,
            return_window,
            auto_accept_below,
            now,
        )
        if draft is not None:
            draft.reason = request.reason
        return draft

    def write_rows(
        self, draft: Draft, *, actor: str, now: datetime
    ) -> tuple[dict[str, Any], bool]:
        """Write the draft's rows in the open transaction, all but the order's
        revision (see raise_revisions). Returns the refund as the API shows it and
        whether a job was queued."""
        return self._write(draft, actor, now)

    def raise_revisions(self, order_ids: Sequence[str]) -> None:
        """Raise the revision of each order once per time it appears, in one
        statement of the open transaction."""
        if not order_ids:
            return
        rows = ", ".join("(?, 1)" for _ in order_ids)
        # Only placeholders are interpolated.
        sql = (
            f"INSERT INTO order_revisions (order_id, revision) VALUES {rows} "  # noqa: S608
            "ON CONFLICT (order_id) DO UPDATE SET revision = revision + 1"
        )
        self._connection.driver_connection.execute(sql, tuple(order_ids))

    def _begin(self) -> None:
        dbapi = self._connection.driver_connection
        lock = dbapi.writer_lock
        if lock is not None:
            if not lock.acquire(blocking=False):
                raise Busy
            dbapi.holds_writer_lock = True
        try:
            dbapi.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            dbapi.give_writer_lock_back()
            if "locked" in str(exc) or "busy" in str(exc):
                raise Busy from exc
            raise

    def _end(self, *, commit: bool) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            if commit:
                connection.commit()
            else:
                connection.rollback()
        except Exception:
            self._discard()
            raise

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()
            except Exception:  # noqa: BLE001, S110 - the connection is broken already
                pass

    def _check(
        self,
        order_id: str,
        line_item: int,
        principal: KeyPrincipal | SecretPrincipal,
        return_window: timedelta,
        auto_accept_below: Decimal | None,
        now: datetime,
    ) -> Draft | None:
        cursor = self._connection.cursor()
        row = self._read_order(cursor, order_id, line_item)
        if row is None:
            return None
        amount = self.rows.amount(
            row, line_item, principal, return_window, auto_accept_below, now
        )
        if amount is None:
            return None
        project_id, currency = row[0], row[3]
        endpoints = self._endpoints.get(project_id)
        if endpoints is None:
            cursor.execute(self.rows.sql["endpoints"], (project_id,))
            endpoints = self.rows.subscribed(cursor.fetchall())
            self._endpoints[project_id] = endpoints
        cursor.close()
        return Draft(order_id, project_id, currency, line_item, "", amount, endpoints)

    def _read_order(
        self, cursor: Any, order_id: str, line_item: int
    ) -> tuple[Any, ...] | None:
        """Return the order's access and price columns, or None when the order or
        the line item does not exist.

        The columns are the project, client secret hash, payment state and
        currency, whether the line item has an active request, and whether an
        outbound package contains it. The line item's index, quantity, unit price,
        tax, shipping, total and delivery time follow.
        """
        parameters = (
            line_item,
            *ACTIVE_STATUSES,
            str(PackageKind.OUTBOUND),
            line_item,
            order_id,
            line_item,
            order_id,
        )
        cursor.execute(self.rows.sql["order"], parameters)
        row: tuple[Any, ...] | None = cursor.fetchone()
        if row is None or row[6] is None:
            return None
        return row

    def _write(
        self, draft: Draft, actor: str, now: datetime
    ) -> tuple[dict[str, Any], bool]:
        plan = self.rows.plan(draft, actor, now)
        cursor = self._connection.cursor()
        for statement, parameters in plan.statements:
            cursor.execute(statement, parameters)
        cursor.close()
        if plan.message_id is not None:
            _log_emitted(draft, plan.message_id)
        return plan.reply, plan.message_id is not None


class PostgresRefundWriter:
    """Runs the lean path's transactions on a psycopg AsyncConnection of its own,
    on the event loop, so that a request needs no thread-pool thread.

    Used by one batch at a time (see _Batches). The connection is in autocommit
    mode and each transaction is begun explicitly, so that BEGIN and the orders
    query go in one pipeline. A batch costs two round trips, whatever its size:
    that one, and the inserts with COMMIT, sent once every request's
    `claim_commit` allows it. A connection that fails is closed, and the next
    batch opens a new one.
    """

    def __init__(self, engine: Engine, rows: _RefundRows) -> None:
        _args, self._parameters = engine.dialect.create_connect_args(engine.url)
        self.rows = rows
        self._connection: psycopg.AsyncConnection[Any] | None = None
        # One cursor serves every statement of the connection, since one batch at
        # a time uses it.
        self._cursor: psycopg.AsyncCursor[Any] | None = None
        # Runs the NumberedSql statements.
        self._raw_cursor: psycopg.AsyncRawCursor[Any] | None = None

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    async def open(self) -> None:
        if self._connection is not None:
            return
        parameters = {
            "connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS,
            **self._parameters,
        }
        connection = await psycopg.AsyncConnection.connect(
            autocommit=True, **parameters
        )
        try:
            await connection.execute(
                f"SET statement_timeout = {POSTGRES_STATEMENT_TIMEOUT_MS}"
            )
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._cursor = connection.cursor()
        self._raw_cursor = psycopg.AsyncRawCursor(connection)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._cursor = None
        self._raw_cursor = None
        if connection is not None:
            await connection.close()

    async def write_batch(self, state: Any, entries: list[_Entry]) -> None:
        """Check, count and write a batch of requests in one transaction, and set
        each request's outcome. A request left without one goes to the router."""
        try:
            await self.open()
        except Exception as exc:
            log.warning("lean_refund_open_failed", error=repr(exc))
            return
        try:
            await self._write_batch(state, entries)
        except BaseException:
            # A batch cancelled in the middle of a round trip leaves the
            # connection's state unknown, so the connection is not used again.
            await self.close()
            raise

    async def _write_batch(self, state: Any, entries: list[_Entry]) -> None:
        entries = _first_per_line_item(entries)
        try:
            rows = await self._read_orders(entries)
        except Exception as exc:
            log.warning(
                "lean_refund_check_failed",
                order_ids=_order_ids(entries),
                error=repr(exc),
            )
            await self._end(commit=False)
            return
        drafts = await self._drafts(state, entries, rows)
        drafts = self._claim(drafts)
        if not drafts:
            await self._end(commit=False)
            return
        try:
            plans = await self._write_and_commit(drafts)
        except BaseException:
            # Nothing was committed, so the timeout may stop these requests again.
            for entry, _draft in drafts:
                entry.context.run(release_commit)
            raise
        if plans is None:
            for entry, _draft in drafts:
                entry.context.run(release_commit)
                # A request whose time ran out meanwhile (the statement timeout
                # stops the batch then) waits for the timeout's 503. The others
                # go to the router.
                left = entry.context.run(seconds_left)
                expired = left is not None and left < _DEADLINE_SLACK_SECONDS
                entry.finish(_Outcome(counted=True, timed_out=expired))
            return
        for (entry, draft), plan in zip(drafts, plans, strict=True):
            if plan.message_id is not None:
                entry.context.run(_log_emitted, draft, plan.message_id)
            entry.finish(
                _Outcome(
                    reply=plan.reply, queued=plan.message_id is not None, counted=True
                )
            )

    def _claim(self, drafts: list[tuple[_Entry, Draft]]) -> list[tuple[_Entry, Draft]]:
        """Return the drafts whose requests may still commit, each now claimed so
        that the request timeout waits for the commit.

        A request whose timeout sent its 503 while the batch was checked is left
        out, as the route's commit would be rejected. The claim comes before the
        rows are written so that COMMIT can go in the same round trip as them.
        """
        claimed = []
        for entry, draft in drafts:
            if entry.context.run(claim_commit):
                claimed.append((entry, draft))
            else:
                entry.finish(_Outcome(counted=True, timed_out=True))
        return claimed

    async def _write_and_commit(
        self, drafts: list[tuple[_Entry, Draft]]
    ) -> list[_WritePlan] | None:
        """Write the claimed drafts' rows and commit them in one round trip, and
        return their plans, or None when nothing was committed.

        The claims keep the request timeout from sending 503 while this runs, so
        each statement may run only until the earliest request's deadline (or
        for POSTGRES_STATEMENT_TIMEOUT_MS, if that ends sooner). A statement
        still waiting then (on a lock, say) is cancelled and the batch is rolled
        back. Once the claims are undone, a request whose time ran out gets the
        timeout's 503, and the others go to the router.
        """
        plans = [
            entry.context.run(
                self.rows.plan,
                draft,
                entry.request.principal.actor,
                utcnow(),
            )
            for entry, draft in drafts
        ]
        statements: list[tuple[str, tuple[Any, ...]]] = []
        deadlines = [
            left
            for left in (entry.context.run(seconds_left) for entry, _draft in drafts)
            if left is not None
        ]
        # Zero would turn the timeout off, so the least is one millisecond.
        milliseconds = max(1, int(min(deadlines) * 1000)) if deadlines else None
        if milliseconds is not None and milliseconds < POSTGRES_STATEMENT_TIMEOUT_MS:
            statements.append((_POSTGRES_SET_TIMEOUT, (f"{milliseconds}ms",)))
        # Refunds without webhook rows go in one statement for the batch.
        without_webhooks = [plan for plan in plans if plan.message_id is None]
        if without_webhooks:
            statements.append(self.rows.rows_of_many(without_webhooks))
        for plan in plans:
            if plan.message_id is not None:
                statements.extend(plan.statements)
        order_ids = sorted({draft.order_id for _entry, draft in drafts})
        statements.append((_POSTGRES_REVISIONS, (order_ids,)))
        statements.append(("COMMIT", ()))
        try:
            await self._execute(statements)
        except Exception as exc:
            log.warning(
                "lean_refund_write_failed",
                order_ids=[draft.order_id for _entry, draft in drafts],
                error=repr(exc),
            )
            # A failed statement skips the rest, COMMIT included, and leaves the
            # transaction open. A failed COMMIT has ended it already.
            await self._end(commit=False)
            return None
        return plans

    async def _read_orders(self, entries: list[_Entry]) -> dict[int, Sequence[Any]]:
        """Begin the transaction and read the rows that decide each request, by
        the request's position in `entries` (from 1)."""
        connection, cursor = self._require_cursor()
        parameters = (
            str(PackageKind.OUTBOUND),
            [entry.request.order_id for entry in entries],
            [entry.request.line_item for entry in entries],
            *ACTIVE_STATUSES,
        )
        # Leaving the pipeline sends both statements and waits for both results.
        # The query is planned on every run, not prepared: a prepared plan is kept
        # while the tables grow, and one made when `refunds` was nearly empty
        # scans the whole table for each request.
        async with connection.pipeline():
            await cursor.execute("BEGIN")
            await cursor.execute(_POSTGRES_ORDERS, parameters, prepare=False)
        return {row[0]: row[1:] for row in await cursor.fetchall()}

    async def _drafts(
        self, state: Any, entries: list[_Entry], rows: dict[int, Sequence[Any]]
    ) -> list[tuple[_Entry, Draft]]:
        """Return the requests that this path writes, with their drafts, counted
        by the rate limit. Every other request gets its outcome here."""
        settings = state.settings
        return_window = timedelta(days=settings.return_window_days)
        drafts = []
        for position, entry in enumerate(entries, start=1):
            row = rows.get(position)
            draft = None
            if row is not None and row[6] is not None:
                draft = self._draft(
                    entry.request,
                    row,
                    return_window,
                    settings.refund_auto_accept_below,
                )
            if draft is None:
                entry.finish(_Outcome())
                continue
            try:
                await _count_write(state, draft.project_id)
            except OrderDeskError as exc:
                entry.finish(_Outcome(error=exc, counted=True))
                continue
            drafts.append((entry, draft))
        return drafts

    def _draft(
        self,
        request: _Request,
        row: Sequence[Any],
        return_window: timedelta,
        auto_accept_below: Decimal | None,
    ) -> Draft | None:
        amount = self.rows.amount(
            row,
            request.line_item,
            request.principal,
            return_window,
            auto_accept_below,
            utcnow(),
        )
        if amount is None:
            return None
        endpoints = self.rows.subscribed(row[13] or ())
        project_id, currency = row[0], row[3]
        return Draft(
            request.order_id,
            project_id,
            currency,
            request.line_item,
            request.reason,
            amount,
            endpoints,
        )

    async def _execute(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        connection, cursor = self._require_cursor()
        raw = self._raw_cursor
        if raw is None:
            raise ConnectionError("the writer's connection is not open")
        async with connection.pipeline():
            for statement, parameters in statements:
                if isinstance(statement, NumberedSql):
                    await raw.execute(statement, parameters)
                else:
                    await cursor.execute(statement, parameters)

    async def _end(self, *, commit: bool) -> None:
        """Commit or roll back the open transaction. A connection that can do
        neither is closed, and the error is raised only when committing."""
        cursor = self._cursor
        if cursor is None:
            if commit:
                raise ConnectionError("the writer's connection is not open")
            return
        try:
            await cursor.execute("COMMIT" if commit else "ROLLBACK")
        except Exception:
            await self.close()
            if commit:
                raise

    def _require_cursor(
        self,
    ) -> tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any]]:
        if self._connection is None or self._cursor is None:
            raise ConnectionError("the writer's connection is not open")
        return self._connection, self._cursor


def _first_per_line_item(entries: list[_Entry]) -> list[_Entry]:
    """Return the batch without the requests whose line item an earlier request
    of the batch names. Those go to the router, which decides them once this
    batch's transaction ends (with 409 when it wrote the refund)."""
    seen: set[tuple[str, int]] = set()
    first = []
    for entry in entries:
        key = (entry.request.order_id, entry.request.line_item)
        if key in seen:
            entry.finish(_Outcome())
        else:
            seen.add(key)
            first.append(entry)
    return first


def match_refund_request(scope: Scope) -> str | None:
    """Return the order id when the request is a refund request this path takes."""
    if (
        scope["type"] != "http"
        or scope["method"] != "POST"
        or scope.get("root_path")
        or scope.get("query_string")
    ):
        return None
    path: str = scope["path"]
    if not path.startswith(_PREFIX):
        return None
    order_id, _, rest = path[len(_PREFIX) :].partition("/")
    if rest != "refunds" or not is_uuid(order_id):
        return None
    return order_id


class LeanRefundMiddleware:
    """Serve refund requests with plain SQL, or pass them to the router."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._route: Any = None
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        order_id = match_refund_request(scope)
        if order_id is None:
            await self.app(scope, receive, send)
            return
        await self._serve(scope, receive, send, order_id)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, order_id: str
    ) -> None:
        state = self.fastapi_app.state
        principal = await self._authenticate(scope)
        if principal is None or self._route is None:
            await self._pass_through(scope, receive, send)
            return
        raw, receive = await _read_body(receive)
        if raw is None:
            await self._pass_through(scope, receive, send)
            return
        try:
            body = RefundRequestIn.model_validate_json(raw)
        except ValidationError:
            await self._pass_through(scope, receive, send)
            return
        if body.line_item > MAX_LINE_ITEM_INDEX:
            # Out of range for any order, and for the database's integer type.
            await self._pass_through(scope, receive, send)
            return
        request = _Request(order_id, body.line_item, body.reason, principal)
        outcome = await self._decide(state, state.refund_writers, request)
        if outcome.counted:
            scope[RATE_COUNTED] = True
        if outcome.timed_out:
            await until_timed_out()
            return
        if outcome.error is not None:
            await error_response(outcome.error)(scope, receive, send)
            return
        if outcome.reply is None:
            await self._pass_through(scope, receive, send)
            return
        if outcome.queued:
            # A worker in this process starts on the delivery at once.
            state.runtime.wake.set()
        self.served += 1
        fields: dict[str, str | int] = {
            "order_id": order_id,
            "refund_id": outcome.reply["refundId"],
            "line_item": body.line_item,
        }
        # The line the route's service logs, written directly when the log set-up
        # allows it (see logs.write_info_line).
        if not write_info_line("refund_requested", fields):
            log.info("refund_requested", **fields)
        scope["route"] = self._route
        await send_json(send, orjson.dumps(outcome.reply), 201)

    async def _decide(
        self, state: Any, writers: RefundWriters, request: _Request
    ) -> _Outcome:
        """Run the request on a writer and return what became of it.

        PostgreSQL's statements run on the event loop, on an async connection.
        SQLite's run on the event loop too, because they never wait: the write
        lock is taken only when free. A busy SQLite database is waited for in
        short sleeps, for up to BUSY_WAIT_SECONDS.
        """
        if writers.is_sqlite:
            return await writers.sqlite.submit(state, request)
        return await writers.postgres.submit(state, request)

    async def _pass_through(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        # Requests served here carry the route the router matched, so that logs
        # and metrics label them alike.
        route = scope.get("route")
        if self._route is None and getattr(route, "path", None) == ROUTE_TEMPLATE:
            self._route = route

    async def _authenticate(
        self, scope: Scope
    ) -> KeyPrincipal | SecretPrincipal | None:
        """Return the principal, looking an API key up first (once for all the
        requests waiting for it) when the key cache does not contain it."""
        try:
            return self._principal(scope)
        except _KeyNotCached as missing:
            value = missing.value
        state = self.fastapi_app.state
        try:
            await state.key_lookups.look_up(state.session_factory, value)
            return self._principal(scope)
        except Exception as exc:  # noqa: BLE001 - the router reports the failure
            log.warning("lean_key_lookup_failed", error=repr(exc))
            return None

    def _principal(self, scope: Scope) -> KeyPrincipal | SecretPrincipal | None:
        """Authenticate as `get_principal` does, from the key cache only.

        Returns None when the router must decide: no credentials, a refused key,
        or a key without the update scope. Raises _KeyNotCached for a key the
        cache does not hold.
        """
        api_key = secret = None
        for name, value in scope["headers"]:
            if name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"authorization" and secret is None:
                secret = value.decode("latin-1")
            elif name == b"content-type" and value.lower() not in _JSON_TYPES:
                return None
            elif name == b"idempotency-key":
                return None
        if not any(name == b"content-type" for name, _ in scope["headers"]):
            return None
        if api_key:
            try:
                principal = authenticate_key(
                    _no_key_lookup,  # type: ignore[arg-type]
                    self.fastapi_app.state.settings,
                    api_key.strip(),
                )
            except _KeyNotCached:
                raise _KeyNotCached(api_key.strip()) from None
            except OrderDeskError:
                return None
            return principal if UPDATE_SCOPE in principal.scopes else None
        if secret:
            return SecretPrincipal(hash_secret(secret.strip()))
        return None


@dataclass(frozen=True)
class _Request:
    order_id: str
    line_item: int
    reason: str
    principal: KeyPrincipal | SecretPrincipal


@dataclass
class _Outcome:
    """What became of a request: a reply, an error to send, or nothing, which
    sends it to the router. `counted` tells whether the rate limit
    counted it."""

    reply: dict[str, Any] | None = None
    queued: bool = False
    error: OrderDeskError | None = None
    counted: bool = False
    busy: bool = False
    # The request timeout's 503 went out, or goes out once the request stops
    # holding its claim: nothing is sent and nothing written.
    timed_out: bool = False


def _run_batch(
    state: Any, writer: RefundWriter, entries: Sequence[_Entry]
) -> list[_Outcome] | None:
    """Check, count and write a batch of requests in one transaction on `writer`,
    synchronously, and commit it. Returns each request's outcome, in order, or
    None when another SQLite writer holds the lock."""
    try:
        writer.begin()
    except Busy:
        return None
    except Exception as exc:
        log.warning(
            "lean_refund_check_failed", order_ids=_order_ids(entries), error=repr(exc)
        )
        return [_Outcome() for _ in entries]
    outcomes: list[_Outcome] = []
    try:
        for entry in entries:
            # Each request runs in its own context: its request id in the log
            # lines, and its deadline for claim_commit.
            outcomes.append(entry.context.run(_run_in_batch, state, writer, entry))
        written = [
            entry.request.order_id
            for entry, outcome in zip(entries, outcomes, strict=True)
            if outcome.reply is not None
        ]
        writer.raise_revisions(written)
        writer.commit()
    except Exception as exc:
        writer.rollback()
        log.warning(
            "lean_refund_batch_failed", order_ids=_order_ids(entries), error=repr(exc)
        )
        return _uncommitted(outcomes, len(entries))
    except BaseException:
        writer.rollback()
        raise
    return outcomes


def _run_in_batch(state: Any, writer: RefundWriter, entry: _Entry) -> _Outcome:
    """Check, count and write one request of a batch between a savepoint and its
    release. A request that the router must decide leaves nothing written."""
    request = entry.request
    settings = state.settings
    now = utcnow()
    writer.savepoint()
    try:
        draft = writer.check_rows(
            request,
            return_window=timedelta(days=settings.return_window_days),
            auto_accept_below=settings.refund_auto_accept_below,
            now=now,
        )
    except Exception as exc:
        log.warning(
            "lean_refund_check_failed", order_id=request.order_id, error=repr(exc)
        )
        writer.rollback_to_savepoint()
        return _Outcome()
    if draft is None:
        writer.release_savepoint()
        return _Outcome()
    try:
        state.rate_limiter.hit(draft.project_id, "write")
    except OrderDeskError as exc:
        writer.release_savepoint()
        return _Outcome(error=exc, counted=True)
    try:
        reply, queued = writer.write_rows(draft, actor=request.principal.actor, now=now)
    except Exception as exc:
        log.warning(
            "lean_refund_write_failed", order_id=request.order_id, error=repr(exc)
        )
        writer.rollback_to_savepoint()
        return _Outcome(counted=True)
    # The request timeout may have sent its 503 while the rows were written: then
    # they are rolled back, as the route's commit would be refused.
    if not claim_commit():
        writer.rollback_to_savepoint()
        return _Outcome(counted=True, timed_out=True)
    writer.release_savepoint()
    return _Outcome(reply=reply, queued=queued, counted=True)


def _uncommitted(outcomes: Sequence[_Outcome], total: int) -> list[_Outcome]:
    """Return the outcomes of a batch whose commit failed: each request that was
    to get a reply goes to the router instead, still counted."""
    result = [
        _Outcome(counted=True) if outcome.reply is not None else outcome
        for outcome in outcomes
    ]
    result.extend(_Outcome() for _ in range(total - len(outcomes)))
    return result


async def _count_write(state: Any, project_id: str) -> None:
    """Count a write of the project, as `_run` does, and raise RateLimited over
    the limit. A limiter on Redis may wait for it, so it is called in a thread."""
    settings = state.settings
    if settings.redis_url and settings.rate_limit_writes_per_minute > 0:
        await anyio.to_thread.run_sync(state.rate_limiter.hit, project_id, "write")
    else:
        state.rate_limiter.hit(project_id, "write")


_Writer = TypeVar("_Writer")


class _IdleWriters(Generic[_Writer]):
    """The writers not serving a request, handed out one request at a time."""

    def __init__(self, writers: list[_Writer]) -> None:
        self.all = writers
        self._idle: asyncio.Queue[_Writer] | None = None

    async def take(self) -> _Writer:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for writer in self.all:
                self._idle.put_nowait(writer)
        return await self._idle.get()

    def give_back(self, writer: _Writer) -> None:
        assert self._idle is not None  # noqa: S101 - taken from it before
        self._idle.put_nowait(writer)


@dataclass
class _Entry:
    """A request waiting for its batch: the context it runs in (its request id and
    deadline) and the future that receives its outcome."""

    request: _Request
    context: contextvars.Context
    outcome: asyncio.Future[_Outcome]
    # Until when (time.monotonic) the request waits for a busy SQLite database.
    busy_until: float

    def finish(self, outcome: _Outcome) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)


BatchWriter = Callable[[Any, _Writer, list[_Entry]], Awaitable[None]]


class _Batches(Generic[_Writer]):
    """Requests waiting to be written, taken in batches: one transaction per
    batch, so that BEGIN, COMMIT and the commit's WAL write are paid once for all
    its requests (a group commit).

    A request that arrives while no batch is being gathered starts a flusher
    task, up to one per writer. The flusher lets the requests already scheduled
    on the event loop join, then takes up to MAX_BATCH of them onto a writer,
    and goes on while requests are waiting.
    """

    def __init__(self, writers: list[_Writer], write: BatchWriter[_Writer]) -> None:
        self.idle = _IdleWriters(writers)
        self._write = write
        self._pending: deque[_Entry] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        self._gathering = False

    async def submit(self, state: Any, request: _Request) -> _Outcome:
        """Queue the request for a batch and return its outcome."""
        loop = asyncio.get_running_loop()
        entry = _Entry(
            request,
            contextvars.copy_context(),
            loop.create_future(),
            time.monotonic() + BUSY_WAIT_SECONDS,
        )
        self._pending.append(entry)
        if not self._gathering and len(self._flushers) < len(self.idle.all):
            self._gathering = True
            task = loop.create_task(self._flush(state))
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        return await entry.outcome

    async def _flush(self, state: Any) -> None:
        while True:
            # Requests already scheduled in this turn of the event loop join.
            self._gathering = True
            try:
                await asyncio.sleep(0)
            finally:
                self._gathering = False
            batch = self._take()
            if not batch:
                return
            # Never waits: each flusher uses at most one writer at a time.
            writer = await self.idle.take()
            try:
                await self._write(state, writer, batch)
            except Exception as exc:
                # The flusher goes on with the requests still waiting.
                log.warning(
                    "lean_refund_batch_failed",
                    order_ids=_order_ids(batch),
                    error=repr(exc),
                )
            finally:
                self.idle.give_back(writer)
                # A request left without an outcome goes to the router.
                for entry in batch:
                    entry.finish(_Outcome())

    def _take(self) -> list[_Entry]:
        """Take up to MAX_BATCH waiting requests, skipping those whose caller has
        gone (its task was cancelled)."""
        batch: list[_Entry] = []
        while self._pending and len(batch) < MAX_BATCH:
            entry = self._pending.popleft()
            if not entry.outcome.done():
                batch.append(entry)
        return batch


async def _write_sqlite_batch(
    state: Any, writer: RefundWriter, entries: list[_Entry]
) -> None:
    """Write a batch on the SQLite writer and set each request's outcome.

    The statements run on the event loop, because they never wait: the write lock
    is taken only when it is free. While it is not, the batch waits in short
    sleeps, each request for up to BUSY_WAIT_SECONDS. With a rate limiter on
    Redis, which may wait for Redis, the batch runs in the thread pool instead.
    """
    if not writer.is_open:
        # Checking a connection out of the pool may wait for it.
        try:
            await anyio.to_thread.run_sync(writer.open)
        except Exception as exc:
            log.warning("lean_refund_open_failed", error=repr(exc))
            return
    settings = state.settings
    in_thread = bool(settings.redis_url and settings.rate_limit_writes_per_minute > 0)
    pause = 0.0005
    while entries:
        if in_thread:
            outcomes = await anyio.to_thread.run_sync(
                _run_batch, state, writer, entries
            )
        else:
            outcomes = _run_batch(state, writer, entries)
        if outcomes is not None:
            for entry, outcome in zip(entries, outcomes, strict=True):
                entry.finish(outcome)
            return
        entries = _still_waiting(entries, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.01)


async def _write_postgres_batch(
    state: Any, writer: PostgresRefundWriter, entries: list[_Entry]
) -> None:
    await writer.write_batch(state, entries)


def _order_ids(entries: Sequence[_Entry]) -> list[str]:
    return [entry.request.order_id for entry in entries]


def _still_waiting(entries: list[_Entry], pause: float) -> list[_Entry]:
    """Return the requests of a busy batch that wait on. Each request that timed
    out, or would wait past its busy_until, gets its outcome instead."""
    now = time.monotonic()
    waiting = []
    for entry in entries:
        if entry.outcome.done():
            continue
        if entry.context.run(has_timed_out):
            entry.finish(_Outcome(timed_out=True))
        elif now + pause > entry.busy_until:
            entry.finish(_Outcome(busy=True))
        else:
            waiting.append(entry)
    return waiting


class RefundWriters:
    """The writers of one app: one for SQLite, which has one writer at a time
    anyway, and POSTGRES_WRITERS for PostgreSQL, each with its own connection."""

    def __init__(self, engine: Engine) -> None:
        rows = _RefundRows(engine)
        self.is_sqlite = rows.is_sqlite
        sqlite: list[RefundWriter] = (
            [RefundWriter(engine, rows)] if self.is_sqlite else []
        )
        postgres: list[PostgresRefundWriter] = [
            PostgresRefundWriter(engine, rows)
            for _ in range(0 if self.is_sqlite else POSTGRES_WRITERS)
        ]
        self.sqlite = _Batches(sqlite, _write_sqlite_batch)
        self.postgres = _Batches(postgres, _write_postgres_batch)

    async def close(self) -> None:
        for writer in self.sqlite.idle.all:
            writer.close()
        for postgres_writer in self.postgres.idle.all:
            await postgres_writer.close()


async def _read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read the whole body, up to MAX_LEAN_BODY_BYTES. Returns it (None when it is
    longer or the client left) and a receive that replays every message read."""
    messages: list[Message] = []
    size = 0
    complete = False
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > MAX_LEAN_BODY_BYTES:
            break
        if not message.get("more_body", False):
            complete = True
            break
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    if not complete:
        return None, replay
    return b"".join(message.get("body", b"") for message in messages), replay
