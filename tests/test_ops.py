"""migsupport.ops on real databases: missing, compatible and conflicting objects.

Each helper is run through Alembic's ``op`` inside one migration transaction
(the ``migration_ops`` fixture, or ``pg_ops`` for PostgreSQL-only helpers).
Objects that exist beforehand are built and committed on a connection of
their own, with plain SQLAlchemy Core or SQL, never with the helper under test. After a
refused call the catalog is read again on the migration's own connection,
which would show any DDL the helper ran before raising.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from migsupport import ops
from migsupport.engine import create_engine
from migsupport.exceptions import EnumValueInUse, ShapeConflict
from tests.support import catalog as catalog_module
from tests.support.catalog import catalog

# -- fixtures and helpers ---------------------------------------------------------


@pytest.fixture
def pg_ops(pg_engine: Engine) -> Iterator[Operations]:
    """``migration_ops`` on PostgreSQL only, for the ENUM helpers."""
    with pg_engine.begin() as connection:
        context = MigrationContext.configure(connection)
        with Operations.context(context) as operations:
            yield operations


def catalog_in(operations: Operations) -> dict[str, Any]:
    """Return the catalog as the migration's connection sees it, uncommitted DDL included."""
    connection = operations.get_bind()
    if connection.dialect.name == "postgresql":
        return catalog_module._postgresql(connection)
    return catalog_module._sqlite(connection)


def inspector(operations: Operations) -> sa.Inspector:
    return sa.inspect(operations.get_bind())


def execute(engine: Engine, *statements: str) -> None:
    """Run SQL statements and commit them, outside the migration."""
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def widget_columns(*extra: sa.Column, **replaced: sa.Column | None) -> list[sa.Column]:
    """Return the columns of the ``widgets`` table, some replaced or left out (None)."""
    columns: dict[str, sa.Column | None] = {
        "id": sa.Column("id", sa.Integer, primary_key=True),
        "name": sa.Column("name", sa.String(50), nullable=False),
        "status": sa.Column("status", sa.String(10), server_default="new"),
        "parent_id": sa.Column(
            "parent_id", sa.Integer, sa.ForeignKey("parents.id", ondelete="CASCADE")
        ),
    }
    columns.update(replaced)
    return [column for column in columns.values() if column is not None] + list(extra)


def create_tables(engine: Engine, widgets: list[sa.Column] | None = None) -> None:
    """Commit ``parents`` and, given its columns, ``widgets``, with SQLAlchemy Core."""
    metadata = sa.MetaData()
    sa.Table("parents", metadata, sa.Column("id", sa.Integer, primary_key=True))
    if widgets is not None:
        sa.Table("widgets", metadata, *widgets)
    with engine.begin() as connection:
        metadata.create_all(connection)


def column_shapes(operations: Operations, table: str) -> list[tuple[str, str, bool]]:
    return [
        (column["name"], str(column["type"]), column["nullable"])
        for column in inspector(operations).get_columns(table)
    ]


def index_shapes(operations: Operations, table: str) -> list[tuple[str, list[str], bool]]:
    return sorted(
        (index["name"], index["column_names"], bool(index["unique"]))
        for index in inspector(operations).get_indexes(table)
    )


def enum_labels(operations: Operations) -> list[tuple[str, list[str]]]:
    return catalog_in(operations)["enums"]


# -- create_table_if_missing ------------------------------------------------------


def test_create_table_creates_a_missing_table(engine, migration_ops):
    create_tables(engine)

    ops.create_table_if_missing("widgets", *widget_columns())

    assert column_shapes(migration_ops, "widgets") == [
        ("id", "INTEGER", False),
        ("name", "VARCHAR(50)", False),
        ("status", "VARCHAR(10)", True),
        ("parent_id", "INTEGER", True),
    ]
    found = inspector(migration_ops)
    assert found.get_pk_constraint("widgets")["constrained_columns"] == ["id"]
    [status] = [c for c in found.get_columns("widgets") if c["name"] == "status"]
    assert status["default"].startswith("'new'")
    [fk] = found.get_foreign_keys("widgets")
    assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
        ["parent_id"],
        "parents",
        ["id"],
    )
    assert fk["options"]["ondelete"] == "CASCADE"


def test_create_table_is_a_no_op_on_the_table_it_created(engine, migration_ops):
    create_tables(engine)
    ops.create_table_if_missing("widgets", *widget_columns())
    created = catalog_in(migration_ops)

    ops.create_table_if_missing("widgets", *widget_columns())

    assert catalog_in(migration_ops) == created


def test_create_table_is_a_no_op_on_a_table_with_the_same_shape(engine, migration_ops):
    create_tables(engine, widget_columns())
    before = catalog(engine)

    ops.create_table_if_missing("widgets", *widget_columns())

    assert catalog_in(migration_ops) == before


def test_create_table_accepts_an_autoincrement_primary_key_it_would_create(engine, migration_ops):
    # SERIAL on PostgreSQL: the sequence default is part of what it creates.
    metadata = sa.MetaData()
    sa.Table("counters", metadata, sa.Column("id", sa.BigInteger, primary_key=True))
    with engine.begin() as connection:
        metadata.create_all(connection)
    before = catalog(engine)

    ops.create_table_if_missing("counters", sa.Column("id", sa.BigInteger, primary_key=True))

    assert catalog_in(migration_ops) == before


