"""A worker killed with SIGKILL between signing and confirming a payout: the next
worker finishes it with one transfer on chain and one receipt email."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.refunds.helpers import (
    payouts_of,
    received_order,
    refund_row,
    token_transfers,
    usdc_balance,
)
from tests.shipping.helpers import order_row
from tests.webhooks.test_worker_kill import WorkerProcesses, wait_until

from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.payments.amounts import to_base_units
from orderdesk.refunds.payouts import CRASH_TEST_PAUSE_ENV
from orderdesk.runtime import Runtime


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Worker processes with the devnet on, sharing the test's chain journal."""
    processes = WorkerProcesses(settings, tmp_path)
    processes.env.pop("ORDERDESK_DEVNET")
    processes.env["ORDERDESK_PAYOUT_RECHECK_SECONDS"] = "0.05"
    yield processes
    processes.stop_all()


def message_ids(mail_dir: Path, kind: str) -> list[str]:
    """The Message-IDs of the .eml files in `mail_dir` for refund mails of `kind`."""
    found = []
    for path in mail_dir.glob("*.eml"):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if f"-{kind}@" in str(message["Message-ID"]):
            found.append(str(message["Message-ID"]).strip())
    return found


@pytest.mark.parametrize("stage", ["signed", "sent"])
def test_killed_payout_worker_pays_once(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    workers: WorkerProcesses,
    stage: str,
) -> None:
    order, refund = received_order(client, api_key, runtime)
    refund_id = refund["refundId"]
    payer = order_row(runtime, order.id).paid_from
    assert payer is not None

    # The first worker stops right after the step and is killed there.
    workers.env[CRASH_TEST_PAUSE_ENV] = stage
    first = workers.start()
    wait_until(
        lambda: [p.status for p in payouts_of(runtime, refund_id)] == [stage],
        120,
        f"the payout to be {stage}",
        workers.logs,
    )
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL

    [stored] = payouts_of(runtime, refund_id)
    transfers = token_transfers(runtime, stored.from_address, stored.to_address)
    # Signed only: the node never saw it. Sent: the devnet mined it at once.
    assert len(transfers) == (1 if stage == "sent" else 0)
    assert refund_row(runtime, refund_id).status == "refund-request-accepted"
    with runtime.session_factory() as session, session.begin():
        # Let the dead worker's lease run out now rather than in a minute.
        session.execute(
            update(Job)
            .where(Job.kind == "refund.payout")
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )

    del workers.env[CRASH_TEST_PAUSE_ENV]
    workers.start()
    wait_until(
        lambda: (
            refund_row(runtime, refund_id).status == "refund-request-completed"
            and message_ids(Path(runtime.settings.mail_dir), "completed")
        ),
        120,
        "the payout by the second worker",
        workers.logs,
    )

    [paid] = payouts_of(runtime, refund_id)
    assert paid.id == stored.id
    assert paid.tx_hash == stored.tx_hash
    assert paid.status == "confirmed"
    assert len(token_transfers(runtime, paid.from_address, paid.to_address)) == 1
    amount = to_base_units(order.line_item_totals[0], 6)
    assert usdc_balance(runtime, payer) == amount
    assert order_row(runtime, order.id).refunded_amount == order.line_item_totals[0]
    mail_dir = Path(runtime.settings.mail_dir)
    assert message_ids(mail_dir, "completed") == [
        f"<refund-{refund_id}-completed@orderdesk.localhost>"
    ]
    assert len(message_ids(mail_dir, "accepted")) == 1
    assert "payout_paused_for_crash_test" in workers.logs()
