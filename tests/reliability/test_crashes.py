"""SIGKILL of real `orderdesk worker` and `orderdesk serve --no-worker` processes at
random points, on SQLite and PostgreSQL.

Worker runs: each run queues a few jobs of one kind (payment verification, return
label and its email, or payout) and waits until a worker claims one of them. It
kills that worker after a random delay and starts a new one, and the workers finish
the work. After each run every job is done and no webhook was lost. No payout was sent
twice (Payout rows and on-chain transfers), no label was bought twice (requests at
a loopback stand-in of EasyPost) and no email was sent twice (Message-IDs at a
loopback SMTP server).

API runs: writer threads send order creations, refund requests and tracking events
to one API process, which is killed in the middle of them. After each run the
database contains every write that got a 2xx response, in full, and nothing
half-written.

ORDERDESK_CRASH_RUNS sets the number of worker runs on PostgreSQL, the database of
deployments with several workers (default 30 in CI, 6 elsewhere). SQLite gets half
as many, and the API test a tenth, at least two per database. That keeps the CI
default to about five minutes on a 2-core machine. The kill points come from a
seeded generator: the seed is printed first, and ORDERDESK_CRASH_SEED replays it.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from tests import factories
from tests.labels.fake_easypost import API_KEY as EASYPOST_KEY
from tests.labels.fake_easypost import FakeEasyPostServer
from tests.mail.conftest import (  # noqa: F401 - fixtures
    SmtpServer,
    SmtpServerFactory,
    certificate,
    smtp_server,
)
from tests.orders.helpers import ORDERS as ORDERS_API
from tests.orders.helpers import order_body, seed_catalog
from tests.payments.helpers import devnet_chain, funded_account, transfer
from tests.refunds.helpers import (
    fund_treasury,
    payouts_of,
    refund_row,
    requested_direct,
    shipped_order,
    token_transfers,
    usdc_balance,
)
from tests.refunds.test_review_concurrency import return_packages
from tests.reliability.procs import (
    ServiceProcesses,
    crash_runs,
    crash_seed,
    expire_leases_of,
    held_by,
    kill,
    open_jobs,
    wait_until,
)
from tests.shipping.helpers import ORDERS, hours_ago, iso, order_events, order_row
from tests.webhooks.conftest import (  # noqa: F401 - fixture
    Receiver,
    create_endpoint,
    receiver,
)

from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.labels.easypost import easypost_reference
from orderdesk.mail.messages import MailKind, refund_message_id
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.payments import services as payments
from orderdesk.payments.amounts import to_base_units
from orderdesk.refunds import review
from orderdesk.refunds.models import ACTIVE_STATUSES, IdempotencyRecord, Refund
from orderdesk.refunds.services import get_refund
from orderdesk.refunds.statuses import RefundEvent
from orderdesk.runtime import Runtime
from orderdesk.shipping.models import Package, TrackingEvent
from orderdesk.shipping.rollup import lock_order
from orderdesk.shipping.statuses import deciding_event
from orderdesk.webhooks.models import WebhookDelivery

MAIL_DOMAIN = "orderdesk.localhost"
ITEMS_PER_RUN = 2
KINDS = ("payment", "label", "payout")
# The job that a run waits for a worker to claim before the kill delay starts. A
# worker claims up to 10 due jobs at once and runs them one after another.
WATCHED_JOB = {
    "payment": payments.RECHECK_JOB,
    "label": review.LABEL_JOB,
    "payout": review.PAYOUT_JOB,
}
# The maximum kill delay per kind: an estimate of how long its jobs run on a 2-core
# machine, so that kills spread over them.
MAX_KILL_DELAY_MS = {"payment": 150, "label": 500, "payout": 700}
# Each stand-in EasyPost request takes this long, so a kill can land inside one.
EASYPOST_DELAY_SECONDS = 0.03
# Longer than a label claim (LABEL_CLAIM_SECONDS), so that a claim the test could not
# end still runs out and its job finishes within the run.
RUN_TIMEOUT_SECONDS = 200
WORKERS = 3


@pytest.fixture
def smtp(smtp_server: SmtpServerFactory) -> SmtpServer:  # noqa: F811
    return smtp_server()


@pytest.fixture
def easypost() -> Iterator[FakeEasyPostServer]:
    with FakeEasyPostServer() as server:
        server.fake.delay_seconds = EASYPOST_DELAY_SECONDS
        yield server


@pytest.fixture
def services(
    settings: Settings,
    tmp_path: Path,
    smtp: SmtpServer,
    easypost: FakeEasyPostServer,
) -> Iterator[ServiceProcesses]:
    processes = ServiceProcesses(
        settings,
        tmp_path,
        ORDERDESK_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
        ORDERDESK_LABEL_PROVIDER="easypost",
        ORDERDESK_EASYPOST_API_KEY=EASYPOST_KEY,
        ORDERDESK_EASYPOST_BASE_URL=easypost.api_url,
        ORDERDESK_EASYPOST_TIMEOUT_SECONDS="10",
        ORDERDESK_PAYOUT_RETRY_SECONDS="0.2",
        ORDERDESK_WEBHOOK_RETRY_SCALE="0.001",
    )
    yield processes
    processes.stop_all()


# What one run prepares and expects


@dataclass
class Item:
    """One unit of work of a run: an order, and its refund for label and payout runs."""

    kind: str
    order_id: str
    refund_id: str | None = None
    payer: str | None = None
    amount: Decimal | None = None

    def message_ids(self) -> list[str]:
        """The emails this item causes, by Message-ID."""
        if self.refund_id is None:
            return []
        kind = MailKind.REFUND_ACCEPTED
        if self.kind == "payout":
            kind = MailKind.REFUND_COMPLETED
        return [refund_message_id(self.refund_id, kind, MAIL_DOMAIN)]


@dataclass
class Run:
    number: int
    kind: str
    delay_ms: float
    items: list[Item] = field(default_factory=list)
    # Jobs the killed worker held, by kind, when it died.
    jobs_at_kill: list[str] = field(default_factory=list)
    mail_before: Counter[str] = field(default_factory=Counter)
    # The Message-IDs whose mail.send job the killed worker held.
    mail_held: set[str] = field(default_factory=set)
    recovery_seconds: float = 0.0

    def describe(self) -> str:
        held = ", ".join(self.jobs_at_kill) or "nothing"
        return (
            f"run {self.number} ({self.kind}): killed {self.delay_ms:.0f} ms after "
            f"a worker claimed its job, holding {held}; done "
            f"{self.recovery_seconds:.1f} s later"
        )


class Work:
    """Prepares the work of each kind in the test process, on the shared database
    and chain, the way the API would leave it for the worker."""

    def __init__(self, runtime: Runtime, client: TestClient, api_key: str) -> None:
        self.runtime = runtime
        self.client = client
        self.api_key = api_key
        seed_catalog(runtime)
        self.chain = devnet_chain(runtime)
        self.payer = funded_account(self.chain, "100000")
        self.treasury = fund_treasury(runtime, "100000")

    def prepare(self, kind: str) -> Item:
        if kind == "payment":
            return self._payment()
        return self._refund(kind)

    def _payment(self) -> Item:
        """An order whose transfer is on chain and whose check is left to the job, as
        when the API process died between binding the txId and checking it."""
        body = order_body()
        body["payment"]["payerAddress"] = self.payer.address
        answer = self.client.post(
            ORDERS_API, json=body, headers={"X-API-KEY": self.api_key}
        )
        assert answer.status_code == 201, answer.text
        order = answer.json()["order"]
        units = int(Decimal(order["quote"]["totalPrice"]["amount"]).scaleb(6))
        tx_id = transfer(self.chain, self.payer, self.treasury, units)
        with self.runtime.session_factory() as session:
            locked = lock_order(session, order["orderId"])
            pending = payments.submit_payment(
                session,
                self.runtime.settings,
                self.runtime.chains,
                locked,
                tx_id,
                "crash-test",
            )
            assert pending is not None
            session.commit()
        return Item("payment", order["orderId"])

    def _refund(self, kind: str) -> Item:
        """An accepted refund whose label is left to the label job, or (payout) whose
        return is received, so its payout job is queued. Each order has a payer of
        its own, so its transfers can be counted."""
        order = shipped_order(self.runtime, delivered_days_ago=1)
        payer = Account.create().address
        with self.runtime.session_factory() as session, session.begin():
            session.execute(
                update(Order).where(Order.id == order.id).values(paid_from=payer)
            )
        refund_id = requested_direct(self.runtime, order.id, 0)
        with self.runtime.session_factory() as session, session.begin():
            locked = lock_order(session, order.id)
            refund = get_refund(session, locked, refund_id, for_update=True)
            review.accept_refund(session, locked, refund, actor="crash-test")
            if kind == "payout":
                review.receive_return(
                    session, locked, refund, actor="crash-test", source="api"
                )
        return Item(kind, order.id, refund_id, payer, order.line_item_totals[0])

    def make_due(self) -> None:
        """Run every queued job now: the label job waits two minutes otherwise."""
        with self.runtime.session_factory() as session, session.begin():
            session.execute(
                update(Job).where(Job.status == "queued").values(run_at=utcnow())
            )


# Checks after a run


def mail_counts(smtp: SmtpServer) -> Counter[str]:
    return Counter(str(message["Message-ID"]).strip() for message in smtp.messages)


def held_mail_ids(runtime: Runtime, pid: int) -> set[str]:
    """Return the Message-IDs whose mail.send job the worker `pid` holds."""
    held = set()
    with runtime.session_factory() as session:
        query = select(Job.payload).where(
            Job.kind == review.MAIL_JOB, Job.status == "running", held_by(pid)
        )
        for payload in session.scalars(query):
            kind = MailKind(payload["kind"])
            held.add(refund_message_id(payload["refund_id"], kind, MAIL_DOMAIN))
    return held


def failed_jobs(runtime: Runtime) -> list[str]:
    with runtime.session_factory() as session:
        query = select(Job).where(Job.status == "failed")
        return [
            f"{job.kind} {job.id}: {job.last_error}" for job in session.scalars(query)
        ]


def easypost_requests(easypost: FakeEasyPostServer, refund_id: str) -> Counter[str]:
    """Count the creates and buys of the refund's EasyPost shipment."""
    fake = easypost.fake
    reference = easypost_reference(refund_id)
    counts: Counter[str] = Counter()
    for request in list(fake.requests):
        if request.method != "POST":
            continue
        if request.path == "/v2/shipments":
            shipment = (request.body or {}).get("shipment") or {}
            if shipment.get("reference") == reference:
                counts["create"] += 1
        elif request.path.endswith("/buy"):
            shipment_id = request.path.split("/")[3]
            if fake.shipments.get(shipment_id, {}).get("reference") == reference:
                counts["buy"] += 1
    return counts


