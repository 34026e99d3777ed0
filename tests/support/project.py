"""The project's own paths, and the deployed schema it ships."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

PROJECT = Path(__file__).resolve().parent.parent.parent
# The exact DDL of the deployed database: the schema of revision b662310f1380.
PRODUCTION_SCHEMA = PROJECT / "tests" / "data" / "production_schema.sql"
SHARED_SCHEMA = Path("shared") / "production_schema.sql"


def load_production_schema(engine: Engine) -> None:
    """Run the deployed DDL on the database behind ``engine``, unversioned, and commit it."""
    with engine.begin() as connection:
        connection.exec_driver_sql(PRODUCTION_SCHEMA.read_text())


def ddl_statements(sql: str) -> list[str]:
    """Return the statements of ``sql`` without comments, whitespace collapsed.

    Two files with the same statements create the same schema, whatever
    their comments say. (A ``--`` inside a string literal would be taken for
    a comment; the deployed DDL has none.)
    """
    text = " ".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [" ".join(statement.split()) for statement in text.split(";") if statement.strip()]


def shared_production_schema() -> Path | None:
    """Return the deployed DDL the project was given, ``shared/production_schema.sql``.

    It is looked for beside the project and beside each folder above it, so
    a checkout in a subfolder (a git worktree, a CI clone) finds it too; None
    where there is none.
    """
    for folder in PROJECT.parents:
        candidate = folder / SHARED_SCHEMA
        if candidate.is_file():
            return candidate
    return None
