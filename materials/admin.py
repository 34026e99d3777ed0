"""A read-only admin over the detection results, built for tables of millions.

The detection pipeline is the only writer of these tables, so the admin never
adds, changes or deletes a row, not even for superusers; staff still need the
``view`` permission to see anything.

Every page does a fixed number of queries, each served by an index, so it
costs about the same at a thousand rows as at millions:

- the unfiltered list is not counted with ``COUNT(*)``: on PostgreSQL the
  paginator reads the planner's row estimate instead (filtered lists are
  counted exactly);
- the category filter finds its choices with one index probe per category,
  not a ``SELECT DISTINCT`` over the table;
- the date drill-down checks each year, month or day it offers with one index
  probe, not a ``SELECT DISTINCT`` over the table;
- columns sort only where an index serves the order, and the counts shown in
  the job list are counted per listed job, not over the whole table;
- facet counts ("Show counts") are off: each would be a scan of the table.

The indexes these pages rely on are listed in ``benchmarks/README.md``
(``bench_admin.py``), which measures them.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.paginator import Paginator
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, Field, Max, Min, Model, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst, smart_split, unescape_string_literal

from materials.models import DetectedMaterial, JobStatus, MaterialDetectionJob

# The job page lists only this many materials, so a job with thousands of
# them still opens quickly; the full list is one click away.
INLINE_MATERIALS_LIMIT = 50

# Below this many rows (by the planner's estimate) an unfiltered list is
# counted exactly: that is cheap, and exact counts are nicer.
ESTIMATE_THRESHOLD = 100_000

# The confidence filter's ranges: (parameter value, label, lower, upper), each
# including its lower bound and excluding its upper one.
CONFIDENCE_RANGES: Sequence[tuple[str, str, float | None, float | None]] = (
    ("0-0.5", "below 0.5", None, 0.5),
    ("0.5-0.8", "0.5 to 0.8", 0.5, 0.8),
    ("0.8-0.95", "0.8 to 0.95", 0.8, 0.95),
    ("0.95-1", "0.95 and above", 0.95, None),
)

# Background colours of the job status badges, all readable under white text.
STATUS_COLOURS: dict[str, str] = {
    JobStatus.PENDING: "#6b7280",
    JobStatus.PROCESSING: "#1d4ed8",
    JobStatus.COMPLETED: "#15803d",
    JobStatus.FAILED: "#b91c1c",
    JobStatus.CANCELLED: "#92400e",
}
UNKNOWN_STATUS_COLOUR = "#374151"
EMPTY = "—"


def parse_uuid(term: str) -> uuid.UUID | None:
    """Return ``term`` as a UUID, or None when it is not one."""
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def search_terms(search_term: str) -> list[str]:
    """Split a search box value into terms, the way Django's admin does."""
    terms = []
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        terms.append(bit)
    return terms


# Counting


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
            SELECT CASE
                WHEN c.reltuples < 0 OR c.relpages = 0 THEN 0
                ELSE (
                    c.reltuples / c.relpages
                    * (pg_relation_size(c.oid) / current_setting('block_size')::int)
                )::bigint
            END AS row_count
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

    The estimate is the planner's own: the rows per page seen by the last
    ``ANALYZE`` (or autovacuum) times the table's current size in pages. A
    table estimated below ``threshold`` rows (``ESTIMATE_THRESHOLD`` by
    default), or never analysed, is counted exactly instead, by a subquery
    PostgreSQL only runs in that case. PostgreSQL only.
    """
    if threshold is None:
        threshold = ESTIMATE_THRESHOLD
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(estimated_count_sql(connection, model), [table, threshold, threshold])
        count, estimated = cursor.fetchone()
    return int(count), bool(estimated)


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts every row of a big table.

    An unfiltered queryset on PostgreSQL takes the planner's row estimate
    (see ``estimated_table_count``); ``count_is_estimate`` then says so, and
    the list shows "about N". Anything filtered, any small table and any
    other database are counted exactly.
    """

    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and is_unfiltered(queryset):
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                count, self.count_is_estimate = estimated_table_count(connection, queryset.model)
                return count
        return super().count


# The category filter


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


class ConfidenceRangeFilter(admin.SimpleListFilter):
    title = "confidence"
    parameter_name = "confidence"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _, _ in CONFIDENCE_RANGES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        for candidate, _, lower, upper in CONFIDENCE_RANGES:
            if value == candidate:
                if lower is not None:
                    queryset = queryset.filter(confidence__gte=lower)
                if upper is not None:
                    queryset = queryset.filter(confidence__lt=upper)
                return queryset
        raise IncorrectLookupParameters(f"Unknown confidence range {value!r}")


# The date drill-down


