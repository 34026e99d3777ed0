"""Normalized shapes of schema objects, comparable across spellings.

A shape is a plain string such as ``VARCHAR(100) NOT NULL DEFAULT now()``,
rendered the same way for an object a migration describes and for the object
reflected from the database, so that equal definitions compare equal and a
real difference shows in a message a person can read.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# Spellings the catalogs return for what a migration writes differently.
_TYPE_SYNONYMS = {
    "FLOAT": "DOUBLE PRECISION",
    "FLOAT(53)": "DOUBLE PRECISION",
    "DOUBLE": "DOUBLE PRECISION",
    "FLOAT8": "DOUBLE PRECISION",
    "FLOAT4": "REAL",
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "INT8": "BIGINT",
    "INT2": "SMALLINT",
    "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
    "BOOL": "BOOLEAN",
    "CHARACTER VARYING": "VARCHAR",
}

_NOW_SPELLINGS = {"now()", "current_timestamp", "transaction_timestamp()", "current_timestamp()"}
_CAST = re.compile(r"::[a-z_ ]+(\([0-9, ]+\))?(\[\])?$", re.IGNORECASE)
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NEXTVAL = re.compile(r"nextval\('[^']*'(::regclass)?\)", re.IGNORECASE)
# The default of a SERIAL column: PostgreSQL names its sequence, so any will do.
SEQUENCE_DEFAULT = "nextval(<sequence>)"


def render_type(type_: sa.types.TypeEngine, dialect: Dialect) -> str:
    """Return the normalized DDL spelling of ``type_`` on ``dialect``."""
    if isinstance(type_, sa.Enum) and type_.native_enum and dialect.name == "postgresql":
        # A native ENUM is named, not spelled: keep the type's own name.
        return type_.name or "ENUM"
    try:
        # As the DDL compiler renders it: the driver's implementation type
        # (dialect_impl) would render TEXT and CHAR(n) as VARCHAR on psycopg.
        text = type_.compile(dialect=dialect)
    except sa.exc.CompileError:
        text = str(type_)
    text = " ".join(text.upper().split()).replace('"', "")
    if text in _TYPE_SYNONYMS:
        return _TYPE_SYNONYMS[text]
    base, _, rest = text.partition("(")
    base = _TYPE_SYNONYMS.get(base.strip(), base.strip())
    if base == "DOUBLE PRECISION" and rest == "53)":
        # float8's precision, which PostgreSQL reports and never needs spelling.
        return base
    return f"{base}({rest}" if rest else base


def normalize_default(text: str | None) -> str | None:
    """Return a server default's text in one canonical spelling.

    ``now()`` and ``CURRENT_TIMESTAMP`` are the same default; PostgreSQL's
    casts on literals (``'x'::character varying``) are dropped.
    """
    if text is None:
        return None
    value = text.strip()
    while value.startswith("(") and value.endswith(")") and _balanced(value[1:-1]):
        value = value[1:-1].strip()
    if _NEXTVAL.fullmatch(value):
        return SEQUENCE_DEFAULT
    uncast = _CAST.sub("", value)
    if not value.startswith("'") or _LITERAL.fullmatch(uncast):
        value = uncast
    if value.lower() in _NOW_SPELLINGS:
        return "now()"
    return value


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def render_server_default(column: sa.Column, dialect: Dialect) -> str | None:
    """Return the normalized server default a column definition would create."""
    default = column.server_default
    if default is None:
        return None
    arg = getattr(default, "arg", None)
    if arg is None:
        return None
    if isinstance(arg, str):
        return normalize_default("'" + arg.replace("'", "''") + "'")
    compiled = arg.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return normalize_default(str(compiled))


def column_shape(type_text: str, nullable: bool, default: str | None) -> str:
    """Return a column's shape as one string, e.g. ``VARCHAR(100) NOT NULL``."""
    shape = type_text + ("" if nullable else " NOT NULL")
    if default is not None:
        shape += f" DEFAULT {default}"
    return shape


def expected_column_shape(column: sa.Column, dialect: Dialect) -> str:
    """Return the shape a ``Column`` would have once created on ``dialect``."""
    return column_shape(
        render_type(column.type, dialect),
        bool(column.nullable) and not column.primary_key,
        SEQUENCE_DEFAULT if _is_serial(column, dialect) else render_server_default(column, dialect),
    )


def _is_serial(column: sa.Column, dialect: Dialect) -> bool:
    """Whether SQLAlchemy creates ``column`` as a PostgreSQL SERIAL (its DDL compiler's test)."""
    table = getattr(column, "table", None)
    if dialect.name != "postgresql" or table is None or not column.primary_key:
        return False
    impl = column.type.dialect_impl(dialect)
    if isinstance(impl, sa.types.TypeDecorator):
        impl = impl.impl
    return (
        column is table.autoincrement_column
        and (dialect.supports_smallserial or not isinstance(impl, sa.SmallInteger))
        and not (column.identity is not None and dialect.supports_identity_columns)
        and (
            column.default is None
            or (isinstance(column.default, sa.Sequence) and bool(column.default.optional))
        )
    )


def reflected_column_shape(column: dict[str, Any], dialect: Dialect) -> str:
    """Return the shape of a column as ``Inspector.get_columns`` reflects it."""
    return column_shape(
        render_type(column["type"], dialect),
        bool(column["nullable"]),
        normalize_default(column.get("default")),
    )


def normalize_ondelete(value: str | None) -> str | None:
    """Return ``ON DELETE`` in one spelling; ``NO ACTION`` is the same as none."""
    if value is None:
        return None
    value = " ".join(value.upper().split())
    return None if value == "NO ACTION" else value
