"""Idempotent, shape-checking helpers for Alembic revisions.

Each helper handles three cases:

- the object is missing: it is created;
- it is present with a compatible shape (everything the helper would create
  is there, with the same definition; later additions such as more columns or
  enum labels after the expected ones are allowed): nothing happens;
- it is present with a conflicting shape: :class:`ShapeConflict` is raised,
  naming both shapes, and nothing is changed.

Lookups are schema-qualified: with no ``schema`` given, the connection's
current schema (where an unqualified ``CREATE`` would land) is inspected, so
a same-named object elsewhere on the ``search_path`` never fools a check.
Where PostgreSQL has a native ``IF [NOT] EXISTS`` it is used as well, which
also makes the offline (``--sql``) script safe to run twice.

Call them from revision scripts, in place of the matching ``op`` calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from migsupport.exceptions import EnumValueInUse, ShapeConflict
from migsupport.schema import (
    expected_column_shape,
    normalize_ondelete,
    reflected_column_shape,
)

__all__ = [
    "add_column_if_missing",
    "add_enum_value_if_missing",
    "create_enum_if_missing",
    "create_index_if_missing",
    "create_table_if_missing",
    "drop_column_if_present",
    "drop_enum_if_present",
    "drop_enum_value_if_present",
    "drop_index_if_present",
    "drop_table_if_present",
    "enum_type",
]


# -- context -----------------------------------------------------------------


def _offline() -> bool:
    return bool(op.get_context().as_sql)


def _dialect() -> Dialect:
    return op.get_context().dialect


def _is_postgresql() -> bool:
    return _dialect().name == "postgresql"


def _inspector() -> sa.Inspector:
    # A fresh inspector each time: its cache would not see DDL run since.
    return sa.inspect(op.get_bind())


def _schema(inspector: sa.Inspector, schema: str | None) -> str | None:
    if schema:
        return schema
    if _is_postgresql():
        # This connection's own: the dialect's default_schema_name is the one
        # of the engine's first connection, whatever the search_path is here.
        return op.get_bind().execute(sa.text("SELECT current_schema()")).scalar()
    return inspector.default_schema_name


def _ddl_schema(schema: str | None) -> str | None:
    """Return the schema to name in DDL: on PostgreSQL online, the one inspected.

    Unqualified, ``DROP ... IF EXISTS`` and ``CREATE INDEX ... ON`` follow the
    search_path to a same-named object in another schema.
    """
    if schema or _offline() or not _is_postgresql():
        return schema
    return _schema(_inspector(), None)


def _qualified(name: str, schema: str | None) -> str:
    preparer = _dialect().identifier_preparer
    quoted = preparer.quote(name)
    return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _has_table(inspector: sa.Inspector, table: str, schema: str | None) -> bool:
    return table in inspector.get_table_names(schema=schema)


# -- enums ---------------------------------------------------------------------


def enum_type(name: str, labels: Sequence[str], **kwargs: Any) -> postgresql.ENUM:
    """Return a column type for the ENUM ``name`` that never creates the type.

    Create the type with :func:`create_enum_if_missing` first. On other
    databases the column is a ``VARCHAR`` as long as the longest label.
    """
    kwargs.setdefault("length", max(len(label) for label in labels))
    return postgresql.ENUM(*labels, name=name, create_type=False, **kwargs)


def _enum_labels(inspector: sa.Inspector, name: str, schema: str | None) -> list[str] | None:
    for enum in inspector.get_enums(schema=schema):
        if enum["name"] == name:
            return list(enum["labels"])
    return None


def _labels_text(labels: Iterable[str]) -> str:
    return "(" + ", ".join(labels) + ")"


def create_enum_if_missing(name: str, labels: Sequence[str], *, schema: str | None = None) -> None:
    """Create the ENUM type ``name`` with ``labels``, unless it is already there.

    A present type is compatible when ``labels`` are its first labels, in
    order. A no-op on databases without native ENUM types.
    """
    if not _is_postgresql():
        return
    statement = (
        f"CREATE TYPE {_qualified(name, schema)} AS ENUM ({', '.join(map(_literal, labels))})"
    )
    if _offline():
        # PostgreSQL has no CREATE TYPE IF NOT EXISTS; this block is its equivalent.
        op.execute(f"DO $$ BEGIN {statement}; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        return
    inspector = _inspector()
    present = _enum_labels(inspector, name, _schema(inspector, schema))
    if present is None:
        op.execute(statement)
    elif present[: len(labels)] != list(labels):
        raise ShapeConflict("enum", name, _labels_text(labels), _labels_text(present))


def add_enum_value_if_missing(
    name: str,
    value: str,
    *,
    after: str | None = None,
    schema: str | None = None,
    autocommit: bool = False,
) -> None:
    """Add the label ``value`` to the ENUM ``name``, after ``after``, unless present.

    The label runs inside the revision's transaction, so a failing revision
    takes it back with everything else. PostgreSQL forbids using a new label
    in the transaction that adds it: a revision that does so passes
    ``autocommit=True``, which commits it in Alembic's ``autocommit_block``.
    A present label is compatible when it stands right after ``after``.
    """
    if not _is_postgresql():
        return
    statement = f"ALTER TYPE {_qualified(name, schema)} ADD VALUE IF NOT EXISTS {_literal(value)}"
    if after is not None:
        statement += f" AFTER {_literal(after)}"
    if not _offline():
        inspector = _inspector()
        present = _enum_labels(inspector, name, _schema(inspector, schema))
        if present is None:
            raise ShapeConflict("enum", name, f"a type with label {value!r}", "no such type")
        if after is not None and after not in present:
            raise ShapeConflict(
                "enum", name, f"label {after!r} before {value!r}", _labels_text(present)
            )
        if value in present:
            if after is not None and present.index(value) != present.index(after) + 1:
                raise ShapeConflict(
                    "enum", name, f"label {value!r} right after {after!r}", _labels_text(present)
                )
            return
    if autocommit:
        with op.get_context().autocommit_block():
            op.execute(statement)
    else:
        op.execute(statement)


def _enum_columns(name: str, schema: str | None) -> list[tuple[str, str]]:
    """Return the (table, column) pairs whose type is the ENUM ``name``."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT c.relname, a.attname FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace cn ON cn.oid = c.relnamespace "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "JOIN pg_namespace tn ON tn.oid = t.typnamespace "
            "WHERE t.typname = :name AND tn.nspname = :schema AND cn.nspname = :schema "
            "AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY c.relname, a.attnum"
        ),
        {"name": name, "schema": schema},
    )
    return [(table, column) for table, column in rows]


