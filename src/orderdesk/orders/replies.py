"""Encoded replies of the polled order reads, cached per process by order revision.

`ReplyCache` keeps the bytes of each 200 reply of GET tracking, GET refunds and GET
order, tagged with the order's revision (see `orders.revision`) read before the
reply was built. `OrderAccessReader` reads that revision together with the columns
that access checks need, in one primary-key query on a connection of its own. A
cached reply is served only while the revision is unchanged.

Why a reply tagged this way is never stale: its rows were read after its revision
R was, so they are at least as new as R. Any later write raises the revision past R
in the same commit that changes the rows, so a reader who still sees R sees the rows
the reply was built from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine

from orderdesk.orders.statuses import PaymentState

REPLY_CACHE_MAX_ENTRIES = 20_000
# Reply kinds, one per cached route.
TRACKING, REFUNDS, ORDER = "tracking", "refunds", "order"

_ACCESS_SQL = (
    "SELECT o.project_id, o.client_secret_hash, o.payment_state, r.revision "
    "FROM orders AS o LEFT OUTER JOIN order_revisions AS r ON r.order_id = o.id "
    "WHERE o.id = {placeholder}"
)


class OrderAccess(NamedTuple):
    """The columns of one order that access checks and the reply cache need."""

    project_id: str
    client_secret_hash: str
    payment_state: str
    revision: int


def is_cacheable(kind: str, access: OrderAccess) -> bool:
    """Return whether a reply of this kind can be reused while the revision holds.

    An unpaid order's body depends on the clock (its quote expires) and on the chain
    (the payer's balance and next nonce), so it is built afresh every time. Tracking
    and refund bodies depend on stored rows only.
    """
    return kind != ORDER or access.payment_state != PaymentState.UNPAID


class ReplyCache:
    """A bounded, thread-safe LRU map of (kind, order id) to (revision, body)."""

    def __init__(self, max_entries: int = REPLY_CACHE_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, kind: str, order_id: str, revision: int) -> bytes | None:
        """Return the body stored at exactly `revision`, else None."""
        key = (kind, order_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != revision:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, kind: str, order_id: str, revision: int, body: bytes) -> None:
        key = (kind, order_id)
        with self._lock:
            self._entries[key] = (revision, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class OrderAccessReader:
    """Reads `OrderAccess` rows on one DBAPI connection kept in autocommit mode.

    Each query sees the latest committed state, since no transaction stays open
    between queries. The connection is taken from the engine's pool once and given
    back by `close()`. Callers use it from one thread at a time: `read` raises
    `ReaderBusy` instead of waiting when another thread is using it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        placeholder = "?" if engine.dialect.name == "sqlite" else "%s"
        self._sql = _ACCESS_SQL.format(placeholder=placeholder)
        self._connection: Any = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def open(self) -> None:
        """Check a connection out of the engine's pool. It may wait for the pool,
        so call it off the event loop."""
        with self._lock:
            if self._connection is not None:
                return
            connection = self.engine.raw_connection()
            if self.engine.dialect.name == "postgresql":
                connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            # SQLite connections of this engine already run without an implicit
            # transaction (isolation_level None, see db.engine).
            self._connection = connection

    def read(self, order_id: str) -> OrderAccess | None:
        """Return the order's access row, or None when no such order exists.

        Raises the driver's error when the query fails; the connection is then
        dropped and the next `open` takes a new one.
        """
        if not self._lock.acquire(blocking=False):
            raise ReaderBusy
        try:
            if self._connection is None:
                raise ReaderBusy
            try:
                # The driver's connection, because the pool's wrapper adds a call.
                cursor = self._connection.dbapi_connection.cursor()
                cursor.execute(self._sql, (order_id,))
                # fetchall() runs the statement to its end, which on SQLite ends its
                # read transaction at once instead of at the next query.
                rows = cursor.fetchall()
                cursor.close()
            except Exception:
                self._discard()
                raise
        finally:
            self._lock.release()
        if not rows:
            return None
        project_id, secret_hash, payment_state, revision = rows[0]
        return OrderAccess(project_id, secret_hash, payment_state, revision or 0)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        try:
            connection.invalidate()
        except Exception:  # noqa: BLE001, S110 - the connection is broken already
            pass


class ReaderBusy(Exception):
    """The access reader is closed or in use by another thread."""
