"""The statements that a worker sends per accepted refund (label job, then email),
and the rows they write, on both databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.engine.default import CACHE_HIT
from tests.refunds.helpers import (
    jobs_of,
    make_jobs_due,
    refund_row,
    requested,
    reviewed,
    shipped_order,
)
from tests.shipping.helpers import order_events

from orderdesk.jobs.worker import Worker
from orderdesk.orders.models import Order, OrderRevision
from orderdesk.refunds import returns
from orderdesk.refunds.models import Refund
from orderdesk.runtime import Runtime
from orderdesk.shipping.exceptions import PackageExists
from orderdesk.shipping.models import Package
from orderdesk.shipping.services import record_package, record_return_package
from orderdesk.shipping.statuses import PackageKind

REFUNDS = 4
# Per refund: the label job's 8 statements (lock, package, webhook endpoints, both
# events, refund, email job, revision, done marks) and the email job's none, plus a
# share of the claims. SQLite also counts BEGIN IMMEDIATE and inserts the two
# events one by one. The worker sent about 17 per refund before, plus a pool
# pre-ping per transaction.
MAX_STATEMENTS_PER_REFUND = {"postgresql": 9, "sqlite": 12}


@dataclass
class Traffic:
    """Statements, commits and pool checkouts of one engine."""

    statements: list[str] = field(default_factory=list)
    commits: int = 0
    checkouts: int = 0

    def starting(self, prefix: str) -> list[str]:
        return [sql for sql in self.statements if sql.startswith(prefix)]


@pytest.fixture
def traffic(runtime: Runtime) -> Iterator[Traffic]:
    recorded = Traffic()
    engine = runtime.engine
    test_thread = threading.get_ident()

    def on_statement(*args: Any) -> None:
        recorded.statements.append(" ".join(args[2].split()))

    def on_commit(*_args: Any) -> None:
        recorded.commits += 1

    def on_checkout(*_args: Any) -> None:
        # The WAL checkpoint thread of a SQLite runtime checks out one of its own.
        if threading.get_ident() == test_thread:
            recorded.checkouts += 1

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "commit", on_commit)
    event.listen(engine.pool, "checkout", on_checkout)
    yield recorded
    event.remove(engine, "before_cursor_execute", on_statement)
    event.remove(engine, "commit", on_commit)
    event.remove(engine.pool, "checkout", on_checkout)


def accepted_refunds(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
) -> list[tuple[str, str]]:
    """Accept `count` refunds whose label is left to the label job, due now. Return
    (order id, refund id) pairs."""
    monkeypatch.setattr(returns, "try_issue_return_label", lambda *a, **k: None)
    refunds = []
    for _ in range(count):
        order = shipped_order(runtime, items=1, delivered_days_ago=1)
        refund_id = requested(client, api_key, order.id)["refundId"]
        reviewed(client, api_key, order.id, refund_id, "accept")
        refunds.append((order.id, refund_id))
    make_jobs_due(runtime, "refund.return_label")
    return refunds


def test_refund_statements_are_bounded(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    traffic: Traffic,
) -> None:
    accepted_refunds(client, api_key, runtime, monkeypatch, REFUNDS)
    traffic.statements.clear()
    traffic.commits = traffic.checkouts = 0

    ran = Worker(runtime, name="counted-worker").run_until_idle()

    assert ran == 2 * REFUNDS
    dialect = runtime.engine.dialect.name
    bound = MAX_STATEMENTS_PER_REFUND[dialect] * REFUNDS
    assert len(traffic.statements) <= bound, "\n".join(traffic.statements)
    # One commit per label job, plus the claim, the last email's done mark and the
    # empty claim that ends run_until_idle.
    assert traffic.commits <= REFUNDS + 3
    # One pooled connection (and pre-ping) per batch: the full one and the empty one.
    assert traffic.checkouts == 2
    # Neither a claimed job nor the email's refund and order is read again.
    assert traffic.starting("SELECT jobs.id, jobs.kind") == []
    assert traffic.starting("SELECT refunds.") == []
    assert traffic.starting("SAVEPOINT") == []


def test_refund_statements_are_cached(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the worker has run a refund, the next refunds reuse every compiled
    statement instead of compiling one again."""
    accepted_refunds(client, api_key, runtime, monkeypatch, 1)
    Worker(runtime, name="warm-worker").run_until_idle()
    accepted_refunds(client, api_key, runtime, monkeypatch, 2)
    compiled: list[tuple[str, Any]] = []

    def on_statement(*args: Any) -> None:
        context = args[4]
        if context.compiled is not None:
            compiled.append((" ".join(args[2].split())[:80], context.cache_hit))

    event.listen(runtime.engine, "before_cursor_execute", on_statement)
    try:
        ran = Worker(runtime, name="cached-worker").run_until_idle()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", on_statement)

    assert ran == 4
    assert compiled
    not_cached = [sql for sql, hit in compiled if hit is not CACHE_HIT]
    assert not_cached == []