def any_rows_per_period(
    queryset: QuerySet[Any], field_name: str, periods: Sequence[tuple[datetime, datetime]]
) -> list[bool]:
    """Whether ``queryset`` has a row in each ``[start, end)`` period, in one query.

    Each period is one ``EXISTS`` probe of the index on the field, so this
    costs the same whatever the table's size.
    """
    if not periods:
        return []
    connection = connections[queryset.db]
    queryset = queryset.order_by()
    probes, params = [], []
    for start, end in periods:
        subquery = queryset.filter(
            **{f"{field_name}__gte": start, f"{field_name}__lt": end}
        ).values("pk")[:1]
        sql, subquery_params = subquery.query.get_compiler(connection=connection).as_sql()
        probes.append(f"EXISTS ({sql})")
        params.extend(subquery_params)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(probes)}", params)
        return [bool(found) for found in cursor.fetchone()]


def _start_of(day: date) -> datetime:
    # As ChangeList.get_filters turns the drill-down into a range.
    moment = datetime(day.year, day.month, day.day)
    return timezone.make_aware(moment) if settings.USE_TZ else moment


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def date_hierarchy_context(cl: ChangeList) -> dict[str, Any]:
    """The context of ``admin/date_hierarchy.html``, as Django's tag makes it.

    Django's tag lists the years, months or days with rows by a ``SELECT
    DISTINCT`` over the filtered table. This one finds the range with
    ``MIN``/``MAX`` and then probes each candidate period (see
    ``any_rows_per_period``): two queries, both on the index.
    """
    field_name = cl.date_hierarchy
    year_field, month_field, day_field = (
        f"{field_name}__{part}" for part in ("year", "month", "day")
    )
    year, month, day = (cl.params.get(name) for name in (year_field, month_field, day_field))

    def link(filters: dict[str, Any]) -> str:
        return cl.get_query_string(filters, [f"{field_name}__"])

    queryset = cl.queryset
    first = last = None
    if not year:
        bounds = queryset.order_by().aggregate(first=Min(field_name), last=Max(field_name))
        first, last = bounds["first"], bounds["last"]
        if first is None or last is None:
            return {"show": True, "back": None, "choices": []}
        if timezone.is_aware(first):
            first, last = timezone.localtime(first), timezone.localtime(last)
        if first.year == last.year:
            year = first.year
            if first.month == last.month:
                month = first.month

    if year and month and day:
        chosen = date(int(year), int(month), int(day))
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }
    if year and month:
        year, month = int(year), int(month)
        if first is not None and last is not None:
            days = [date(year, month, d) for d in range(first.day, last.day + 1)]
        else:
            days = [date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)]
        found = any_rows_per_period(
            queryset, field_name, [(_start_of(d), _start_of(d + timedelta(days=1))) for d in days]
        )
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: d.day}),
                    "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                }
                for d, has_rows in zip(days, found, strict=True)
                if has_rows
            ],
        }
    if year:
        year = int(year)
        if first is not None and last is not None:
            months = [date(year, m, 1) for m in range(first.month, last.month + 1)]
        else:
            months = [date(year, m, 1) for m in range(1, 13)]
        found = any_rows_per_period(
            queryset, field_name, [(_start_of(m), _start_of(_next_month(m))) for m in months]
        )
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({year_field: year, month_field: m.month}),
                    "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT")),
                }
                for m, has_rows in zip(months, found, strict=True)
                if has_rows
            ],
        }
    # No year asked for, and the rows span several years (first and last are set).
    assert first is not None and last is not None
    years = [date(y, 1, 1) for y in range(first.year, last.year + 1)]
    found = any_rows_per_period(
        queryset, field_name, [(_start_of(y), _start_of(date(y.year + 1, 1, 1))) for y in years]
    )
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({year_field: str(y.year)}), "title": str(y.year)}
            for y, has_rows in zip(years, found, strict=True)
            if has_rows
        ],
    }


class IndexedChangeList(ChangeList):
    """A change list whose every query an index can serve.

    - ``date_hierarchy_context``: see ``date_hierarchy_context``; the
      templates in ``materials/templates/admin/materials/`` use it.
    - A page counted empty is not fetched (nor drilled down into).
    - Sorting by a column outside ``sortable_by`` is refused even when asked
      for in the URL (Django only hides the header link); the default order
      stays.
    """

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        if self.result_count == 0:
            # Counted exactly (an estimate is never below the threshold), so
            # the page is empty: do not ask the database to search for it.
            # A filter matching nothing (the materials of failed jobs) is
            # what the planner gets most wrong: it would walk the whole
            # created_at index looking for the first row.
            self.result_list = self.queryset.none()

    @cached_property
    def date_hierarchy_context(self) -> dict[str, Any]:
        if self.result_count == 0:
            return {"show": True, "back": None, "choices": []}
        return date_hierarchy_context(self)

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        ordering = super().get_ordering(request, queryset)
        if self.params.get(ORDER_VAR) and ordering == ["-pk"]:
            # Only unsortable columns were asked for: keep the default order
            # rather than Django's fallback to the bare primary key.
            default = self.model_admin.get_ordering(request) or self._get_default_ordering()
            ordering = self._get_deterministic_ordering([*default, *queryset.query.order_by])
        return ordering


