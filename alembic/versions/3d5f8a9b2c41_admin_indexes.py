"""Indexes for browsing detected materials at production scale.

Revision ID: 3d5f8a9b2c41
Revises: 7c1d2e3f4a5b
Create Date: 2026-11-27 13:20:00

The admin's default order (newest first) and date drill-down, its category
and confidence filters, and its name prefix search (``LIKE 'x%'``, which a
plain btree serves only under the C collation, hence varchar_pattern_ops).
"""

from __future__ import annotations

from collections.abc import Sequence

from migsupport import ops

revision: str = "3d5f8a9b2c41"
down_revision: str | Sequence[str] | None = "7c1d2e3f4a5b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Each is built concurrently, outside the revision's transaction, so that the
    # detection pipeline keeps inserting while a large table is indexed.
    ops.create_index_if_missing(
        "ix_detected_materials_created_at", "detected_materials", ["created_at"], concurrently=True
    )
    ops.create_index_if_missing(
        "ix_detected_materials_category", "detected_materials", ["category"], concurrently=True
    )
    ops.create_index_if_missing(
        "ix_detected_materials_confidence", "detected_materials", ["confidence"], concurrently=True
    )
    ops.create_index_if_missing(
        "ix_detected_materials_material_name_pattern",
        "detected_materials",
        ["material_name"],
        postgresql_ops={"material_name": "varchar_pattern_ops"},
        concurrently=True,
    )


def downgrade() -> None:
    for name in (
        "ix_detected_materials_material_name_pattern",
        "ix_detected_materials_confidence",
        "ix_detected_materials_category",
        "ix_detected_materials_created_at",
    ):
        ops.drop_index_if_present(name, table="detected_materials", concurrently=True)
