"""The detection domain: jobs and the materials they found.

Alembic owns these tables (``alembic/versions``); the models are
``managed = False`` and are the single source of truth for their schema,
which ``migsupport.bridge`` turns into Alembic's metadata. Every column,
default, foreign key and index here must match the migrations at head.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, F, Sum, Value
from django.db.models.functions import Floor, Greatest, Least, Now, TruncDate
from django.utils import timezone

from materials import estimates
from materials.estimates import (
    column_statistics,
    is_unfiltered,
    planner_row_estimate,
    sample_percent,
    statistics_or_rows,
)
from migsupport.fields import EnumField, Index


class JobStatus(models.TextChoices):
    """Labels of the ``jobstatus`` ENUM, in the database's order."""

    PENDING = "PENDING", "Pending"
    PROCESSING = "PROCESSING", "Processing"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    # Added by revision 7c1d2e3f4a5b.
    CANCELLED = "CANCELLED", "Cancelled"


@dataclass(frozen=True)
class StatusCounts:
    """How many jobs have each status, in ``JobStatus`` order.

    ``estimated`` is True when they come from the table's statistics rather
    than a count of its rows.
    """

    counts: tuple[tuple[str, int], ...]
    estimated: bool = False

    @property
    def total(self) -> int:
        return sum(count for _, count in self.counts)


class MaterialDetectionJobQuerySet(models.QuerySet):
    def per_status(self) -> StatusCounts:
        """Count these jobs per status.

        On PostgreSQL, an unfiltered table of ``ESTIMATE_THRESHOLD`` rows or
        more is read from its statistics (the share of each status that the
        last ``ANALYZE`` saw, times the planner's estimate of the rows now).
        One query.
        """
        exact = self.order_by().values("status").annotate(count=Count("*"))
        connection = connections[self.db]
        if connection.vendor == "postgresql" and is_unfiltered(self):
            field = self.model._meta.get_field("status")
            stats, rows = statistics_or_rows(
                connection, self.model, field, exact, element_type="text"
            )
            if rows is None:
                fractions = {status: stats.value_fraction(status) for status in JobStatus}
                unseen = [status for status, fraction in fractions.items() if not fraction]
                for status in unseen:
                    # Rows ANALYZE saw but did not list: shared among the others.
                    fractions[status] = stats.histogram_fraction / len(unseen)
                return StatusCounts(
                    counts=tuple(
                        (str(status), round(fraction * stats.rows))
                        for status, fraction in fractions.items()
                    ),
                    estimated=True,
                )
            counted = {row["status"]: row["count"] for row in rows}
        else:
            counted = dict(exact.values_list("status", "count"))
        return StatusCounts(
            counts=tuple((str(status), counted.get(status, 0)) for status in JobStatus)
        )


class MaterialDetectionJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    image_url = models.URLField(max_length=2048)
    status = EnumField(enum_name="jobstatus", choices=JobStatus.choices, default=JobStatus.PENDING)
    error_message = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    completed_at = models.DateTimeField(null=True, blank=True)
    model_version = models.CharField(max_length=64, null=True, blank=True)

    objects = MaterialDetectionJobQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = "material_detection_jobs"
        ordering = ["-created_at"]
        verbose_name = "detection job"
        # Not about jobs: the admin's schema page (materials/admin/views/schema.py).
        # A model's permissions are Django's (auth_permission, made by
        # `manage.py migrate`), not part of the table Alembic owns.
        permissions = [("view_schema_state", "Can view the database schema state")]
        indexes = [
            Index(fields=["status"], name="ix_material_detection_jobs_status"),
            Index(fields=["created_at"], name="ix_material_detection_jobs_created_at"),
        ]

    def __str__(self) -> str:
        return f"Job {self.id} ({self.status})"


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


@dataclass(frozen=True)
class DailyCounts:
    """Detections per day, oldest first.

    ``estimated`` is True when the days before the table's last ``ANALYZE``
    come from its statistics (the days after it are always counted).
    """

    days: tuple[tuple[date, int], ...]
    estimated: bool = False

    @property
    def total(self) -> int:
        return sum(count for _, count in self.days)


@dataclass(frozen=True)
class ConfidenceDistribution:
    """How many materials of each category fall in each confidence bin.

    Bin ``i`` (from 0) holds confidences in ``[i / bins, (i + 1) / bins)``;
    the last one includes 1. Categories come biggest first, None (no
    category) last among equals. ``sample_percent`` is the share of the
    table's pages read when the counts are scaled up from a sample, else
    None.
    """

    bins: int
    categories: tuple[tuple[str | None, tuple[int, ...]], ...]
    sample_percent: float | None = None

    @property
    def total(self) -> int:
        return sum(sum(counts) for _, counts in self.categories)


def _start_of(day: date) -> datetime:
    """Midnight at the start of ``day``, in the current time zone."""
    moment = datetime.combine(day, time())
    return timezone.make_aware(moment) if settings.USE_TZ else moment