def drop_enum_value_if_present(
    name: str,
    value: str,
    *,
    columns: Sequence[tuple[str, str]] = (),
    schema: str | None = None,
) -> None:
    """Remove the label ``value`` from the ENUM ``name``, if it has it.

    PostgreSQL cannot drop a label, so the type is rebuilt without it and
    every column using it is converted (alembic-postgresql-enum's
    ``sync_enum_values``). The columns are found in the catalog; ``columns``
    names them for databases without one, and for offline scripts. When a
    row still holds the label, :class:`EnumValueInUse` is raised before
    anything changes.
    """
    import alembic_postgresql_enum  # noqa: F401  (registers op.sync_enum_values)

    if _offline():
        if _is_postgresql():
            raise ShapeConflict(
                "enum", name, "an online connection to rebuild the type", "an offline (--sql) run"
            )
        return
    bind = op.get_bind()
    if _is_postgresql():
        inspector = _inspector()
        schema = _schema(inspector, schema)
        present = _enum_labels(inspector, name, schema)
        if present is None or value not in present:
            return
        columns = _enum_columns(name, schema)
    in_use = [
        f"{table}.{column}"
        for table, column in columns
        if bind.execute(
            sa.text(
                f"SELECT 1 FROM {_qualified(table, schema)} "
                f"WHERE {_dialect().identifier_preparer.quote(column)} = :value LIMIT 1"
            ),
            {"value": value},
        ).first()
    ]
    if in_use:
        raise EnumValueInUse(name, value, in_use)
    if _is_postgresql():
        op.sync_enum_values(
            enum_schema=schema,
            enum_name=name,
            new_values=[label for label in present if label != value],
            affected_columns=list(columns),
            enum_values_to_rename=[],
        )


