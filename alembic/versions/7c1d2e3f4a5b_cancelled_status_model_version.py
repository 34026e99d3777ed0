"""Cancelled jobs, the model version, and an index for a job's best materials.

Revision ID: 7c1d2e3f4a5b
Revises: b662310f1380
Create Date: 2026-11-27 00:00:01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from migsupport import ops

revision: str = "7c1d2e3f4a5b"
down_revision: str | Sequence[str] | None = "b662310f1380"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    ops.add_enum_value_if_missing("jobstatus", "CANCELLED", after="FAILED")
    ops.add_column_if_missing(
        "material_detection_jobs", sa.Column("model_version", sa.String(64), nullable=True)
    )
    # Built concurrently, outside the revision's transaction: writers keep writing.
    ops.create_index_if_missing(
        "ix_detected_materials_job_id_confidence",
        "detected_materials",
        ["job_id", "confidence"],
        concurrently=True,
    )


def downgrade() -> None:
    # First, so that a job still CANCELLED refuses the downgrade before
    # anything else has changed (SQLite's DDL is not always transactional).
    ops.drop_enum_value_if_present(
        "jobstatus", "CANCELLED", columns=[("material_detection_jobs", "status")]
    )
    ops.drop_index_if_present(
        "ix_detected_materials_job_id_confidence", table="detected_materials", concurrently=True
    )
    ops.drop_column_if_present("material_detection_jobs", "model_version")