@pytest.mark.postgresql
def test_create_table_refuses_an_integer_key_without_the_sequence_it_would_create(
    pg_engine, pg_ops
):
    execute(pg_engine, "CREATE TABLE counters (id BIGINT PRIMARY KEY)")
    before = catalog(pg_engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_table_if_missing("counters", sa.Column("id", sa.BigInteger, primary_key=True))

    assert str(raised.value) == (
        "table counters exists with another shape: "
        "column counters.id has no default, expected default nextval(<sequence>)"
    )
    assert catalog_in(pg_ops) == before


def test_create_table_allows_columns_added_later(engine, migration_ops):
    create_tables(engine, widget_columns(sa.Column("added_later", sa.Integer, nullable=True)))
    before = catalog(engine)

    ops.create_table_if_missing("widgets", *widget_columns())

    assert catalog_in(migration_ops) == before


# Columns conflicting with widget_columns()' "name" / "status", and the difference found.
COLUMN_CONFLICTS = [
    pytest.param(
        lambda: {"name": sa.Column("name", sa.Integer, nullable=False)},
        "column widgets.name is INTEGER, expected VARCHAR(50)",
        id="another-type",
    ),
    pytest.param(
        lambda: {"name": sa.Column("name", sa.String(100), nullable=False)},
        "column widgets.name is VARCHAR(100), expected VARCHAR(50)",
        id="another-length",
    ),
    pytest.param(
        lambda: {"name": sa.Column("name", sa.String(50), nullable=True)},
        "column widgets.name is NULL, expected NOT NULL",
        id="another-nullability",
    ),
    pytest.param(
        lambda: {"status": sa.Column("status", sa.String(10), server_default="old")},
        "column widgets.status has default 'old', expected default 'new'",
        id="another-server-default",
    ),
    pytest.param(
        lambda: {"status": sa.Column("status", sa.String(10))},
        "column widgets.status has no default, expected default 'new'",
        id="no-server-default",
    ),
    pytest.param(
        lambda: {"status": None},
        "column widgets.status is missing",
        id="a-missing-column",
    ),
]


@pytest.mark.parametrize(("replaced", "difference"), COLUMN_CONFLICTS)
def test_create_table_refuses_a_table_with_a_conflicting_column(
    engine, migration_ops, replaced, difference
):
    create_tables(engine, widget_columns(**replaced()))
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_table_if_missing("widgets", *widget_columns())

    assert str(raised.value) == f"table widgets exists with another shape: {difference}"
    assert catalog_in(migration_ops) == before


def test_create_table_refuses_a_foreign_key_with_another_on_delete(engine, migration_ops):
    create_tables(
        engine,
        widget_columns(
            parent_id=sa.Column(
                "parent_id", sa.Integer, sa.ForeignKey("parents.id", ondelete="SET NULL")
            )
        ),
    )
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_table_if_missing("widgets", *widget_columns())

    name = (
        "widgets_parent_id_fkey"
        if engine.dialect.name == "postgresql"
        else "(parent_id) references parents (id)"
    )
    assert str(raised.value) == (
        f"table widgets exists with another shape: foreign key {name} on widgets: "
        "on delete is set null, expected cascade"
    )
    assert catalog_in(migration_ops) == before


def test_create_table_refuses_a_table_without_the_foreign_key(engine, migration_ops):
    create_tables(engine, widget_columns(parent_id=sa.Column("parent_id", sa.Integer)))
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_table_if_missing("widgets", *widget_columns())

    assert str(raised.value) == (
        "table widgets exists with another shape: "
        "foreign key (parent_id) references parents (id) on widgets is missing"
    )
    assert catalog_in(migration_ops) == before


def test_create_table_refuses_another_primary_key(engine, migration_ops):
    create_tables(
        engine,
        widget_columns(
            id=sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
            name=sa.Column("name", sa.String(50), primary_key=True),
        ),
    )
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_table_if_missing(
            "widgets",
            *widget_columns(id=sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)),
        )

    # PostgreSQL names the key after the table; SQLite keeps it unnamed.
    expected = (
        "primary key widgets_pkey on widgets: columns are (name), expected (id)"
        if engine.dialect.name == "postgresql"
        else "primary key (id) on widgets is missing"
    )
    assert str(raised.value) == f"table widgets exists with another shape: {expected}"
    assert catalog_in(migration_ops) == before


# -- drop_table_if_present --------------------------------------------------------


def test_drop_table_drops_a_present_table(engine, migration_ops):
    create_tables(engine, widget_columns())

    ops.drop_table_if_present("widgets")

    assert inspector(migration_ops).get_table_names() == ["parents"]


def test_drop_table_is_a_no_op_on_an_absent_table(engine, migration_ops):
    create_tables(engine)
    before = catalog(engine)

    ops.drop_table_if_present("widgets")

    assert catalog_in(migration_ops) == before


# -- add_column_if_missing --------------------------------------------------------


def note_column() -> sa.Column:
    return sa.Column("note", sa.String(200), nullable=False, server_default="none")


def test_add_column_adds_a_missing_column(engine, migration_ops):
    create_tables(engine, widget_columns())

    ops.add_column_if_missing("widgets", note_column())

    assert column_shapes(migration_ops, "widgets")[-1] == ("note", "VARCHAR(200)", False)
    [note] = [c for c in inspector(migration_ops).get_columns("widgets") if c["name"] == "note"]
    assert note["default"].startswith("'none'")


def test_add_column_is_a_no_op_on_the_column_it_added(engine, migration_ops):
    create_tables(engine, widget_columns())
    ops.add_column_if_missing("widgets", note_column())
    added = catalog_in(migration_ops)

    ops.add_column_if_missing("widgets", note_column())

    assert catalog_in(migration_ops) == added


