"""The detection domain: jobs and the materials they found.

Alembic owns these tables (``alembic/versions``); the models are
``managed = False`` and are the single source of truth for their schema,
which ``migsupport.bridge`` turns into Alembic's metadata. Every column,
default, foreign key and index here must match the migrations at head.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Now

from migsupport.fields import EnumField, Index


class JobStatus(models.TextChoices):
    """Labels of the ``jobstatus`` ENUM, in the database's order."""

    PENDING = "PENDING", "Pending"
    PROCESSING = "PROCESSING", "Processing"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    # Added by revision 7c1d2e3f4a5b.
    CANCELLED = "CANCELLED", "Cancelled"


class MaterialDetectionJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    image_url = models.URLField(max_length=2048)
    status = EnumField(enum_name="jobstatus", choices=JobStatus.choices, default=JobStatus.PENDING)
    error_message = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    completed_at = models.DateTimeField(null=True, blank=True)
    model_version = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        managed = False
        db_table = "material_detection_jobs"
        ordering = ["-created_at"]
        verbose_name = "detection job"
        indexes = [
            Index(fields=["status"], name="ix_material_detection_jobs_status"),
            Index(fields=["created_at"], name="ix_material_detection_jobs_created_at"),
        ]

    def __str__(self) -> str:
        return f"Job {self.id} ({self.status})"


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