def check_mail(run: Run, smtp: SmtpServer) -> None:
    """Each email arrived once, or twice when the killed worker had sent it but not
    yet marked its job done: delivery is at least once, and the second copy carries
    the same Message-ID and bytes."""
    counts = mail_counts(smtp)
    for item in run.items:
        for message_id in item.message_ids():
            before = run.mail_before[message_id]
            assert before <= 1, f"{message_id} sent {before} times before the kill"
            expected = 1
            if message_id in run.mail_held and before == 1:
                expected = 2
            assert counts[message_id] == expected, (
                f"{message_id} arrived {counts[message_id]} times, expected "
                f"{expected}; {run.describe()}"
            )
            copies = [
                message.as_bytes()
                for message in smtp.messages
                if str(message["Message-ID"]).strip() == message_id
            ]
            assert len(set(copies)) == 1


def check_payment(runtime: Runtime, item: Item) -> None:
    order = order_row(runtime, item.order_id)
    assert order.payment_state == "completed"
    assert order.phase == "delivery"
    kinds = [event.kind for event in order_events(runtime, item.order_id)]
    assert kinds.count("payment.submitted") == 1
    assert kinds.count("payment.received") == 1
    with runtime.session_factory() as session:
        jobs = session.scalars(
            select(Job).where(
                Job.kind == payments.FULFILMENT_JOB,
                Job.dedupe_key == f"{payments.FULFILMENT_JOB}:{item.order_id}",
            )
        ).all()
    assert [job.status for job in jobs] == ["done"]