def test_add_column_is_a_no_op_on_a_column_with_the_same_shape(engine, migration_ops):
    create_tables(engine, widget_columns(note_column()))
    before = catalog(engine)

    ops.add_column_if_missing("widgets", note_column())

    assert catalog_in(migration_ops) == before


@pytest.mark.parametrize(
    ("present", "found"),
    [
        pytest.param(
            lambda: sa.Column("note", sa.CHAR(200), nullable=False, server_default="none"),
            "column widgets.note is CHAR(200), expected VARCHAR(200)",
            id="another-type",
        ),
        pytest.param(
            lambda: sa.Column("note", sa.String(100), nullable=False, server_default="none"),
            "column widgets.note is VARCHAR(100), expected VARCHAR(200)",
            id="another-length",
        ),
        pytest.param(
            lambda: sa.Column("note", sa.String(200), nullable=True, server_default="none"),
            "column widgets.note is NULL, expected NOT NULL",
            id="another-nullability",
        ),
        pytest.param(
            lambda: sa.Column("note", sa.String(200), nullable=False, server_default="n/a"),
            "column widgets.note has default 'n/a', expected default 'none'",
            id="another-server-default",
        ),
    ],
)
def test_add_column_refuses_a_column_of_another_shape(engine, migration_ops, present, found):
    create_tables(engine, widget_columns(present()))
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.add_column_if_missing("widgets", note_column())

    assert str(raised.value) == f"column widgets.note exists with another shape: {found}"
    assert catalog_in(migration_ops) == before


def test_add_column_is_a_no_op_on_a_default_with_a_quote_in_it(engine, migration_ops):
    def motto() -> sa.Column:
        return sa.Column("motto", sa.String(20), server_default="it's")

    create_tables(engine, widget_columns(motto()))
    before = catalog(engine)

    ops.add_column_if_missing("widgets", motto())

    assert catalog_in(migration_ops) == before


def test_add_column_refuses_varchar_where_text_is_expected(engine, migration_ops):
    create_tables(engine, widget_columns(sa.Column("remark", sa.String())))
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.add_column_if_missing("widgets", sa.Column("remark", sa.Text()))

    assert str(raised.value) == (
        "column widgets.remark exists with another shape: "
        "column widgets.remark is VARCHAR, expected TEXT"
    )
    assert catalog_in(migration_ops) == before


def test_add_column_refuses_a_missing_table(engine, migration_ops):
    create_tables(engine)
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.add_column_if_missing("widgets", note_column())

    assert str(raised.value) == "cannot add column widgets.note: table widgets is missing"
    assert catalog_in(migration_ops) == before


# -- drop_column_if_present -------------------------------------------------------


def test_drop_column_drops_a_present_column_and_keeps_the_rows(engine, migration_ops):
    create_tables(engine, widget_columns(note_column()))
    execute(
        engine,
        "INSERT INTO parents (id) VALUES (1)",
        "INSERT INTO widgets (id, name, parent_id, note) VALUES (7, 'bolt', 1, 'x')",
    )

    ops.drop_column_if_present("widgets", "note")

    assert [name for name, _, _ in column_shapes(migration_ops, "widgets")] == [
        "id",
        "name",
        "status",
        "parent_id",
    ]
    rows = migration_ops.get_bind().exec_driver_sql("SELECT * FROM widgets").all()
    assert [tuple(row) for row in rows] == [(7, "bolt", "new", 1)]


def test_drop_column_is_a_no_op_on_an_absent_column(engine, migration_ops):
    create_tables(engine, widget_columns())
    before = catalog(engine)

    ops.drop_column_if_present("widgets", "note")

    assert catalog_in(migration_ops) == before


def test_drop_column_is_a_no_op_on_an_absent_table(engine, migration_ops):
    create_tables(engine)
    before = catalog(engine)

    ops.drop_column_if_present("widgets", "note")

    assert catalog_in(migration_ops) == before


# -- create_index_if_missing ------------------------------------------------------


def test_create_index_creates_a_missing_index(engine, migration_ops):
    create_tables(engine, widget_columns())

    ops.create_index_if_missing("ix_widgets_name_status", "widgets", ["name", "status"])
    ops.create_index_if_missing("ux_widgets_name", "widgets", ["name"], unique=True)

    assert index_shapes(migration_ops, "widgets") == [
        ("ix_widgets_name_status", ["name", "status"], False),
        ("ux_widgets_name", ["name"], True),
    ]


def test_create_index_is_a_no_op_on_the_index_it_created(engine, migration_ops):
    create_tables(engine, widget_columns())
    ops.create_index_if_missing("ux_widgets_name", "widgets", ["name"], unique=True)
    created = catalog_in(migration_ops)

    ops.create_index_if_missing("ux_widgets_name", "widgets", ["name"], unique=True)

    assert catalog_in(migration_ops) == created


def test_create_index_is_a_no_op_on_an_index_with_the_same_shape(engine, migration_ops):
    create_tables(engine, widget_columns())
    execute(engine, "CREATE INDEX ix_widgets_name_status ON widgets (name, status)")
    before = catalog(engine)

    ops.create_index_if_missing("ix_widgets_name_status", "widgets", ["name", "status"])

    assert catalog_in(migration_ops) == before


def refused_index(engine, operations, present, name, columns, unique=False) -> str:
    """Commit the index ``present``, refuse ``name`` on widgets (columns), return the message."""
    execute(engine, present)
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_index_if_missing(name, "widgets", columns, unique=unique)

    assert catalog_in(operations) == before
    return str(raised.value)


