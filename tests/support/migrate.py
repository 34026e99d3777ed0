"""Run the project's migrations on a test database, over one connection."""

from __future__ import annotations

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from migsupport.api import alembic_config


def run(engine: Engine, action: str, revision: str) -> tuple[str, ...]:
    """Run ``command.<action>(revision)`` on ``engine``; return the versions after."""
    with engine.connect() as connection:
        getattr(command, action)(alembic_config(connection=connection), revision)
        connection.commit()
        heads = tuple(MigrationContext.configure(connection).get_current_heads())
        connection.rollback()
    return heads
