"""Baseline: the deployed schema.

Revision ID: b662310f1380
Revises:
Create Date: 2026-11-27 00:00:00

This is exactly the schema the service's earlier SQLAlchemy models created
before Alembic tracked it (production_schema.sql). Every step is idempotent
and shape-checked, so the revision is safe over that existing schema too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from migsupport import ops

revision: str = "b662310f1380"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOBSTATUS = ("PENDING", "PROCESSING", "COMPLETED", "FAILED")


def upgrade() -> None:
    ops.create_enum_if_missing("jobstatus", JOBSTATUS)
    ops.create_table_if_missing(
        "material_detection_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("image_url", sa.String(2048), nullable=False),
        sa.Column("status", ops.enum_type("jobstatus", JOBSTATUS), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="material_detection_jobs_pkey"),
    )
    ops.create_index_if_missing(
        "ix_material_detection_jobs_status", "material_detection_jobs", ["status"]
    )
    ops.create_index_if_missing(
        "ix_material_detection_jobs_created_at", "material_detection_jobs", ["created_at"]
    )
    ops.create_table_if_missing(
        "detected_materials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("material_name", sa.String(100), nullable=False),
        sa.Column("category", sa.String(50), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column(
            "bounding_box", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="detected_materials_pkey"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["material_detection_jobs.id"],
            name="detected_materials_job_id_fkey",
            ondelete="CASCADE",
        ),
    )
    ops.create_index_if_missing("ix_detected_materials_job_id", "detected_materials", ["job_id"])
    ops.create_index_if_missing(
        "ix_detected_materials_material_name", "detected_materials", ["material_name"]
    )


def downgrade() -> None:
    ops.drop_index_if_present("ix_detected_materials_material_name", table="detected_materials")
    ops.drop_index_if_present("ix_detected_materials_job_id", table="detected_materials")
    ops.drop_table_if_present("detected_materials")
    ops.drop_index_if_present(
        "ix_material_detection_jobs_created_at", table="material_detection_jobs"
    )
    ops.drop_index_if_present("ix_material_detection_jobs_status", table="material_detection_jobs")
    ops.drop_table_if_present("material_detection_jobs")
    ops.drop_enum_if_present("jobstatus")
