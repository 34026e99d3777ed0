"""The ModelAdmins of the detection tables, and the read-only, scalable base they share.

See the package's docstring for what keeps every page's cost flat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from materials.admin.display import EMPTY, format_duration, short_id, status_badge
from materials.admin.filters import IndexedValuesListFilter, RangeListFilter
from materials.admin.utils import parse_uuid, search_terms
from materials.admin.views.dashboard import DASHBOARD_PERMISSIONS, dashboard_view
from materials.admin.views.main import EstimatedCountPaginator, IndexedChangeList
from materials.admin.views.schema import schema_view
from materials.models import DetectedMaterial, MaterialDetectionJob, MaterialSummary

# The job page lists only this many materials, so a job with thousands of
# them still opens quickly; the full list is one click away.
INLINE_MATERIALS_LIMIT = 50

# The confidence filter's ranges: (parameter value, label, lower, upper), each
# including its lower bound and excluding its upper one.
CONFIDENCE_RANGES: Sequence[tuple[str, str, float | None, float | None]] = (
    ("0-0.5", "below 0.5", None, 0.5),
    ("0.5-0.8", "0.5 to 0.8", 0.5, 0.8),
    ("0.8-0.95", "0.8 to 0.95", 0.8, 0.95),
    ("0.95-1", "0.95 and above", 0.95, None),
)


class ReadOnlyAdminMixin:
    """Deny every write; viewing still needs the model's view permission."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ScalableAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What every list here shares: see the package's docstring."""

    paginator = EstimatedCountPaginator
    # Skip the second COUNT(*), of the unfiltered table, on filtered pages.
    show_full_result_count = False
    # Each facet count would scan the table.
    show_facets = admin.ShowFacets.NEVER
    # Only columns an index sorts (see each admin).
    sortable_by: Sequence[str] = ("created_at",)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return IndexedChangeList


class ConfidenceRangeFilter(RangeListFilter):
    title = "confidence"
    parameter_name = "confidence"
    field_name = "confidence"
    ranges = CONFIDENCE_RANGES


# Detected materials


class DetectedMaterialAdmin(ScalableAdmin):
    list_display = (
        "material_name",
        "category",
        "confidence",
        "job_link",
        "job_status",
        "created_at",
    )
    # ix_detected_materials_confidence and ix_detected_materials_created_at.
    sortable_by = ("confidence", "created_at")
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
        return format_html('<a href="{}">{}</a>', url, short_id(obj.job_id))

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

    def get_queryset(self) -> QuerySet[Any]:
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


class MaterialDetectionJobAdmin(ScalableAdmin):
    list_display = (
        "short_id",
        "status_badge",
        "material_count",
        "duration",
        "created_at",
        "completed_at",
        "model_version",
    )
    list_display_links = ("short_id",)
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

    def get_urls(self) -> list[URLPattern]:
        # Before Django's own: its "<path:object_id>/" would take "dashboard/".
        dashboard = path(
            "dashboard/",
            self.admin_site.admin_view(self.dashboard_view),
            name=f"{self.opts.app_label}_dashboard",
        )
        # The schema page hangs here too, as the permission it needs does.
        schema = path(
            "schema/",
            self.admin_site.admin_view(self.schema_view),
            name=f"{self.opts.app_label}_schema",
        )
        return [dashboard, schema, *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        return dashboard_view(request, self.admin_site)

    def schema_view(self, request: HttpRequest) -> HttpResponse:
        return schema_view(request, self.admin_site)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "show_dashboard_link": request.user.has_perms(DASHBOARD_PERMISSIONS),
        }
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request: HttpRequest) -> QuerySet[MaterialDetectionJob]:
        # A correlated subquery rather than a JOIN + GROUP BY: the database
        # evaluates it for the listed page only, where a GROUP BY would first
        # aggregate every material of every job.
        return super().get_queryset(request).annotate(material_count=Coalesce(material_counts(), 0))

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: MaterialDetectionJob) -> SafeString:
        return short_id(obj.pk)

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
            obj._material_summary = obj.materials.summarize()
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
