"""Revision b662310f1380 is the deployed schema, object for object."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport import api
from migsupport.engine import create_engine
from tests.support.catalog import catalog, table_rows
from tests.support.commands import COMMAND_TIMEOUT, command_environ, manage
from tests.support.migrate import run
from tests.support.project import (
    PRODUCTION_SCHEMA,
    PROJECT,
    ddl_statements,
    load_production_schema,
    shared_production_schema,
)
from tests.support.server import IN_CI, create_pg_database, drop_pg_database
from tests.support.states import HEAD, execute, versions

BASELINE = "b662310f1380"
# The SHA-256 of the deployed schema's statements (``ddl_statements``), one per line.
DEPLOYED_DDL_SHA256 = "69d99d2061b4b063f0ea93cfd089f8798f7c8016fb5ae992f0da612f1c616ce7"


def production_schema_sql() -> str:
    """Return the repository's copy of the deployed DDL; without it, fail under CI=true."""
    if not PRODUCTION_SCHEMA.is_file():
        message = f"the deployed schema {PRODUCTION_SCHEMA} is missing from the checkout"
        if IN_CI:
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(f"SKIPPED: {message}")
    return PRODUCTION_SCHEMA.read_text()


def test_committed_copy_has_the_ddl_of_the_deployed_schema():
    statements = ddl_statements(production_schema_sql())
    digest = hashlib.sha256("\n".join(statements).encode()).hexdigest()
    # The deployed DDL never changes; a change to the copy's statements must be deliberate.
    assert (len(statements), digest) == (7, DEPLOYED_DDL_SHA256)
    shared = shared_production_schema()
    if shared is not None:  # the file the project was given, where the checkout has it
        assert statements == ddl_statements(shared.read_text()), shared


def test_a_missing_copy_fails_under_ci_and_skips_loudly_elsewhere(monkeypatch, tmp_path):
    missing = tmp_path / "production_schema.sql"
    monkeypatch.setattr(sys.modules[__name__], "PRODUCTION_SCHEMA", missing)
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", True)
    with pytest.raises(pytest.fail.Exception) as failed:
        production_schema_sql()
    assert (
        str(failed.value)
        == f"CI=true but the deployed schema {missing} is missing from the checkout"
    )
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        production_schema_sql()
    assert (
        str(skipped.value) == f"SKIPPED: the deployed schema {missing} is missing from the checkout"
    )


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
    assert production_schema_sql().count("CREATE INDEX") == 4


def plain_alembic(url: URL, *args: str) -> subprocess.CompletedProcess:
    """Run the plain, unguarded Alembic CLI from the project root on ``url``."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), *args],
        cwd=PROJECT,
        env=command_environ(url),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


@pytest.mark.postgresql
def test_plain_alembic_upgrade_head_runs_through_on_the_production_schema(pg_url, pg_engine):
    load_production_schema(pg_engine)

    result = plain_alembic(pg_url, "upgrade", "head")

    assert result.returncode == 0, result.stderr
    assert "already exists" not in result.stderr
    assert versions(pg_engine) == [HEAD]
    with pg_engine.connect() as connection:
        assert api.inspect_state(connection, replay=False).state == "up_to_date"


@pytest.mark.postgresql
def test_plain_alembic_records_the_head_over_drift_that_the_guarded_upgrade_refuses(
    pg_server, pg_url, pg_engine
):
    load_production_schema(pg_engine)
    execute(pg_engine, "ALTER TABLE material_detection_jobs ADD COLUMN priority INTEGER")
    guarded_url = create_pg_database(pg_server)
    guarded = create_engine(guarded_url)
    try:
        load_production_schema(guarded)
        execute(guarded, "ALTER TABLE material_detection_jobs ADD COLUMN priority INTEGER")

        plain = plain_alembic(pg_url, "upgrade", "head")
        refused = manage("alembic_upgrade", database_url=guarded_url)

        assert plain.returncode == 0, plain.stderr
        assert versions(pg_engine) == [HEAD]  # recorded, although the schema is not the head's
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr.endswith(
            "CommandError: refused: no version is recorded, and the schema equals no revision "
            f"(nearest: {BASELINE}); nothing was changed\n"
        )
        assert versions(guarded) is None
    finally:
        guarded.dispose()
        drop_pg_database(pg_server, guarded_url)
