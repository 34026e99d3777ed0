"""A normalized, comparable snapshot of a schema, and what "equal" means.

A :class:`Snapshot` holds the shapes :mod:`migsupport.shapes` reads, by kind
and name: tables (with their columns, constraints, indexes, triggers, rules
and policies), ENUM types, domains, sequences, functions and extensions. It
is plain data: it round-trips through JSON for the ledger, and it has a
digest, a checksum of that JSON.

Which objects count is the caller's: :class:`Ownership` says which tables
belong to someone else (never read), and which objects are Alembic's
(compared) rather than merely there (listed as unowned). :func:`compare`
returns :class:`~migsupport.differences.Difference` objects; an empty list
means the two schemas are equal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from migsupport.differences import (
    CHANGED,
    CONSTRAINT_WORDS,
    MISSING,
    UNEXPECTED,
    Difference,
    ObjectRef,
)
from migsupport.shapes import KINDS, current_schema, read_schema

__all__ = [
    "Ownership",
    "Snapshot",
    "compare",
    "current_schema",
    "owned_tables_elsewhere",
    "take_snapshot",
]

# The word for one object of each kind, in messages.
OBJECT_TYPES = {
    "tables": "table",
    "enums": "enum",
    "domains": "domain",
    "sequences": "sequence",
    "functions": "function",
    "extensions": "extension",
}


@dataclass(frozen=True)
class Snapshot:
    """The schema of one database, normalized: per kind, each object's shape by name."""

    tables: Mapping[str, Any] = field(default_factory=dict)
    enums: Mapping[str, list[str]] = field(default_factory=dict)
    domains: Mapping[str, Any] = field(default_factory=dict)
    sequences: Mapping[str, Any] = field(default_factory=dict)
    functions: Mapping[str, Any] = field(default_factory=dict)
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, kind) for kind in KINDS)

    def kinds(self) -> dict[str, Mapping[str, Any]]:
        """Return each kind's objects, in the order they are compared."""
        return {kind: getattr(self, kind) for kind in KINDS}

    def to_dict(self) -> dict[str, Any]:
        return {kind: dict(objects) for kind, objects in self.kinds().items()}

    def digest(self) -> str:
        """Return a checksum equal for equal snapshots, whatever their key order.

        Computed once: a snapshot is never changed after it is made.
        """
        cached = self.__dict__.get("_digest")
        if cached is None:
            text = json.dumps(
                self.to_dict(), sort_keys=True, separators=(",", ":"), check_circular=False
            )
            cached = hashlib.sha256(text.encode()).hexdigest()
            object.__setattr__(self, "_digest", cached)
        return cached

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        # Plain-data equality stops at the first difference and serializes
        # nothing; the digests settle what it cannot (a tuple read where the
        # ledger's JSON holds a list).
        return self.kinds() == other.kinds() or self.digest() == other.digest()

    def same_names(self, other: Snapshot) -> bool:
        """Return whether ``other`` holds objects of the same names, kind by kind."""
        return all(getattr(self, kind).keys() == getattr(other, kind).keys() for kind in KINDS)

    def __hash__(self) -> int:
        return hash(self.digest())

    def names(self) -> dict[str, frozenset[str]]:
        """Return the names of the objects of each kind."""
        return {kind: frozenset(objects) for kind, objects in self.kinds().items()}

    def split(self, ownership: Ownership) -> tuple[Snapshot, tuple[ObjectRef, ...]]:
        """Return the owned part of this snapshot, and the objects that are not owned."""
        owned: dict[str, dict[str, Any]] = {}
        unowned: list[ObjectRef] = []
        for kind, objects in self.kinds().items():
            owned[kind] = {}
            for name, shape in objects.items():
                if ownership.owns(kind, name):
                    owned[kind][name] = shape
                else:
                    unowned.append(ObjectRef(OBJECT_TYPES[kind], name))
        return Snapshot(**owned), tuple(unowned)


IncludeObject = Callable[[str, str, bool], bool]


