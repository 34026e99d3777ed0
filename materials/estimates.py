"""Row counts a big table can afford: the planner's statistics and samples.

Counting a million rows takes longer than rendering a page, so the admin's
unfiltered list and its charts read what PostgreSQL already knows instead:

- ``pg_class``: the rows per page seen by the last ``ANALYZE`` (or vacuum),
  times the table's current size in pages, which is the planner's own
  estimate of the table's rows;
- ``pg_stats``: per column, the share of NULLs, the most common values with
  their frequencies, and a histogram of the others (each bucket holding the
  same share of rows);
- ``TABLESAMPLE SYSTEM``: a fixed number of rows, read from randomly chosen
  pages, for what the statistics cannot tell (one column's values per value
  of another).

Every function here works on any model and any column; none of them knows
the detection tables. Tables estimated below ``ESTIMATE_THRESHOLD`` rows are
counted exactly by the callers: that is cheap, and exact is nicer.
PostgreSQL only; the callers count exactly elsewhere.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, QuerySet

# Below this many rows (by the planner's estimate) a table is counted exactly.
ESTIMATE_THRESHOLD = 100_000

# How many rows a sample reads, whatever the table's size.
SAMPLE_ROWS = 10_000

# The planner's estimate of a table's rows now: the density seen by the last
# ANALYZE or vacuum, times the current number of pages. Never analysed: 0.
_ROW_ESTIMATE = """
    CASE
        WHEN c.reltuples < 0 OR c.relpages = 0 THEN 0
        ELSE (
            c.reltuples / c.relpages
            * (pg_relation_size(c.oid) / current_setting('block_size')::int)
        )::bigint
    END
"""


def is_unfiltered(queryset: QuerySet[Any]) -> bool:
    """Whether ``queryset`` holds every row of its model's table, exactly once."""
    query = queryset.query
    return (
        not query.where
        and not query.distinct
        and not query.combinator
        and query.group_by is None
        and query.low_mark == 0
        and query.high_mark is None
    )


def estimated_count_sql(connection: BaseDatabaseWrapper, model: type[Model]) -> str:
    """The query behind ``estimated_table_count``; its parameters are
    ``[table, threshold, threshold]``."""
    table = connection.ops.quote_name(model._meta.db_table)
    return f"""
        WITH estimate AS (
            SELECT {_ROW_ESTIMATE} AS row_count
            FROM pg_class c
            WHERE c.oid = %s::regclass
        )
        SELECT
            CASE WHEN row_count >= %s THEN row_count ELSE (SELECT COUNT(*) FROM {table}) END,
            row_count >= %s
        FROM estimate
    """


def estimated_table_count(
    connection: BaseDatabaseWrapper, model: type[Model], threshold: int | None = None
) -> tuple[int, bool]:
    """Return ``(rows, estimated)`` for ``model``'s table, in one query.

    A table estimated below ``threshold`` rows (``ESTIMATE_THRESHOLD`` by
    default), or never analysed, is counted exactly instead, by a subquery
    PostgreSQL only runs in that case.
    """
    if threshold is None:
        threshold = ESTIMATE_THRESHOLD
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(estimated_count_sql(connection, model), [table, threshold, threshold])
        count, estimated = cursor.fetchone()
    return int(count), bool(estimated)


