"""Structured differences between two schemas, and the words for them.

A :class:`Difference` says what differs (``kind``: an object is missing, is
unexpected, or has a property that changed), on which object (its type, its
name and its table), which property, and the expected and actual values. It
is data: the state engine, the repair plan and the lock-safety lint read its
fields, ``--json`` emits it as it is, and it becomes text only at the edge,
through ``str()``.

For a missing object ``expected`` holds its whole shape (what a repair would
create), and for an unexpected one ``actual`` does (what a repair would
drop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MISSING = "missing"
UNEXPECTED = "unexpected"
CHANGED = "changed"

# A constraint is named for people by what it is.
CONSTRAINT_WORDS = {
    "primary key": "primary key",
    "unique": "unique constraint",
    "check": "check constraint",
    "foreign key": "foreign key",
    "exclusion": "exclusion constraint",
}

# How each property reads in a message: (its name, the words for True, for False).
_PROPERTY_WORDS: dict[str, tuple[str, str, str]] = {
    "row_security": ("row-level security", "enabled", "disabled"),
    "force_row_security": ("forced row-level security", "on", "off"),
    "unique": ("uniqueness", "unique", "not unique"),
    "valid": ("validity", "valid", "INVALID (a failed concurrent build)"),
    "validated": ("validation", "validated", "NOT VALID"),
    "deferrable": ("deferrability", "DEFERRABLE", "NOT DEFERRABLE"),
    "initially_deferred": ("initial check", "INITIALLY DEFERRED", "INITIALLY IMMEDIATE"),
    "nulls_not_distinct": ("nulls", "NULLS NOT DISTINCT", "NULLS DISTINCT"),
    "permissive": ("kind", "PERMISSIVE", "RESTRICTIVE"),
}
# Properties whose value is a list read in the plural.
_PLURAL = {"labels", "keys", "columns", "referred_columns", "roles", "include", "constraints"}
_PROPERTY_NAMES = {
    "on_delete": "on delete",
    "on_update": "on update",
    "referred_columns": "referred columns",
    "references": "referred table",
    "with_check": "with check",
    "partition_key": "partition key",
    "include": "INCLUDE columns",
}


@dataclass(frozen=True)
class ObjectRef:
    """A schema object: its type (``table``, ``column``, ``index``...), its name, its table.

    A column's name is ``table.column``; indexes, constraints, triggers,
    rules and policies carry their table in ``table``.
    """

    type: str
    name: str
    table: str | None = None

    def __str__(self) -> str:
        if self.table is not None and self.type != "column" and self.type != "index":
            return f"{self.type} {self.name} on {self.table}"
        return f"{self.type} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "table": self.table}


@dataclass(frozen=True)
class Difference:
    """One way a live schema differs from the expected one."""

    kind: str
    object: ObjectRef
    property: str | None = None
    expected: Any = None
    actual: Any = None

    def __str__(self) -> str:
        return render(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "object": self.object.to_dict(),
            "property": self.property,
            "expected": self.expected,
            "actual": self.actual,
            "text": render(self),
        }


def render(difference: Difference) -> str:
    """Return the one line a person reads for ``difference``."""
    obj = difference.object
    if difference.kind == MISSING:
        return f"{obj} is missing"
    if difference.kind == UNEXPECTED:
        return f"{obj} is unexpected"
    prop, expected, actual = difference.property, difference.expected, difference.actual
    if obj.type == "column" and prop == "type":
        return f"{obj} is {actual}, expected {expected}"
    if obj.type == "column" and prop == "nullable":
        return f"{obj} is {_null(actual)}, expected {_null(expected)}"
    if prop == "default":
        return f"{obj} has {_default(actual)}, expected {_default(expected)}"
    if prop in _PROPERTY_WORDS:
        name, yes, no = _PROPERTY_WORDS[prop]
        return f"{obj}: {name} is {yes if actual else no}, expected {yes if expected else no}"
    name = _PROPERTY_NAMES.get(prop or "", prop or "shape")
    verb = "are" if prop in _PLURAL else "is"
    return f"{obj}: {name} {verb} {_value(actual)}, expected {_value(expected)}"


def _null(nullable: Any) -> str:
    return "NULL" if nullable else "NOT NULL"


def _default(value: Any) -> str:
    return "no default" if value is None else f"default {value}"


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(str(v) for v in value) + ")" if value else "none"
    # A definition over several lines (a function) reads on one.
    return " ".join(str(value).split()) if isinstance(value, str) and "\n" in value else str(value)


def lines(differences: Any) -> list[str]:
    """Return each difference as its line (strings pass through as they are)."""
    return [str(difference) for difference in differences]


__all__ = [
    "CHANGED",
    "MISSING",
    "UNEXPECTED",
    "Difference",
    "ObjectRef",
    "lines",
    "render",
]