class ReadOnlyAdminMixin:
    """Deny every write; viewing still needs the model's view permission."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ScalableAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What every list here shares: see the module's docstring."""

    paginator = EstimatedCountPaginator
    # Skip the second COUNT(*), of the unfiltered table, on filtered pages.
    show_full_result_count = False
    # Each facet count would scan the table.
    show_facets = admin.ShowFacets.NEVER
    # Only columns an index sorts (see each admin).
    sortable_by: Sequence[str] = ("created_at",)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return IndexedChangeList


# Display helpers


def status_badge(status: str) -> SafeString:
    """The job status as a coloured badge."""
    try:
        label = JobStatus(status).label
    except ValueError:
        label = status
    colour = STATUS_COLOURS.get(status, UNKNOWN_STATUS_COLOUR)
    return format_html(
        '<span class="job-status job-status-{}" style="background-color: {}; color: #fff; '
        'padding: 2px 8px; border-radius: 9px; white-space: nowrap;">{}</span>',
        str(status).lower(),
        colour,
        label,
    )


def format_duration(duration: timedelta | None) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; an em dash when unknown."""
    if duration is None:
        return EMPTY
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


@dataclass(frozen=True)
class CategorySummary:
    category: str | None
    count: int
    mean_confidence: float


@dataclass(frozen=True)
class MaterialSummary:
    total: int
    mean_confidence: float | None
    categories: list[CategorySummary]


def summarize_materials(job: MaterialDetectionJob) -> MaterialSummary:
    """Count a job's materials per category, with mean confidences: one query."""
    rows = (
        DetectedMaterial.objects.filter(job=job)
        .order_by()
        .values("category")
        .annotate(count=Count("pk"), confidence_sum=Sum("confidence"))
    )
    categories = []
    total, confidence_sum = 0, 0.0
    for row in rows:
        total += row["count"]
        confidence_sum += row["confidence_sum"]
        categories.append(
            CategorySummary(row["category"], row["count"], row["confidence_sum"] / row["count"])
        )
    # The biggest first; the uncategorised last among equals.
    categories.sort(key=lambda c: (-c.count, c.category is None, c.category or ""))
    return MaterialSummary(total, confidence_sum / total if total else None, categories)


# Detected materials


@admin.register(DetectedMaterial)
class DetectedMaterialAdmin(ScalableAdmin):
    list_display = (
        "material_name",
        "category",
        "confidence",
        "job_link",
        "job_status",
        "created_at",
    )
    list_filter = (
        ("category", IndexedValuesListFilter),
        "job__status",
        ConfidenceRangeFilter,
    )
    date_hierarchy = "created_at"
    # Implemented by get_search_results: a prefix match on the name (case
    # sensitive, as the index serves it), and an exact match on the job's UUID.
    search_fields = ("^material_name", "=job__id")
    search_help_text = (
        "The start of a material name (case sensitive on PostgreSQL, not on SQLite), "
        "or a job's exact UUID."
    )
    list_select_related = ("job",)
    fields = (
        "id",
        "job",
        "material_name",
        "category",
        "confidence",
        "bounding_box",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="job")
    def job_link(self, obj: DetectedMaterial) -> SafeString:
        url = reverse("admin:materials_materialdetectionjob_change", args=[obj.job_id])
        return format_html('<a href="{}">{}</a>', url, obj.job_id)

    @admin.display(description="job status")
    def job_status(self, obj: DetectedMaterial) -> SafeString:
        return status_badge(obj.job.status)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[DetectedMaterial], search_term: str
    ) -> tuple[QuerySet[DetectedMaterial], bool]:
        """Match a UUID term as the job id, and any other as a name prefix.

        Django's own ``=job__id`` compares ``UPPER(job_id::text)``, which no
        index serves. A UUID is compared as one instead, and only with the
        job id: no material is named like a UUID, and OR-ing in the name
        match would make the database scan the whole table.

        The name match is ``material_name::text LIKE 'prefix%'``, case
        sensitive: a ``varchar_pattern_ops`` index on the column serves it,
        the count of a filtered page included (an index-only scan), whatever
        the database's collation. A case-insensitive match would need an
        index on ``UPPER(material_name)``, which PostgreSQL cannot count
        from without also storing the column in it (five times the size).
        SQLite's ``LIKE`` ignores ASCII case, so there the match does too.
        """
        terms = search_terms(search_term)
        if not terms:
            return queryset, False
        query = Q()
        for term in terms:
            job_id = parse_uuid(term)
            if job_id is None:
                query &= Q(material_name__startswith=term)
            else:
                query &= Q(job_id=job_id)
        return queryset.filter(query), False


