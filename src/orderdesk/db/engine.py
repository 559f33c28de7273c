"""Engine and session factory for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orderdesk.config import Settings

log = structlog.get_logger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# A commit that finds the WAL this many pages long (40 MB) checkpoints it itself.
# Long-running processes checkpoint in the background well before that (see
# WalCheckpointer), so this only bounds the WAL when none of them runs.
SQLITE_AUTOCHECKPOINT_PAGES = 10_000
CHECKPOINT_INTERVAL_SECONDS = 1.0


def make_engine(settings: Settings) -> Engine:
    """Create the engine named by the settings, with SQLite tuned for concurrency."""
    if settings.is_sqlite:
        return _make_sqlite_engine(settings.database_url)
    return create_engine(
        settings.database_url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_timeout=10,
    )


class _WriterConnection(sqlite3.Connection):
    """A pysqlite connection that gives the engine's writer lock back when its
    transaction ends, however it ends (commit, rollback, or close)."""

    writer_lock: threading.Lock | None = None
    holds_writer_lock = False

    def take_writer_lock(self) -> None:
        if self.writer_lock is None:
            return
        if not self.writer_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError("database is locked"),
            )
        self.holds_writer_lock = True

    def give_writer_lock_back(self) -> None:
        if self.holds_writer_lock and self.writer_lock is not None:
            self.holds_writer_lock = False
            self.writer_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_writer_lock_back()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_writer_lock_back()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_writer_lock_back()


def _make_sqlite_engine(url: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            "factory": _WriterConnection,
        },
        pool_size=20,
        max_overflow=20,
    )
    # SQLite has one writer at a time. Threads of this process wait for it on this
    # lock, so the next one starts as soon as the last commits. In SQLite's own
    # busy handler each waiter sleeps between tries (up to 100 ms at a time in
    # sqliteDefaultBusyCallback), so the database sat idle while requests queued
    # (see docs/benchmarks.md). Other processes still wait under busy_timeout.
    writer_lock = threading.Lock()

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        dbapi_connection.writer_lock = writer_lock
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes can fail at once with
        # "database is locked" when another writer got in between. Writers take the
        # lock up front instead, and wait for it under busy_timeout.
        if connection.get_execution_options().get("read_only"):
            connection.exec_driver_sql("BEGIN")
            return
        dbapi_connection = connection.connection.driver_connection
        dbapi_connection.take_writer_lock()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.give_writer_lock_back()
            raise

    return engine


class WalCheckpointer:
    """Checkpoints a SQLite database's WAL into the database file every second,
    on a thread and a connection of its own.

    With SQLite's default, the commit that takes the WAL past 1,000 pages copies
    them into the file and syncs it, and the request that made it waits for that.
    A passive checkpoint here does the same work off the request path: it waits
    for no reader or writer and copies what no open read still needs.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="wal-checkpoint", daemon=True
        )

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        connection: Any = None
        while not self._stop.wait(CHECKPOINT_INTERVAL_SECONDS):
            try:
                if connection is None:
                    connection = self.engine.raw_connection()
                cursor = connection.cursor()
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                cursor.fetchall()
                cursor.close()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("wal_checkpoint_failed", error=repr(exc))
                if connection is not None:
                    connection.invalidate()
                    connection = None
        if connection is not None:
            connection.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(
    factory: sessionmaker[Session], *, read_only: bool = False
) -> Iterator[Session]:
    """Open a session, commit when the block ends, roll back when it raises."""
    session = factory()
    if read_only:
        session.connection(execution_options={"read_only": True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
