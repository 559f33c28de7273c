"""Worker throughput: accepted refunds (return label PDF + email) and webhooks.

One `orderdesk worker` process runs against a database seeded with accepted
refunds whose `refund.return_label` jobs are not due yet. After a warm-up batch,
the bench makes the rest due in one transaction and times the worker until every
refund's `mail.send` job is done. Per refund, the worker renders the label PDF and
records the return parcel. Then it attaches the label (kept rendered in the process)
to the email and sends that to an SMTP server on loopback. Then the bench emits webhook
events to an endpoint on a loopback receiver and times their deliveries.

The SMTP server is postfix's `smtp-sink` where it is installed (Debian's postfix
package), else an aiosmtpd server in the bench process. The worker waits for the
server's reply to each message. aiosmtpd reads the message line by line in Python,
and waiting for it was about a fifth of the worker's time in a profile. smtp-sink is
a C program made for load tests, and the worker sent about a quarter more refunds
per second to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from harness import ServerGroup, free_port, service_environment
from seed import RowFactory, prepare, seed_engine, seed_worker_refunds
from sqlalchemy import Engine, create_engine, func, select, text, update
from sqlalchemy.orm import Session

from orderdesk.config import Settings
from orderdesk.jobs.models import Job
from orderdesk.webhooks import events as webhook_events
from orderdesk.webhooks.models import WebhookDelivery
from orderdesk.webhooks.services import create_endpoint, emit_event

NOT_YET = datetime(2100, 1, 1, tzinfo=UTC)
WARM_UP_REFUNDS = 20
POLL_SECONDS = 0.05
# The worker's idle poll, set short so a batch made due is picked up at once (a
# busy worker never waits for it).
WORKER_POLL_SECONDS = "0.1"


SMTP_SINK = "/usr/sbin/smtp-sink"
# The length of smtp-sink's queue of connections not yet accepted.
SMTP_SINK_BACKLOG = "64"


class SmtpSink:
    """An aiosmtpd server on loopback that counts messages and label attachments."""

    name = "aiosmtpd"

    def __init__(self) -> None:
        self.port = free_port()
        self.messages = 0
        self.with_pdf = 0
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content
        with self._lock:
            self.messages += 1
            if b"application/pdf" in content:
                self.with_pdf += 1
        return "250 Message accepted"

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class PostfixSink:
    """Postfix's smtp-sink on loopback. It writes each message to a file of its own,
    and the files are counted as messages and label attachments."""

    name = "postfix smtp-sink"

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="orderdesk-bench-mail-"))
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return Path(SMTP_SINK).exists()

    @property
    def messages(self) -> int:
        return sum(1 for _ in self.folder.iterdir())

    @property
    def with_pdf(self) -> int:
        return sum(
            b"application/pdf" in path.read_bytes() for path in self.folder.iterdir()
        )

    def start(self) -> PostfixSink:
        command = [SMTP_SINK, "-d", f"{self.folder}/"]
        if os.geteuid() == 0:
            # smtp-sink does not run as root: it writes the files as this user.
            command += ["-u", "nobody"]
            shutil.chown(self.folder, user="nobody")
        command += [f"127.0.0.1:{self.port}", SMTP_SINK_BACKLOG]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"smtp-sink did not start on port {self.port}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)


def smtp_sink(choice: str) -> SmtpSink | PostfixSink:
    """Start the SMTP server named by `choice`: postfix, aiosmtpd or auto (postfix's
    smtp-sink when installed, else aiosmtpd)."""
    if choice == "aiosmtpd" or (choice == "auto" and not PostfixSink.available()):
        return SmtpSink().start()
    if not PostfixSink.available():
        raise RuntimeError(
            f"{SMTP_SINK} is missing: install it with `apt-get install -y postfix`, "
            "or pass --smtp aiosmtpd"
        )
    return PostfixSink().start()


@dataclass
class WorkerResult:
    refunds: int
    refund_seconds: float
    emails: int
    emails_with_pdf: int
    webhooks: int
    webhook_seconds: float
    smtp_server: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "refunds": self.refunds,
            "refund_seconds": round(self.refund_seconds, 3),
            "refunds_per_second": round(self.refunds / self.refund_seconds, 1)
            if self.refund_seconds
            else None,
            "emails": self.emails,
            "emails_with_pdf": self.emails_with_pdf,
            "webhooks": self.webhooks,
            "webhook_seconds": round(self.webhook_seconds, 3),
            "webhooks_per_second": round(self.webhooks / self.webhook_seconds, 1)
            if self.webhook_seconds
            else None,
            "smtp_server": self.smtp_server,
            "notes": self.notes,
        }


def _count_done(engine: Engine, kind: str) -> int:
    with Session(engine) as session:
        return session.scalar(
            select(func.count()).where(Job.kind == kind, Job.status == "done")
        )


def _count_failed(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).where(Job.status == "failed"))


def _wait_for(engine: Engine, kind: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _count_done(engine, kind) < count:
        if _count_failed(engine):
            raise RuntimeError(f"a worker job failed while waiting for {kind} jobs")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the worker finished {_count_done(engine, kind)} of {count} "
                f"{kind} jobs in {timeout:.0f} s"
            )
        time.sleep(POLL_SECONDS)


def _last_done_at(engine: Engine, kind: str) -> datetime:
    with Session(engine) as session:
        value = session.scalar(
            select(func.max(Job.updated_at)).where(
                Job.kind == kind, Job.status == "done"
            )
        )
    return value


def _release_label_jobs(engine: Engine) -> datetime:
    """Make every waiting label job due now, waking PostgreSQL listeners."""
    with Session(engine) as session, session.begin():
        now = datetime.now(UTC)
        session.execute(
            update(Job)
            .where(Job.kind == "refund.return_label", Job.status == "queued")
            .values(run_at=now)
        )
        if engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_notify('orderdesk_jobs', 'bench')"))
    return now


def _emit_webhooks(
    engine: Engine, settings: Settings, project_id: str, url: str, count: int
) -> datetime:
    with Session(engine) as session, session.begin():
        create_endpoint(
            session,
            settings,
            project_id,
            "bench",
            url=url,
            events=[webhook_events.ORDERS_TRACKING_UPDATED],
        )
    with Session(engine) as session, session.begin():
        started = datetime.now(UTC)
        for number in range(count):
            emit_event(
                session,
                project_id,
                webhook_events.ORDERS_TRACKING_UPDATED,
                {"orderId": f"bench-{number}", "status": "shipped"},
                order_id=None,
            )
    return started


def _webhook_progress(engine: Engine) -> tuple[int, datetime | None]:
    with Session(engine) as session:
        delivered = session.scalar(
            select(func.count()).where(WebhookDelivery.status == "delivered")
        )
        last = session.scalar(select(func.max(WebhookDelivery.delivered_at)))
    return delivered, last


def measure_worker(
    database_url: str,
    work_dir: Path,
    settings: Settings,
    api_key: str,
    *,
    refunds: int,
    webhooks: int,
    smtp: SmtpSink | PostfixSink,
    receiver: ServerGroup,
    timeout: float,
) -> WorkerResult:
    """Seed, start one worker process, and time both kinds of work."""
    engine = seed_engine(database_url)
    project_id = prepare(engine, settings, api_key)
    factory = RowFactory(project_id, "0x" + "cd" * 20, seed=7)
    seed_worker_refunds(
        engine, factory, WARM_UP_REFUNDS, datetime.now(UTC), "worker warm-up"
    )
    seed_worker_refunds(engine, factory, refunds, NOT_YET, "worker refunds")
    engine.dispose()

    engine = create_engine(database_url)
    environment = service_environment(
        database_url,
        work_dir,
        {
            "ORDERDESK_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}?starttls=off",
            "ORDERDESK_WORKER_POLL_SECONDS": WORKER_POLL_SECONDS,
            "ORDERDESK_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        },
    )
    log_path = work_dir / "logs" / f"worker-{engine.dialect.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    emails_before = smtp.messages
    pdf_before = smtp.with_pdf
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "orderdesk.cli", "worker"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(engine, "mail.send", WARM_UP_REFUNDS, timeout)
        started = _release_label_jobs(engine)
        _wait_for(engine, "mail.send", WARM_UP_REFUNDS + refunds, timeout)
        refund_seconds = (_last_done_at(engine, "mail.send") - started).total_seconds()

        webhook_started = _emit_webhooks(
            engine, settings, project_id, f"{receiver.url}/hook", webhooks
        )
        deadline = time.monotonic() + timeout
        delivered, last = _webhook_progress(engine)
        while delivered < webhooks:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the worker delivered {delivered} of {webhooks} webhooks"
                )
            time.sleep(POLL_SECONDS)
            delivered, last = _webhook_progress(engine)
        webhook_seconds = (last - webhook_started).total_seconds() if last else 0.0
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        engine.dispose()
    return WorkerResult(
        refunds=refunds,
        refund_seconds=refund_seconds,
        emails=smtp.messages - emails_before - WARM_UP_REFUNDS,
        emails_with_pdf=smtp.with_pdf - pdf_before - WARM_UP_REFUNDS,
        webhooks=webhooks,
        webhook_seconds=webhook_seconds,
        smtp_server=smtp.name,
    )


def settings_for(database_url: str, work_dir: Path) -> Settings:
    """Settings matching the service environment, for seeding in this process."""
    return Settings(
        database_url=database_url,
        environment="production",
        treasury_secret="bench-treasury-secret-" + "0" * 32,
        devnet=False,
        data_dir=work_dir / "var",
        mail_dir=work_dir / "mail",
        webhook_allow_private_urls=True,
    )
