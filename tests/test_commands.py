"""The management commands, run for real as a deploy would run them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from migsupport.engine import create_engine
from tests.support.catalog import catalog
from tests.support.commands import clean_environ, manage, shown
from tests.support.migrate import run
from tests.support.project import PROJECT
from tests.support.states import versions


def test_alembic_upgrade_applies_every_revision_and_reports_each(database_url, engine):
    result = manage("alembic_upgrade", "-v", "2", database_url=database_url)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, lines
    assert lines[0] == "State: empty"
    assert lines[1].startswith("  Applying b662310f1380 (Baseline: the deployed schema.)... OK (")
    assert lines[2].startswith("  Applying 7c1d2e3f4a5b (")
    assert lines[3].startswith(
        "  Applying 3d5f8a9b2c41 (Indexes for browsing detected materials at production "
        "scale.)... OK ("
    )
    assert lines[4] == (
        f"Upgraded {shown(database_url)} to 3d5f8a9b2c41; the schema equals that revision."
    )
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == (
            "3d5f8a9b2c41"
        )
        inspector = sa.inspect(connection)
        assert "model_version" in {
            c["name"] for c in inspector.get_columns("material_detection_jobs")
        }
        assert {i["name"] for i in inspector.get_indexes("detected_materials")} == {
            "ix_detected_materials_job_id",
            "ix_detected_materials_material_name",
            "ix_detected_materials_job_id_confidence",
            "ix_detected_materials_created_at",
            "ix_detected_materials_category",
            "ix_detected_materials_confidence",
            "ix_detected_materials_material_name_pattern",
        }


def test_alembic_upgrade_to_a_revision_stops_there(database_url, engine):
    result = manage("alembic_upgrade", "b662310f1380", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith(
        "to b662310f1380; the schema equals that revision."
    )
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == (
            "b662310f1380"
        )


def test_alembic_upgrade_at_head_is_a_no_op(database_url, engine):
    run(engine, "upgrade", "head")
    before = catalog(engine)

    result = manage("alembic_upgrade", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"No revisions to apply: {shown(database_url)} is at 3d5f8a9b2c41.\n")
    assert catalog(engine) == before


def test_alembic_upgrade_refuses_an_unknown_revision_in_one_line(database_url, engine):
    result = manage("alembic_upgrade", "deadbeef", database_url=database_url)

    assert result.returncode == 1
    assert result.stderr == (
        "CommandError: unknown revision 'deadbeef'; the known heads are: 3d5f8a9b2c41\n"
    )
    with engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []


OLDER = (
    "CommandError: refused: the target b662310f1380 is older than 3d5f8a9b2c41, the revision the "
    "database is at, and the guarded upgrade never downgrades (`alembic downgrade` goes down, "
    "unguarded); nothing was changed\n"
)


@pytest.mark.parametrize("mode", [(), ("--plan",), ("--sql",)])
def test_alembic_upgrade_to_an_older_revision_refuses_and_never_downgrades(
    mode, database_url, engine
):
    run(engine, "upgrade", "head")
    before = catalog(engine)

    result = manage("alembic_upgrade", "b662310f1380", *mode, database_url=database_url)

    assert (result.returncode, result.stdout, result.stderr) == (1, "", OLDER)
    assert catalog(engine) == before
    assert versions(engine) == ["3d5f8a9b2c41"]


def test_alembic_upgrade_sql_at_head_says_there_is_nothing_to_do(database_url, engine):
    run(engine, "upgrade", "head")

    result = manage("alembic_upgrade", "--sql", database_url=database_url)

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "-- Nothing to do: the database is at 3d5f8a9b2c41; there is no SQL.\n"


@pytest.mark.parametrize("command", ["alembic_upgrade", "alembic_stamp"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "-1 is negative: give the seconds to wait, 0 or more"),
        ("-0.5", "-0.5 is negative: give the seconds to wait, 0 or more"),
        ("soon", "'soon' is not a number of seconds"),
        ("nan", "'nan' is not a number of seconds"),
    ],
)
def test_a_lock_timeout_that_is_not_zero_or_more_seconds_is_refused_when_parsed(
    command, value, reason, sqlite_url
):
    engine = create_engine(sqlite_url)
    try:
        run(engine, "upgrade", "b662310f1380")  # both commands would change this database
        before = catalog(engine)

        result = manage(command, "--lock-timeout", value, database_url=sqlite_url)

        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == f"manage.py {command}: error: argument --lock-timeout: {reason}\n"
        assert catalog(engine) == before
        assert versions(engine) == ["b662310f1380"]
    finally:
        engine.dispose()


def test_start_up_without_secret_key_fails_with_a_clear_line():
    environ = clean_environ("SECRET_KEY", "DEBUG")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: SECRET_KEY is not set. Set the SECRET_KEY environment variable, "
        "or set DEBUG=true for local development.\n"
    )


def _settings_value(expression: str, **env: str) -> str:
    environ = clean_environ("DATABASE_URL")
    environ.update({"SECRET_KEY": "x", "DJANGO_SETTINGS_MODULE": "config.settings", **env})
    code = f"from django.conf import settings; print({expression})"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_without_database_url_the_project_uses_a_sqlite_file():
    assert _settings_value("settings.DATABASES['default']['ENGINE']") == (
        "django.db.backends.sqlite3"
    )
    assert _settings_value("settings.DATABASES['default']['NAME']") == str(PROJECT / "db.sqlite3")


def test_database_url_selects_postgresql_through_psycopg():
    url = "postgresql://app:s3cret@db.internal:5433/materials"
    assert (
        _settings_value(
            "settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['HOST'], "
            "settings.DATABASES['default']['PORT'], settings.DATABASES['default']['NAME']",
            DATABASE_URL=url,
        )
        == "django.db.backends.postgresql db.internal 5433 materials"
    )


def test_each_test_run_names_its_postgresql_test_database_uniquely():
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    expression = "settings.DATABASES['default']['TEST']['NAME']"
    names = {
        _settings_value(expression, DATABASE_URL=url, DJANGO_SETTINGS_MODULE="tests.settings")
        for _ in range(2)
    }

    assert len(names) == 2, names
    assert all(re.fullmatch(r"test_materials_[0-9a-f]{12}", name) for name in names), names
