"""Rows in the deployed schema, and proof that an upgrade kept every one of them.

``seed_sql`` fills the deployed PostgreSQL tables (``production_schema.sql``)
with deterministic rows, any number of them, in two statements (``INSERT ...
SELECT`` over ``generate_series``: a million materials take seconds).
``data_checksums`` returns each table's row count and an md5 of its rows in
id order, over exactly the deployed columns, so a column an upgrade adds does
not change it while any lost, duplicated or altered row does.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.support.project import load_production_schema
from tests.support.states import execute

# The columns of the deployed schema.
DEPLOYED_COLUMNS = {
    "material_detection_jobs": (
        "id, image_url, status, error_message, created_at, updated_at, completed_at"
    ),
    "detected_materials": (
        "id, job_id, material_name, category, confidence, bounding_box, created_at"
    ),
}


def seed_sql(jobs: int = 300, materials: int = 450) -> tuple[str, str]:
    """Return the INSERTs of ``jobs`` jobs and ``materials`` materials spread over them."""
    return (
        "INSERT INTO material_detection_jobs "
        "(id, image_url, status, error_message, created_at, updated_at, completed_at) "
        "SELECT md5('job' || i)::uuid, 'https://img.example/' || i || '.jpg', "
        "(ARRAY['PENDING', 'PROCESSING', 'COMPLETED', 'FAILED'])[1 + mod(i, 4)]::jobstatus, "
        "CASE WHEN mod(i, 4) = 3 THEN 'timeout after ' || i || 's' END, "
        "timestamptz '2025-01-01 00:00+00' + i * interval '1 minute', "
        "timestamptz '2025-01-02 00:00+00' + i * interval '1 minute', "
        "CASE WHEN mod(i, 4) = 2 THEN timestamptz '2025-01-03 00:00+00' + i * interval '1 second' "
        f"END FROM generate_series(1, {jobs}) AS i",
        "INSERT INTO detected_materials "
        "(id, job_id, material_name, category, confidence, bounding_box, created_at) "
        f"SELECT md5('material' || i)::uuid, md5('job' || (1 + mod(i, {jobs})))::uuid, "
        "'material ' || (mod(i, 37)), CASE WHEN mod(i, 5) <> 0 THEN 'category ' || (mod(i, 7)) "
        "END, (mod(i, 100)) / 100.0, jsonb_build_object('x', i, 'y', 2 * i, 'w', 10, 'h', 20), "
        "timestamptz '2025-01-01 00:00+00' + i * interval '1 second' "
        f"FROM generate_series(1, {materials}) AS i",
    )


SEED_SQL = seed_sql()


def data_checksums(engine: Engine) -> dict[str, tuple[int, str]]:
    """Return (row count, md5 of every row in id order) per domain table."""
    with engine.connect() as connection:
        return {
            table: tuple(
                connection.exec_driver_sql(
                    f"SELECT count(*), md5(coalesce(string_agg(ROW({columns})::text, E'\\n' "
                    f"ORDER BY id), '')) FROM {table}"
                ).one()
            )
            for table, columns in DEPLOYED_COLUMNS.items()
        }


def production_database(engine: Engine, materials: int = 100_000, jobs: int = 2_000) -> None:
    """Load the deployed schema, unversioned, with ``materials`` rows over ``jobs`` jobs."""
    load_production_schema(engine)
    execute(engine, *seed_sql(jobs=jobs, materials=materials))
    execute(engine, "ANALYZE")


def missing_materials(engine: Engine, ids: Iterable[object]) -> list[str]:
    """Return which of the material ``ids`` are not in ``detected_materials``, sorted."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT wanted::text FROM unnest(CAST(:ids AS uuid[])) AS wanted "
                    "WHERE NOT EXISTS (SELECT 1 FROM detected_materials d WHERE d.id = wanted) "
                    "ORDER BY 1"
                ),
                {"ids": [str(i) for i in ids]},
            ).scalars()
        )
