"""The revision history, on both dialects: up, down and up again, and safe twice."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from migsupport.api import script_directory
from migsupport.exceptions import EnumValueInUse
from tests.catalog import catalog, table_rows
from tests.migrate import run

JOB = "00000000-0000-0000-0000-000000000001"


def revisions() -> list[str]:
    """Return the revision ids from base to head."""
    return [script.revision for script in reversed(list(script_directory().walk_revisions()))]


def test_history_is_a_single_chain_from_the_baseline():
    assert revisions() == ["b662310f1380", "7c1d2e3f4a5b"]


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
    run(engine, "upgrade", "head")
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

    run(engine, "downgrade", "-1")

    # The model_version column is gone; every other value is kept.
    assert [row[:7] for row in table_rows(engine, "material_detection_jobs")] == [
        row[:7] for row in rows
    ]


@pytest.mark.postgresql
def test_downgrade_removes_the_cancelled_label_on_postgresql(pg_engine):
    run(pg_engine, "upgrade", "head")
    run(pg_engine, "downgrade", "-1")
    with pg_engine.connect() as connection:
        labels = connection.scalars(
            sa.text("SELECT unnest(enum_range(NULL::jobstatus))::text")
        ).all()
    assert labels == ["PENDING", "PROCESSING", "COMPLETED", "FAILED"]
