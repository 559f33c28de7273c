"""`orderdesk refunds` on the test's database, through the typer app in process."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import Result
from fastapi.testclient import TestClient
from tests.conftest import TEST_SECRET
from tests.refunds.helpers import jobs_of, requested, shipped_order
from tests.shipping.helpers import order_events
from typer.testing import CliRunner

from orderdesk.cli import app
from orderdesk.config import Settings
from orderdesk.logs import configure_logging
from orderdesk.runtime import Runtime


def cli(settings: Settings, tmp_path: Path, *args: str) -> Result:
    env = {
        "ORDERDESK_DATABASE_URL": settings.database_url,
        "ORDERDESK_TREASURY_SECRET": TEST_SECRET,
        "ORDERDESK_DATA_DIR": str(tmp_path / "var"),
        "ORDERDESK_MAIL_DIR": str(tmp_path / "mail"),
        "ORDERDESK_DEVNET": "false",
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(app, ["refunds", *args], env=env)
    # The command pointed the logs at the runner's stream, which is closed now.
    configure_logging(settings)
    return result


def test_cli_accepts_then_receives(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    settings: Settings,
    tmp_path: Path,
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]

    listed = cli(settings, tmp_path, "list", order.id)
    assert listed.exit_code == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.startswith(f"{refund_id}  item 0  refund-request-initiated  15.88 usdc")

    accepted = cli(settings, tmp_path, "accept", order.id, refund_id)
    assert accepted.exit_code == 0, accepted.stderr
    body = json.loads(accepted.stdout)
    assert body["status"] == "refund-request-accepted"
    assert body["returnLabel"]["carrierName"] == "USPS"
    assert body["history"][-1]["actor"] == "cli"
    [mail] = jobs_of(runtime, "mail.send")
    assert mail.payload == {"refund_id": refund_id, "kind": "refund_accepted"}

    again = cli(settings, tmp_path, "accept", order.id, refund_id)
    assert again.exit_code == 1
    message = " ".join(again.stderr.split())
    assert "is refund-request-accepted, so it cannot be accepted" in message

    received = cli(settings, tmp_path, "received", order.id, refund_id)
    assert received.exit_code == 0, received.stderr
    assert json.loads(received.stdout)["payout"]["status"] == "scheduled"
    [job] = jobs_of(runtime, "refund.payout")
    assert job.payload == {"refund_id": refund_id}
    listed = cli(settings, tmp_path, "list", order.id)
    assert listed.stdout.rstrip().endswith("payout scheduled")
    actors = {
        event.actor
        for event in order_events(runtime, order.id)
        if event.kind.startswith("refund.") and event.kind != "refund.requested"
    }
    assert actors == {"cli"}


def test_cli_rejects_with_reason(
    client: TestClient,
    api_key: str,
    runtime: Runtime,
    settings: Settings,
    tmp_path: Path,
) -> None:
    order = shipped_order(runtime)
    refund_id = requested(client, api_key, order.id)["refundId"]
    missing = cli(settings, tmp_path, "reject", order.id, refund_id)
    assert missing.exit_code == 2
    assert "--reason" in missing.stderr

    rejected = cli(
        settings, tmp_path, "reject", order.id, refund_id, "--reason", "Used item."
    )
    assert rejected.exit_code == 0, rejected.stderr
    body = json.loads(rejected.stdout)
    assert body["status"] == "refund-request-rejected"
    assert body["rejectionReason"] == "Used item."
    [mail] = jobs_of(runtime, "mail.send")
    assert mail.payload["kind"] == "refund_rejected"


def test_cli_unknown_order_fails(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    result = cli(settings, tmp_path, "accept", unknown, unknown)
    assert result.exit_code == 1
    assert f"No order '{unknown}'" in " ".join(result.stderr.split())