class DetectedMaterialQuerySet(models.QuerySet):
    def summarize(self) -> MaterialSummary:
        """Count these materials per category, with mean confidences: one query."""
        rows = (
            self.order_by()
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

    def per_day(self, days: int = 30, *, now: datetime | None = None) -> DailyCounts:
        """Count these materials per day of creation, over the last ``days`` days.

        The days are those of the current time zone, today included. On
        PostgreSQL, an unfiltered table of ``ESTIMATE_THRESHOLD`` rows or more
        is read from its statistics up to the newest value its last
        ``ANALYZE`` saw; the rows created since are counted exactly, on the
        created_at index. Two queries on PostgreSQL, one elsewhere.
        """
        today = timezone.localdate(now or timezone.now())
        first = today - timedelta(days=days - 1)
        dates = [first + timedelta(days=i) for i in range(days)]
        ranges = [(_start_of(day), _start_of(day + timedelta(days=1))) for day in dates]
        counted = self.filter(created_at__gte=ranges[0][0], created_at__lt=ranges[-1][1])
        stats = None
        connection = connections[self.db]
        if connection.vendor == "postgresql" and is_unfiltered(self):
            field = self.model._meta.get_field("created_at")
            stats = column_statistics(connection, self.model, field)
            if stats.rows < estimates.ESTIMATE_THRESHOLD or stats.upper_bound is None:
                stats = None
            else:
                counted = counted.filter(created_at__gt=stats.upper_bound)
        exact = dict(
            counted.order_by()
            .annotate(day=TruncDate("created_at"))
            .values("day")
            .annotate(count=Count("*"))
            .values_list("day", "count")
        )
        if stats is None:
            return DailyCounts(days=tuple((day, exact.get(day, 0)) for day in dates))
        # The statistics describe the rows the last ANALYZE counted; those
        # since are the ones counted above.
        fractions = stats.range_fractions(ranges)
        return DailyCounts(
            days=tuple(
                (day, round(fraction * stats.analysed_rows) + exact.get(day, 0))
                for day, fraction in zip(dates, fractions, strict=True)
            ),
            estimated=True,
        )

    def confidence_distribution(self, bins: int = 10) -> ConfidenceDistribution:
        """Count these materials per category and confidence bin.

        On PostgreSQL, an unfiltered table of ``ESTIMATE_THRESHOLD`` rows or
        more is sampled instead (``TABLESAMPLE SYSTEM``, about
        ``estimates.SAMPLE_ROWS`` rows, the same pages each time while the
        table is unchanged) and the counts scaled up. Two queries on
        PostgreSQL, one elsewhere.
        """
        connection = connections[self.db]
        percent = None
        rows = 0
        if connection.vendor == "postgresql" and is_unfiltered(self):
            rows = planner_row_estimate(connection, self.model)
            if rows >= estimates.ESTIMATE_THRESHOLD:
                percent = sample_percent(rows)
        if percent is None:
            found = (
                self.order_by()
                .annotate(
                    bin=Least(
                        Greatest(Floor(F("confidence") * bins), Value(0.0)), Value(bins - 1.0)
                    )
                )
                .values("category", "bin")
                .annotate(count=Count("*"))
                .values_list("category", "bin", "count")
            )
            scale = 1.0
        else:
            found = _sampled_confidence_bins(connection, self.model, bins, percent)
            # Scaled to the planner's estimate of the rows: the number of
            # pages the sample drew varies more than the rows per page.
            scale = rows / max(sum(count for _, _, count in found), 1)
        per_category: dict[str | None, list[int]] = {}
        for category, bin_index, count in found:
            per_category.setdefault(category, [0] * bins)[int(bin_index)] += round(count * scale)
        ordered = sorted(
            per_category.items(), key=lambda item: (-sum(item[1]), item[0] is None, item[0] or "")
        )
        return ConfidenceDistribution(
            bins=bins,
            categories=tuple((category, tuple(counts)) for category, counts in ordered),
            sample_percent=percent,
        )


def _sampled_confidence_bins(
    connection: BaseDatabaseWrapper, model: type[models.Model], bins: int, percent: float
) -> list[tuple[str | None, int, int]]:
    """``(category, bin, count)`` in a sample of ``percent`` of the table's pages."""
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    category = qn(model._meta.get_field("category").column)
    confidence = qn(model._meta.get_field("confidence").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {category}, LEAST(GREATEST(FLOOR({confidence} * %s), 0), %s), COUNT(*) "
            f"FROM {table} TABLESAMPLE SYSTEM (%s) REPEATABLE (0) GROUP BY 1, 2",
            [bins, bins - 1, percent],
        )
        return cursor.fetchall()


class DetectedMaterial(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(
        MaterialDetectionJob,
        on_delete=models.CASCADE,
        related_name="materials",
        db_index=False,  # indexed by name in Meta.indexes, as deployed
    )
    material_name = models.CharField(max_length=100)
    category = models.CharField(max_length=50, null=True, blank=True)
    confidence = models.FloatField()
    bounding_box = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    objects = DetectedMaterialQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = "detected_materials"
        ordering = ["-created_at"]
        verbose_name = "detected material"
        indexes = [
            Index(fields=["job"], name="ix_detected_materials_job_id"),
            Index(fields=["material_name"], name="ix_detected_materials_material_name"),
            Index(fields=["job", "confidence"], name="ix_detected_materials_job_id_confidence"),
            # Added by revision 3d5f8a9b2c41, for the admin at production scale:
            # the default order and date drill-down, the category and
            # confidence filters, and the name prefix search (LIKE 'x%').
            Index(fields=["created_at"], name="ix_detected_materials_created_at"),
            Index(fields=["category"], name="ix_detected_materials_category"),
            Index(fields=["confidence"], name="ix_detected_materials_confidence"),
            Index(
                fields=["material_name"],
                opclasses=["varchar_pattern_ops"],
                name="ix_detected_materials_material_name_pattern",
            ),
        ]

    def __str__(self) -> str:
        return self.material_name
