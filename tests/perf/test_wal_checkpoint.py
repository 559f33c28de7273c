"""SQLite's WAL is checkpointed in the background, not by the commit of a request."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from orderdesk.db import engine as db_engine
from orderdesk.runtime import Runtime


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


def database_path(runtime: Runtime) -> Path:
    return Path(runtime.settings.database_url.removeprefix("sqlite:///"))


def rows_in_main_file(path: Path, copy: Path) -> int:
    """Count the rows of the probe table in the database file alone, as a reader
    would see them if the WAL were lost."""
    shutil.copyfile(path, copy)
    connection = sqlite3.connect(copy)
    try:
        exists = connection.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'probe'"
        ).fetchone()[0]
        if not exists:
            return 0
        return int(connection.execute("SELECT count(*) FROM probe").fetchone()[0])
    finally:
        connection.close()


def test_commits_leave_the_checkpoint_to_the_thread(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        pages = connection.execute(text("PRAGMA wal_autocheckpoint")).scalar()
    assert pages == db_engine.SQLITE_AUTOCHECKPOINT_PAGES
    assert runtime.checkpointer is not None


def test_committed_rows_reach_the_database_file(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = database_path(runtime)
    with runtime.engine.begin() as connection:
        connection.execute(text("CREATE TABLE probe (n INTEGER)"))
        connection.execute(
            text("INSERT INTO probe (n) VALUES (:n)"), [{"n": n} for n in range(500)]
        )
    # Each commit alone would leave its pages in the WAL until 10,000 of them.
    deadline = time.monotonic() + 10 * db_engine.CHECKPOINT_INTERVAL_SECONDS
    copy = tmp_path / "copy.db"
    while rows_in_main_file(path, copy) != 500:
        assert time.monotonic() < deadline, "the WAL was not checkpointed"
        time.sleep(0.1)


def test_close_stops_the_thread(settings: object) -> None:
    runtime = Runtime.build(settings)  # type: ignore[arg-type]
    runtime.start()
    checkpointer = runtime.checkpointer
    assert checkpointer is not None
    runtime.close()
    assert runtime.checkpointer is None
    assert not checkpointer._thread.is_alive()


def test_postgres_has_no_checkpointer(postgres_schema_url: str, tmp_path: Path) -> None:
    from tests.conftest import make_settings

    runtime = Runtime.build(make_settings(postgres_schema_url, tmp_path))
    runtime.start()
    try:
        assert runtime.checkpointer is None
    finally:
        runtime.close()