@dataclass(frozen=True)
class Ownership:
    """Which objects of a schema a comparison sees.

    ``hidden`` tables belong to someone else (Django's own apps, Alembic's
    version table, the deploy log): they are never read. Of the rest, an
    object is owned when its name is in ``owned`` for its kind (``None``:
    every object is owned, as on a scratch database), and ``include``, the
    ``MIGSUPPORT_INCLUDE_OBJECT`` hook, may overrule that, as Alembic's
    ``include_object`` does: it gets the kind, the name, and whether the
    default rule owns it.
    """

    hidden: frozenset[str] = frozenset()
    owned: Mapping[str, frozenset[str]] | None = None
    include: IncludeObject | None = None

    def owns(self, kind: str, name: str) -> bool:
        default = self.owned is None or name in self.owned.get(kind, frozenset())
        return bool(self.include(kind, name, default)) if self.include else default


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


def take_snapshot(
    connection: sa.Connection, *, schema: str | None = None, hidden: Iterable[str] = ()
) -> Snapshot:
    """Return the snapshot of the schema ``connection`` works in.

    Only ``schema`` is read (default: the connection's current schema), so a
    same-named object elsewhere on the ``search_path`` is never mistaken for
    one of ours. The ``hidden`` tables are left out.
    """
    data = read_schema(connection, schema)
    hidden = frozenset(hidden)
    if hidden:
        data["tables"] = {k: v for k, v in data["tables"].items() if k not in hidden}
    return Snapshot(**data)


# -- comparison --------------------------------------------------------------------------

_TABLE_PROPERTIES = ("kind", "persistence", "row_security", "force_row_security", "partition_key")
_COLUMN_PROPERTIES = ("type", "collation", "nullable", "default", "identity", "generated")
_CONSTRAINT_PROPERTIES = (
    "type",
    "columns",
    "references",
    "referred_columns",
    "on_delete",
    "on_update",
    "match",
    "deferrable",
    "initially_deferred",
    "validated",
)
_INDEX_PROPERTIES = (
    "unique",
    "method",
    "keys",
    "include",
    "nulls_not_distinct",
    "predicate",
    "valid",
)
_CHILDREN: dict[str, tuple[str, tuple[str, ...]]] = {
    "triggers": ("trigger", ("definition", "enabled")),
    "rules": ("rule", ("definition", "enabled")),
    "policies": ("policy", ("permissive", "command", "roles", "using", "with_check")),
}
_KIND_PROPERTIES = {
    "domains": ("type", "nullable", "default", "constraints"),
    "sequences": ("type", "start", "increment", "min", "max", "cache", "cycle"),
    "functions": ("definition",),
    "extensions": (),
}
# Defaults of properties a shape may leave out.
_ABSENT: dict[str, Any] = {
    "nulls_not_distinct": False,
    "include": [],
    "valid": True,
    "validated": True,
    "deferrable": False,
    "initially_deferred": False,
}


def _get(shape: Mapping[str, Any], prop: str) -> Any:
    return shape.get(prop, _ABSENT.get(prop))


def _properties(
    obj: ObjectRef,
    have: Mapping[str, Any],
    want: Mapping[str, Any],
    properties: tuple[str, ...],
    compatible: bool,
) -> list[Difference]:
    out = [
        Difference(CHANGED, obj, prop, _get(want, prop), _get(have, prop))
        for prop in properties
        if (not compatible or prop in want) and _get(have, prop) != _get(want, prop)
    ]
    return out


def _constraint_ref(name: str, table: str, shape: Mapping[str, Any]) -> ObjectRef:
    return ObjectRef(CONSTRAINT_WORDS.get(shape.get("type", ""), "constraint"), name, table)


