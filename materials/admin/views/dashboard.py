"""The charts page: detections per day, jobs per status, confidence per category.

Linked from the admin's index and the job list, for staff who may view
both detection tables. Each chart costs two queries on PostgreSQL whatever
the tables' sizes (see the queryset methods in ``materials.models``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import formats

from materials.admin.charts import bar_chart, column_chart, histogram_rows, number
from materials.admin.display import STATUS_COLOURS, UNKNOWN_STATUS_COLOUR, status_label
from materials.models import DetectedMaterial, MaterialDetectionJob

DASHBOARD_PERMISSIONS = ("materials.view_detectedmaterial", "materials.view_materialdetectionjob")
DAYS = 30
CONFIDENCE_BINS = 10
NO_CATEGORY = "(none)"


def dashboard_context() -> dict[str, Any]:
    """The three charts, each with its total and whether it is estimated."""
    daily = DetectedMaterial.objects.per_day(DAYS)
    statuses = MaterialDetectionJob.objects.per_status()
    confidence = DetectedMaterial.objects.confidence_distribution(CONFIDENCE_BINS)
    edges = [f"{i / CONFIDENCE_BINS:g}" for i in range(CONFIDENCE_BINS + 1)]
    return {
        "days": DAYS,
        "daily": daily,
        "daily_chart": column_chart(
            [
                (day.isoformat(), formats.date_format(day, "M j"), count)
                for day, count in daily.days
            ],
            label=f"Detections per day over the last {DAYS} days: {number(daily.total)} in all",
        ),
        "statuses": statuses,
        "status_chart": bar_chart(
            [
                (
                    status_label(status),
                    count,
                    STATUS_COLOURS.get(status, UNKNOWN_STATUS_COLOUR),
                )
                for status, count in statuses.counts
            ],
            label=f"Jobs per status: {number(statuses.total)} in all",
        ),
        "confidence": confidence,
        "confidence_chart": histogram_rows(
            [(category or NO_CATEGORY, counts) for category, counts in confidence.categories],
            label=(
                f"Confidence per category, in bins of {1 / CONFIDENCE_BINS:g}: "
                f"{number(confidence.total)} materials"
            ),
            edges=edges,
        ),
    }


def dashboard_view(request: HttpRequest, admin_site: AdminSite) -> TemplateResponse:
    """Render the charts; 403 without the view permission of both tables."""
    if not request.user.has_perms(DASHBOARD_PERMISSIONS):
        raise PermissionDenied
    context = {
        **admin_site.each_context(request),
        "title": "Detection charts",
        **dashboard_context(),
    }
    return TemplateResponse(request, "admin/materials/dashboard.html", context)
