"""Svix-compatible webhook secrets and signatures.

A secret is `whsec_` followed by the base64 of random bytes. A signature is
`v1,` + base64(HMAC-SHA256(key, f"{msg_id}.{timestamp}.{body}")), where the key is the
base64-decoded part of the secret after the prefix and the timestamp is in whole Unix
seconds. Several signatures go in one `svix-signature` header, separated by spaces,
and a receiver accepts the message when any of them matches one of its secrets. This
is the scheme the `svix` and `standardwebhooks` libraries verify (the tests check it
with svix 2.9).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
# 24 bytes (192 bits) encode to 32 base64 characters with no padding.
SECRET_BYTES = 24


def generate_secret() -> str:
    """Return a new random `whsec_` secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a `whsec_` secret; raise ValueError if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("invalid webhook secret: it must start with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError(
            "invalid webhook secret: it must be base64 after whsec_"
        ) from exc
    if not key:
        raise ValueError("invalid webhook secret: it has no key bytes after whsec_")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Return the `v1,` signature of one message with one secret."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """Return the `svix-signature` value: one signature per secret, space-separated."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_in_use)


def signed_headers(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Return the three svix headers of one attempt."""
    return {
        "svix-id": message_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": signature_header(secrets_in_use, message_id, timestamp, body),
    }
