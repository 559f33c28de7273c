"""The mail.send job on both databases, with real SMTP servers and the file backend."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pypdf import PdfReader
from tests.mail.conftest import (
    SMTP_PASSWORD,
    SMTP_USER,
    Certificate,
    SmtpServerFactory,
    free_port,
)

from orderdesk.auth.services import get_or_create_project
from orderdesk.db.base import utcnow
from orderdesk.jobs.models import Job
from orderdesk.jobs.registry import HANDLERS
from orderdesk.jobs.services import enqueue
from orderdesk.jobs.worker import Worker
from orderdesk.labels.providers import tracking_number_for
from orderdesk.mail.messages import MailContentError
from orderdesk.orders.models import LineItem, Order
from orderdesk.refunds.models import Refund
from orderdesk.runtime import Runtime

ADDRESS = {
    "name": "Jordan Lee",
    "line1": "350 Fifth Avenue",
    "city": "New York",
    "state": "NY",
    "postalCode": "10118",
    "country": "US",
}
XSS = "<script>alert(1)</script>"


def create_refund(
    runtime: Runtime,
    *,
    status: str = "refund-request-accepted",
    recipient: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    """Insert a project, a paid order with one line item and a refund.

    Returns the refund id.
    """
    now = utcnow()
    with runtime.session_factory() as session, session.begin():
        project = get_or_create_project(session, runtime.settings, "mail-tests")
        order = Order(
            project_id=project.id,
            client_secret_hash="0" * 64,
            phase="delivery",
            locale="en-US",
            recipient=recipient
            if recipient is not None
            else {"email": "jordan@example.com", "physicalAddress": ADDRESS},
            quote_status="valid",
            quoted_at=now,
            expires_at=now + timedelta(hours=1),
            total_amount=Decimal("53.40"),
            currency="usdc",
            payment_method="devnet",
            treasury_address="0x" + "11" * 20,
            paid_from="0x" + "ab" * 20,
            payment_state="paid",
        )
        order.line_items.append(
            LineItem(
                index=0,
                locator="amazon:B08N5WRWNW",
                quantity=2,
                name="Insulated Water Bottle",
                quote_status="valid",
            )
        )
        session.add(order)
        session.flush()
        refund = Refund(
            order_id=order.id,
            line_item=0,
            reason="It leaks.",
            status=status,
            amount=Decimal("53.40"),
            currency="usdc",
            **fields,
        )
        session.add(refund)
        session.flush()
        return refund.id


def accepted_refund(runtime: Runtime) -> tuple[str, str]:
    """An accepted refund whose tracking number the local provider would issue."""
    refund_id = create_refund(runtime)
    tracking = tracking_number_for(refund_id, "9202{digits:17}{mod10}")
    with runtime.session_factory() as session, session.begin():
        refund = session.get(Refund, refund_id)
        assert refund is not None
        refund.return_carrier = "USPS"
        refund.return_tracking_number = tracking
    return refund_id, tracking


def enqueue_mail(runtime: Runtime, refund_id: str, kind: str) -> int:
    with runtime.session_factory() as session, session.begin():
        job = enqueue(session, "mail.send", {"refund_id": refund_id, "kind": kind})
        return job.id


def run_jobs(runtime: Runtime) -> None:
    Worker(runtime, name="mail-test-worker").run_until_idle(max_rounds=5)


def get_job(runtime: Runtime, job_id: int) -> Job:
    with runtime.session_factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def use_settings(runtime: Runtime, **values: Any) -> None:
    runtime.settings = runtime.settings.model_copy(update=values)


def test_accepted_mail_carries_label(
    runtime: Runtime, smtp_server: SmtpServerFactory, certificate: Certificate
) -> None:
    server = smtp_server(tls="starttls", auth=True)
    credentials = f"{quote(SMTP_USER, safe='')}:{quote(SMTP_PASSWORD, safe='')}"
    use_settings(
        runtime,
        smtp_url=f"smtp://{credentials}@127.0.0.1:{server.port}",
        smtp_ca_file=certificate.cert_file,
        smtp_timeout_seconds=5.0,
    )
    refund_id, tracking = accepted_refund(runtime)
    job_id = enqueue_mail(runtime, refund_id, "refund_accepted")
    run_jobs(runtime)

    assert get_job(runtime, job_id).status == "done"
    assert len(server.messages) == 1
    message = server.messages[0]
    assert message["To"] == "Jordan Lee <jordan@example.com>"
    # A Message-ID longer than one line is folded, and the parsed value keeps the
    # leading space.
    assert message["Message-ID"].strip() == (
        f"<refund-{refund_id}-accepted@orderdesk.localhost>"
    )
    assert server.recorder.tls_sessions == [True]
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    pdf = attachments[0].get_content()
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert tracking in text
    assert refund_id in text
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert tracking in body.get_content()


def test_rejected_mail_escapes_reason(runtime: Runtime) -> None:
    refund_id = create_refund(
        runtime, status="refund-request-rejected", rejection_reason=XSS
    )
    job_id = enqueue_mail(runtime, refund_id, "refund_rejected")
    run_jobs(runtime)

    assert get_job(runtime, job_id).status == "done"
    mail_dir = Path(runtime.settings.mail_dir)
    files = list(mail_dir.glob("*.eml"))
    assert [path.name for path in files] == [
        f"refund-{refund_id}-rejected@orderdesk.localhost.eml"
    ]
    message = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    html = message.get_body(preferencelist=("html",))
    text = message.get_body(preferencelist=("plain",))
    assert html is not None
    assert text is not None
    assert XSS not in html.get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.get_content()
    assert XSS in text.get_content()


def test_repeated_job_sends_same_message(runtime: Runtime) -> None:
    refund_id = create_refund(
        runtime, status="refund-request-rejected", rejection_reason="Worn."
    )
    enqueue_mail(runtime, refund_id, "refund_rejected")
    run_jobs(runtime)
    mail_dir = Path(runtime.settings.mail_dir)
    first = [path.read_bytes() for path in mail_dir.glob("*.eml")]
    enqueue_mail(runtime, refund_id, "refund_rejected")
    run_jobs(runtime)
    second = [path.read_bytes() for path in mail_dir.glob("*.eml")]
    assert len(first) == 1
    assert len(second) == 1
    first_message = message_from_bytes(first[0], policy=policy.default)
    second_message = message_from_bytes(second[0], policy=policy.default)
    assert first_message["Message-ID"] == second_message["Message-ID"]


def test_retried_attempt_is_identical(
    runtime: Runtime, smtp_server: SmtpServerFactory
) -> None:
    server = smtp_server()
    use_settings(runtime, smtp_url=f"smtp://127.0.0.1:{server.port}")
    refund_id, _tracking = accepted_refund(runtime)
    job_id = enqueue_mail(runtime, refund_id, "refund_accepted")
    run_jobs(runtime)
    # The same job again, as after a crash before its commit.
    with runtime.session_factory() as session, session.begin():
        job = session.get(Job, job_id)
        assert job is not None
        job.status = "queued"
    run_jobs(runtime)
    contents = [envelope.original_content for envelope in server.recorder.envelopes]
    assert len(contents) == 2
    assert contents[0] == contents[1]


def test_smtp_refusal_retries_job(
    runtime: Runtime, smtp_server: SmtpServerFactory, certificate: Certificate
) -> None:
    server = smtp_server(tls="starttls", auth=True, reject_with="451 4.3.0 Try later")
    credentials = f"{quote(SMTP_USER, safe='')}:{quote(SMTP_PASSWORD, safe='')}"
    use_settings(
        runtime,
        smtp_url=f"smtp://{credentials}@127.0.0.1:{server.port}",
        smtp_ca_file=certificate.cert_file,
    )
    refund_id, _tracking = accepted_refund(runtime)
    job_id = enqueue_mail(runtime, refund_id, "refund_accepted")
    run_jobs(runtime)

    job = get_job(runtime, job_id)
    assert job.status == "queued"
    assert job.attempts == 1
    assert job.run_at > utcnow()
    assert job.last_error is not None
    assert "451" in job.last_error
    assert SMTP_PASSWORD not in job.last_error
    assert quote(SMTP_PASSWORD, safe="") not in job.last_error
    assert server.messages == []


def test_smtp_down_retries_job(runtime: Runtime) -> None:
    use_settings(runtime, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    refund_id = create_refund(
        runtime, status="refund-request-rejected", rejection_reason="Worn."
    )
    job_id = enqueue_mail(runtime, refund_id, "refund_rejected")
    run_jobs(runtime)

    job = get_job(runtime, job_id)
    assert job.status == "queued"
    assert job.attempts == 1
    assert job.last_error is not None
    assert "ConnectionRefusedError" in job.last_error


def test_order_without_email_is_skipped(runtime: Runtime) -> None:
    refund_id = create_refund(
        runtime,
        status="refund-request-rejected",
        rejection_reason="Worn.",
        recipient={"walletAddress": "0x" + "cd" * 20},
    )
    job_id = enqueue_mail(runtime, refund_id, "refund_rejected")
    run_jobs(runtime)
    assert get_job(runtime, job_id).status == "done"
    assert list(Path(runtime.settings.mail_dir).glob("*.eml")) == []


def test_accepted_without_label_fails(runtime: Runtime) -> None:
    refund_id = create_refund(runtime)
    job_id = enqueue_mail(runtime, refund_id, "refund_accepted")
    run_jobs(runtime)
    job = get_job(runtime, job_id)
    assert job.status == "queued"
    assert job.last_error is not None
    assert MailContentError.__name__ in job.last_error
    assert "has no return label yet" in job.last_error


def test_completed_without_payout_fails(runtime: Runtime) -> None:
    refund_id = create_refund(runtime, status="refund-request-completed")
    job_id = enqueue_mail(runtime, refund_id, "refund_completed")
    run_jobs(runtime)
    job = get_job(runtime, job_id)
    assert job.status == "queued"
    assert job.last_error is not None
    assert "needs payout_tx_id" in job.last_error


UNKNOWN_REFUND = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"kind": "refund_rejected"}, "needs a refund_id"),
        ({"refund_id": "x", "kind": "refund_shipped"}, "is not one of"),
        ({"refund_id": UNKNOWN_REFUND, "kind": "refund_rejected"}, "is not found"),
    ],
)
def test_bad_payload_fails_clearly(
    runtime: Runtime, payload: dict[str, Any], problem: str
) -> None:
    with runtime.session_factory() as session, session.begin():
        job_id = enqueue(session, "mail.send", payload).id
    run_jobs(runtime)
    job = get_job(runtime, job_id)
    assert job.last_error is not None
    assert problem in job.last_error


def test_handler_is_registered(runtime: Runtime) -> None:
    assert "mail.send" in HANDLERS
