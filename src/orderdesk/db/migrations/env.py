"""Alembic environment: runs against the engine handed over by orderdesk.db.migrate."""

from __future__ import annotations

from alembic import context

import orderdesk.models  # noqa: F401 - registers every table on the metadata
from orderdesk.db.base import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
