"""Per-project request rate limits, shared across processes when Redis is set."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute, storage, strategies

from orderdesk.config import Settings
from orderdesk.errors import RateLimited


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        uri = settings.redis_url or "memory://"
        self._storage = storage.storage_from_string(uri)
        self._strategy = strategies.MovingWindowRateLimiter(self._storage)
        self._limits = {
            "write": _item(settings.rate_limit_writes_per_minute),
            "read": _item(settings.rate_limit_reads_per_minute),
        }

    def hit(self, project_id: str, kind: str) -> None:
        """Count one request of `kind` ("read" or "write"); raise 429 over the limit."""
        item = self._limits[kind]
        if item is None:
            return
        if self._strategy.hit(item, "orderdesk", project_id, kind):
            return
        reset_at, _remaining = self._strategy.get_window_stats(
            item, "orderdesk", project_id, kind
        )
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            f"The project sent more than {item.amount} {kind} requests in a minute. "
            f"Retry after {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )

    def reset(self) -> None:
        self._storage.reset()


def _item(per_minute: int) -> RateLimitItemPerMinute | None:
    return RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
