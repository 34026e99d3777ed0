"""The project's own paths, and the deployed schema it ships."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

PROJECT = Path(__file__).resolve().parent.parent.parent
# The exact DDL of the deployed database: the schema of revision b662310f1380.
PRODUCTION_SCHEMA = PROJECT / "tests" / "data" / "production_schema.sql"


def load_production_schema(engine: Engine) -> None:
    """Run the deployed DDL on the database behind ``engine``, unversioned, and commit it."""
    with engine.begin() as connection:
        connection.exec_driver_sql(PRODUCTION_SCHEMA.read_text())