def test_create_index_refuses_an_index_on_other_columns(engine, migration_ops):
    create_tables(engine, widget_columns())

    message = refused_index(
        engine,
        migration_ops,
        "CREATE INDEX ix_widgets ON widgets (name, status)",
        "ix_widgets",
        ["name"],
    )

    assert message == (
        "index ix_widgets exists with another shape: "
        "index ix_widgets: keys are (name, status), expected (name)"
    )


def test_create_index_refuses_an_index_on_its_columns_in_another_order(engine, migration_ops):
    create_tables(engine, widget_columns())

    message = refused_index(
        engine,
        migration_ops,
        "CREATE INDEX ix_widgets ON widgets (status, name)",
        "ix_widgets",
        ["name", "status"],
    )

    assert message == (
        "index ix_widgets exists with another shape: "
        "index ix_widgets: keys are (status, name), expected (name, status)"
    )


@pytest.mark.parametrize(
    ("present", "unique", "expected", "found"),
    [
        pytest.param(
            "CREATE UNIQUE INDEX ix_widgets ON widgets (name)",
            False,
            "not unique",
            "unique",
            id="unique-index-found",
        ),
        pytest.param(
            "CREATE INDEX ix_widgets ON widgets (name)",
            True,
            "unique",
            "not unique",
            id="unique-index-expected",
        ),
    ],
)
def test_create_index_refuses_an_index_with_other_uniqueness(
    engine, migration_ops, present, unique, expected, found
):
    create_tables(engine, widget_columns())

    message = refused_index(engine, migration_ops, present, "ix_widgets", ["name"], unique)

    assert message == (
        "index ix_widgets exists with another shape: "
        f"index ix_widgets: uniqueness is {found}, expected {expected}"
    )


def test_create_index_refuses_a_same_named_index_on_another_table(engine, migration_ops):
    create_tables(engine, widget_columns())

    message = refused_index(
        engine, migration_ops, "CREATE INDEX ix_widgets ON parents (id)", "ix_widgets", ["id"]
    )

    assert message == (
        "index ix_widgets exists with another shape: "
        "index ix_widgets: table is parents, expected widgets"
    )


# Same-named indexes whose shape differs from what the call would create, in more
# than columns and uniqueness: (the index present, the call's arguments, the difference
# on each dialect).
INDEX_SHAPE_CONFLICTS = [
    pytest.param(
        "CREATE INDEX ix_widgets ON widgets (name) WHERE status = 'new'",
        {},
        {
            "postgresql": "index ix_widgets: predicate is ((status)::text = 'new'::text), "
            "expected none",
            "sqlite": "index ix_widgets: predicate is status = 'new', expected none",
        },
        id="a-predicate-found",
    ),
    pytest.param(
        "CREATE INDEX ix_widgets ON widgets (name)",
        {"postgresql_where": sa.text("status = 'new'"), "sqlite_where": sa.text("status = 'new'")},
        {
            "postgresql": "index ix_widgets: predicate is none, "
            "expected ((status)::text = 'new'::text)",
            "sqlite": "index ix_widgets: predicate is none, expected status = 'new'",
        },
        id="a-predicate-expected",
    ),
    pytest.param(
        "CREATE INDEX ix_widgets ON widgets (name DESC)",
        {},
        {
            "postgresql": "index ix_widgets: keys are (name DESC), expected (name)",
            "sqlite": "index ix_widgets: keys are (name desc), expected (name)",
        },
        id="another-sort-order",
    ),
]


@pytest.mark.parametrize(("present", "arguments", "difference"), INDEX_SHAPE_CONFLICTS)
def test_create_index_refuses_an_index_of_another_shape(
    engine, migration_ops, present, arguments, difference
):
    create_tables(engine, widget_columns())
    execute(engine, present)
    before = catalog(engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_index_if_missing("ix_widgets", "widgets", ["name"], **arguments)

    assert str(raised.value) == (
        f"index ix_widgets exists with another shape: {difference[engine.dialect.name]}"
    )
    assert catalog_in(migration_ops) == before


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("present", "difference"),
    [
        pytest.param(
            "CREATE INDEX ix_widgets ON widgets USING hash (name)",
            "index ix_widgets: method is hash, expected btree",
            id="another-method",
        ),
        pytest.param(
            "CREATE INDEX ix_widgets ON widgets (name varchar_pattern_ops)",
            "index ix_widgets: keys are (name varchar_pattern_ops), expected (name)",
            id="another-operator-class",
        ),
    ],
)
def test_create_index_refuses_another_method_or_operator_class(
    pg_engine, pg_ops, present, difference
):
    create_tables(pg_engine, widget_columns())
    execute(pg_engine, present)
    before = catalog(pg_engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_index_if_missing("ix_widgets", "widgets", ["name"])

    assert str(raised.value) == f"index ix_widgets exists with another shape: {difference}"
    assert catalog_in(pg_ops) == before


def test_create_index_is_a_no_op_on_an_index_with_the_same_predicate_spelled_otherwise(
    engine, migration_ops
):
    create_tables(engine, widget_columns())
    execute(engine, "CREATE INDEX ix_widgets ON widgets (name) WHERE (status = 'new')")
    before = catalog(engine)

    where = sa.text("status='new'")
    ops.create_index_if_missing(
        "ix_widgets", "widgets", ["name"], postgresql_where=where, sqlite_where=where
    )

    assert catalog_in(migration_ops) == before


@pytest.mark.postgresql
def test_create_index_concurrently_builds_outside_the_revisions_transaction(pg_engine):
    create_tables(pg_engine, widget_columns())
    with pg_engine.connect() as connection:
        context = MigrationContext.configure(connection)
        with Operations.context(context), context.begin_transaction():
            ops.create_index_if_missing("ix_widgets", "widgets", ["name"], concurrently=True)
            # Built and committed in an autocommit block: another session sees it now.
            assert index_catalog(pg_engine) == [
                ("ix_widgets", "CREATE INDEX ix_widgets ON public.widgets USING btree (name)", True)
            ]
            ops.create_index_if_missing("ix_widgets", "widgets", ["name"], concurrently=True)
    assert [name for name, _, _ in index_catalog(pg_engine)] == ["ix_widgets"]


def index_catalog(engine: Engine) -> list[tuple[str, str, bool]]:
    """Return (name, definition, valid) of every index on widgets, from another session."""
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.exec_driver_sql(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'widgets'::regclass AND NOT i.indisprimary ORDER BY 1"
            )
        ]