def planner_row_estimate(connection: BaseDatabaseWrapper, model: type[Model]) -> int:
    """Return the planner's estimate of ``model``'s rows (0 if never analysed): one query."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_ROW_ESTIMATE} FROM pg_class c WHERE c.oid = %s::regclass", [table]
        )
        (rows,) = cursor.fetchone()
    return int(rows)


def sample_percent(rows: int, sample_rows: int | None = None) -> float:
    """The ``TABLESAMPLE SYSTEM`` percentage that reads about ``sample_rows`` of ``rows``."""
    if sample_rows is None:
        sample_rows = SAMPLE_ROWS
    if rows <= sample_rows:
        return 100.0
    return 100.0 * sample_rows / rows


@dataclass(frozen=True)
class ColumnStatistics:
    """What ``ANALYZE`` recorded about one column (``pg_stats``), and the table's rows.

    ``rows`` is the planner's estimate of the table's rows now, and
    ``analysed_rows`` the rows the last ``ANALYZE`` (or vacuum) counted: both
    0 if never analysed. ``most_common`` pairs each most common value with the share
    of rows holding it; ``histogram`` holds the bounds of buckets that each
    hold the same share of the remaining rows (the non-NULL, non-most-common
    ones). ``analysed`` is False when there are no statistics of the column.
    """

    rows: int
    analysed_rows: int = 0
    analysed: bool = False
    null_fraction: float = 0.0
    most_common: tuple[tuple[Any, float], ...] = ()
    histogram: tuple[Any, ...] = ()

    @property
    def histogram_fraction(self) -> float:
        """The share of rows the histogram describes."""
        common = sum(frequency for _, frequency in self.most_common)
        return max(0.0, 1.0 - self.null_fraction - common)

    @property
    def upper_bound(self) -> Any:
        """The greatest value the statistics saw, or None when they saw none."""
        values = [value for value, _ in self.most_common]
        if self.histogram:
            values.append(self.histogram[-1])
        return max(values) if values else None

    def value_fraction(self, value: Any) -> float:
        """The share of rows holding ``value``, as far as the most common values tell."""
        return sum(frequency for common, frequency in self.most_common if common == value)

    def range_fractions(self, ranges: Sequence[tuple[Any, Any]]) -> list[float]:
        """The share of rows in each ``[low, high)`` range, as the planner would estimate it.

        The most common values count with their frequencies. Each histogram
        bucket holds the same share of the other rows, spread evenly between
        its bounds; a bucket whose bounds are equal holds a single value.
        """
        buckets = len(self.histogram) - 1
        per_bucket = self.histogram_fraction / buckets if buckets > 0 else 0.0
        fractions = []
        for low, high in ranges:
            share = sum(frequency for value, frequency in self.most_common if low <= value < high)
            if per_bucket:
                share += per_bucket * self._buckets_overlap(low, high)
            fractions.append(share)
        return fractions

    def _buckets_overlap(self, low: Any, high: Any) -> float:
        """How many buckets' worth of the histogram lies in ``[low, high)``."""
        bounds = self.histogram
        first = max(bisect.bisect_left(bounds, low) - 1, 0)
        covered = 0.0
        for i in range(first, len(bounds) - 1):
            start, end = bounds[i], bounds[i + 1]
            if start >= high:
                break
            if start == end:
                covered += 1.0 if low <= start < high else 0.0
                continue
            overlap_start, overlap_end = max(start, low), min(end, high)
            if overlap_end > overlap_start:
                covered += (overlap_end - overlap_start) / (end - start)
        return covered


def column_statistics_sql(connection: BaseDatabaseWrapper, element_type: str) -> str:
    """The query behind ``column_statistics``; its parameters are ``[column, table]``.

    ``pg_stats`` holds the values as ``anyarray``; they are cast through
    text to arrays of ``element_type``.
    """
    return f"""
        SELECT {_ROW_ESTIMATE} AS row_count, GREATEST(c.reltuples, 0)::bigint AS analysed_rows,
               s.attname IS NOT NULL AS analysed, s.null_frac,
               s.most_common_vals::text::{element_type}[], s.most_common_freqs,
               s.histogram_bounds::text::{element_type}[]
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
            AND s.attname = %s
        WHERE c.oid = %s::regclass
    """


def column_statistics(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    field: Field,
    element_type: str | None = None,
) -> ColumnStatistics:
    """Return the table's estimated rows and what ``ANALYZE`` recorded about ``field``: one query.

    ``element_type`` is the SQL type to read the values as (the column's own
    by default; ``text`` suits an ENUM).
    """
    stats, _ = statistics_or_rows(connection, model, field, element_type=element_type)
    return stats


def statistics_or_rows(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    field: Field,
    exact: QuerySet[Any] | None = None,
    *,
    element_type: str | None = None,
    threshold: int | None = None,
) -> tuple[ColumnStatistics, list[dict[str, Any]] | None]:
    """Return ``column_statistics``, and ``exact``'s rows if the table is small: one query.

    ``exact`` runs, as a subquery PostgreSQL evaluates only then, when the
    table is estimated below ``threshold`` rows (``ESTIMATE_THRESHOLD`` by
    default) or the column has no statistics; its rows come back as dicts
    of JSON values (dates as ISO strings). Otherwise they are None.
    """
    element_type = element_type or field.db_type(connection)
    threshold = ESTIMATE_THRESHOLD if threshold is None else threshold
    table = connection.ops.quote_name(model._meta.db_table)
    sql, params = column_statistics_sql(connection, element_type), [field.column, table]
    if exact is not None:
        exact_sql, exact_params = exact.query.get_compiler(connection=connection).as_sql()
        sql = f"""
            WITH stats AS ({sql})
            SELECT stats.*, CASE WHEN NOT stats.analysed OR stats.row_count < %s THEN (
                SELECT COALESCE(json_agg(row_to_json(exact)), '[]') FROM ({exact_sql}) AS exact
            ) END
            FROM stats
        """
        params = [*params, threshold, *exact_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (rows, analysed_rows, analysed, null_fraction, values, frequencies, histogram, *found) = (
            cursor.fetchone()
        )
    exact_rows = found[0] if found else None
    if isinstance(exact_rows, str):  # a driver that does not decode JSON
        exact_rows = json.loads(exact_rows)
    if not analysed:
        return ColumnStatistics(rows=int(rows), analysed_rows=int(analysed_rows)), exact_rows
    return ColumnStatistics(
        rows=int(rows),
        analysed_rows=int(analysed_rows),
        analysed=True,
        null_fraction=float(null_fraction or 0.0),
        most_common=tuple(zip(values or (), frequencies or (), strict=True)),
        histogram=tuple(histogram or ()),
    ), exact_rows
