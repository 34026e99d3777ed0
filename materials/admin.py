"""A read-only admin over the detection results.

The detection pipeline is the only writer of these tables, so the admin never
adds, changes or deletes a row, not even for superusers; staff still need the
``view`` permission to see anything.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import smart_split, unescape_string_literal

from materials.models import DetectedMaterial, MaterialDetectionJob

# The job page lists only this many materials, so a job with thousands of
# them still opens quickly; the full list is one click away.
INLINE_MATERIALS_LIMIT = 50


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


class ReadOnlyAdminMixin:
    """Deny every write; viewing still needs the model's view permission."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DetectedMaterial)
class DetectedMaterialAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "material_name",
        "category",
        "confidence",
        "job_link",
        "job_status",
        "created_at",
    )
    list_filter = ("category", "job__status")
    date_hierarchy = "created_at"
    # Implemented by get_search_results: a case-insensitive prefix match on
    # the name, and an exact match on the job's UUID.
    search_fields = ("^material_name", "=job__id")
    search_help_text = "Material name prefix, or a job's exact UUID."
    list_select_related = ("job",)
    # Skip the unfiltered COUNT(*) over the whole table on every page.
    show_full_result_count = False
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

    @admin.display(description="job", ordering="job_id")
    def job_link(self, obj: DetectedMaterial) -> SafeString:
        url = reverse("admin:materials_materialdetectionjob_change", args=[obj.job_id])
        return format_html('<a href="{}">{}</a>', url, obj.job_id)

    @admin.display(description="job status", ordering="job__status")
    def job_status(self, obj: DetectedMaterial) -> str:
        return obj.job.get_status_display()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[DetectedMaterial], search_term: str
    ) -> tuple[QuerySet[DetectedMaterial], bool]:
        """Match a UUID term as the job id, and any other as a name prefix.

        Django's own ``=job__id`` compares ``UPPER(job_id::text)``, which no
        index serves. A UUID is compared as one instead, and only with the
        job id: no material is named like a UUID, and OR-ing in the name
        match would make the database scan the whole table.
        """
        terms = search_terms(search_term)
        if not terms:
            return queryset, False
        query = Q()
        for term in terms:
            job_id = parse_uuid(term)
            if job_id is None:
                query &= Q(material_name__istartswith=term)
            else:
                query &= Q(job_id=job_id)
        return queryset.filter(query), False


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
    ordering = ("-confidence", "id")
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = f"detected materials (top {INLINE_MATERIALS_LIMIT} by confidence)"


@admin.register(MaterialDetectionJob)
class MaterialDetectionJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "status", "image_url", "created_at", "completed_at", "model_version")
    list_filter = ("status",)
    search_fields = ("=id",)
    search_help_text = "A job's exact UUID."
    show_full_result_count = False
    inlines = (DetectedMaterialInline,)
    fields = (
        "id",
        "status",
        "image_url",
        "error_message",
        "model_version",
        "created_at",
        "updated_at",
        "completed_at",
        "all_materials",
    )
    readonly_fields = fields

    @admin.display(description="materials")
    def all_materials(self, obj: MaterialDetectionJob) -> SafeString:
        url = reverse("admin:materials_detectedmaterial_changelist")
        count = obj.materials.count()
        return format_html(
            '<a href="{}?job__id__exact={}">View all {} detected materials</a>', url, obj.pk, count
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
