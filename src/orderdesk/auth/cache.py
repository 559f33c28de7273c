"""An in-process cache of API key lookups, so polling clients skip the key query.

Entries are keyed by the sha256 of the key (the value stored in `api_keys`), never
by the key itself, and live for KEY_CACHE_SECONDS. A key revoked in another process
(the CLI, another API process) is therefore rejected at most KEY_CACHE_SECONDS
after the revocation commits. A revocation through `revoke_api_key` in this
process also drops the entry at once. Unknown keys are never cached, so a key
works on its first request after it is created, and random keys cannot fill the
cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

# How long a key lookup is reused: the bound on how late a revocation made in
# another process takes effect here.
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_MAX_ENTRIES = 10_000

EntryT = TypeVar("EntryT")


class TtlCache(Generic[EntryT]):
    """A thread-safe mapping whose entries expire `ttl` seconds after being stored,
    holding at most `max_entries` (the oldest stored is dropped first)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, EntryT]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> EntryT | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            with self._lock:
                # Another thread may have stored a fresh entry meanwhile.
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        return value

    def put(self, key: str, value: EntryT) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (self._clock() + self.ttl, value)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