def _children(
    table: str,
    have: Mapping[str, Any],
    want: Mapping[str, Any],
    ref: Callable[[str, Mapping[str, Any]], ObjectRef],
    compare_one: Callable[[ObjectRef, Mapping[str, Any], Mapping[str, Any]], list[Difference]],
    compatible: bool,
) -> list[Difference]:
    out = [
        Difference(MISSING, ref(n, want[n]), expected=want[n])
        for n in sorted(want.keys() - have.keys())
    ]
    if not compatible:
        out += [
            Difference(UNEXPECTED, ref(n, have[n]), actual=have[n])
            for n in sorted(have.keys() - want.keys())
        ]
    for name in sorted(have.keys() & want.keys()):
        out += compare_one(ref(name, want[name]), have[name], want[name])
    return out


def compare_table(
    name: str, have: Mapping[str, Any], want: Mapping[str, Any], *, compatible: bool = False
) -> list[Difference]:
    """Return how the live table ``have`` differs from the expected ``want``.

    ``compatible``: only what ``want`` holds is required (the migration
    helpers' rule: later revisions may add columns, constraints, indexes).
    """
    table = ObjectRef("table", name)
    out = _properties(table, have, want, _TABLE_PROPERTIES, compatible)

    def column(obj: ObjectRef, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
        return _properties(obj, a, b, _COLUMN_PROPERTIES, compatible)

    def constraint(obj: ObjectRef, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
        if _get(a, "type") != _get(b, "type"):
            return [Difference(CHANGED, obj, "type", _get(b, "type"), _get(a, "type"))]
        found = _properties(obj, a, b, _CONSTRAINT_PROPERTIES, compatible)
        # The definition as PostgreSQL renders it holds whatever the named
        # properties do not; it speaks only when they are all equal.
        if not found and "definition" in b and a.get("definition") != b.get("definition"):
            found.append(
                Difference(CHANGED, obj, "definition", b["definition"], a.get("definition"))
            )
        return found

    def index(obj: ObjectRef, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
        return _properties(obj, a, b, _INDEX_PROPERTIES, compatible)

    out += _children(
        name,
        have.get("columns", {}),
        want.get("columns", {}),
        lambda n, _: ObjectRef("column", f"{name}.{n}"),
        column,
        compatible,
    )
    out += _children(
        name,
        have.get("constraints", {}),
        want.get("constraints", {}),
        lambda n, shape: _constraint_ref(n, name, shape),
        constraint,
        compatible,
    )
    out += _children(
        name,
        have.get("indexes", {}),
        want.get("indexes", {}),
        lambda n, _: ObjectRef("index", n, name),
        index,
        compatible,
    )
    for key, (word, properties) in _CHILDREN.items():

        def child(
            obj: ObjectRef, a: Mapping[str, Any], b: Mapping[str, Any], p: tuple = properties
        ) -> list[Difference]:
            return _properties(obj, a, b, p, compatible)

        out += _children(
            name,
            have.get(key, {}),
            want.get(key, {}),
            lambda n, _, w=word: ObjectRef(w, n, name),
            child,
            compatible,
        )
    return out


def compare(live: Snapshot, expected: Snapshot, *, compatible: bool = False) -> list[Difference]:
    """Return how ``live`` differs from ``expected``; empty when they are equal.

    ``compatible``: only what ``expected`` holds is required, and an ENUM may
    have more labels after the expected ones.
    """
    out: list[Difference] = []
    for kind in KINDS:
        have, want = getattr(live, kind), getattr(expected, kind)
        word = OBJECT_TYPES[kind]
        for name in sorted(want.keys() - have.keys()):
            out.append(Difference(MISSING, ObjectRef(word, name), expected=want[name]))
        if not compatible:
            for name in sorted(have.keys() - want.keys()):
                out.append(Difference(UNEXPECTED, ObjectRef(word, name), actual=have[name]))
        for name in sorted(have.keys() & want.keys()):
            a, b = have[name], want[name]
            if kind == "tables":
                out += compare_table(name, a, b, compatible=compatible)
            elif kind == "enums":
                labels = list(a)[: len(b)] if compatible else list(a)
                if labels != list(b):
                    out.append(
                        Difference(CHANGED, ObjectRef(word, name), "labels", list(b), list(a))
                    )
            else:
                out += _properties(ObjectRef(word, name), a, b, _KIND_PROPERTIES[kind], compatible)
    return out