@pytest.mark.postgresql
def test_create_index_concurrently_rebuilds_an_invalid_leftover(pg_engine):
    create_tables(pg_engine, widget_columns())
    execute(
        pg_engine,
        "CREATE INDEX ix_widgets ON widgets (name)",
        # What an interrupted CREATE INDEX CONCURRENTLY leaves behind.
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_widgets'::regclass",
    )
    oid_before = scalar_of(pg_engine, "SELECT 'ix_widgets'::regclass::oid")
    with pg_engine.connect() as connection:
        context = MigrationContext.configure(connection)
        with Operations.context(context), context.begin_transaction():
            ops.create_index_if_missing("ix_widgets", "widgets", ["name"], concurrently=True)

    assert index_catalog(pg_engine) == [
        ("ix_widgets", "CREATE INDEX ix_widgets ON public.widgets USING btree (name)", True)
    ]
    assert scalar_of(pg_engine, "SELECT 'ix_widgets'::regclass::oid") != oid_before


@pytest.mark.postgresql
def test_create_index_refuses_an_invalid_index_when_not_building_concurrently(pg_engine, pg_ops):
    create_tables(pg_engine, widget_columns())
    execute(
        pg_engine,
        "CREATE INDEX ix_widgets ON widgets (name)",
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_widgets'::regclass",
    )
    before = catalog(pg_engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_index_if_missing("ix_widgets", "widgets", ["name"])

    assert str(raised.value) == (
        "index ix_widgets exists with another shape: "
        "index ix_widgets: validity is INVALID (a failed concurrent build), expected valid"
    )
    assert catalog_in(pg_ops) == before


def scalar_of(engine: Engine, sql: str) -> Any:
    with engine.connect() as connection:
        return connection.exec_driver_sql(sql).scalar()


@pytest.mark.postgresql
def test_drop_index_concurrently_drops_outside_the_revisions_transaction(pg_engine):
    create_tables(pg_engine, widget_columns())
    execute(pg_engine, "CREATE INDEX ix_widgets ON widgets (name)")
    with pg_engine.connect() as connection:
        context = MigrationContext.configure(connection)
        with Operations.context(context), context.begin_transaction():
            ops.drop_index_if_present("ix_widgets", table="widgets", concurrently=True)
            assert index_catalog(pg_engine) == []
            ops.drop_index_if_present("ix_widgets", table="widgets", concurrently=True)


def test_offline_concurrent_builds_leave_the_transaction(tmp_path):
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    with Operations.context(context):
        ops.create_index_if_missing("ix_widgets", "widgets", ["name"], concurrently=True)
        ops.drop_index_if_present("ix_widgets", table="widgets", concurrently=True)

    statements = [" ".join(s.split()) for s in buffer.getvalue().split(";\n") if s.strip()]
    assert statements == [
        "COMMIT",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_widgets ON widgets (name)",
        "BEGIN",
        "COMMIT",
        "DROP INDEX CONCURRENTLY IF EXISTS ix_widgets",
        "BEGIN",
    ]


# -- drop_index_if_present --------------------------------------------------------


def test_drop_index_drops_a_present_index(engine, migration_ops):
    create_tables(engine, widget_columns())
    execute(
        engine,
        "CREATE INDEX ix_widgets_name ON widgets (name)",
        "CREATE INDEX ix_widgets_status ON widgets (status)",
    )

    ops.drop_index_if_present("ix_widgets_name", table="widgets")

    assert index_shapes(migration_ops, "widgets") == [("ix_widgets_status", ["status"], False)]


def test_drop_index_is_a_no_op_on_an_absent_index(engine, migration_ops):
    create_tables(engine, widget_columns())
    execute(engine, "CREATE INDEX ix_widgets_status ON widgets (status)")
    before = catalog(engine)

    ops.drop_index_if_present("ix_widgets_name", table="widgets")
    ops.drop_index_if_present("ix_widgets_name")

    assert catalog_in(migration_ops) == before


# -- enum_type ----------------------------------------------------------------------


def test_enum_type_is_a_varchar_of_the_longest_label_on_sqlite(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        metadata = sa.MetaData()
        sa.Table("things", metadata, sa.Column("state", ops.enum_type("state", ["on", "paused"])))
        with engine.begin() as connection:
            metadata.create_all(connection)
        [column] = sa.inspect(engine).get_columns("things")
        assert str(column["type"]) == "VARCHAR(6)"
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_enum_type_uses_the_type_without_creating_it(pg_engine, pg_ops):
    def state_column() -> sa.Column:
        return sa.Column("state", ops.enum_type("state", ["on", "off"]), nullable=False)

    ops.create_enum_if_missing("state", ["on", "off"])
    ops.create_table_if_missing("things", state_column())
    created = catalog_in(pg_ops)
    ops.create_table_if_missing("things", state_column())

    assert created["enums"] == [("state", ["on", "off"])]
    assert [row[2:5] for row in created["columns"]] == [("state", "USER-DEFINED", "state")]
    assert catalog_in(pg_ops) == created


# -- create_enum_if_missing (PostgreSQL) --------------------------------------------


@pytest.mark.postgresql
def test_create_enum_creates_a_missing_type(pg_ops):
    ops.create_enum_if_missing("state", ["on", "off", "it's"])

    assert enum_labels(pg_ops) == [("state", ["on", "off", "it's"])]


@pytest.mark.postgresql
def test_create_enum_is_a_no_op_on_the_same_labels(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on', 'off')")
    before = catalog(pg_engine)

    ops.create_enum_if_missing("state", ["on", "off"])

    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
def test_create_enum_allows_labels_added_after_the_expected_ones(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on', 'off', 'paused')")
    before = catalog(pg_engine)

    ops.create_enum_if_missing("state", ["on", "off"])

    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("present", "found"),
    [
        pytest.param("('off', 'on')", "(off, on)", id="labels-in-another-order"),
        pytest.param("('on')", "(on)", id="a-label-missing"),
        pytest.param("('paused', 'on', 'off')", "(paused, on, off)", id="a-label-before-them"),
    ],
)
def test_create_enum_refuses_a_type_with_other_labels(pg_engine, pg_ops, present, found):
    execute(pg_engine, f"CREATE TYPE state AS ENUM {present}")
    before = catalog(pg_engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.create_enum_if_missing("state", ["on", "off"])

    assert str(raised.value) == (
        f"enum state exists with another shape: enum state: labels are {found}, expected (on, off)"
    )
    assert catalog_in(pg_ops) == before


def test_enum_helpers_are_no_ops_on_sqlite(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        before = catalog(engine)
        with engine.begin() as connection:
            context = MigrationContext.configure(connection)
            with Operations.context(context):
                ops.create_enum_if_missing("state", ["on", "off"])
                ops.add_enum_value_if_missing("state", "paused", after="off")
                ops.drop_enum_value_if_present("state", "paused")
                ops.drop_enum_if_present("state")
        assert catalog(engine) == before
    finally:
        engine.dispose()


# -- add_enum_value_if_missing (PostgreSQL) -----------------------------------------


@pytest.mark.postgresql
def test_add_enum_value_adds_a_missing_label_after_the_given_one(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on', 'off')")

    ops.add_enum_value_if_missing("state", "paused", after="on")
    ops.add_enum_value_if_missing("state", "gone")

    assert enum_labels(pg_ops) == [("state", ["on", "paused", "off", "gone"])]


@pytest.mark.postgresql
def test_add_enum_value_is_a_no_op_on_a_label_right_after_the_given_one(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on', 'off', 'paused')")
    before = catalog(pg_engine)

    ops.add_enum_value_if_missing("state", "off", after="on")
    ops.add_enum_value_if_missing("state", "off")

    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
def test_add_enum_value_refuses_a_label_at_another_position(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on', 'paused', 'off')")
    before = catalog(pg_engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.add_enum_value_if_missing("state", "off", after="on")

    assert str(raised.value) == (
        "enum state exists with another shape: "
        "enum state: labels are (on, paused, off), expected 'on' followed by 'off'"
    )
    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
def test_add_enum_value_refuses_a_type_without_the_label_to_follow(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on', 'off')")
    before = catalog(pg_engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.add_enum_value_if_missing("state", "gone", after="paused")

    assert str(raised.value) == (
        "enum state exists with another shape: "
        "enum state: labels are (on, off), expected 'paused' followed by 'gone'"
    )
    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
def test_add_enum_value_refuses_a_missing_type(pg_engine, pg_ops):
    before = catalog(pg_engine)

    with pytest.raises(ShapeConflict) as raised:
        ops.add_enum_value_if_missing("state", "paused", after="on")

    assert str(raised.value) == "cannot add label 'paused' to enum state: enum state is missing"
    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
def test_add_enum_value_with_autocommit_commits_the_label_at_once(pg_engine):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on', 'off')")
    with pg_engine.connect() as connection:
        context = MigrationContext.configure(connection)
        with Operations.context(context), context.begin_transaction():
            ops.add_enum_value_if_missing("state", "paused", after="off", autocommit=True)
            # Another connection sees it while the migration is still running.
            assert catalog(pg_engine)["enums"] == [("state", ["on", "off", "paused"])]


# -- drop_enum_value_if_present ------------------------------------------------------


def create_things(engine: Engine, labels: list[str], rows: list[str]) -> None:
    """Commit the type ``state`` (on PostgreSQL) and a table ``things`` using it."""
    if engine.dialect.name == "postgresql":
        execute(engine, f"CREATE TYPE state AS ENUM ({', '.join(map(repr, labels))})")
    metadata = sa.MetaData()
    things = sa.Table(
        "things",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", ops.enum_type("state", labels), nullable=False),
    )
    with engine.begin() as connection:
        metadata.create_all(connection)
        for number, value in enumerate(rows, start=1):
            connection.execute(things.insert().values(id=number, state=value))


def things_rows(operations: Operations) -> list[tuple]:
    result = operations.get_bind().exec_driver_sql("SELECT id, state FROM things ORDER BY id")
    return [tuple(row) for row in result]


@pytest.mark.postgresql
def test_drop_enum_value_rebuilds_the_type_without_an_unused_label(pg_engine, pg_ops):
    create_things(pg_engine, ["on", "paused", "off"], ["on", "off"])

    ops.drop_enum_value_if_present("state", "paused")

    after = catalog_in(pg_ops)
    assert after["enums"] == [("state", ["on", "off"])]
    assert [row[2:5] for row in after["columns"] if row[0] == "things"] == [
        ("id", "integer", "int4"),
        ("state", "USER-DEFINED", "state"),
    ]
    assert things_rows(pg_ops) == [(1, "on"), (2, "off")]


@pytest.mark.postgresql
def test_drop_enum_value_is_a_no_op_on_an_absent_label_or_type(pg_engine, pg_ops):
    create_things(pg_engine, ["on", "off"], ["on"])
    before = catalog(pg_engine)

    ops.drop_enum_value_if_present("state", "paused")
    ops.drop_enum_value_if_present("no_such_type", "paused")

    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
def test_drop_enum_value_refuses_a_label_rows_use_and_changes_nothing(pg_engine, pg_ops):
    create_things(pg_engine, ["on", "paused", "off"], ["on", "paused"])
    before = catalog(pg_engine)

    with pytest.raises(EnumValueInUse) as raised:
        ops.drop_enum_value_if_present("state", "paused")

    assert str(raised.value) == (
        "cannot drop label 'paused' from enum state: rows in things.state still use it; "
        "update or delete them first"
    )
    assert catalog_in(pg_ops) == before
    assert things_rows(pg_ops) == [(1, "on"), (2, "paused")]


def test_drop_enum_value_refuses_a_label_rows_use_on_sqlite(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        create_things(engine, ["on", "paused", "off"], ["on", "paused"])
        before = catalog(engine)
        with engine.begin() as connection:
            context = MigrationContext.configure(connection)
            with Operations.context(context) as operations:
                with pytest.raises(EnumValueInUse) as raised:
                    ops.drop_enum_value_if_present("state", "paused", columns=[("things", "state")])
                assert things_rows(operations) == [(1, "on"), (2, "paused")]
                # Unused: nothing to do, there is no type to rebuild.
                ops.drop_enum_value_if_present("state", "off", columns=[("things", "state")])
        assert str(raised.value) == (
            "cannot drop label 'paused' from enum state: rows in things.state still use it; "
            "update or delete them first"
        )
        assert catalog(engine) == before
    finally:
        engine.dispose()


# -- drop_enum_if_present (PostgreSQL) ----------------------------------------------


@pytest.mark.postgresql
def test_drop_enum_drops_a_present_type(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE state AS ENUM ('on')", "CREATE TYPE mood AS ENUM ('ok')")

    ops.drop_enum_if_present("state")

    assert enum_labels(pg_ops) == [("mood", ["ok"])]


@pytest.mark.postgresql
def test_drop_enum_is_a_no_op_on_an_absent_type(pg_engine, pg_ops):
    execute(pg_engine, "CREATE TYPE mood AS ENUM ('ok')")
    before = catalog(pg_engine)

    ops.drop_enum_if_present("state")

    assert catalog_in(pg_ops) == before


@pytest.mark.postgresql
def test_drop_enum_refuses_a_type_a_column_uses(pg_engine):
    create_things(pg_engine, ["on", "off"], ["on"])
    before = catalog(pg_engine)

    with pg_engine.connect() as connection:
        with (
            Operations.context(MigrationContext.configure(connection)),
            pytest.raises(sa.exc.InternalError, match="other objects depend on it"),
        ):
            ops.drop_enum_if_present("state")
        connection.rollback()

    assert catalog(pg_engine) == before


# -- schemas on the search_path (PostgreSQL) ------------------------------------------

OTHER_SCHEMA = (
    "CREATE SCHEMA other",
    "CREATE TYPE other.state AS ENUM ('off', 'on')",
    "CREATE TABLE other.widgets (id INTEGER PRIMARY KEY, name INTEGER)",
    "CREATE INDEX ix_widgets_name ON other.widgets (id, name)",
)


def other_schema(connection: sa.Connection) -> list[tuple]:
    """Return what schema ``other`` holds: tables, indexes and types."""
    return [
        tuple(row)
        for row in connection.exec_driver_sql(
            "SELECT c.relkind::text, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'other' "
            "UNION ALL SELECT 'type', t.typname FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'other' AND t.typtype = 'e' ORDER BY 1, 2"
        )
    ]


OTHER_SCHEMA_OBJECTS = [
    ("i", "ix_widgets_name"),
    ("i", "widgets_pkey"),
    ("r", "widgets"),
    ("type", "state"),
]


@pytest.mark.postgresql
def test_create_helpers_ignore_same_named_objects_later_on_the_search_path(pg_engine, pg_ops):
    execute(pg_engine, *OTHER_SCHEMA)
    pg_ops.get_bind().exec_driver_sql("SET search_path TO public, other")

    ops.create_enum_if_missing("state", ["on", "off"])
    ops.create_table_if_missing("widgets", sa.Column("name", sa.String(50), nullable=False))
    ops.create_index_if_missing("ix_widgets_name", "widgets", ["name"])

    public = catalog_in(pg_ops)
    assert public["enums"] == [("state", ["on", "off"])]
    assert [row[2:6] for row in public["columns"]] == [("name", "character varying", "varchar", 50)]
    assert public["indexes"] == [
        (
            "widgets",
            "ix_widgets_name",
            "CREATE INDEX ix_widgets_name ON public.widgets USING btree (name)",
        )
    ]
    assert other_schema(pg_ops.get_bind()) == OTHER_SCHEMA_OBJECTS


@pytest.mark.postgresql
def test_create_helpers_check_the_current_schema_first_on_the_search_path(pg_engine, pg_ops):
    # With "other" first, unqualified DDL lands there: that is what is checked.
    execute(pg_engine, *OTHER_SCHEMA, "CREATE TABLE public.widgets (name VARCHAR(50) NOT NULL)")
    before = catalog(pg_engine)
    pg_ops.get_bind().exec_driver_sql("SET search_path TO other, public")

    with pytest.raises(ShapeConflict) as table_conflict:
        ops.create_table_if_missing("widgets", sa.Column("name", sa.String(50), nullable=False))
    with pytest.raises(ShapeConflict) as enum_conflict:
        ops.create_enum_if_missing("state", ["on", "off"])

    assert str(table_conflict.value) == (
        "table widgets exists with another shape: "
        "column widgets.name is INTEGER, expected VARCHAR(50); "
        "column widgets.name is NULL, expected NOT NULL"
    )
    assert str(enum_conflict.value) == (
        "enum state exists with another shape: enum state: labels are (off, on), expected (on, off)"
    )
    assert catalog_in(pg_ops) == before
    assert other_schema(pg_ops.get_bind()) == OTHER_SCHEMA_OBJECTS


@pytest.mark.postgresql
def test_drop_helpers_leave_same_named_objects_later_on_the_search_path(pg_engine, pg_ops):
    execute(pg_engine, *OTHER_SCHEMA)
    before = catalog(pg_engine)
    pg_ops.get_bind().exec_driver_sql("SET search_path TO public, other")

    ops.drop_index_if_present("ix_widgets_name", table="widgets")
    ops.drop_column_if_present("widgets", "name")
    ops.drop_table_if_present("widgets")
    ops.drop_enum_value_if_present("state", "on")
    ops.drop_enum_if_present("state")

    assert catalog_in(pg_ops) == before
    assert other_schema(pg_ops.get_bind()) == OTHER_SCHEMA_OBJECTS
    assert [c["name"] for c in inspector(pg_ops).get_columns("widgets", schema="other")] == [
        "id",
        "name",
    ]


@pytest.mark.postgresql
def test_create_index_does_not_index_a_same_named_table_in_another_schema(pg_engine):
    execute(pg_engine, *OTHER_SCHEMA)
    with pg_engine.connect() as connection:
        connection.exec_driver_sql("SET search_path TO public, other")
        with (
            Operations.context(MigrationContext.configure(connection)),
            pytest.raises(sa.exc.ProgrammingError, match=r'relation "public\.widgets" does not'),
        ):
            ops.create_index_if_missing("ix_widgets_id", "widgets", ["id"])
        connection.rollback()
        assert other_schema(connection) == OTHER_SCHEMA_OBJECTS


# -- offline (--sql) scripts ------------------------------------------------------------


def offline_script() -> str:
    """Return the PostgreSQL script the helpers write in offline (as_sql) mode."""
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    with Operations.context(context):
        ops.create_enum_if_missing("state", ["on", "off"])
        ops.add_enum_value_if_missing("state", "paused", after="on")
        ops.create_table_if_missing(
            "widgets",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("state", ops.enum_type("state", ["on", "paused", "off"]), nullable=False),
        )
        ops.add_column_if_missing("widgets", sa.Column("name", sa.String(50)))
        ops.create_index_if_missing("ix_widgets_name", "widgets", ["name"], unique=True)
    return buffer.getvalue()


def test_offline_script_uses_if_not_exists_everywhere():
    statements = [" ".join(s.split()) for s in offline_script().split(";\n") if s.strip()]

    assert statements == [
        "DO $$ BEGIN CREATE TYPE state AS ENUM ('on', 'off'); "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "ALTER TYPE state ADD VALUE IF NOT EXISTS 'paused' AFTER 'on'",
        "CREATE TABLE IF NOT EXISTS widgets ( id SERIAL NOT NULL, state state NOT NULL, "
        "PRIMARY KEY (id) )",
        "ALTER TABLE widgets ADD COLUMN IF NOT EXISTS name VARCHAR(50)",
        "CREATE UNIQUE INDEX IF NOT EXISTS ix_widgets_name ON widgets (name)",
    ]


def test_offline_drops_use_if_exists():
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    with Operations.context(context):
        ops.drop_index_if_present("ix_widgets_name", table="widgets")
        ops.drop_column_if_present("widgets", "name")
        ops.drop_table_if_present("widgets")
        ops.drop_enum_if_present("state")
        with pytest.raises(ShapeConflict) as raised:
            ops.drop_enum_value_if_present("state", "paused")

    statements = [" ".join(s.split()) for s in buffer.getvalue().split(";\n") if s.strip()]
    assert statements == [
        "DROP INDEX IF EXISTS ix_widgets_name",
        "ALTER TABLE widgets DROP COLUMN IF EXISTS name",
        "DROP TABLE IF EXISTS widgets",
        "DROP TYPE IF EXISTS state",
    ]
    assert str(raised.value) == (
        "enum state cannot lose a label in an offline (--sql) run: "
        "the type is rebuilt, which needs an online connection"
    )


@pytest.mark.postgresql
def test_offline_script_runs_twice_on_postgresql(pg_engine):
    script = offline_script()
    execute(pg_engine, script)
    once = catalog(pg_engine)

    execute(pg_engine, script)

    assert catalog(pg_engine) == once
    assert once["enums"] == [("state", ["on", "paused", "off"])]
    assert [row[1] for row in once["indexes"]] == ["ix_widgets_name", "widgets_pkey"]