# Detection jobs


class CappedInlineFormSet(BaseInlineFormSet):
    """Show only the first ``INLINE_MATERIALS_LIMIT`` rows of the inline."""

    def get_queryset(self) -> QuerySet[DetectedMaterial]:
        # Sliced once and cached: the formset indexes it per form, and a
        # sliced queryset cannot be filtered again.
        if not hasattr(self, "_capped_queryset"):
            self._capped_queryset = super().get_queryset()[:INLINE_MATERIALS_LIMIT]
        return self._capped_queryset


class DetectedMaterialInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DetectedMaterial
    formset = CappedInlineFormSet
    fields = ("material_name", "category", "confidence", "bounding_box", "created_at")
    readonly_fields = fields
    # Served by the (job_id, confidence) index.
    ordering = ("-confidence", "id")
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = f"detected materials (top {INLINE_MATERIALS_LIMIT} by confidence)"


def material_counts() -> Subquery:
    """How many materials the outer job has: counted per listed job, on its index."""
    return Subquery(
        DetectedMaterial.objects.filter(job=OuterRef("pk"))
        .order_by()
        .values("job")
        .annotate(count=Count("pk"))
        .values("count")
    )


@admin.register(MaterialDetectionJob)
class MaterialDetectionJobAdmin(ScalableAdmin):
    list_display = (
        "id",
        "status_badge",
        "material_count",
        "duration",
        "created_at",
        "completed_at",
        "model_version",
    )
    list_filter = ("status",)
    search_fields = ("=id",)
    search_help_text = "A job's exact UUID."
    inlines = (DetectedMaterialInline,)
    fields = (
        "id",
        "status_badge",
        "image_url",
        "error_message",
        "model_version",
        "created_at",
        "updated_at",
        "completed_at",
        "duration",
        "material_summary",
        "all_materials",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[MaterialDetectionJob]:
        # A correlated subquery rather than a JOIN + GROUP BY: the database
        # evaluates it for the listed page only, where a GROUP BY would first
        # aggregate every material of every job.
        return super().get_queryset(request).annotate(material_count=Coalesce(material_counts(), 0))

    @admin.display(description="status")
    def status_badge(self, obj: MaterialDetectionJob) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="materials")
    def material_count(self, obj: MaterialDetectionJob) -> int:
        return obj.material_count

    @admin.display(description="duration")
    def duration(self, obj: MaterialDetectionJob) -> str:
        if obj.completed_at is None or obj.created_at is None:
            return EMPTY
        return format_duration(obj.completed_at - obj.created_at)

    def _summary(self, obj: MaterialDetectionJob) -> MaterialSummary:
        # Both fields below show it: computed once per page.
        if not hasattr(obj, "_material_summary"):
            obj._material_summary = summarize_materials(obj)
        return obj._material_summary

    @admin.display(description="summary")
    def material_summary(self, obj: MaterialDetectionJob) -> SafeString | str:
        summary = self._summary(obj)
        if not summary.total:
            return "No materials detected."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (c.category or "(none)", c.count, f"{c.mean_confidence:.3f}")
                for c in summary.categories
            ),
        )
        return format_html(
            '<table class="material-summary"><thead><tr><th>category</th><th>materials</th>'
            '<th>mean confidence</th></tr></thead><tbody>{}<tr class="total"><td><strong>all'
            "</strong></td><td><strong>{}</strong></td><td><strong>{}</strong></td></tr></tbody>"
            "</table>",
            rows,
            summary.total,
            f"{summary.mean_confidence:.3f}",
        )

    @admin.display(description="materials")
    def all_materials(self, obj: MaterialDetectionJob) -> SafeString:
        url = reverse("admin:materials_detectedmaterial_changelist")
        return format_html(
            '<a href="{}?job__id__exact={}">View all {} detected materials</a>',
            url,
            obj.pk,
            self._summary(obj).total,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[MaterialDetectionJob], search_term: str
    ) -> tuple[QuerySet[MaterialDetectionJob], bool]:
        """Match a job by its exact UUID; any other term matches nothing."""
        terms = search_terms(search_term)
        if not terms:
            return queryset, False
        job_ids = [parse_uuid(term) for term in terms]
        if None in job_ids or len(set(job_ids)) != 1:
            # Terms are ANDed, and a job has one id.
            return queryset.none(), False
        return queryset.filter(pk=job_ids[0]), False
