"""Bulk seeding of benchmark databases with SQLAlchemy Core inserts.

Rows go straight into the tables of the ORM models (so column types, JSON and UTC
handling match what the service writes), in batches of a few thousand orders per
transaction. Three shapes of database exist:

- `read`: paid orders, each with two line items, one delivered package with three
  tracking events, three order events, and a refund request on every fourth order;
- `write`: orders whose line items are delivered and have no refund yet (targets of
  `POST .../refunds`) and orders with a package in transit (targets of
  `POST .../shipments/{packageId}/events`);
- `worker`: accepted refunds whose return label job is queued but not yet due.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    insert,
    text,
)

from orderdesk.auth.models import ApiKey
from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.auth.services import create_project, hash_secret
from orderdesk.catalog.models import Product
from orderdesk.config import Settings
from orderdesk.db.base import DecimalText
from orderdesk.db.migrate import upgrade
from orderdesk.jobs.models import Job
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.refunds.models import Refund
from orderdesk.shipping.models import Package, TrackingEvent
from orderdesk.shipping.services import event_dedupe_key

CATALOG_FILE = (
    Path(__file__).resolve().parents[1]
    / "src"
    / "orderdesk"
    / "catalog"
    / "sample_catalog.json"
)
BATCH_ORDERS = 5_000
TAX_RATE = Decimal("0.085")
CENT = Decimal("0.01")
RECIPIENT = {
    "email": "buyer@bench.localhost",
    "physicalAddress": {
        "name": "Bench Buyer",
        "line1": "1 Load Test Way",
        "city": "New York",
        "state": "NY",
        "postalCode": "10001",
        "country": "US",
    },
}
PAYER = "0x" + "ab" * 20


@dataclass
class SeedResult:
    """Ids the load scripts rotate through, by purpose."""

    project_id: str
    read_order_ids: list[str] = field(default_factory=list)
    refund_order_ids: list[str] = field(default_factory=list)
    refund_targets: list[tuple[str, int]] = field(default_factory=list)
    event_targets: list[tuple[str, str]] = field(default_factory=list)
    worker_refund_ids: list[str] = field(default_factory=list)


def seed_engine(database_url: str) -> Engine:
    """Create an engine for bulk loading, where SQLite skips fsync."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url)

        @event.listens_for(engine, "connect")
        def _fast(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.close()

        return engine
    return create_engine(database_url)


def prepare(engine: Engine, settings: Settings, api_key: str) -> str:
    """Migrate, then add the bench project, its key with every scope and the catalog.

    Returns the project id.
    """
    upgrade(engine)
    with engine.begin() as connection:
        from sqlalchemy.orm import Session

        session = Session(bind=connection)
        project = create_project(session, settings, "bench")
        session.flush()
        project_id = project.id
        session.close()
        connection.execute(
            insert(ApiKey.__table__),
            [
                {
                    "id": str(uuid.uuid4()),
                    "project_id": project_id,
                    "key_hash": hash_secret(api_key),
                    "display_prefix": api_key[:20],
                    "environment": settings.environment,
                    "scopes": ",".join(ALL_SCOPES),
                    "name": "bench",
                    "created_at": datetime.now(UTC),
                    "revoked_at": None,
                }
            ],
        )
        connection.execute(insert(Product.__table__), _catalog_rows())
    return project_id


def _catalog_rows() -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    for item in json.loads(CATALOG_FILE.read_text()):
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "locator": item["locator"],
                "name": item["name"],
                "description": item.get("description", ""),
                "image_url": item.get("image_url", ""),
                "price": Decimal(item["price"]),
                "shipping": Decimal(item["shipping"]),
                "stock": int(item["stock"]),
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


class RowFactory:
    """Builds rows for one database, reproducibly from a seed."""

    def __init__(self, project_id: str, treasury: str, seed: int) -> None:
        self.project_id = project_id
        self.treasury = treasury
        self.random = random.Random(seed)
        self.products = json.loads(CATALOG_FILE.read_text())
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.tracking_serial = 0

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def tx_hash(self) -> str:
        return "0x" + f"{self.random.getrandbits(256):064x}"

    def order(
        self, rows: Rows, line_count: int, created_at: datetime, delivered: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        """Add a paid order and its line items; return its id and line item rows."""
        order_id = self.new_id()
        paid_at = created_at + timedelta(minutes=5)
        delivered_at = created_at + timedelta(days=3) if delivered else None
        items = []
        for index in range(line_count):
            product = self.products[self.random.randrange(len(self.products))]
            unit = Decimal(product["price"])
            shipping = Decimal(product["shipping"])
            tax = (unit * TAX_RATE).quantize(CENT)
            items.append(
                {
                    "id": self.new_id(),
                    "order_id": order_id,
                    "index": index,
                    "locator": product["locator"],
                    "quantity": 1,
                    "name": product["name"],
                    "description": product.get("description", ""),
                    "image_url": product.get("image_url", ""),
                    "quote_status": "valid",
                    "unit_price": unit,
                    "sales_tax": tax,
                    "shipping": shipping,
                    "total": unit + tax + shipping,
                    "delivery_status": "completed" if delivered else "in-progress",
                    "delivered_at": delivered_at,
                }
            )
        total = sum((item["total"] for item in items), Decimal("0"))
        rows.orders.append(
            {
                "id": order_id,
                "project_id": self.project_id,
                "client_secret_hash": hashlib.sha256(order_id.encode()).hexdigest(),
                "phase": "completed" if delivered else "delivery",
                "locale": "en-US",
                "recipient": RECIPIENT,
                "quote_status": "valid",
                "quoted_at": created_at,
                "expires_at": created_at + timedelta(hours=1),
                "total_amount": total,
                "currency": "usdc",
                "payment_method": "devnet",
                "treasury_address": self.treasury,
                "payer_address": PAYER,
                "receipt_email": None,
                "payment_tx_id": self.tx_hash(),
                "payment_state": "completed",
                "paid_from": PAYER,
                "received_base_units": str(int(total * 1_000_000)),
                "received_amount": total,
                "paid_at": paid_at,
                "failure_code": None,
                "failure_message": None,
                "refunded_amount": Decimal("0"),
                "created_at": created_at,
                "updated_at": delivered_at or paid_at,
            }
        )
        rows.line_items.extend(items)
        rows.event("order.payment_succeeded", order_id, None, "completed", paid_at)
        return order_id, items

    def package(
        self,
        rows: Rows,
        order_id: str,
        line_items: list[int],
        shipped_at: datetime,
        delivered: bool,
    ) -> str:
        """Add an outbound package with its tracking events; return its id."""
        package_id = self.new_id()
        self.tracking_serial += 1
        steps = [("shipped", shipped_at, "Picked up by the carrier", "Newark, NJ")]
        if delivered:
            steps.append(
                (
                    "out-for-delivery",
                    shipped_at + timedelta(days=2, hours=20),
                    "Out for delivery",
                    "New York, NY",
                )
            )
            steps.append(
                (
                    "delivered",
                    shipped_at + timedelta(days=3),
                    "Delivered, front door",
                    "New York, NY",
                )
            )
        status, status_at = steps[-1][0], steps[-1][1]
        rows.packages.append(
            {
                "id": package_id,
                "order_id": order_id,
                "kind": "outbound",
                "refund_id": None,
                "carrier_name": "UPS",
                "carrier_key": "ups",
                "tracking_number": f"1ZBENCH{self.tracking_serial:011d}",
                "tracking_url": "https://www.ups.com/track?tracknum="
                f"1ZBENCH{self.tracking_serial:011d}",
                "line_items": line_items,
                "status": status,
                "status_at": status_at,
                "lower_bound": shipped_at + timedelta(days=2),
                "upper_bound": shipped_at + timedelta(days=4),
                "estimate_at": shipped_at,
                "created_at": shipped_at,
                "updated_at": status_at,
            }
        )
        for step_status, occurred_at, description, location in steps:
            rows.tracking_events.append(
                {
                    "package_id": package_id,
                    "status": step_status,
                    "occurred_at": occurred_at,
                    "description": description,
                    "location": location,
                    "dedupe_key": event_dedupe_key(
                        step_status, occurred_at, description, location
                    ),
                    "source": "api",
                    "raw": None,
                    "created_at": occurred_at,
                }
            )
        rows.event("package.created", order_id, package_id, "pending", shipped_at)
        rows.event("package.status_changed", order_id, package_id, status, status_at)
        return package_id

    def refund(
        self,
        rows: Rows,
        order_id: str,
        item: dict[str, Any],
        created_at: datetime,
        status: str = "refund-request-initiated",
    ) -> str:
        refund_id = self.new_id()
        rows.refunds.append(
            {
                "id": refund_id,
                "order_id": order_id,
                "line_item": item["index"],
                "reason": "The item arrived damaged.",
                "status": status,
                "amount": item["total"],
                "currency": "usdc",
                "origin": "buyer",
                "rejection_reason": None,
                "return_carrier": None,
                "return_tracking_number": None,
                "label_claimed_until": None,
                "return_received_at": None,
                "payout_status": None,
                "payout_message": None,
                "payout_chain": None,
                "payout_tx_id": None,
                "payout_retries": 0,
                "created_at": created_at,
                "updated_at": created_at,
            }
        )
        rows.event(
            "refund.requested",
            order_id,
            refund_id,
            "refund-request-initiated",
            created_at,
        )
        if status != "refund-request-initiated":
            rows.event("refund.status_changed", order_id, refund_id, status, created_at)
        return refund_id


@dataclass
class Rows:
    """One batch of rows, table by table, inserted in foreign-key order."""

    orders: list[dict[str, Any]] = field(default_factory=list)
    line_items: list[dict[str, Any]] = field(default_factory=list)
    packages: list[dict[str, Any]] = field(default_factory=list)
    tracking_events: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    order_events: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def event(
        self,
        kind: str,
        order_id: str,
        subject_id: str | None,
        to_state: str,
        at: datetime,
    ) -> None:
        self.order_events.append(
            {
                "order_id": order_id,
                "kind": kind,
                "subject_id": subject_id,
                "from_state": None,
                "to_state": to_state,
                "actor": "system",
                "data": None,
                "created_at": at,
            }
        )

    def insert(self, engine: Engine) -> None:
        tables = (
            (Order, self.orders),
            (LineItem, self.line_items),
            (Package, self.packages),
            (TrackingEvent, self.tracking_events),
            (Refund, self.refunds),
            (OrderEvent, self.order_events),
            (Job, self.jobs),
        )
        with engine.begin() as connection:
            for model, batch in tables:
                if batch:
                    _bulk_insert(connection, model.__table__, batch)


def _bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]]):
    """Insert rows with the driver's fastest path: COPY on PostgreSQL, executemany
    on SQLite. Values pass through the columns' own bind processors first, so they
    are stored exactly as the ORM would store them."""
    columns = list(rows[0])
    dialect = connection.dialect
    if dialect.name == "postgresql":
        converters = [_copy_converter(table.c[name].type) for name in columns]
        names = ", ".join(f'"{name}"' for name in columns)
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            pairs = list(zip(columns, converters, strict=True))
            for row in rows:
                copy.write_row([convert(row[name]) for name, convert in pairs])
        cursor.close()
        return
    processors = [
        table.c[name].type._cached_bind_processor(dialect) for name in columns
    ]
    values = [
        tuple(
            process(row[name]) if process else row[name]
            for name, process in zip(columns, processors, strict=True)
        )
        for row in rows
    ]
    marks = ", ".join("?" for _ in columns)
    names = ", ".join(f'"{name}"' for name in columns)
    # Table and column names come from the models, never from input.
    statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'  # noqa: S608
    connection.exec_driver_sql(statement, values)


