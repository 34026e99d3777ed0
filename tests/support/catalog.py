"""Read a database's catalog, independently of migsupport, for assertions.

The tests compare what the migrations build with the deployed DDL through
these queries, so a bug in migsupport's own reflection cannot hide a
difference.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

# Never part of the schema: Alembic's version table, and migsupport's deploy log.
DEPLOY_LOG = "migsupport_deploy_log"
IGNORED = ("alembic_version", DEPLOY_LOG)


def catalog(engine: Engine) -> dict[str, Any]:
    """Return every table, column, constraint, index and enum of the database."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            return _postgresql(connection)
        return _sqlite(connection)


def _rows(connection: sa.Connection, sql: str) -> list[tuple]:
    return [tuple(row) for row in connection.execute(sa.text(sql))]


def _postgresql(connection: sa.Connection) -> dict[str, Any]:
    ignored = ", ".join(f"'{name}'" for name in IGNORED)
    return {
        "columns": _rows(
            connection,
            # Column order, not attnum: a dropped and re-added column leaves a
            # hole in attnum without changing the table's shape.
            "SELECT table_name, row_number() OVER (PARTITION BY table_name "
            "ORDER BY ordinal_position), column_name, data_type, udt_name, "
            "character_maximum_length, numeric_precision, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            f"AND table_name NOT IN ({ignored}) ORDER BY table_name, ordinal_position",
        ),
        "constraints": _rows(
            connection,
            "SELECT c.conrelid::regclass::text, c.conname, c.contype, "
            "pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public' "
            f"AND c.conrelid::regclass::text NOT IN ({ignored}) ORDER BY 1, 2",
        ),
        "indexes": _rows(
            connection,
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            f"AND tablename NOT IN ({ignored}) ORDER BY 1, 2",
        ),
        "enums": _rows(
            connection,
            "SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) "
            "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
            "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' "
            "GROUP BY t.typname ORDER BY 1",
        ),
    }


def _sqlite(connection: sa.Connection) -> dict[str, Any]:
    tables = [
        name
        for (name,) in _rows(
            connection,
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        if name not in IGNORED
    ]
    result: dict[str, Any] = {"tables": tables, "columns": [], "foreign_keys": [], "indexes": []}
    for table in tables:
        result["columns"] += [
            (table, *row) for row in _rows(connection, f"PRAGMA table_info('{table}')")
        ]
        result["foreign_keys"] += [
            (table, *row[2:]) for row in _rows(connection, f"PRAGMA foreign_key_list('{table}')")
        ]
        for _, index, unique, origin, _ in _rows(connection, f"PRAGMA index_list('{table}')"):
            columns = [row[2] for row in _rows(connection, f"PRAGMA index_info('{index}')")]
            result["indexes"].append((table, index, unique, origin, tuple(columns)))
    result["indexes"].sort()
    return result


def table_rows(engine: Engine, table: str) -> list[tuple]:
    """Return every row of ``table``, sorted, to prove data survived."""
    with engine.connect() as connection:
        return sorted(
            tuple(map(str, row)) for row in connection.execute(sa.text(f"SELECT * FROM {table}"))
        )


def deploy_log_rows(engine: Engine) -> list[tuple[str, str, str | None, str | None, str]] | None:
    """Return (command, action, before, after, outcome) per row of the deploy log, oldest first.

    None when the table does not exist.
    """
    if not sa.inspect(engine).has_table(DEPLOY_LOG):
        return None
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.text(
                    "SELECT command, action, revision_before, revision_after, outcome "
                    f"FROM {DEPLOY_LOG} ORDER BY id"
                )
            )
        ]
