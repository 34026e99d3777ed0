"""Idempotent, shape-checking helpers for Alembic revisions.

Each helper handles three cases:

- the object is missing: it is created;
- it is present with a compatible shape (everything the helper would create
  is there, with the same definition; later additions such as more columns or
  enum labels after the expected ones are allowed): nothing happens;
- it is present with a conflicting shape: :class:`ShapeConflict` is raised,
  listing the differences in the words ``alembic_status`` uses, and nothing
  is changed.

"The same definition" is decided by the database itself: the object the
helper would create is built for a moment on a temporary table of the same
name, read back with the reader the state engine uses
(:mod:`migsupport.shapes`), and rolled back. So an index with another
method, predicate, sort order or operator class, or a column with another
type, default or collation, is a conflict, never a silent no-op.

Lookups are schema-qualified: with no ``schema`` given, the connection's
current schema (where an unqualified ``CREATE`` would land) is inspected, so
a same-named object elsewhere on the ``search_path`` never fools a check.
Where PostgreSQL has a native ``IF [NOT] EXISTS`` it is used as well, which
also makes the offline (``--sql``) script safe to run twice.

Call them from revision scripts, in place of the matching ``op`` calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from migsupport import shapes
from migsupport.differences import CHANGED, MISSING, Difference, ObjectRef
from migsupport.exceptions import EnumValueInUse, ShapeConflict
from migsupport.snapshot import compare_table
from migsupport.timeouts import builds_timeout

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


def _schema(schema: str | None) -> str | None:
    """Return the schema to inspect: ``schema``, or this connection's current one.

    On PostgreSQL the connection's own (the dialect's ``default_schema_name``
    is the engine's first connection's, whatever the search_path is here);
    on SQLite ``main``.
    """
    if schema:
        return schema
    if _is_postgresql():
        return op.get_bind().execute(sa.text("SELECT current_schema()")).scalar()
    return "main"


def _ddl_schema(schema: str | None) -> str | None:
    """Return the schema to name in DDL: on PostgreSQL online, the one inspected.

    Unqualified, ``DROP ... IF EXISTS`` and ``CREATE INDEX ... ON`` follow the
    search_path to a same-named object in another schema.
    """
    if schema or _offline() or not _is_postgresql():
        return schema
    return _schema(None)


def _qualified(name: str, schema: str | None) -> str:
    preparer = _dialect().identifier_preparer
    quoted = preparer.quote(name)
    return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# -- enums ---------------------------------------------------------------------


def enum_type(name: str, labels: Sequence[str], **kwargs: Any) -> postgresql.ENUM:
    """Return a column type for the ENUM ``name`` that never creates the type.

    Create the type with :func:`create_enum_if_missing` first. On other
    databases the column is a ``VARCHAR`` as long as the longest label.
    """
    kwargs.setdefault("length", max(len(label) for label in labels))
    return postgresql.ENUM(*labels, name=name, create_type=False, **kwargs)


def _labels_conflict(
    name: str, expected: Any, present: list[str] | None, summary: str | None = None
) -> ShapeConflict:
    enum = ObjectRef("enum", name)
    if present is None:
        return ShapeConflict(
            "enum", name, (Difference(MISSING, enum, expected=expected),), summary=summary
        )
    return ShapeConflict("enum", name, (Difference(CHANGED, enum, "labels", expected, present),))


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
    present = shapes.enum_labels(op.get_bind(), _schema(schema), name)
    if present is None:
        op.execute(statement)
    elif present[: len(labels)] != list(labels):
        raise _labels_conflict(name, list(labels), present)


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
        present = shapes.enum_labels(op.get_bind(), _schema(schema), name)
        wanted = f"{after!r} followed by {value!r}" if after is not None else f"label {value!r}"
        if present is None:
            raise _labels_conflict(
                name, wanted, None, summary=f"cannot add label {value!r} to enum {name}"
            )
        if after is not None and after not in present:
            raise _labels_conflict(name, wanted, present)
        if value in present:
            if after is not None and present.index(value) != present.index(after) + 1:
                raise _labels_conflict(name, wanted, present)
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
                "enum",
                name,
                (),
                summary=f"enum {name} cannot lose a label in an offline (--sql) run: the type "
                "is rebuilt, which needs an online connection",
            )
        return
    bind = op.get_bind()
    present: list[str] = []
    if _is_postgresql():
        schema = _schema(schema)
        found = shapes.enum_labels(bind, schema, name)
        if found is None or value not in found:
            return
        present = found
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


def _probe_table(
    table: str, elements: Sequence[Any], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str | None, dict[str, Any]]]]:
    """Return the shape ``op.create_table(table, *elements)`` would give, and its foreign keys.

    The probe is a temporary table of the same name, so that the names
    PostgreSQL and SQLAlchemy derive from the table's name come out the same.
    A temporary table may not refer to a permanent one, so the foreign keys
    are taken out of the probe and returned as shapes, to be compared apart.
    """
    bind = op.get_bind()
    foreign_keys: list[tuple[str | None, dict[str, Any]]] = []
    options = {k: v for k, v in kwargs.items() if k not in ("if_not_exists", "prefixes")}
    unlogged = any(p.upper() == "UNLOGGED" for p in kwargs.get("prefixes") or ())

    def create(temporary: str) -> None:
        probe = sa.Table(
            table, sa.MetaData(), *elements, schema=temporary, prefixes=["TEMPORARY"], **options
        )
        for constraint in list(probe.foreign_key_constraints):
            foreign_keys.append((constraint.name, shapes.foreign_key_shape(constraint, None)))
            probe.constraints.discard(constraint)
        for column in probe.columns:
            column.foreign_keys.clear()
        bind.execute(sa.schema.CreateTable(probe))
        for index in probe.indexes:
            bind.execute(sa.schema.CreateIndex(index))

    shape = shapes.probe(bind, table, create)
    if "persistence" in shape:
        shape["persistence"] = "unlogged" if unlogged else "permanent"
    return shape, foreign_keys


def _foreign_key_differences(
    table: str, live: dict[str, Any], expected: list[tuple[str | None, dict[str, Any]]]
) -> list[Difference]:
    """Return how the live foreign keys of ``table`` fall short of ``expected``.

    A named key is looked up by its name; an unnamed one by its columns and
    the table it refers to.
    """
    out: list[Difference] = []
    constraints = live.get("constraints", {})
    for name, want in expected:
        if name is None:
            name = next(
                (
                    key
                    for key, shape in constraints.items()
                    if shape.get("type") == "foreign key"
                    and shape.get("columns") == want["columns"]
                    and shape.get("references") == want["references"]
                ),
                f"({', '.join(want['columns'])}) references {want['references']} "
                f"({', '.join(want['referred_columns'])})",
            )
        probe = {"constraints": {name: want}}
        have = {"constraints": {name: constraints[name]}} if name in constraints else {}
        out += compare_table(table, have, probe, compatible=True)
    return out


def create_table_if_missing(
    name: str, *elements: Any, schema: str | None = None, **kwargs: Any
) -> None:
    """Create the table ``name`` (``op.create_table``'s arguments), unless present.

    A present table is compatible when everything the call would create is
    there with the same definition: each column given (type, collation,
    nullability, default, identity, generated expression), the primary key,
    the unique and check constraints, the indexes, and the foreign keys with
    their actions. Extra columns and constraints, added by later revisions,
    are allowed.
    """
    if _offline():
        op.create_table(name, *elements, schema=schema, if_not_exists=True, **kwargs)
        return
    live = shapes.table_shape(op.get_bind(), _schema(schema), name)
    if live is None:
        op.create_table(name, *elements, schema=schema, if_not_exists=True, **kwargs)
        return
    # The elements go to the probe only: the table is not created for real.
    expected, foreign_keys = _probe_table(name, elements, kwargs)
    differences = compare_table(name, live, expected, compatible=True)
    differences += _foreign_key_differences(name, live, foreign_keys)
    if differences:
        raise ShapeConflict("table", name, tuple(differences))


def drop_table_if_present(name: str, *, schema: str | None = None) -> None:
    """Drop the table ``name`` if it exists."""
    op.drop_table(name, schema=_ddl_schema(schema), if_exists=True)


def add_column_if_missing(table: str, column: sa.Column, *, schema: str | None = None) -> None:
    """Add ``column`` to ``table``, unless a column of that name is there.

    A present column is compatible when it has the shape the call would give
    it (type, collation, nullability, default, identity, generated
    expression), and what the column brings along (a unique constraint, a
    foreign key) is there too.
    """
    if _offline():
        op.add_column(table, column, schema=schema, if_not_exists=True)
        return
    live = shapes.table_shape(op.get_bind(), _schema(schema), table)
    if live is None:
        raise ShapeConflict(
            "table",
            table,
            (Difference(MISSING, ObjectRef("table", table)),),
            summary=f"cannot add column {table}.{column.name}",
        )
    if column.name not in live["columns"]:
        op.add_column(table, column, schema=schema, if_not_exists=_is_postgresql() or None)
        return
    expected, foreign_keys = _probe_table(table, [column], {})
    differences = compare_table(table, live, expected, compatible=True)
    differences += _foreign_key_differences(table, live, foreign_keys)
    if differences:
        raise ShapeConflict("column", f"{table}.{column.name}", tuple(differences))


def drop_column_if_present(table: str, column_name: str, *, schema: str | None = None) -> None:
    """Drop the column ``column_name`` of ``table`` if it exists.

    On SQLite it goes through Alembic's batch mode, which rebuilds the table
    when SQLite's own ``DROP COLUMN`` cannot drop it.
    """
    if _offline():
        op.drop_column(table, column_name, schema=schema, if_exists=True)
        return
    live = shapes.table_shape(op.get_bind(), _schema(schema), table)
    if live is None or column_name not in live["columns"]:
        return
    if _is_postgresql():
        op.drop_column(table, column_name, schema=schema, if_exists=True)
    else:
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.drop_column(column_name)


# -- indexes -------------------------------------------------------------------


def _concurrent(concurrently: bool) -> bool:
    """Whether to build or drop concurrently: asked for, and on PostgreSQL."""
    return concurrently and _is_postgresql()


@contextlib.contextmanager
def _concurrent_block() -> Iterator[None]:
    """Run the block outside the revision's transaction, as a concurrent build must.

    The session's lock timeout applies; its statement timeout does not,
    unless the deploy asked for it (``--statement-timeout-on-builds``): a
    build on a large table takes as long as it takes, and blocks nobody.
    """
    context = op.get_context()
    environment = getattr(context, "environment_context", None)
    override = None if context.as_sql else builds_timeout(getattr(environment, "config", None))
    with context.autocommit_block():
        if override is None:
            yield
            return
        bind = op.get_bind()
        previous = bind.exec_driver_sql("SHOW statement_timeout").scalar()
        bind.exec_driver_sql(f"SET statement_timeout = '{override}'")
        try:
            yield
        finally:
            bind.exec_driver_sql(f"SET statement_timeout = '{previous}'")


def create_index_if_missing(
    name: str,
    table: str,
    columns: Sequence[Any],
    *,
    unique: bool = False,
    schema: str | None = None,
    concurrently: bool = False,
    **kwargs: Any,
) -> None:
    """Create the index ``name`` on ``table (columns)``, unless present.

    A present index is compatible when it is on ``table`` with the shape the
    call would give it: the same keys (columns or expressions, with their
    order, nulls order, collation and operator class), uniqueness, access
    method (``postgresql_using``), ``INCLUDE`` columns and predicate
    (``postgresql_where``, ``sqlite_where``).

    ``concurrently``: on PostgreSQL the index is built with ``CREATE INDEX
    CONCURRENTLY`` in an autocommit block, outside the revision's
    transaction, so that writers are not blocked while it builds. A
    same-named index left INVALID by an interrupted build is dropped
    (concurrently) and built again. On SQLite it is a plain build.
    """
    kwargs.pop("postgresql_concurrently", None)
    if _offline():
        if _concurrent(concurrently):
            # A CONCURRENTLY build cannot run in a transaction block.
            with _concurrent_block():
                op.create_index(
                    name, table, list(columns), unique=unique, schema=schema,
                    if_not_exists=True, postgresql_concurrently=True, **kwargs,
                )  # fmt: skip
            return
        op.create_index(
            name, table, list(columns), unique=unique, schema=schema, if_not_exists=True, **kwargs
        )
        return
    bind = op.get_bind()
    schema_name = _schema(schema)
    found_on = shapes.index_table(bind, schema_name, name)
    rebuild = False
    if found_on is not None:
        if found_on != table:
            raise ShapeConflict(
                "index",
                name,
                (
                    Difference(
                        CHANGED, ObjectRef("index", name, found_on), "table", table, found_on
                    ),
                ),
            )
        live = shapes.table_shape(bind, schema_name, table)["indexes"][name]

        def create(temporary: str) -> None:
            shapes.copy_table_structure(bind, table, schema_name)
            op.create_index(name, table, list(columns), unique=unique, schema=temporary, **kwargs)

        expected = shapes.probe(bind, table, create)["indexes"][name]
        differences = compare_table(table, {"indexes": {name: live}}, {"indexes": {name: expected}})
        invalid_only = [d.property for d in differences] == ["valid"] and not live.get("valid")
        if differences and not (invalid_only and _concurrent(concurrently)):
            raise ShapeConflict("index", name, tuple(differences))
        if not differences:
            return
        rebuild = True
    ddl_schema = schema_name if _is_postgresql() else schema
    if _concurrent(concurrently):
        with _concurrent_block():
            if rebuild:
                op.drop_index(
                    name, table_name=table, schema=ddl_schema, if_exists=True,
                    postgresql_concurrently=True,
                )  # fmt: skip
            op.create_index(
                name, table, list(columns), unique=unique, schema=ddl_schema,
                if_not_exists=True, postgresql_concurrently=True, **kwargs,
            )  # fmt: skip
        return
    op.create_index(
        name,
        table,
        list(columns),
        unique=unique,
        schema=ddl_schema,
        if_not_exists=_is_postgresql() or None,
        **kwargs,
    )


def drop_index_if_present(
    name: str,
    *,
    table: str | None = None,
    schema: str | None = None,
    concurrently: bool = False,
) -> None:
    """Drop the index ``name`` if it exists.

    ``concurrently``: on PostgreSQL, ``DROP INDEX CONCURRENTLY`` in an
    autocommit block, which does not block the table's readers and writers.
    """
    if _concurrent(concurrently):
        with _concurrent_block():
            op.drop_index(
                name, table_name=table, schema=_ddl_schema(schema), if_exists=True,
                postgresql_concurrently=True,
            )  # fmt: skip
        return
    if _offline() or _is_postgresql():
        op.drop_index(name, table_name=table, schema=_ddl_schema(schema), if_exists=True)
        return
    if shapes.index_table(op.get_bind(), _schema(schema), name) is not None:
        op.drop_index(name, table_name=table, schema=schema)