def check_label(runtime: Runtime, easypost: FakeEasyPostServer, item: Item) -> None:
    assert item.refund_id is not None
    refund = refund_row(runtime, item.refund_id)
    assert refund.status == "refund-request-accepted"
    assert refund.return_tracking_number is not None
    [parcel] = return_packages(runtime, item.order_id)
    assert parcel.tracking_number == refund.return_tracking_number
    kinds = [event.kind for event in order_events(runtime, item.order_id)]
    assert kinds.count(RefundEvent.RETURN_LABEL_ISSUED) == 1
    assert easypost_requests(easypost, item.refund_id) == {"create": 1, "buy": 1}


def check_payout(runtime: Runtime, treasury: str, item: Item) -> None:
    assert item.refund_id is not None and item.payer is not None
    assert item.amount is not None
    assert refund_row(runtime, item.refund_id).status == "refund-request-completed"
    [payout] = payouts_of(runtime, item.refund_id)
    assert payout.status == "confirmed"
    assert payout.to_address == item.payer
    [sent] = token_transfers(runtime, treasury, item.payer)
    units = to_base_units(item.amount, 6)
    assert int.from_bytes(bytes(sent["data"]), "big") == units
    assert usdc_balance(runtime, item.payer) == units
    assert order_row(runtime, item.order_id).refunded_amount == item.amount
    kinds = [event.kind for event in order_events(runtime, item.order_id)]
    assert kinds.count(RefundEvent.PAYOUT_SIGNED) == 1