def drop_enum_if_present(name: str, *, schema: str | None = None) -> None:
    """Drop the ENUM type ``name`` if it exists (PostgreSQL's ``IF EXISTS``)."""
    if _is_postgresql():
        op.execute(f"DROP TYPE IF EXISTS {_qualified(name, _ddl_schema(schema))}")


# -- tables and columns ----------------------------------------------------------


def _table_conflicts(
    inspector: sa.Inspector, expected: sa.Table, schema: str | None
) -> tuple[list[str], list[str]]:
    """Return (expected, found) descriptions of what differs, both empty if compatible."""
    dialect = _dialect()
    wanted: list[str] = []
    found: list[str] = []
    reflected = {col["name"]: col for col in inspector.get_columns(expected.name, schema=schema)}
    for column in expected.columns:
        shape = expected_column_shape(column, dialect)
        actual = reflected.get(column.name)
        if actual is None:
            wanted.append(f"column {column.name} {shape}")
            found.append(f"no column {column.name}")
        elif reflected_column_shape(actual, dialect) != shape:
            wanted.append(f"column {column.name} {shape}")
            found.append(f"column {column.name} {reflected_column_shape(actual, dialect)}")
    pk = [col.name for col in expected.primary_key.columns]
    if pk:
        actual_pk = (
            inspector.get_pk_constraint(expected.name, schema=schema).get("constrained_columns")
            or []
        )
        if list(actual_pk) != pk:
            wanted.append(f"primary key ({', '.join(pk)})")
            found.append(f"primary key ({', '.join(actual_pk)})")
    actual_fks = {
        _fk_text(
            fk["constrained_columns"],
            fk["referred_table"],
            fk["referred_columns"],
            (fk.get("options") or {}).get("ondelete"),
        )
        for fk in inspector.get_foreign_keys(expected.name, schema=schema)
    }
    for constraint in expected.foreign_key_constraints:
        # target_fullname is "[schema.]table.column"; the target table need
        # not be in this throwaway MetaData, so nothing is resolved.
        targets = [element.target_fullname.split(".") for element in constraint.elements]
        text = _fk_text(
            list(constraint.column_keys),
            targets[0][-2],
            [target[-1] for target in targets],
            constraint.ondelete,
        )
        if text not in actual_fks:
            wanted.append(text)
            found.append("; ".join(sorted(actual_fks)) or "no foreign keys")
    return wanted, found


def _fk_text(
    columns: Sequence[str], table: str, referred: Sequence[str], ondelete: str | None
) -> str:
    text = f"foreign key ({', '.join(columns)}) references {table} ({', '.join(referred)})"
    action = normalize_ondelete(ondelete)
    return text + (f" on delete {action.lower()}" if action else "")


def create_table_if_missing(
    name: str, *elements: Any, schema: str | None = None, **kwargs: Any
) -> None:
    """Create the table ``name`` (``op.create_table``'s arguments), unless present.

    A present table is compatible when every column given exists with the same
    type, nullability and default, and the primary and foreign keys match.
    Extra columns, added by later revisions, are allowed.
    """
    if _offline():
        op.create_table(name, *elements, schema=schema, if_not_exists=True, **kwargs)
        return
    inspector = _inspector()
    schema_name = _schema(inspector, schema)
    if not _has_table(inspector, name, schema_name):
        op.create_table(name, *elements, schema=schema, if_not_exists=True, **kwargs)
        return
    expected = sa.Table(name, sa.MetaData(), *[_copy(e) for e in elements], schema=schema, **kwargs)
    wanted, found = _table_conflicts(inspector, expected, schema_name)
    if wanted:
        raise ShapeConflict("table", name, "; ".join(wanted), "; ".join(found))


def _copy(element: Any) -> Any:
    # A Column can belong to one Table only; probe with a copy of the caller's.
    # Constraints given here were never attached (nothing was created).
    if isinstance(element, sa.Column):
        return element._copy()
    return element


