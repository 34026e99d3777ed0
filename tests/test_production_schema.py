"""Revision b662310f1380 is the deployed schema, object for object."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from migsupport.engine import create_engine
from tests.support.catalog import catalog, table_rows
from tests.support.migrate import run
from tests.support.project import PRODUCTION_SCHEMA, PROJECT, load_production_schema
from tests.support.server import create_pg_database, drop_pg_database

BASELINE = "b662310f1380"


def test_committed_copy_equals_the_shared_production_schema():
    shared = PROJECT.parent / "shared" / "production_schema.sql"
    if not shared.exists():
        pytest.skip(f"no shared/production_schema.sql beside the project at {shared}")
    assert PRODUCTION_SCHEMA.read_bytes() == shared.read_bytes()


@pytest.mark.postgresql
def test_baseline_upgrade_gives_the_production_catalog(pg_server, pg_engine):
    run(pg_engine, "upgrade", BASELINE)
    reference_url = create_pg_database(pg_server)
    reference = create_engine(reference_url)
    try:
        load_production_schema(reference)
        expected = catalog(reference)
    finally:
        reference.dispose()
        drop_pg_database(pg_server, reference_url)
    actual = catalog(pg_engine)
    for part in ("columns", "constraints", "indexes", "enums"):
        assert actual[part] == expected[part], part
    assert [row[1] for row in actual["indexes"]] == [
        "detected_materials_pkey",
        "ix_detected_materials_job_id",
        "ix_detected_materials_material_name",
        "ix_material_detection_jobs_created_at",
        "ix_material_detection_jobs_status",
        "material_detection_jobs_pkey",
    ]
    assert actual["enums"] == [("jobstatus", ["PENDING", "PROCESSING", "COMPLETED", "FAILED"])]


def _insert_sample_rows(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO material_detection_jobs (id, image_url, status) VALUES "
                "('00000000-0000-0000-0000-000000000001', 'https://img/1.jpg', 'COMPLETED'), "
                "('00000000-0000-0000-0000-000000000002', 'https://img/2.jpg', 'FAILED')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO detected_materials (id, job_id, material_name, category, confidence, "
                "bounding_box) VALUES ('00000000-0000-0000-0000-0000000000a1', "
                "'00000000-0000-0000-0000-000000000001', 'steel', 'metal', 0.93, "
                '\'{"x": 1, "y": 2, "w": 3, "h": 4}\')'
            )
        )


@pytest.mark.postgresql
def test_baseline_over_the_existing_production_schema_changes_nothing(pg_engine):
    load_production_schema(pg_engine)
    _insert_sample_rows(pg_engine)
    before = catalog(pg_engine)
    rows = {t: table_rows(pg_engine, t) for t in ("material_detection_jobs", "detected_materials")}

    assert run(pg_engine, "upgrade", BASELINE) == (BASELINE,)

    assert catalog(pg_engine) == before
    assert {t: table_rows(pg_engine, t) for t in rows} == rows


@pytest.mark.postgresql
def test_head_over_the_existing_production_schema_equals_a_fresh_head(pg_server, pg_engine):
    load_production_schema(pg_engine)
    _insert_sample_rows(pg_engine)
    jobs = table_rows(pg_engine, "detected_materials")

    run(pg_engine, "upgrade", "head")

    fresh_url = create_pg_database(pg_server)
    fresh = create_engine(fresh_url)
    try:
        run(fresh, "upgrade", "head")
        assert catalog(pg_engine) == catalog(fresh)
    finally:
        fresh.dispose()
        drop_pg_database(pg_server, fresh_url)
    assert table_rows(pg_engine, "detected_materials") == jobs


def test_production_schema_file_is_where_the_tests_expect_it():
    assert Path(PRODUCTION_SCHEMA).read_text().count("CREATE INDEX") == 4
