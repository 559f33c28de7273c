"""Per-project request rate limits, shared across processes when Redis is set.

With Redis every API process counts in the same moving window. The `limits` package
(5.x) updates it in one Lua script per hit, so a burst split over many processes
admits the limit once, not once per process.
"""

from __future__ import annotations

import math
import threading
import time

import structlog
from limits import RateLimitItemPerMinute, storage, strategies
from limits.errors import StorageError

from orderdesk.config import Settings
from orderdesk.errors import RateLimited

log = structlog.get_logger(__name__)

# Redis calls of a request give up after this long, so a hung Redis delays a
# request by at most about this much instead of blocking it.
REDIS_TIMEOUT_SECONDS = 0.5
# While Redis is unreachable, one warning is logged per this many seconds.
_WARNING_INTERVAL_SECONDS = 30.0


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        if settings.redis_url:
            self._storage = storage.storage_from_string(
                settings.redis_url,
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
        else:
            self._storage = storage.storage_from_string("memory://")
        self._strategy = strategies.MovingWindowRateLimiter(self._storage)
        self._limits = {
            "write": _item(settings.rate_limit_writes_per_minute),
            "read": _item(settings.rate_limit_reads_per_minute),
        }
        self._warning_lock = threading.Lock()
        self._next_warning_at = 0.0
        self._failures_since_warning = 0

    def hit(self, project_id: str, kind: str) -> None:
        """Count one request of `kind` ("read" or "write"); raise 429 over the limit.

        When Redis cannot be reached, the request passes unlimited and a warning is
        logged. A rate limit protects the service, and turning orders away because
        the counter is down would do more harm than a burst.
        """
        item = self._limits[kind]
        if item is None:
            return
        try:
            if self._strategy.hit(item, "orderdesk", project_id, kind):
                return
            reset_at, _remaining = self._strategy.get_window_stats(
                item, "orderdesk", project_id, kind
            )
        except StorageError as exc:
            self._warn_unavailable(exc, project_id)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            f"The project sent more than {item.amount} {kind} requests in a minute. "
            f"Retry after {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )

    def reset(self) -> None:
        self._storage.reset()

    def _warn_unavailable(self, exc: StorageError, project_id: str) -> None:
        with self._warning_lock:
            self._failures_since_warning += 1
            now = time.monotonic()
            if now < self._next_warning_at:
                return
            self._next_warning_at = now + _WARNING_INTERVAL_SECONDS
            failures, self._failures_since_warning = self._failures_since_warning, 0
        log.warning(
            "rate_limit_storage_unavailable",
            error=repr(exc.storage_error),
            project_id=project_id,
            requests_unlimited=failures,
        )


def _item(per_minute: int) -> RateLimitItemPerMinute | None:
    return RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
