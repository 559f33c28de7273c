"""The service when a dependency fails and comes back.

- PostgreSQL stopped under load: a private server of the test's own (initdb and
  pg_ctl in a temporary directory) behind a real `orderdesk serve` process. While it
  is down every request gets 503 database_unavailable within a bounded time, never a
  500; once it is back the pool reconnects, the worker runs jobs again, and no order
  is half written.
- The chain node unreachable: ganache behind a chains file, stopped and started on
  the same port. Payments stay in progress meanwhile and complete once it is back.
- SMTP refusing: an aiosmtpd server on loopback that answers 451 or 554, or does not
  listen at all. The worker retries the email, and once the server accepts, the
  message arrives exactly once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from tests.conftest import IN_CI, TEST_SECRET, free_port, make_settings
from tests.orders.helpers import ORDERS, order_body, seed_catalog
from tests.refunds.test_payout_ganache import ganache_cli  # noqa: F401 - a fixture
from tests.reliability.procs import ORDERDESK, wait_for_ready

from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.auth.services import create_api_key, get_or_create_project
from orderdesk.jobs.models import Job
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.runtime import Runtime

# A request during the outage must be answered within this many seconds.
OUTAGE_ANSWER_SECONDS = 12.0
LOAD_THREADS = 4


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI must run this test", pytrace=False)
    pytest.skip(reason)


def make_key(runtime: Runtime, project: str = "test-project") -> str:
    with runtime.session_factory() as session, session.begin():
        owner = get_or_create_project(session, runtime.settings, project)
        _key, value = create_api_key(
            session, owner, runtime.settings.environment, list(ALL_SCOPES)
        )
    return value


# A private PostgreSQL server


def _postgres_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, on a free loopback port, run
    as the postgres user when the test runs as root (initdb refuses root)."""

    bin_dir: Path
    directory: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *command], check=True, capture_output=True, timeout=timeout
        )

    def init(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D", str(self.directory / "data"),
            "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-k {self.directory} -c fsync=off -c max_connections=100"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D", str(self.directory / "data"),
            "-l", str(self.directory / "server.log"),
            "-o", options, "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop at once: open transactions are rolled back, sessions cut."""
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop",
        )  # fmt: skip

    def stop_quietly(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        unavailable("initdb and pg_ctl are needed for a private PostgreSQL server")
    assert bin_dir is not None
    directory = Path(tempfile.mkdtemp(prefix="orderdesk-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    server = PrivatePostgres(bin_dir, directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop_quietly()
        shutil.rmtree(directory, ignore_errors=True)


# Webhook receiver, to see the worker run jobs


class Receiver:
    """An HTTP server on loopback that records the order id of each webhook."""

    def __init__(self) -> None:
        self.order_ids: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server hook name
                import json

                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                receiver.order_ids.append(body["data"].get("orderId", ""))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# PostgreSQL stopped and restarted under load


@dataclass
class Outcome:
    tag: str
    status: int | None
    seconds: float
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def tagged_order(tag: str) -> dict[str, Any]:
    """An order whose recipient name carries `tag`, to find it in the database."""
    body = order_body()
    body["recipient"]["physicalAddress"]["name"] = tag
    return body


class Load:
    """Threads that create orders in a loop and record every answer."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(index,))
            for index in range(LOAD_THREADS)
        ]

    def _run(self, index: int) -> None:
        count = 0
        while not self.stopping.is_set():
            tag = f"load-{index}-{count}"
            count += 1
            started = time.monotonic()
            try:
                response = requests.post(
                    self.url + ORDERS,
                    json=tagged_order(tag),
                    headers={"X-API-KEY": self.key},
                    timeout=OUTAGE_ANSWER_SECONDS + 10,
                )
                outcome = Outcome(
                    tag,
                    response.status_code,
                    time.monotonic() - started,
                    response.json(),
                    {name.lower(): value for name, value in response.headers.items()},
                )
            except requests.RequestException as exc:
                outcome = Outcome(
                    tag, None, time.monotonic() - started, error=repr(exc)
                )
            with self.lock:
                self.outcomes.append(outcome)
            time.sleep(0.02)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def since(self, position: int) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes[position:])

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)


def serve_process(
    url: str, tmp_path: Path, port: int, **extra_env: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ORDERDESK_DATABASE_URL": url,
        "ORDERDESK_TREASURY_SECRET": TEST_SECRET,
        "ORDERDESK_DATA_DIR": str(tmp_path / "var"),
        "ORDERDESK_MAIL_DIR": str(tmp_path / "mail"),
        "ORDERDESK_RATE_LIMIT_WRITES_PER_MINUTE": "0",
        "ORDERDESK_RATE_LIMIT_READS_PER_MINUTE": "0",
        "ORDERDESK_WORKER_POLL_SECONDS": "0.2",
        "ORDERDESK_LOG_FORMAT": "json",
        **extra_env,
    }
    with open(tmp_path / "serve.log", "ab") as log:
        return subprocess.Popen(
            [*ORDERDESK, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(
    check: Callable[[], bool], timeout: float, message: str, step: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(step)


def readyz(url: str) -> int:
    try:
        return requests.get(url + "/readyz", timeout=10).status_code
    except requests.RequestException:
        return 0


def test_postgres_outage_under_load(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    settings = make_settings(private_postgres.url, tmp_path)
    runtime = Runtime.build(settings)
    runtime.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "serve.log"
    try:
        seed_catalog(runtime)
        key = make_key(runtime)
        with Receiver() as receiver:
            process = serve_process(private_postgres.url, tmp_path, port)
            try:
                wait_for_ready(url, process, lambda: logs.read_text(errors="replace"))
                created = requests.post(
                    url + "/api/unstable/webhooks",
                    json={"url": receiver.url, "events": ["orders.quote.created"]},
                    headers={"X-API-KEY": key},
                    timeout=10,
                )
                assert created.status_code == 201, created.text
                result = run_outage(private_postgres, url, key, receiver)
            finally:
                stop_process(process)
    finally:
        runtime.close()
    check_outage(result, runtime, logs)


@dataclass
class OutageResult:
    before: list[Outcome]
    during: list[Outcome]
    after: list[Outcome]
    ready_during: int
    ready_after: int
    read_during: Outcome
    settled: list[Outcome]
    delivered_after: list[str]


def run_outage(
    server: PrivatePostgres, url: str, key: str, receiver: Receiver
) -> OutageResult:
    with Load(url, key) as load:
        wait_for(lambda: load.count() >= 20, 60, "no load before the outage")
        stop_at = load.count()
        server.stop()
        # Requests sent once the server is down, for a few seconds.
        time.sleep(1.0)
        down_at = load.count()
        time.sleep(4.0)
        ready_during = readyz(url)
        read_during = read_order(url, key, load.since(0)[0])
        up_at = load.count()
        server.start()
        wait_for(
            lambda: any(o.status == 201 for o in load.since(up_at)),
            60,
            "no order was created after PostgreSQL came back",
        )
        time.sleep(2.0)
        outcomes = load.since(0)
    ready_after = readyz(url)
    # Once the load has stopped: every request succeeds, and the worker delivers the
    # webhook of each new order.
    settled = []
    for index in range(10):
        started = time.monotonic()
        response = requests.post(
            url + ORDERS,
            json=tagged_order(f"settled-{index}"),
            headers={"X-API-KEY": key},
            timeout=30,
        )
        settled.append(
            Outcome(
                f"settled-{index}",
                response.status_code,
                time.monotonic() - started,
                response.json(),
            )
        )
    new_ids = [o.body["order"]["orderId"] for o in settled if o.status == 201]
    wait_for(
        lambda: set(new_ids) <= set(receiver.order_ids),
        60,
        "the worker did not deliver the webhooks of orders made after the outage",
    )
    return OutageResult(
        before=outcomes[:stop_at],
        during=outcomes[down_at:up_at],
        after=outcomes[up_at:],
        ready_during=ready_during,
        ready_after=ready_after,
        read_during=read_during,
        settled=settled,
        delivered_after=new_ids,
    )


def read_order(url: str, key: str, created: Outcome) -> Outcome:
    order_id = created.body["order"]["orderId"]
    started = time.monotonic()
    response = requests.get(
        f"{url}{ORDERS}/{order_id}", headers={"X-API-KEY": key}, timeout=30
    )
    return Outcome(
        f"read-{order_id}",
        response.status_code,
        time.monotonic() - started,
        response.json(),
        {name.lower(): value for name, value in response.headers.items()},
    )


def check_outage(result: OutageResult, runtime: Runtime, logs: Path) -> None:
    print(
        f"orders created before the outage: {len(result.before)}, requests while "
        f"PostgreSQL was down: {len(result.during)}, after: {len(result.after)} "
        f"({sum(o.status == 201 for o in result.after)} created), slowest answer "
        f"while down: {max(o.seconds for o in result.during):.2f} s"
    )
    everything = result.before + result.during + result.after + result.settled
    everything.append(result.read_during)
    statuses = sorted({outcome.status for outcome in everything}, key=str)
    assert [o for o in everything if o.status is None] == [], "requests went unanswered"
    assert set(statuses) <= {201, 503}, statuses
    assert all(o.status == 201 for o in result.before)
    # While the server was down, every request got the documented 503 in time.
    assert len(result.during) >= LOAD_THREADS
    assert all(o.status == 503 for o in result.during), [
        (o.tag, o.status) for o in result.during
    ]
    for outcome in everything:
        assert outcome.seconds < OUTAGE_ANSWER_SECONDS, outcome
        if outcome.status == 503:
            assert outcome.body["error"] is True
            assert outcome.body["code"] == "database_unavailable"
            assert "Retry the request" in outcome.body["message"]
            assert outcome.headers["retry-after"] == "5"
    assert result.ready_during == 503
    assert result.read_during.status == 503
    assert result.ready_after == 200
    assert [o.status for o in result.settled] == [201] * len(result.settled)
    assert "Traceback" not in logs.read_text(errors="replace")

    # No half-written order: every 201 order is whole, and an order of a request
    # that got an error either does not exist or is whole too.
    runtime = Runtime.build(runtime.settings)
    try:
        with runtime.session_factory() as session:
            orders = session.scalars(select(Order)).all()
            by_tag: dict[str, list[Order]] = {}
            for order in orders:
                name = (order.recipient or {}).get("physicalAddress", {}).get("name")
                by_tag.setdefault(name, []).append(order)
            for order in orders:
                items = session.scalars(
                    select(LineItem).where(LineItem.order_id == order.id)
                ).all()
                events = session.scalar(
                    select(func.count())
                    .select_from(OrderEvent)
                    .where(OrderEvent.order_id == order.id)
                )
                assert len(items) == 2, order.id
                assert events and events >= 1, order.id
                total = sum((item.total or Decimal(0) for item in items), Decimal(0))
                assert order.total_amount == total, order.id
            for outcome in everything:
                found = by_tag.get(outcome.tag, [])
                assert len(found) <= 1, outcome.tag
                if outcome.status == 201:
                    assert [o.id for o in found] == [outcome.body["order"]["orderId"]]
            failed_jobs = session.scalar(
                select(func.count()).select_from(Job).where(Job.status == "failed")
            )
            assert failed_jobs == 0
    finally:
        runtime.close()


# The chain node unreachable


@dataclass
class RestartableGanache:
    """ganache on a fixed loopback port with its chain kept in a folder, so that it
    can be stopped and started again with the same blocks and balances."""

    command: list[str]
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from tests.refunds.test_payout_ganache import (
            CHAIN_ID,
            DEPLOYER,
            DEPLOYER_WEI,
            _wait_for_node,
        )

        log_path = self.directory / "ganache.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.command,
                    "--server.host", "127.0.0.1",
                    "--server.port", str(self.port),
                    "--server.ws", "false",
                    "--chain.chainId", str(CHAIN_ID),
                    "--database.dbPath", str(self.directory / "chain"),
                    "--wallet.accounts", f"0x{DEPLOYER.key.hex()},{DEPLOYER_WEI}",
                    "--logging.quiet",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_for_node(self.url, self.process, log_path)

    def stop(self) -> None:
        assert self.process is not None
        stop_process(self.process)
        self.process = None


@pytest.fixture
def node(
    ganache_cli: list[str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> Iterator[RestartableGanache]:
    directory = tmp_path / "ganache"
    (directory / "chain").mkdir(parents=True)
    node = RestartableGanache(ganache_cli, directory)
    node.start()
    try:
        yield node
    finally:
        if node.process is not None:
            node.stop()


def deploy_token(node: RestartableGanache) -> Any:
    """The test token on the node, as the ganache payout test deploys it."""
    from eth_abi import encode as abi_encode
    from tests.refunds.test_payout_ganache import DEPLOYER, Ganache
    from web3 import HTTPProvider, Web3

    from orderdesk.payments.contract import compile_devnet_token

    web3 = Web3(HTTPProvider(node.url, request_kwargs={"timeout": 10}))
    chain = Ganache(node.url, web3, token="")
    compiled = compile_devnet_token()
    constructor = abi_encode(["string", "string", "uint8"], ["USD Coin", "USDC", 6])
    deployed = chain.send(DEPLOYER, data=compiled.bytecode + constructor, gas=3_000_000)
    chain.token = web3.eth.get_transaction_receipt(deployed)["contractAddress"]
    return chain


def chains_file(path: Path, node: RestartableGanache, token: str) -> Path:
    from tests.refunds.test_payout_ganache import CHAIN, CHAIN_ID

    path.write_text(
        f"""
[[chains]]
name = "{CHAIN}"
chain_id = {CHAIN_ID}
rpc_url = "{node.url}"
confirmations = 2

[chains.tokens.usdc]
address = "{token}"
decimals = 6
""",
        encoding="utf-8",
    )
    return path


def test_chain_node_unreachable_then_back(
    node: RestartableGanache, tmp_path: Path, database_url: str
) -> None:
    from fastapi.testclient import TestClient
    from tests.refunds.helpers import make_jobs_due, run_jobs
    from tests.refunds.test_payout_ganache import CHAIN, funded_payer

    from orderdesk.app import create_app
    from orderdesk.payments.amounts import to_base_units
    from orderdesk.payments.erc20 import transfer_calldata

    chain = deploy_token(node)
    settings = make_settings(
        database_url,
        tmp_path,
        chains_file=chains_file(tmp_path / "chains.toml", node, chain.token),
        devnet=False,
    )
    runtime = Runtime.build(settings)
    runtime.start()
    try:
        seed_catalog(runtime)
        key = make_key(runtime)
        headers = {"X-API-KEY": key}
        payer = funded_payer(chain, "500")
        body = order_body()
        body["payment"] = {
            "method": CHAIN,
            "currency": "usdc",
            "payerAddress": payer.address,
        }
        with TestClient(
            create_app(runtime=runtime), raise_server_exceptions=False
        ) as client:
            created = client.post(ORDERS, json=body, headers=headers)
            assert created.status_code == 201, created.text
            order = created.json()["order"]
            assert order["payment"]["status"] == "awaiting-payment"
            order_id = order["orderId"]
            treasury = order_treasury(runtime, order_id)
            total = to_base_units(Decimal(order["quote"]["totalPrice"]["amount"]), 6)
            tx_id = chain.send(
                payer, to=chain.token, data=transfer_calldata(treasury, total)
            )

            node.stop()
            submitted = client.post(
                f"{ORDERS}/{order_id}/payment",
                json={"type": "crypto-tx-id", "txId": tx_id},
                headers=headers,
            )
            assert submitted.status_code == 200, submitted.text
            assert submitted.json()["payment"]["status"] == "in-progress"
            # The worker checks again and again while the node is down.
            for _ in range(3):
                make_jobs_due(runtime, "payment.recheck")
                run_jobs(runtime)
                read = client.get(f"{ORDERS}/{order_id}", headers=headers)
                assert read.status_code == 200, read.text
                assert read.json()["payment"]["status"] == "in-progress"
            [job] = jobs_of_kind(runtime, "payment.recheck")
            assert job.status == "queued"
            assert job.attempts == 0  # a planned re-check uses no attempt
            assert "chain unavailable" in (job.last_error or "")
            # A new order on the chain cannot be prepared, and says so.
            second = client.post(ORDERS, json=body, headers=headers)
            assert second.status_code in (201, 503), second.text
            if second.status_code == 503:
                assert second.json()["code"] == "chain_unavailable"

            node.start()
            chain.mine()  # the second confirmation
            make_jobs_due(runtime, "payment.recheck")
            run_jobs(runtime)
            paid = client.get(f"{ORDERS}/{order_id}", headers=headers).json()
    finally:
        runtime.close()

    assert paid["payment"]["status"] == "completed", paid["payment"]
    assert paid["payment"]["received"]["txId"] == tx_id
    assert paid["phase"] == "delivery"


def order_treasury(runtime: Runtime, order_id: str) -> str:
    with runtime.session_factory() as session:
        return session.get_one(Order, order_id).treasury_address


def jobs_of_kind(runtime: Runtime, kind: str) -> list[Job]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind)))


# SMTP refusing


class Inbox:
    """An aiosmtpd handler that refuses while `refusal` is set, else keeps mail."""

    def __init__(self, refusal: str | None) -> None:
        self.refusal = refusal
        self.accepted: list[Any] = []
        self.refused_message_ids: list[str] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refusal == "554":
            return "554 5.7.1 Relaying is paused for this sender"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        from email import message_from_bytes, policy

        content = envelope.original_content.replace(b"\r\n", b"\n")
        message = message_from_bytes(content, policy=policy.default)
        if self.refusal == "451":
            self.refused_message_ids.append(str(message["Message-ID"]))
            return "451 4.3.0 Mailbox busy, try again later"
        self.accepted.append(message)
        return "250 Message accepted"


def start_smtp(inbox: Inbox, port: int) -> Any:
    from aiosmtpd.controller import Controller

    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.mark.parametrize("refusal", ["451", "554", "not-listening"])
def test_email_retried_until_smtp_accepts(
    refusal: str, database_url: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient
    from tests.refunds.helpers import (
        jobs_of,
        make_jobs_due,
        refund_request,
        reviewed,
        run_jobs,
        shipped_order,
    )

    from orderdesk.app import create_app

    port = free_port()
    inbox = Inbox(None if refusal == "not-listening" else refusal)
    controller = None if refusal == "not-listening" else start_smtp(inbox, port)
    settings = make_settings(
        database_url,
        tmp_path,
        smtp_url=f"smtp://127.0.0.1:{port}?starttls=off",
        smtp_timeout_seconds=5,
    )
    runtime = Runtime.build(settings)
    runtime.start()
    try:
        order = shipped_order(runtime)
        key = make_key(runtime)
        with TestClient(
            create_app(runtime=runtime), raise_server_exceptions=False
        ) as client:
            request = refund_request(
                client, order.id, {"lineItem": 0, "reason": "Leaks."}, key=key
            )
            assert request.status_code == 201, request.text
            reviewed(client, key, order.id, request.json()["refundId"], "reject")

        errors = []
        for attempt in range(1, 4):
            make_jobs_due(runtime, "mail.send")
            run_jobs(runtime)
            [job] = jobs_of(runtime, "mail.send")
            assert job.status == "queued", job.last_error
            assert job.attempts == attempt
            errors.append(job.last_error or "")
        assert inbox.accepted == []

        inbox.refusal = None
        if controller is None:
            controller = start_smtp(inbox, port)
        make_jobs_due(runtime, "mail.send")
        run_jobs(runtime)
        [job] = jobs_of(runtime, "mail.send")
        # Nothing is due any more, so nothing is sent again.
        make_jobs_due(runtime, "mail.send")
        run_jobs(runtime)
    finally:
        runtime.close()
        if controller is not None:
            controller.stop()

    expected_error = {
        "451": "451 4.3.0 Mailbox busy",
        "554": "554",
        "not-listening": "Connection refused",
    }[refusal]
    assert all(expected_error in error for error in errors), errors
    assert job.status == "done"
    message_ids = [str(message["Message-ID"]) for message in inbox.accepted]
    assert len(message_ids) == 1
    assert inbox.accepted[0]["Subject"]
    if refusal == "451":
        # Each refused attempt sent the same message, Message-ID included.
        assert inbox.refused_message_ids == message_ids * 3
