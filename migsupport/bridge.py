"""Derive Alembic's metadata from the Django models of the Alembic-owned apps.

The models are the single source of truth for the domain schema. This module
translates them, field by field, into a SQLAlchemy ``MetaData``: types with
lengths, nullability, database defaults, primary and foreign keys with their
``ON DELETE``, named indexes and ENUM types. A field it cannot translate
faithfully is an error naming that field, never a column silently dropped.

It also holds the ownership rule shared by ``alembic/env.py`` and every schema
check: which tables are Alembic's, and which are Django's own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from django.apps import apps
from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from sqlalchemy.dialects import postgresql

from migsupport import conf
from migsupport.exceptions import UnmappableField
from migsupport.fields import EnumField
from migsupport.shapes import KINDS
from migsupport.snapshot import Ownership, Snapshot

# PostgreSQL's own names for unnamed constraints, so that the metadata names
# what a plain CREATE TABLE would have named, on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}

_ON_DELETE = {
    models.CASCADE: "CASCADE",
    models.SET_NULL: "SET NULL",
    models.SET_DEFAULT: "SET DEFAULT",
    models.RESTRICT: "RESTRICT",
    models.PROTECT: "RESTRICT",
    models.DO_NOTHING: None,
}


def _label(model: type[models.Model]) -> str:
    return model._meta.label


def owned_models() -> list[type[models.Model]]:
    """Return the concrete models of the apps listed in ``MIGSUPPORT_APPS``."""
    result = []
    for app_label in conf.alembic_apps():
        config = apps.get_app_config(app_label)
        for model in config.get_models(include_auto_created=True):
            if not model._meta.proxy:
                result.append(model)
    return result


def django_table_names() -> frozenset[str]:
    """Return the tables Django's own migrations own, plus Alembic's version table and the log."""
    owned = set(conf.alembic_apps())
    names = {"django_migrations", conf.version_table(), conf.deploy_log_table()}
    for model in apps.get_models(include_auto_created=True):
        if model._meta.app_label not in owned:
            names.add(model._meta.db_table)
    return frozenset(names)


def model_enum_names() -> frozenset[str]:
    """Return the names of the ENUM types the models' fields use."""
    return frozenset(
        field.enum_name
        for model in owned_models()
        for field in model._meta.local_concrete_fields
        if isinstance(field, EnumField)
    )


def ownership(revision_schemas: Iterable[Snapshot]) -> Ownership:
    """Return the ownership rule for a database whose revisions produce ``revision_schemas``.

    Owned: a model's table or ENUM, or an object some revision creates.
    Hidden: Django's own tables and Alembic's version table. With
    ``MIGSUPPORT_STRICT_OWNERSHIP``, every object not hidden is owned, so an
    unowned one is a difference; ``MIGSUPPORT_INCLUDE_OBJECT`` may overrule
    the rule object by object.
    """
    hidden = django_table_names()
    if conf.strict_ownership():
        return Ownership(hidden=hidden, owned=None, include=conf.include_object())
    owned: dict[str, set[str]] = {kind: set() for kind in KINDS}
    owned["tables"].update(model._meta.db_table for model in owned_models())
    owned["enums"].update(model_enum_names())
    for schema in revision_schemas:
        for kind, objects in schema.kinds().items():
            owned[kind].update(objects)
    return Ownership(
        hidden=hidden,
        owned={kind: frozenset(names) for kind, names in owned.items()},
        include=conf.include_object(),
    )


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Tell Alembic whether a reflected name is Alembic-owned (``include_name`` hook)."""
    if type_ == "table":
        return name not in django_table_names()
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Tell Alembic whether an object is Alembic-owned (``include_object`` hook)."""
    if type_ == "table":
        return name not in django_table_names()
    table = getattr(obj, "table", None)
    if table is not None and type_ in (
        "column",
        "index",
        "unique_constraint",
        "foreign_key_constraint",
    ):
        return table.name not in django_table_names()
    return True


def comparison_options() -> dict[str, Any]:
    """Return the options under which Alembic compares the models with a database.

    One set for ``env.py``'s autogenerate, ``alembic_verify`` and the tests:
    types and server defaults compared, Django's tables never seen.
    """
    return {
        "compare_type": True,
        "compare_server_default": True,
        "include_name": include_name,
        "include_object": include_object,
    }


def _column_type(model: type[models.Model], field: models.Field) -> sa.types.TypeEngine:
    if isinstance(field, EnumField):
        return sa.Enum(
            *field.enum_labels,
            name=field.enum_name,
            length=field.max_length,
            create_constraint=False,
            native_enum=True,
            validate_strings=True,
        )
    if field.is_relation:
        return _column_type(field.related_model, field.target_field)
    kind = field.get_internal_type()
    collation = getattr(field, "db_collation", None)
    if kind in ("CharField", "SlugField", "EmailField", "URLField", "FilePathField"):
        return sa.String(field.max_length, collation=collation)
    if kind == "TextField":
        return sa.Text(collation=collation)
    if kind == "UUIDField":
        return sa.Uuid(as_uuid=True)
    if kind == "DateTimeField":
        return sa.DateTime(timezone=settings.USE_TZ)
    if kind == "DateField":
        return sa.Date()
    if kind == "TimeField":
        return sa.Time()
    if kind == "DurationField":
        return sa.Interval()
    if kind == "FloatField":
        return sa.Double()
    if kind == "DecimalField":
        return sa.Numeric(field.max_digits, field.decimal_places)
    if kind == "BooleanField":
        return sa.Boolean(create_constraint=False)
    if kind in ("IntegerField", "PositiveIntegerField", "AutoField"):
        return sa.Integer()
    if kind in ("SmallIntegerField", "PositiveSmallIntegerField", "SmallAutoField"):
        return sa.SmallInteger()
    if kind in ("BigIntegerField", "PositiveBigIntegerField", "BigAutoField"):
        return sa.BigInteger()
    if kind == "BinaryField":
        return sa.LargeBinary()
    if kind == "JSONField":
        return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    raise UnmappableField(_label(model), field.name, f"no SQLAlchemy type for {kind}")


