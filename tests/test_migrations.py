"""The revision history, on both dialects: up, down and up again, and safe twice."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from migsupport.api import script_directory
from migsupport.engine import create_engine
from migsupport.exceptions import EnumValueInUse
from migsupport.snapshot import compare, take_snapshot
from tests.support.catalog import catalog, table_rows
from tests.support.migrate import run
from tests.support.states import BASELINE, HEAD, SECOND

JOB = "00000000-0000-0000-0000-000000000001"


def revisions() -> list[str]:
    """Return the revision ids from base to head."""
    return [script.revision for script in reversed(list(script_directory().walk_revisions()))]


def test_history_is_a_single_chain_from_the_baseline():
    assert revisions() == ["b662310f1380", "7c1d2e3f4a5b", "3d5f8a9b2c41"]


def test_every_revision_upgrades_downgrades_and_upgrades_again(engine):
    below = catalog(engine)
    previous = "base"
    for revision in revisions():
        assert run(engine, "upgrade", revision) == (revision,)
        at_revision = catalog(engine)
        assert at_revision != below

        assert run(engine, "downgrade", previous) == (() if previous == "base" else (previous,))
        assert catalog(engine) == below, f"downgrade of {revision} left a trace"

        run(engine, "upgrade", revision)
        assert catalog(engine) == at_revision
        below, previous = at_revision, revision


def test_every_revision_applied_twice_changes_nothing(engine):
    scripts = script_directory()
    for revision in revisions():
        script = scripts.get_revision(revision)
        run(engine, "upgrade", revision)
        applied = catalog(engine)
        # Pretend the revision never ran, as on a database that predates Alembic.
        run(engine, "stamp", script.down_revision or "base")
        assert run(engine, "upgrade", revision) == (revision,)
        assert catalog(engine) == applied


def _insert_job(engine: sa.Engine, status: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO material_detection_jobs (id, image_url, status) "
                "VALUES (:id, 'https://img/1.jpg', :status)"
            ),
            {
                "id": JOB.replace("-", "") if engine.dialect.name == "sqlite" else JOB,
                "status": status,
            },
        )


def test_downgrade_refuses_while_a_job_is_cancelled_and_changes_nothing(engine):
    # The revision that added the label; each revision runs in its own transaction.
    run(engine, "upgrade", SECOND)
    _insert_job(engine, "CANCELLED")
    before = catalog(engine)

    with pytest.raises(EnumValueInUse) as raised:
        run(engine, "downgrade", "-1")

    assert str(raised.value) == (
        "cannot drop label 'CANCELLED' from enum jobstatus: rows in "
        "material_detection_jobs.status still use it; update or delete them first"
    )
    assert catalog(engine) == before
    with engine.connect() as connection:
        assert (
            connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == "7c1d2e3f4a5b"
        )


def test_downgrade_keeps_jobs_that_are_not_cancelled(engine):
    run(engine, "upgrade", "head")
    _insert_job(engine, "FAILED")
    rows = table_rows(engine, "material_detection_jobs")

    assert run(engine, "downgrade", BASELINE) == (BASELINE,)

    # The model_version column is gone; every other value is kept.
    assert [row[:7] for row in table_rows(engine, "material_detection_jobs")] == [
        row[:7] for row in rows
    ]


@pytest.mark.postgresql
def test_downgrade_removes_the_cancelled_label_on_postgresql(pg_engine):
    run(pg_engine, "upgrade", "head")
    assert run(pg_engine, "downgrade", BASELINE) == (BASELINE,)
    with pg_engine.connect() as connection:
        labels = connection.scalars(
            sa.text("SELECT unnest(enum_range(NULL::jobstatus))::text")
        ).all()
    assert labels == ["PENDING", "PROCESSING", "COMPLETED", "FAILED"]


PATTERN_INDEX = "ix_detected_materials_material_name_pattern"


@pytest.mark.postgresql
def test_head_builds_the_name_pattern_index_with_its_operator_class(pg_engine):
    assert run(pg_engine, "upgrade", "head") == (HEAD,)
    with pg_engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT schemaname, indexdef FROM pg_indexes "
                "WHERE tablename = 'detected_materials' AND indexname = :name"
            ),
            {"name": PATTERN_INDEX},
        ).all()
    assert [tuple(row) for row in rows] == [
        (
            "public",
            f"CREATE INDEX {PATTERN_INDEX} ON public.detected_materials "
            "USING btree (material_name varchar_pattern_ops)",
        )
    ]


@pytest.mark.postgresql
def test_snapshot_reports_the_name_pattern_index_without_its_operator_class(pg_engine):
    run(pg_engine, "upgrade", "head")
    with pg_engine.connect() as connection:
        expected = take_snapshot(connection)
    assert expected.tables["detected_materials"]["indexes"][PATTERN_INDEX] == {
        "keys": ["material_name varchar_pattern_ops"],
        "method": "btree",
        "unique": False,
        "valid": True,
    }
    # The same index, recreated by hand without its operator class.
    with pg_engine.begin() as connection:
        connection.exec_driver_sql(f"DROP INDEX {PATTERN_INDEX}")
        connection.exec_driver_sql(
            f"CREATE INDEX {PATTERN_INDEX} ON detected_materials (material_name)"
        )
    with pg_engine.connect() as connection:
        live = take_snapshot(connection)

    assert live != expected
    assert [str(d) for d in compare(live, expected)] == [
        f"index {PATTERN_INDEX}: keys are (material_name), "
        "expected (material_name varchar_pattern_ops)"
    ]
    assert [str(d) for d in compare(expected, live)] == [
        f"index {PATTERN_INDEX}: keys are (material_name varchar_pattern_ops), "
        "expected (material_name)"
    ]


def test_sqlite_builds_the_name_pattern_index_plain(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        run(engine, "upgrade", "head")
        with engine.connect() as connection:
            (sql,) = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                (PATTERN_INDEX,),
            ).scalars()
            shape = take_snapshot(connection).tables["detected_materials"]["indexes"]
    finally:
        engine.dispose()
    assert sql == f"CREATE INDEX {PATTERN_INDEX} ON detected_materials (material_name)"
    assert shape[PATTERN_INDEX] == {"keys": ["material_name"], "unique": False, "valid": True}