def check_webhooks(runtime: Runtime, hooks: Receiver) -> None:
    """Every delivery row was delivered and reached the receiver, verified."""
    with runtime.session_factory() as session:
        rows = list(session.scalars(select(WebhookDelivery)))
    assert rows
    assert {row.status for row in rows} == {"delivered"}
    received = {request.message_id for request in hooks.requests}
    assert {row.message_id for row in rows} <= received
    assert all(request.verified_by for request in hooks.requests)


# The worker test


def watched_job_holder(runtime: Runtime, pids: list[int], kind: str) -> int | None:
    """Return the pid of the worker among `pids` that claimed a watched job, if any."""
    with runtime.session_factory() as session:
        query = select(Job.locked_by).where(
            Job.kind == WATCHED_JOB[kind], Job.status == "running"
        )
        for name in session.scalars(query):
            # A worker's name is host:pid:id (see orderdesk.jobs.worker).
            pid = int(str(name).split(":")[-2])
            if pid in pids:
                return pid
    return None


def held_jobs(runtime: Runtime, pid: int) -> list[str]:
    with runtime.session_factory() as session:
        query = select(Job.kind).where(Job.status == "running", held_by(pid))
        return sorted(session.scalars(query))


def expire_label_claims(runtime: Runtime, items: list[Item]) -> None:
    """End label claims of the run's refunds: only the dead worker held them."""
    refund_ids = [item.refund_id for item in items if item.refund_id]
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(Refund)
            .where(Refund.id.in_(refund_ids), Refund.label_claimed_until.is_not(None))
            .values(label_claimed_until=None)
        )