def test_refund_rows_after_worker(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [(order_id, refund_id)] = accepted_refunds(client, api_key, runtime, monkeypatch, 1)
    with runtime.session_factory() as session:
        revision_before = session.get_one(OrderRevision, order_id).revision

    Worker(runtime, name="rows-worker").run_until_idle()

    refund = refund_row(runtime, refund_id)
    assert refund.return_carrier == "USPS"
    assert refund.return_tracking_number is not None
    assert refund.label_claimed_until is None
    with runtime.session_factory() as session:
        [package] = session.scalars(
            select(Package).where(
                Package.order_id == order_id, Package.kind == PackageKind.RETURN
            )
        ).all()
        revision = session.get_one(OrderRevision, order_id).revision
    assert package.refund_id == refund_id
    assert package.tracking_number == refund.return_tracking_number
    assert package.line_items == [0]
    assert package.status == "pending"
    assert package.events == []
    kinds = [row.kind for row in order_events(runtime, order_id)]
    assert kinds[-2:] == ["package.created", "refund.return_label_issued"]
    [created, issued] = order_events(runtime, order_id)[-2:]
    assert created.subject_id == package.id
    assert created.data == {
        "kind": "return",
        "carrierName": "USPS",
        "carrierTrackingNumber": package.tracking_number,
        "lineItems": [0],
    }
    assert issued.subject_id == refund_id
    assert issued.data == {
        "carrierName": "USPS",
        "carrierTrackingNumber": package.tracking_number,
        "packageId": package.id,
    }
    # The label job's transaction raised the order's revision once, and the email
    # job wrote nothing of the order.
    assert revision == revision_before + 1
    for kind in ("refund.return_label", "mail.send"):
        [job] = jobs_of(runtime, kind)
        assert job.status == "done"
        assert job.attempts == 1
        assert job.locked_by is None
        assert job.locked_until is None
        assert job.last_error is None
    [mail] = list((runtime.settings.mail_dir).glob("*.eml"))
    assert refund_id in mail.read_text()


def test_email_job_rerun_sends_same_message(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An email sent from handed-over rows is the one that a retry builds from the
    stored rows."""
    [(_order_id, refund_id)] = accepted_refunds(
        client, api_key, runtime, monkeypatch, 1
    )
    Worker(runtime, name="first-worker").run_until_idle()
    [mail] = list(runtime.settings.mail_dir.glob("*.eml"))
    first = mail.read_bytes()
    mail.unlink()

    [job] = jobs_of(runtime, "mail.send")
    with runtime.session_factory() as session, session.begin():
        stored = session.get_one(type(job), job.id)
        stored.status = "queued"
    Worker(runtime, name="second-worker").run_until_idle()

    [again] = list(runtime.settings.mail_dir.glob("*.eml"))
    assert again.read_bytes() == first
    assert refund_id in again.read_text()


def paid_order_with_refund(
    client: TestClient, api_key: str, runtime: Runtime
) -> tuple[str, str]:
    order = shipped_order(runtime, items=1, delivered_days_ago=1)
    refund_id = requested(client, api_key, order.id)["refundId"]
    return order.id, refund_id


def test_return_package_rows_match_record_package(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    """The return parcel's own path writes what record_package writes for it."""
    fast = paid_order_with_refund(client, api_key, runtime)
    general = paid_order_with_refund(client, api_key, runtime)
    with runtime.session_factory() as session, session.begin():
        order = session.get_one(Order, fast[0])
        record_return_package(
            session, order, "USPS", "9400 1000 0000 0000 0000 01", 0, fast[1]
        )
    with runtime.session_factory() as session, session.begin():
        order = session.get_one(Order, general[0])
        record_package(
            session,
            order,
            "USPS",
            "9400 1000 0000 0000 0000 02",
            [0],
            kind=PackageKind.RETURN,
            refund_id=general[1],
        )

    def rows(order_id: str) -> tuple[dict[str, Any], dict[str, Any], int]:
        with runtime.session_factory() as session:
            package = session.scalars(
                select(Package).where(
                    Package.order_id == order_id, Package.kind == PackageKind.RETURN
                )
            ).one()
            revision = session.get_one(OrderRevision, order_id).revision
        events = order_events(runtime, order_id)
        [created] = [row for row in events if row.kind == "package.created"]
        ignored = {"id", "order_id", "refund_id", "tracking_number", "tracking_url"}
        package_values = {
            column.key: getattr(package, column.key)
            for column in Package.__table__.columns
            if column.key not in ignored and not column.key.endswith("_at")
        }
        event_values = {
            "kind": created.kind,
            "to_state": created.to_state,
            "from_state": created.from_state,
            "actor": created.actor,
            "data_keys": sorted(created.data or {}),
            "line_items": (created.data or {}).get("lineItems"),
            "subject_is_package": created.subject_id == package.id,
        }
        return package_values, event_values, revision

    assert rows(fast[0]) == rows(general[0])


def test_return_package_number_taken_raises(
    client: TestClient, api_key: str, runtime: Runtime
) -> None:
    first = paid_order_with_refund(client, api_key, runtime)
    second = paid_order_with_refund(client, api_key, runtime)
    number = "9400 1000 0000 0000 0000 03"
    with runtime.session_factory() as session, session.begin():
        order = session.get_one(Order, first[0])
        record_return_package(session, order, "USPS", number, 0, first[1])

    with runtime.session_factory() as session:
        order = session.get_one(Order, second[0])
        with pytest.raises(PackageExists) as raised:
            record_return_package(session, order, "USPS", number, 0, second[1])
        # Another order's package is not shown.
        assert raised.value.extra == {}
        # The transaction is still usable: the insert skipped the row.
        assert session.get(Refund, second[1]) is not None
        session.rollback()

    with runtime.session_factory() as session:
        order = session.get_one(Order, first[0])
        with pytest.raises(PackageExists) as raised:
            record_return_package(session, order, "usps", number, 0, first[1])
        # The order's own package is shown.
        shown_package = raised.value.extra["package"]
        assert shown_package["refundId"] == first[1]
        assert shown_package["packageTracking"]["carrierName"] == "USPS"
        session.rollback()
    with runtime.session_factory() as session:
        packages = session.scalars(
            select(Package).where(Package.kind == PackageKind.RETURN)
        ).all()
    assert len(packages) == 1
