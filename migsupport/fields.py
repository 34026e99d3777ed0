"""Model-level building blocks for Alembic-owned tables.

They describe the database faithfully enough for ``migsupport.bridge`` to
derive Alembic's metadata from the models, the way ``django.contrib.postgres``
gives models PostgreSQL-only types.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class EnumField(models.CharField):
    """A string field stored as a native ENUM type on PostgreSQL.

    On other databases it is a ``VARCHAR`` as long as the longest label. The
    labels, in order, are the field's choices.
    """

    description = "Native database enum"

    def __init__(self, *args: Any, enum_name: str, **kwargs: Any) -> None:
        self.enum_name = enum_name
        choices = kwargs.get("choices")
        if not choices:
            raise TypeError("EnumField needs choices: they are the enum's labels, in order")
        labels = [value for value, _ in models.Field(choices=choices).flatchoices]
        kwargs.setdefault("max_length", max(len(label) for label in labels))
        super().__init__(*args, **kwargs)

    @property
    def enum_labels(self) -> list[str]:
        return [value for value, _ in self.flatchoices]

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "postgresql":
            return connection.ops.quote_name(self.enum_name)
        return super().db_type(connection)

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, path, args, kwargs = super().deconstruct()
        kwargs["enum_name"] = self.enum_name
        return name, path, args, kwargs


class Index(models.Index):
    """A ``models.Index`` allowing PostgreSQL's 63-character names.

    Django caps index names at 30 characters for Oracle's sake; the deployed
    schema's names (``ix_material_detection_jobs_created_at``) are longer.
    """

    max_name_length = 63
