"""`orderdesk.client.webhooks.verify` against signatures made by the `svix` package."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from svix.webhooks import Webhook

from orderdesk.client.webhooks import WebhookVerificationError, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
BODY = json.dumps(
    {
        "type": "orders.payment.succeeded",
        "timestamp": "2026-03-01T17:05:09.120Z",
        "data": {"orderId": "9d1c3d8e-1111-4a5b-9c0d-123456789abc"},
    },
    separators=(",", ":"),
)


def signed_headers(
    body: str = BODY,
    secret: str = SECRET,
    at: datetime | None = None,
    message_id: str = "msg_2a9f",
) -> dict[str, str]:
    """The three svix headers, signed by the svix library itself."""
    at = at or datetime.now(UTC)
    return {
        "svix-id": message_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(message_id, at, body),
    }


def test_svix_signature_accepted() -> None:
    event = verify(BODY.encode(), signed_headers(), SECRET)
    assert event["type"] == "orders.payment.succeeded"
    assert event["data"]["orderId"] == "9d1c3d8e-1111-4a5b-9c0d-123456789abc"


def test_str_payload_accepted() -> None:
    assert verify(BODY, signed_headers(), SECRET) == json.loads(BODY)


def test_header_names_case_insensitive() -> None:
    headers = {name.upper(): value for name, value in signed_headers().items()}
    assert verify(BODY, headers, SECRET)["type"] == "orders.payment.succeeded"


def test_secret_without_prefix_accepted() -> None:
    bare = SECRET.removeprefix("whsec_")
    assert verify(BODY, signed_headers(), bare) == json.loads(BODY)


def test_standard_webhook_headers_accepted() -> None:
    headers = {
        name.replace("svix-", "webhook-"): value
        for name, value in signed_headers().items()
    }
    assert verify(BODY, headers, SECRET) == json.loads(BODY)


def test_any_listed_signature_matches() -> None:
    headers = signed_headers()
    wrong = signed_headers(secret=OTHER_SECRET)["svix-signature"]
    headers["svix-signature"] = f"v2,abc {wrong} {headers['svix-signature']}"
    assert verify(BODY, headers, SECRET) == json.loads(BODY)


def test_tampered_body_rejected() -> None:
    headers = signed_headers()
    tampered = BODY.replace("succeeded", "failed")
    with pytest.raises(WebhookVerificationError, match="No signature"):
        verify(tampered, headers, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify(BODY + "\n", headers, SECRET)


def test_changed_message_id_rejected() -> None:
    headers = signed_headers()
    headers["svix-id"] = "msg_other"
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, SECRET)


def test_wrong_secret_rejected() -> None:
    with pytest.raises(WebhookVerificationError, match="No signature"):
        verify(BODY, signed_headers(), OTHER_SECRET)


def test_old_timestamp_rejected() -> None:
    at = datetime.now(UTC) - timedelta(minutes=10)
    headers = signed_headers(at=at)
    with pytest.raises(WebhookVerificationError, match="old"):
        verify(BODY, headers, SECRET)
    assert verify(BODY, headers, SECRET, tolerance_seconds=3600)["type"]


def test_future_timestamp_rejected() -> None:
    headers = signed_headers(at=datetime.now(UTC) + timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="future"):
        verify(BODY, headers, SECRET)


def test_timestamp_change_rejected() -> None:
    # A replay with a fresh timestamp on an old signature fails the signature.
    headers = signed_headers(at=datetime.now(UTC) - timedelta(seconds=30))
    headers["svix-timestamp"] = str(int(datetime.now(UTC).timestamp()))
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, SECRET)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_missing_header_rejected(missing: str) -> None:
    headers = signed_headers()
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        verify(BODY, headers, SECRET)


@pytest.mark.parametrize("value", ["", "v1", "v1,", "v1,not-base64", "v2,abc"])
def test_malformed_signature_rejected(value: str) -> None:
    headers = signed_headers()
    headers["svix-signature"] = value
    with pytest.raises(WebhookVerificationError):
        verify(BODY, headers, SECRET)


def test_non_numeric_timestamp_rejected() -> None:
    headers = signed_headers()
    headers["svix-timestamp"] = "2026-03-01T17:05:09Z"
    with pytest.raises(WebhookVerificationError, match="Unix time"):
        verify(BODY, headers, SECRET)


def test_non_object_body_rejected() -> None:
    body = "[1, 2]"
    with pytest.raises(WebhookVerificationError, match="JSON object"):
        verify(body, signed_headers(body=body), SECRET)


def test_malformed_secret_raises_value_error() -> None:
    with pytest.raises(ValueError, match="base64"):
        verify(BODY, signed_headers(), "whsec_not base64!")
    with pytest.raises(ValueError, match="no key"):
        verify(BODY, signed_headers(), "whsec_")
