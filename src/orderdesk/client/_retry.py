"""When the SDK retries a request, and how long it waits before each retry."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Statuses of a server that is overloaded or briefly unable to serve, so the same
# request may succeed later.
RETRY_STATUSES = frozenset({429, 503})
# Methods that RFC 9110 section 9.2.2 defines as idempotent. PATCH and POST are not,
# so they are retried only when they carry an Idempotency-Key.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class RetryPolicy:
    """How often to retry and how long to wait; all times are in seconds."""

    max_retries: int = 3
    # The first backoff; each retry doubles it, up to max_delay.
    initial_delay: float = 0.5
    max_delay: float = 8.0
    # A longer Retry-After is shortened to this, so no single wait exceeds it.
    max_retry_after: float = 60.0
    # Each backoff is cut by a random fraction up to this, so that clients that
    # failed together do not all retry at the same moment.
    jitter: float = 0.25

    def backoff(self, retry_number: int) -> float:
        """Return the wait before retry `retry_number` (0 for the first retry)."""
        delay = min(self.max_delay, self.initial_delay * 2.0**retry_number)
        # Not for security: the jitter only spreads retries out in time.
        return delay * (1 - self.jitter * random.random())  # noqa: S311

    def delay(self, retry_number: int, retry_after: str | None) -> float:
        """Return the wait before a retry: the server's Retry-After when it sent a
        usable one, capped at max_retry_after, else the backoff."""
        seconds = parse_retry_after(retry_after)
        if seconds is not None:
            return min(seconds, self.max_retry_after)
        return self.backoff(retry_number)


def is_retryable(method: str, headers: Mapping[str, str]) -> bool:
    """Return whether repeating the request cannot apply it twice: an idempotent
    method, or a request with an Idempotency-Key that the server deduplicates."""
    if method.upper() in IDEMPOTENT_METHODS:
        return True
    return any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in headers)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return the wait in seconds that a Retry-After header requests, or None when
    it is missing or unreadable. RFC 9110 section 10.2.3 allows whole seconds or an
    HTTP date, and a date in the past means no wait."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)