# A run takes about 4 s on a 2-core machine; the limit leaves room for a slow one.
@pytest.mark.timeout(300 + 30 * crash_runs())
def test_killed_workers_finish_every_job(
    runtime: Runtime,
    client: TestClient,
    api_key: str,
    services: ServiceProcesses,
    smtp: SmtpServer,
    easypost: FakeEasyPostServer,
    receiver: Receiver,  # noqa: F811
) -> None:
    seed = crash_seed()
    print(f"worker crash runs: seed {seed} (ORDERDESK_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)
    endpoint = create_endpoint(client, api_key, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    work = Work(runtime, client, api_key)
    runs: list[Run] = []
    # Workers share the queue. The one that claimed the watched job is killed, and a
    # new one starts at once. The others go on meanwhile, and the seconds that a new
    # worker needs to start (mostly imports) overlap the next run.
    started = [services.start_worker() for _ in range(WORKERS)]
    workers = {process.pid: process for process in started}

    run_count = crash_runs()
    if runtime.engine.dialect.name == "sqlite":
        run_count = max(len(KINDS), math.ceil(run_count / 2))
    for number in range(run_count):
        # Start with two workers polling, so one goes on when the other is killed.
        wait_until(
            lambda: sum(services.worker_ready(pid) for pid in workers) >= 2,
            RUN_TIMEOUT_SECONDS,
            "two workers polling",
            services.logs,
        )
        kind = KINDS[number % len(KINDS)]
        run = Run(number, kind, rng.uniform(0, MAX_KILL_DELAY_MS[kind]))
        runs.append(run)
        run.items = [work.prepare(kind) for _ in range(ITEMS_PER_RUN)]
        work.make_due()

        holder: list[int | None] = [None]

        def found(kind: str = kind, holder: list[int | None] = holder) -> bool:
            holder[0] = watched_job_holder(runtime, list(workers), kind)
            return holder[0] is not None or open_jobs(runtime) == 0

        wait_until(
            found,
            RUN_TIMEOUT_SECONDS,
            f"a {WATCHED_JOB[kind]} job on a worker",
            services.logs,
        )
        time.sleep(run.delay_ms / 1000)
        victim = workers.pop(holder[0] or rng.choice(sorted(workers)))
        kill(victim)
        run.jobs_at_kill = held_jobs(runtime, victim.pid)
        # Let the SMTP server finish a message that was in flight at the kill. The
        # wait also lets PostgreSQL apply a COMMIT that the worker sent just before it
        # died, which would otherwise land after the claims below are ended.
        time.sleep(1.0)
        run.mail_before = mail_counts(smtp)
        run.mail_held = held_mail_ids(runtime, victim.pid)
        # Claims first: a worker that found the label job free but still claimed
        # would wait out the claim's two minutes.
        expire_label_claims(runtime, run.items)
        expire_leases_of(runtime, victim.pid)
        killed_at = time.monotonic()
        replacement = services.start_worker()
        workers[replacement.pid] = replacement

        wait_until(
            lambda: open_jobs(runtime) == 0,
            RUN_TIMEOUT_SECONDS,
            f"every job of {run.describe()}",
            lambda: f"failed: {failed_jobs(runtime)}\n{services.logs()}",
        )
        run.recovery_seconds = time.monotonic() - killed_at
        print(run.describe())
        check_mail(run, smtp)
        for item in run.items:
            if kind == "payment":
                check_payment(runtime, item)
            elif kind == "label":
                check_label(runtime, easypost, item)
            else:
                check_payout(runtime, work.treasury, item)

    wait_until(lambda: open_jobs(runtime) == 0, RUN_TIMEOUT_SECONDS, "the last jobs")
    check_webhooks(runtime, receiver)
    interrupted = [run for run in runs if WATCHED_JOB[run.kind] in run.jobs_at_kill]
    print(
        f"{len(interrupted)} of {len(runs)} kills hit a worker that had claimed "
        "the watched job"
    )
    resent = [m for run in runs for m in run.mail_held if run.mail_before[m] == 1]
    print(f"{len(resent)} emails were sent again after a kill between send and commit")
    assert failed_jobs(runtime) == []
    if len(runs) >= len(KINDS):
        assert interrupted, "no kill hit a worker that had claimed the watched job"


# The API test


@dataclass
class Answered:
    """The 2xx responses that the writers received, by kind."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # Requests in flight when the server died: their outcome is unknown.
    cut_off: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.orders) + len(self.refunds) + len(self.events)


@dataclass
class Targets:
    """Rows the writers act on: shipped orders for refunds, packages for events."""

    refund_orders: list[tuple[str, int]]
    packages: list[tuple[str, str]]


def make_targets(runtime: Runtime) -> Targets:
    refund_orders = []
    for _ in range(6):
        order = shipped_order(runtime, items=3, delivered_days_ago=1)
        refund_orders.append((order.id, 3))
    packages = []
    with runtime.session_factory() as session, session.begin():
        owner = factories.project_id(session, runtime.settings)
        for _ in range(4):
            paid = factories.make_paid_order(session, owner)
            package = factories.make_package(session, paid.id, [0])
            packages.append((paid.id, package.id))
    return Targets(refund_orders, packages)


def write_until(
    url: str,
    key: str,
    targets: Targets,
    answered: Answered,
    stop: threading.Event,
    rng: random.Random,
) -> None:
    """Send writes until `stop` is set or the server is gone."""
    http = requests.Session()
    http.headers["X-API-KEY"] = key
    while not stop.is_set():
        choice = rng.random()
        try:
            if choice < 0.4:
                _create_order(http, url, answered)
            elif choice < 0.7:
                _request_refund(http, url, targets, answered, rng)
            else:
                _post_event(http, url, targets, answered, rng)
        except requests.RequestException:
            # The server was killed with this request in flight.
            with answered.lock:
                answered.cut_off += 1
            return


def _create_order(http: requests.Session, url: str, answered: Answered) -> None:
    response = http.post(f"{url}{ORDERS_API}", json=order_body(), timeout=30)
    if response.status_code != 201:
        answered.unexpected.append(
            f"create order: {response.status_code} {response.text}"
        )
        return
    order = response.json()["order"]
    with answered.lock:
        answered.orders[order["orderId"]] = order


def _request_refund(
    http: requests.Session,
    url: str,
    targets: Targets,
    answered: Answered,
    rng: random.Random,
) -> None:
    order_id, count = rng.choice(targets.refund_orders)
    line_item = rng.randrange(count)
    response = http.post(
        f"{url}{ORDERS}/{order_id}/refunds",
        json={"lineItem": line_item, "reason": "Not as described."},
        headers={"Idempotency-Key": f"{order_id}-{line_item}-{rng.randrange(10**9)}"},
        timeout=30,
    )
    if response.status_code == 201:
        refund = response.json()
        with answered.lock:
            answered.refunds[refund["refundId"]] = refund
    elif response.status_code != 409 or response.json().get("code") != (
        "refund_already_requested"
    ):
        answered.unexpected.append(f"refund: {response.status_code} {response.text}")


def _post_event(
    http: requests.Session,
    url: str,
    targets: Targets,
    answered: Answered,
    rng: random.Random,
) -> None:
    order_id, package_id = rng.choice(targets.packages)
    body = {
        "status": rng.choice(["shipped", "out-for-delivery", "exception"]),
        "occurredAt": iso(hours_ago(rng.uniform(1, 48))),
        "location": "Reno, NV",
    }
    response = http.post(
        f"{url}{ORDERS}/{order_id}/shipments/{package_id}/events",
        json=body,
        timeout=30,
    )
    if response.status_code in (200, 201):
        with answered.lock:
            answered.events.append((package_id, body))
    else:
        answered.unexpected.append(f"event: {response.status_code} {response.text}")


def check_database(
    runtime: Runtime, answered: Answered, factory_orders: set[str]
) -> None:
    """Every write that got a 2xx response is stored whole, and nothing is stored
    half."""
    with runtime.session_factory() as session:
        orders = {order.id: order for order in session.scalars(select(Order))}
        events = list(session.scalars(select(OrderEvent)))
        created = {e.order_id for e in events if e.kind == "order.created"}
        for order_id, body in answered.orders.items():
            assert order_id in orders, f"answered order {order_id} is missing"
            stored = orders[order_id]
            assert len(stored.line_items) == len(body["lineItems"])
            assert str(stored.total_amount) == body["quote"]["totalPrice"]["amount"]
        for order in orders.values():
            indexes = [item.index for item in order.line_items]
            assert indexes == list(range(len(indexes))), order.id
            assert indexes, f"order {order.id} has no line items"
            if order.id not in factory_orders:
                assert order.id in created, f"order {order.id} has no creation event"
        orphans = session.scalar(
            select(func.count())
            .select_from(LineItem)
            .where(LineItem.order_id.not_in(list(orders)))
        )
        assert orphans == 0

        refunds = list(session.scalars(select(Refund)))
        requested = {e.subject_id for e in events if e.kind == RefundEvent.REQUESTED}
        for refund in refunds:
            assert refund.order_id in orders, f"refund {refund.id} has no order"
            assert refund.line_item < len(orders[refund.order_id].line_items)
            assert refund.id in requested, f"refund {refund.id} has no request event"
        for refund_id in answered.refunds:
            assert refund_id in {refund.id for refund in refunds}
        active = Counter(
            (refund.order_id, refund.line_item)
            for refund in refunds
            if refund.status in ACTIVE_STATUSES
        )
        assert all(count == 1 for count in active.values())
        unfilled = session.scalar(
            select(func.count())
            .select_from(IdempotencyRecord)
            .where(IdempotencyRecord.status_code != 201)
        )
        assert unfilled == 0

        recorded = {
            (e.data or {}).get("eventId")
            for e in events
            if e.kind in ("package.status_changed", "package.event_recorded")
        }
        stored_events = list(session.scalars(select(TrackingEvent)))
        assert {event.id for event in stored_events} == recorded - {None}
        by_package: dict[str, set[tuple[str, str]]] = {}
        for event in stored_events:
            key = (event.status, iso(event.occurred_at))
            by_package.setdefault(event.package_id, set()).add(key)
        for package_id, body in answered.events:
            key = (body["status"], body["occurredAt"])
            assert key in by_package.get(package_id, set()), "answered event missing"
        for package in session.scalars(select(Package)):
            deciding = deciding_event(package.events)
            if deciding is not None:
                assert package.status == deciding.status, package.id


def sqlite_is_intact(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "sqlite":
        return
    with runtime.engine.connect() as connection:
        assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"


API_WRITERS = 4


@pytest.mark.timeout(300 + 10 * crash_runs())
def test_killed_api_keeps_database_whole(
    runtime: Runtime, api_key: str, services: ServiceProcesses
) -> None:
    seed = crash_seed()
    print(f"API crash runs: seed {seed} (ORDERDESK_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)
    seed_catalog(runtime)
    targets = make_targets(runtime)
    factory_orders = {order_id for order_id, _ in targets.refund_orders} | {
        order_id for order_id, _ in targets.packages
    }
    answered = Answered()
    runs = max(2, crash_runs() // 10)

    for number in range(runs):
        api = services.start_api()
        stop = threading.Event()
        writers = [
            threading.Thread(
                target=write_until,
                args=(
                    api.url,
                    api_key,
                    targets,
                    answered,
                    stop,
                    random.Random(rng.random()),
                ),
            )
            for _ in range(API_WRITERS)
        ]
        before = answered.count()
        for writer in writers:
            writer.start()
        # Kill once writes flow, at a random point within the next 1.5 s.
        wait_until(
            lambda before=before: answered.count() >= before + API_WRITERS,
            60,
            f"answers from API run {number}",
            services.logs,
        )
        delay = rng.uniform(0, 1.5)
        time.sleep(delay)
        kill(api.process)
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
        print(
            f"API run {number}: killed {delay:.2f} s after the first answers, "
            f"{answered.count() - before} answered"
        )
        assert answered.unexpected == []
        sqlite_is_intact(runtime)
        check_database(runtime, answered, factory_orders)

    print(f"{answered.cut_off} requests were in flight at the kills")
    assert answered.cut_off > 0, "no kill landed while a request was in flight"
    # After the crashes a new process serves every order it created.
    api = services.start_api()
    for order_id in answered.orders:
        response = requests.get(
            f"{api.url}{ORDERS_API}/{order_id}",
            headers={"X-API-KEY": api_key},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    assert answered.orders
    assert answered.refunds
    assert answered.events