def drop_table_if_present(name: str, *, schema: str | None = None) -> None:
    """Drop the table ``name`` if it exists."""
    op.drop_table(name, schema=_ddl_schema(schema), if_exists=True)


def add_column_if_missing(table: str, column: sa.Column, *, schema: str | None = None) -> None:
    """Add ``column`` to ``table``, unless a column of that name is there.

    A present column is compatible when its type, nullability and default
    are the ones given.
    """
    if _offline():
        op.add_column(table, column, schema=schema, if_not_exists=True)
        return
    inspector = _inspector()
    schema_name = _schema(inspector, schema)
    if not _has_table(inspector, table, schema_name):
        raise ShapeConflict("table", table, f"a table with column {column.name}", "no such table")
    reflected = {col["name"]: col for col in inspector.get_columns(table, schema=schema_name)}
    if column.name not in reflected:
        op.add_column(table, column, schema=schema, if_not_exists=_is_postgresql() or None)
        return
    probe = sa.Table(table, sa.MetaData(), column._copy())
    expected = expected_column_shape(probe.c[column.name], _dialect())
    actual = reflected_column_shape(reflected[column.name], _dialect())
    if expected != actual:
        raise ShapeConflict("column", f"{table}.{column.name}", expected, actual)


def drop_column_if_present(table: str, column_name: str, *, schema: str | None = None) -> None:
    """Drop the column ``column_name`` of ``table`` if it exists.

    On SQLite it goes through Alembic's batch mode, which rebuilds the table
    when SQLite's own ``DROP COLUMN`` cannot drop it.
    """
    if _offline():
        op.drop_column(table, column_name, schema=schema, if_exists=True)
        return
    inspector = _inspector()
    schema_name = _schema(inspector, schema)
    if not _has_table(inspector, table, schema_name):
        return
    if column_name not in {col["name"] for col in inspector.get_columns(table, schema=schema_name)}:
        return
    if _is_postgresql():
        op.drop_column(table, column_name, schema=schema, if_exists=True)
    else:
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.drop_column(column_name)


# -- indexes -------------------------------------------------------------------


def create_index_if_missing(
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    unique: bool = False,
    schema: str | None = None,
    **kwargs: Any,
) -> None:
    """Create the index ``name`` on ``table (columns)``, unless present.

    A present index is compatible when it is on ``table``, on the same
    columns in the same order, with the same uniqueness.
    """
    if _offline():
        op.create_index(
            name, table, list(columns), unique=unique, schema=schema, if_not_exists=True, **kwargs
        )
        return
    inspector = _inspector()
    schema_name = _schema(inspector, schema)
    found = _find_index(inspector, name, schema_name)
    if found is None:
        op.create_index(
            name,
            table,
            list(columns),
            unique=unique,
            schema=schema_name if _is_postgresql() else schema,
            if_not_exists=_is_postgresql() or None,
            **kwargs,
        )
        return
    expected = _index_text(table, columns, unique)
    actual = _index_text(found[0], found[1]["column_names"], bool(found[1]["unique"]))
    if expected != actual:
        raise ShapeConflict("index", name, expected, actual)


def _find_index(inspector: sa.Inspector, name: str, schema: str | None) -> tuple[str, dict] | None:
    """Return (table, reflected index) of the index ``name`` in ``schema``."""
    for table, indexes in inspector.get_multi_indexes(schema=schema).items():
        for index in indexes:
            if index["name"] == name:
                return table[1], index
    return None


def _index_text(table: str, columns: Sequence[str | None], unique: bool) -> str:
    return f"{'unique ' if unique else ''}on {table} ({', '.join(str(c) for c in columns)})"


def drop_index_if_present(
    name: str, *, table: str | None = None, schema: str | None = None
) -> None:
    """Drop the index ``name`` if it exists."""
    if _offline() or _is_postgresql():
        op.drop_index(name, table_name=table, schema=_ddl_schema(schema), if_exists=True)
        return
    inspector = _inspector()
    if _find_index(inspector, name, _schema(inspector, schema)) is not None:
        op.drop_index(name, table_name=table, schema=schema)
