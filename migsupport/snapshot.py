"""A normalized, comparable snapshot of the Alembic-owned schema.

A :class:`Snapshot` covers what DESIGN.md calls "equal": tables; columns
with type (length and precision included), nullability and server default;
primary keys; foreign keys with ``ON DELETE``; unique constraints; indexes
with name, columns and uniqueness; ENUM types with their labels in order.
It is read with SQLAlchemy's bulk reflection (``Inspector.get_multi_*``), a
handful of catalog queries whatever the number of tables, and it is plain
data: it round-trips through JSON for the ledger, and two snapshots compare
with :func:`compare`, which yields differences a person can read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from migsupport.bridge import django_table_names
from migsupport.schema import normalize_default, normalize_ondelete, render_type


@dataclass(frozen=True)
class Snapshot:
    """The Alembic-owned schema of one database, normalized.

    ``tables`` maps a table name to its shape (``columns``, ``primary_key``,
    ``foreign_keys``, ``unique`` and ``indexes``); ``enums`` maps an ENUM
    type's name to its labels in order. Both are JSON-ready.
    """

    tables: Mapping[str, Any] = field(default_factory=dict)
    enums: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.tables and not self.enums

    def to_dict(self) -> dict[str, Any]:
        return {"tables": dict(self.tables), "enums": dict(self.enums)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(tables=dict(data.get("tables", {})), enums=dict(data.get("enums", {})))

    def digest(self) -> str:
        """Return a checksum equal for equal snapshots, whatever their key order.

        Computed once: a snapshot is never changed after it is made.
        """
        cached = self.__dict__.get("_digest")
        if cached is None:
            text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
            cached = hashlib.sha256(text.encode()).hexdigest()
            object.__setattr__(self, "_digest", cached)
        return cached

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())


def current_schema(connection: sa.Connection) -> str | None:
    """Return the schema unqualified DDL lands in on this connection."""
    if connection.dialect.name == "postgresql":
        return connection.execute(sa.text("SELECT current_schema()")).scalar()
    return None


def owned_tables_elsewhere(connection: sa.Connection, names: Iterable[str]) -> dict[str, list[str]]:
    """Return, per schema off the search_path, which of the tables ``names`` it holds.

    PostgreSQL only (elsewhere: nothing); the system schemas are left out,
    and so are the schemas on the search_path, which the connection's
    settings name on purpose.
    """
    if connection.dialect.name != "postgresql":
        return {}
    rows = connection.execute(
        sa.text(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(:names) "
            "AND n.nspname IS DISTINCT FROM current_schema() "
            "AND NOT n.nspname = ANY(current_schemas(false)) "
            "AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' "
            "ORDER BY 1, 2"
        ),
        {"names": sorted(set(names))},
    )
    found: dict[str, list[str]] = {}
    for schema, table in rows:
        found.setdefault(schema, []).append(table)
    return found


def take_snapshot(connection: sa.Connection, *, schema: str | None = None) -> Snapshot:
    """Return the snapshot of the Alembic-owned objects ``connection`` sees.

    Only ``schema`` is read (default: the connection's current schema), so a
    same-named table elsewhere on the ``search_path`` is never mistaken for
    one of ours. Django's tables and Alembic's version table are left out,
    by the rule ``alembic/env.py`` uses.
    """
    schema = schema or current_schema(connection)
    inspector = sa.inspect(connection)
    dialect = connection.dialect
    hidden = django_table_names()
    names = [n for n in inspector.get_table_names(schema=schema) if n not in hidden]
    tables: dict[str, Any] = {}
    if names:
        kwargs = {"schema": schema, "filter_names": names}
        columns = inspector.get_multi_columns(**kwargs)
        pks = inspector.get_multi_pk_constraint(**kwargs)
        fks = inspector.get_multi_foreign_keys(**kwargs)
        uniques = inspector.get_multi_unique_constraints(**kwargs)
        indexes = inspector.get_multi_indexes(**kwargs)
        for name in names:
            key = (schema, name)
            tables[name] = _table_shape(
                dialect, schema, columns[key], pks[key], fks[key], uniques[key], indexes[key]
            )
    enums: dict[str, list[str]] = {}
    if dialect.name == "postgresql":
        for enum in inspector.get_enums(schema=schema):
            enums[enum["name"]] = list(enum["labels"])
    return Snapshot(tables=tables, enums=enums)


def _table_shape(
    dialect: sa.Dialect,
    schema: str | None,
    columns: list[dict[str, Any]],
    pk: dict[str, Any],
    fks: list[dict[str, Any]],
    uniques: list[dict[str, Any]],
    indexes: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "columns": {
            col["name"]: {
                "type": render_type(col["type"], dialect),
                "nullable": bool(col["nullable"]),
                "default": normalize_default(col.get("default")),
            }
            for col in columns
        },
        "primary_key": list(pk.get("constrained_columns") or []),
        "foreign_keys": sorted(
            (
                {
                    "columns": list(fk["constrained_columns"]),
                    "referred_table": _referred_table(fk, schema),
                    "referred_columns": list(fk["referred_columns"]),
                    "ondelete": normalize_ondelete((fk.get("options") or {}).get("ondelete")),
                }
                for fk in fks
            ),
            key=_fk_key,
        ),
        "unique": sorted(list(uq["column_names"]) for uq in uniques),
        "indexes": {
            index["name"]: _index_shape(index)
            for index in indexes
            # The index behind a unique constraint is the constraint itself.
            if not index.get("duplicates_constraint")
        },
    }


def _index_shape(index: Mapping[str, Any]) -> dict[str, Any]:
    shape: dict[str, Any] = {
        # An expression's slot in column_names is None; its text is in expressions.
        "columns": [str(c) for c in index.get("expressions") or index["column_names"]],
        "unique": bool(index["unique"]),
    }
    # Only non-default operator classes are reported (PostgreSQL), so an
    # index without any keeps the shape it always had.
    ops = (index.get("dialect_options") or {}).get("postgresql_ops")
    if ops:
        shape["opclasses"] = {str(k): v for k, v in sorted(ops.items())}
    return shape


def _referred_table(fk: Mapping[str, Any], schema: str | None) -> str:
    """Return the table a foreign key refers to, qualified when it is in another schema.

    A same-named table in another schema is another table.
    """
    referred_schema = fk.get("referred_schema")
    if referred_schema is None or referred_schema == schema:
        return fk["referred_table"]
    return f"{referred_schema}.{fk['referred_table']}"


def _fk_key(fk: Mapping[str, Any]) -> str:
    columns, referred = ", ".join(fk["columns"]), ", ".join(fk["referred_columns"])
    return f"({columns}) -> {fk['referred_table']} ({referred})"


def _null(flag: bool) -> str:
    return "NULL" if flag else "NOT NULL"


def _default(value: str | None) -> str:
    return "no default" if value is None else f"default {value}"


def compare(live: Snapshot, expected: Snapshot) -> list[str]:
    """Return how ``live`` differs from ``expected``, one readable line per difference.

    An empty list means the two are equal.
    """
    differences: list[str] = []
    for name in sorted(expected.enums.keys() - live.enums.keys()):
        differences.append(f"enum {name} is missing")
    for name in sorted(live.enums.keys() - expected.enums.keys()):
        differences.append(f"enum {name} is unexpected")
    for name in sorted(live.enums.keys() & expected.enums.keys()):
        if list(live.enums[name]) != list(expected.enums[name]):
            differences.append(
                f"enum {name}: labels {','.join(live.enums[name])}, "
                f"expected {','.join(expected.enums[name])}"
            )
    for name in sorted(expected.tables.keys() - live.tables.keys()):
        differences.append(f"table {name} is missing")
    for name in sorted(live.tables.keys() - expected.tables.keys()):
        differences.append(f"table {name} is unexpected")
    for name in sorted(live.tables.keys() & expected.tables.keys()):
        differences += _compare_table(name, live.tables[name], expected.tables[name])
    return differences


def _compare_table(name: str, live: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    live_cols, want_cols = live["columns"], expected["columns"]
    for col in sorted(want_cols.keys() - live_cols.keys()):
        out.append(f"column {name}.{col} is missing")
    for col in sorted(live_cols.keys() - want_cols.keys()):
        out.append(f"table {name}: unexpected column {col}")
    for col in sorted(live_cols.keys() & want_cols.keys()):
        have, want = live_cols[col], want_cols[col]
        if have["type"] != want["type"]:
            out.append(f"column {name}.{col}: {have['type']}, expected {want['type']}")
        if have["nullable"] != want["nullable"]:
            out.append(
                f"column {name}.{col}: {_null(have['nullable'])}, "
                f"expected {_null(want['nullable'])}"
            )
        if have["default"] != want["default"]:
            out.append(
                f"column {name}.{col}: {_default(have['default'])}, "
                f"expected {_default(want['default'])}"
            )
    if list(live["primary_key"]) != list(expected["primary_key"]):
        out.append(
            f"table {name}: primary key ({', '.join(live['primary_key'])}), "
            f"expected ({', '.join(expected['primary_key'])})"
        )
    out += _compare_foreign_keys(name, live["foreign_keys"], expected["foreign_keys"])
    live_uq = {tuple(cols) for cols in live["unique"]}
    want_uq = {tuple(cols) for cols in expected["unique"]}
    for cols in sorted(want_uq - live_uq):
        out.append(f"table {name}: unique constraint ({', '.join(cols)}) is missing")
    for cols in sorted(live_uq - want_uq):
        out.append(f"table {name}: unexpected unique constraint ({', '.join(cols)})")
    out += _compare_indexes(name, live["indexes"], expected["indexes"])
    return out


def _compare_foreign_keys(
    table: str, live: Iterable[Mapping[str, Any]], expected: Iterable[Mapping[str, Any]]
) -> list[str]:
    out: list[str] = []
    have = {_fk_key(fk): fk for fk in live}
    want = {_fk_key(fk): fk for fk in expected}
    for key in sorted(want.keys() - have.keys()):
        out.append(f"table {table}: foreign key {key} is missing")
    for key in sorted(have.keys() - want.keys()):
        out.append(f"table {table}: unexpected foreign key {key}")
    for key in sorted(have.keys() & want.keys()):
        if have[key]["ondelete"] != want[key]["ondelete"]:
            out.append(
                f"table {table}: foreign key {key}: on delete "
                f"{(have[key]['ondelete'] or 'no action').lower()}, expected on delete "
                f"{(want[key]['ondelete'] or 'no action').lower()}"
            )
    return out


def _index_text(table: str, index: Mapping[str, Any]) -> str:
    unique = "unique " if index["unique"] else ""
    ops = index.get("opclasses") or {}
    columns = ", ".join(f"{c} {ops[c]}" if c in ops else c for c in index["columns"])
    return f"{unique}on {table} ({columns})"


def _compare_indexes(table: str, live: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name in sorted(expected.keys() - live.keys()):
        out.append(f"index {name} is missing")
    for name in sorted(live.keys() - expected.keys()):
        out.append(f"index {name} is unexpected")
    for name in sorted(live.keys() & expected.keys()):
        if dict(live[name]) != dict(expected[name]):
            out.append(
                f"index {name}: {_index_text(table, live[name])}, "
                f"expected {_index_text(table, expected[name])}"
            )
    return out
