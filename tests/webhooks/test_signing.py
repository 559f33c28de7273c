"""Secrets and signatures, checked against the official `svix` library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from svix.webhooks import Webhook, WebhookVerificationError

from orderdesk.webhooks import signing

BODY = (
    b'{"type":"orders.quote.created","timestamp":"2026-03-01T17:05:09.120Z","data":{}}'
)


def headers_for(
    secrets: list[str], timestamp: int, body: bytes = BODY
) -> dict[str, str]:
    return signing.signed_headers(secrets, "msg_test", timestamp, body)


def now() -> int:
    return int(datetime.now(UTC).timestamp())


def test_secret_has_svix_format() -> None:
    secret = signing.generate_secret()

    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :], validate=True)
    assert len(key) == 24
    assert signing.generate_secret() != secret


def test_signature_matches_svix_sign() -> None:
    secret = signing.generate_secret()
    moment = datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)

    ours = signing.sign(secret, "msg_1", int(moment.timestamp()), BODY)

    assert ours == Webhook(secret).sign("msg_1", moment, BODY.decode())


def test_svix_verifies_signed_headers() -> None:
    secret = signing.generate_secret()
    headers = headers_for([secret], now())

    Webhook(secret).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"{}", b'{"x":1}'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.generate_secret()).verify(BODY, headers)


def test_old_timestamp_rejected_by_svix() -> None:
    secret = signing.generate_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers_for([secret], now() - 3600))


def test_either_of_two_secrets_verifies() -> None:
    old, new = signing.generate_secret(), signing.generate_secret()
    headers = headers_for([new, old], now())

    assert headers["svix-signature"].count("v1,") == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.generate_secret()).verify(BODY, headers)


@pytest.mark.parametrize("secret", ["sk_abc", "whsec_", "whsec_***", "whsec_YWJj=x"])
def test_malformed_secret_rejected(secret: str) -> None:
    with pytest.raises(ValueError):
        signing.secret_key(secret)
