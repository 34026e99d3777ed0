"""List filters whose choices and counts an index serves, for any model.

As ``django.contrib.admin.filters``: nothing here knows the detection models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db import connections, router
from django.db.models import Field, Model, QuerySet
from django.http import HttpRequest


def distinct_values(model: type[Model], field: Field) -> list[Any]:
    """Return the distinct values of ``field`` in ``model``'s table, None last.

    A loose index scan: one probe of an index on the column per distinct
    value, so the cost follows the number of values, not of rows (a plain
    ``SELECT DISTINCT`` reads the whole table).
    """
    connection = connections[router.db_for_read(model)]
    qn = connection.ops.quote_name
    table, column = qn(model._meta.db_table), qn(field.column)
    sql = f"""
        WITH RECURSIVE found(value) AS (
            SELECT MIN({column}) FROM {table}
            UNION ALL
            SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > found.value)
            FROM found
            WHERE found.value IS NOT NULL
        )
        SELECT value FROM found WHERE value IS NOT NULL
        UNION ALL
        SELECT NULL WHERE EXISTS (SELECT 1 FROM {table} WHERE {column} IS NULL)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql)
        values = [value for (value,) in cursor.fetchall()]
    present = sorted(value for value in values if value is not None)
    return [*present, None] if None in values else present


class IndexedValuesListFilter(admin.AllValuesFieldListFilter):
    """Django's all-values filter, its choices found by ``distinct_values``.

    The choices are every value in the table: unlike Django's, they ignore
    ``ModelAdmin.get_queryset`` (which restricts nothing here).
    """

    def __init__(
        self, field: Field, request: HttpRequest, params: Any, model: Any, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(field, request, params, model, *args, **kwargs)
        # Replaces the lazy SELECT DISTINCT before anything runs it.
        self.lookup_choices = distinct_values(field.model, field)


class RangeListFilter(admin.SimpleListFilter):
    """Ranges of a numeric field, each a ``>= lower`` and ``< upper`` that an index serves.

    Subclasses set ``field_name``, ``parameter_name``, ``title`` and
    ``ranges``: ``(parameter value, label, lower, upper)``, either bound
    None for an open end.
    """

    field_name: str
    ranges: Sequence[tuple[str, str, float | None, float | None]] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _, _ in self.ranges]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        for candidate, _, lower, upper in self.ranges:
            if value == candidate:
                if lower is not None:
                    queryset = queryset.filter(**{f"{self.field_name}__gte": lower})
                if upper is not None:
                    queryset = queryset.filter(**{f"{self.field_name}__lt": upper})
                return queryset
        raise IncorrectLookupParameters(f"Unknown {self.title} range {value!r}")