def _server_default(model: type[models.Model], field: models.Field) -> Any:
    default = field.db_default
    if default is models.NOT_PROVIDED:
        return None
    if isinstance(default, Now):
        # Compiles to now() on PostgreSQL and CURRENT_TIMESTAMP on SQLite.
        return sa.func.now()
    if isinstance(default, models.Value):
        value = default.value
        if isinstance(value, bool):
            return sa.true() if value else sa.false()
        if isinstance(value, (int, float)):
            return sa.text(repr(value))
        if isinstance(value, str):
            return value
    raise UnmappableField(
        _label(model), field.name, f"db_default {default!r} has no SQLAlchemy server default"
    )


def _foreign_key(model: type[models.Model], field: models.ForeignKey) -> sa.ForeignKey | None:
    if not field.db_constraint:
        return None
    on_delete = field.remote_field.on_delete
    if on_delete not in _ON_DELETE:
        raise UnmappableField(
            _label(model), field.name, f"on_delete={on_delete.__name__} has no ON DELETE action"
        )
    target = field.related_model._meta.db_table
    return sa.ForeignKey(f"{target}.{field.target_field.column}", ondelete=_ON_DELETE[on_delete])


def _column(model: type[models.Model], field: models.Field) -> sa.Column:
    if field.many_to_many or field.one_to_many:
        raise UnmappableField(_label(model), field.name, "many-to-many fields are not supported")
    args: list[Any] = []
    if field.is_relation:
        fk = _foreign_key(model, field)
        if fk is not None:
            args.append(fk)
    kwargs: dict[str, Any] = {
        "nullable": field.null,
        "primary_key": field.primary_key,
        "autoincrement": field.get_internal_type()
        in ("AutoField", "BigAutoField", "SmallAutoField"),
        "unique": field.unique and not field.primary_key,
        "index": field.db_index and not field.unique and not field.primary_key,
        "server_default": _server_default(model, field),
    }
    if field.db_comment:
        kwargs["comment"] = field.db_comment
    return sa.Column(field.column, _column_type(model, field), *args, **kwargs)


def _index(model: type[models.Model], index: models.Index, table: sa.Table) -> sa.Index:
    unsupported = [attr for attr in ("expressions", "condition", "include") if getattr(index, attr)]
    if unsupported:
        raise UnmappableField(
            _label(model),
            index.name,
            f"index uses {', '.join(unsupported)}, which the bridge cannot map",
        )
    elements: list[Any] = []
    for name in index.fields:
        column = table.c[model._meta.get_field(name.lstrip("-")).column]
        elements.append(column.desc() if name.startswith("-") else column)
    # Operator classes exist on PostgreSQL only; other dialects ignore them.
    ops = {
        model._meta.get_field(name.lstrip("-")).column: opclass
        for name, opclass in zip(index.fields, index.opclasses, strict=False)
    }
    kwargs = {"postgresql_ops": ops} if ops else {}
    # Built from the table's own columns, the index attaches itself to it.
    return sa.Index(index.name, *elements, **kwargs)


def _table(metadata: sa.MetaData, model: type[models.Model]) -> sa.Table:
    meta = model._meta
    columns = [_column(model, field) for field in meta.local_concrete_fields]
    by_field = {field.name: field.column for field in meta.local_concrete_fields}
    constraints: list[Any] = []
    for fields in meta.unique_together:
        constraints.append(sa.UniqueConstraint(*(by_field[name] for name in fields)))
    for constraint in meta.constraints:
        if isinstance(constraint, models.UniqueConstraint) and not (
            constraint.condition or constraint.expressions or constraint.include
        ):
            constraints.append(
                sa.UniqueConstraint(
                    *(by_field[name] for name in constraint.fields), name=constraint.name
                )
            )
        else:
            raise UnmappableField(
                _label(model), constraint.name, "only plain unique constraints can be mapped"
            )
    table = sa.Table(
        meta.db_table, metadata, *columns, *constraints, comment=meta.db_table_comment or None
    )
    for index in meta.indexes:
        _index(model, index, table)
    return table


def build_metadata() -> sa.MetaData:
    """Return a new ``MetaData`` holding every Alembic-owned model's table."""
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    for model in owned_models():
        _table(metadata, model)
    return metadata


@functools.cache
def target_metadata() -> sa.MetaData:
    """Return the metadata Alembic compares against, built once per process."""
    return build_metadata()