def _copy_converter(column_type: Any) -> Callable[[Any], Any]:
    """Turn a Python value into what COPY stores for a column of this type."""
    if isinstance(column_type, JSON):
        return json.dumps
    if isinstance(column_type, DecimalText):
        return lambda value: None if value is None else format(value, "f")
    return lambda value: value


def _batched(total: int, size: int) -> Iterable[int]:
    done = 0
    while done < total:
        step = min(size, total - done)
        yield step
        done += step


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} orders/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _fill(
    engine: Engine,
    label: str,
    total: int,
    build_one: Callable[[Rows], None],
) -> None:
    with _progress() as progress:
        task = progress.add_task(label, total=total, rate="-")
        started = datetime.now(UTC)
        done = 0
        for size in _batched(total, BATCH_ORDERS):
            rows = Rows()
            for _ in range(size):
                build_one(rows)
            rows.insert(engine)
            done += size
            elapsed = (datetime.now(UTC) - started).total_seconds() or 1e-9
            progress.update(task, advance=size, rate=f"{done / elapsed:,.0f}")


def seed_reads(
    engine: Engine, factory: RowFactory, orders: int, sample: int, label: str
) -> SeedResult:
    """Seed `orders` read-shaped orders and sample up to `sample` ids of each kind
    spread over the whole table."""
    result = SeedResult(factory.project_id)
    every = max(1, orders // sample)
    every_refund = max(1, orders // 4 // sample)
    counter = 0

    def build_one(rows: Rows) -> None:
        nonlocal counter
        created_at = factory.now - timedelta(
            days=40, seconds=factory.random.randrange(300 * 86400)
        )
        order_id, items = factory.order(rows, 2, created_at, delivered=True)
        factory.package(
            rows, order_id, [0, 1], created_at + timedelta(days=1), delivered=True
        )
        if counter % every == 0 and len(result.read_order_ids) < sample:
            result.read_order_ids.append(order_id)
        if counter % 4 == 0:
            factory.refund(rows, order_id, items[0], created_at + timedelta(days=5))
            refunds_so_far = counter // 4
            if (
                refunds_so_far % every_refund == 0
                and len(result.refund_order_ids) < sample
            ):
                result.refund_order_ids.append(order_id)
        counter += 1

    _fill(engine, label, orders, build_one)
    return result


def seed_writes(
    engine: Engine,
    factory: RowFactory,
    refund_targets: int,
    event_targets: int,
    label: str,
) -> SeedResult:
    """Seed delivered line items to request refunds for, and packages in transit."""
    result = SeedResult(factory.project_id)
    items_per_order = 5
    refund_orders = -(-refund_targets // items_per_order)

    def build_refundable(rows: Rows) -> None:
        created_at = factory.now - timedelta(days=5)
        order_id, items = factory.order(
            rows, items_per_order, created_at, delivered=True
        )
        factory.package(
            rows,
            order_id,
            list(range(items_per_order)),
            created_at + timedelta(hours=6),
            delivered=True,
        )
        result.refund_targets.extend((order_id, item["index"]) for item in items)

    def build_in_transit(rows: Rows) -> None:
        created_at = factory.now - timedelta(days=1)
        order_id, _items = factory.order(rows, 1, created_at, delivered=False)
        package_id = factory.package(
            rows, order_id, [0], created_at + timedelta(hours=2), delivered=False
        )
        result.event_targets.append((order_id, package_id))

    _fill(engine, f"{label} refundable", refund_orders, build_refundable)
    _fill(engine, f"{label} in transit", event_targets, build_in_transit)
    # Interleave orders so consecutive requests rarely touch the same order.
    result.refund_targets.sort(key=lambda target: (target[1], target[0]))
    return result


def seed_worker_refunds(
    engine: Engine, factory: RowFactory, count: int, run_at: datetime, label: str
) -> SeedResult:
    """Seed accepted refunds with their return label job due at `run_at`."""
    result = SeedResult(factory.project_id)

    def build_one(rows: Rows) -> None:
        created_at = factory.now - timedelta(days=6)
        order_id, items = factory.order(rows, 1, created_at, delivered=True)
        factory.package(
            rows, order_id, [0], created_at + timedelta(hours=6), delivered=True
        )
        refund_id = factory.refund(
            rows,
            order_id,
            items[0],
            factory.now - timedelta(hours=1),
            status="refund-request-accepted",
        )
        rows.jobs.append(
            {
                "kind": "refund.return_label",
                "payload": {"refund_id": refund_id},
                "status": "queued",
                "attempts": 0,
                "max_attempts": 10,
                "run_at": run_at,
                "locked_by": None,
                "locked_until": None,
                "dedupe_key": f"refund.return_label:{refund_id}",
                "last_error": None,
                "created_at": factory.now,
                "updated_at": factory.now,
            }
        )
        result.worker_refund_ids.append(refund_id)

    _fill(engine, label, count, build_one)
    return result


def analyze(engine: Engine) -> None:
    """Refresh planner statistics, as a maintained production database has them."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
