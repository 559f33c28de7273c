"""Alembic migrations, on SQLite and PostgreSQL.

- Every revision upgrades and downgrades: base to head one step at a time, head back
  to base one step at a time, then up to head again.
- At head, autogenerate finds no difference between the database and the models.
- A database that release 0.1.0 filled (revision 0001, rows in every table of that
  revision, from data/release-0.1.0-rows.json) upgrades to head with every row and
  value kept, whatever revisions come after 0001, and the head models load it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    Table,
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import Session

import orderdesk.models  # noqa: F401 - registers every table on the metadata
from orderdesk.db.base import Base
from orderdesk.db.migrate import alembic_config, downgrade, upgrade
from orderdesk.jobs.models import Job

RELEASE_ROWS = Path(__file__).parent / "data" / "release-0.1.0-rows.json"
RELEASE_REVISION = "0001"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def revisions(engine: Engine) -> list[str]:
    """Every revision id from the first to the head, with no branches."""
    script = ScriptDirectory.from_config(alembic_config(engine))
    heads = script.get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    ordered = [revision.revision for revision in script.walk_revisions()]
    ordered.reverse()
    assert ordered[0] == RELEASE_REVISION
    return ordered


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "target_metadata": Base.metadata},
        )
        return list(compare_metadata(context, Base.metadata))


def test_every_revision_upgrades_and_downgrades(engine: Engine) -> None:
    steps = revisions(engine)
    tables_at: dict[str, set[str]] = {}
    for revision in steps:
        upgrade(engine, revision)
        assert current_revision(engine) == revision
        tables_at[revision] = table_names(engine)
    assert tables_at[steps[-1]] == set(Base.metadata.tables)

    for position in range(len(steps) - 1, 0, -1):
        previous = steps[position - 1]
        downgrade(engine, previous)
        assert current_revision(engine) == previous
        assert table_names(engine) == tables_at[previous]
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert table_names(engine) == set()

    upgrade(engine, "head")
    assert current_revision(engine) == steps[-1]
    assert schema_differences(engine) == []


def test_head_matches_models(engine: Engine) -> None:
    upgrade(engine, "head")
    assert schema_differences(engine) == []


# A database filled by release 0.1.0


def release_rows() -> dict[str, list[dict[str, Any]]]:
    document = json.loads(RELEASE_ROWS.read_text(encoding="utf-8"))
    assert document["revision"] == RELEASE_REVISION
    tables: dict[str, list[dict[str, Any]]] = document["tables"]
    return tables


def to_database(column: Column[Any], value: Any) -> Any:
    """Turn a value of the data file into what the column takes."""
    if value is None:
        return None
    if isinstance(column.type, DateTime):
        parsed = datetime.fromisoformat(value)
        assert parsed.tzinfo is not None, f"{column}: {value!r} has no offset"
        return parsed.astimezone(UTC)
    if isinstance(column.type, LargeBinary):
        return bytes.fromhex(value["hex"])
    return value


def comparable(value: Any) -> Any:
    """Values as read back, in one form for both databases: UTC-aware times, bytes."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # SQLite keeps UTC without an offset
        return value.astimezone(UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def primary_key(table: Table) -> list[Column[Any]]:
    return list(table.primary_key.columns)


def fill_release_database(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Insert the data file's rows into a database at revision 0001, as release
    0.1.0 would have left them, and return the rows as inserted."""
    rows = release_rows()
    metadata = MetaData()
    metadata.reflect(engine)
    tables = set(metadata.tables) - {"alembic_version"}
    assert sorted(tables - set(rows)) == [], "tables of 0001 with no rows in the file"
    assert sorted(set(rows) - tables) == [], "rows for tables that 0001 does not have"
    inserted: dict[str, list[dict[str, Any]]] = {}
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            if table.name not in rows:
                continue
            assert rows[table.name], f"{table.name} has no rows in the data file"
            values = [
                {name: to_database(table.c[name], value) for name, value in row.items()}
                for row in rows[table.name]
            ]
            for row in values:
                missing = {c.name for c in table.columns if not c.nullable} - set(row)
                assert not missing, f"{table.name} rows lack {sorted(missing)}"
            connection.execute(table.insert(), values)
            inserted[table.name] = values
        if engine.dialect.name == "postgresql":
            _advance_sequences(connection, metadata)
    return inserted


def _advance_sequences(connection: Any, metadata: MetaData) -> None:
    # Rows inserted with explicit ids leave the id sequences behind; 0.1.0 took its
    # ids from them, so move them on as its own inserts would have.
    for table in metadata.sorted_tables:
        for column in primary_key(table):
            sequence = connection.scalar(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            )
            if sequence is None:
                continue
            # The names come from the reflected schema, not from input.
            maximum = f'SELECT max("{column.name}") FROM "{table.name}"'  # noqa: S608
            connection.execute(
                text(f"SELECT setval(:sequence, ({maximum}))"), {"sequence": sequence}
            )


def test_release_database_upgrades_without_losing_rows(engine: Engine) -> None:
    upgrade(engine, RELEASE_REVISION)
    inserted = fill_release_database(engine)
    assert len(inserted) >= 20

    upgrade(engine, "head")

    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as connection:
        for name, expected in inserted.items():
            assert name in metadata.tables, f"the upgrade dropped table {name}"
            table = metadata.tables[name]
            columns = list(expected[0])
            dropped = sorted(set(columns) - set(table.c.keys()))
            assert dropped == [], f"the upgrade dropped columns of {name}"
            keys = [column.name for column in primary_key(table)]
            stored = [
                {column: comparable(value) for column, value in row.items()}
                for row in connection.execute(
                    select(*[table.c[column] for column in columns]).order_by(
                        *[table.c[key] for key in keys]
                    )
                ).mappings()
            ]
            wanted = sorted(
                (
                    {column: comparable(value) for column, value in row.items()}
                    for row in expected
                ),
                key=lambda row: tuple(row[key] for key in keys),
            )
            assert stored == wanted, name


def test_release_database_works_after_upgrade(engine: Engine) -> None:
    upgrade(engine, RELEASE_REVISION)
    inserted = fill_release_database(engine)
    upgrade(engine, "head")

    with Session(engine) as session:
        for mapper in Base.registry.mappers:
            model = mapper.class_
            loaded = session.scalars(select(model)).all()
            table = mapper.local_table.name  # type: ignore[union-attr]
            assert len(loaded) == len(inserted.get(table, [])), table
        # New rows take fresh ids next to the release's rows.
        job = Job(
            kind="mail.send", payload={"refund_id": "r"}, run_at=datetime.now(UTC)
        )
        session.add(job)
        session.commit()
        assert session.scalar(select(func.count()).select_from(Job)) == 2
        assert job.id not in {row["id"] for row in inserted["jobs"]}


def test_initial_migration_script_refuses_to_overwrite() -> None:
    root = Path(__file__).parents[2]
    initial = root / "src/orderdesk/db/migrations/versions/0001_initial.py"
    before = initial.read_bytes()
    result = subprocess.run(
        ["bash", str(root / "scripts/regenerate-initial-migration")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "frozen" in result.stderr
    assert "autogenerate=True" in result.stderr
    assert initial.read_bytes() == before
