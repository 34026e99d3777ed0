"""The state engine on real databases: each state, each kind of difference, the ledger.

Every report is compared whole, so every field of it is asserted. The
schemas come from the committed ledger (``replay=False``) unless a test is
about the replay.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from migsupport import api
from migsupport.differences import ObjectRef
from migsupport.engine import create_engine
from migsupport.history import replay_schemas
from migsupport.ledger import Ledger, ledger_path
from migsupport.snapshot import compare, take_snapshot
from migsupport.state import MultipleHeads, SchemaUnknown, StateReport, classify
from tests.support.migrate import run
from tests.support.project import PRODUCTION_SCHEMA, load_production_schema
from tests.support.states import (
    BASELINE,
    BRANCH,
    HEAD,
    MERGE,
    SECOND,
    UNKNOWN,
    ProjectCopy,
    add_branch,
    add_revision,
    edit_ledger,
    edit_script,
    execute,
    project_copy,
    reach,
    rebuild_sqlite_table,
    versions,
)


def state_of(engine: Engine, **kwargs) -> StateReport:
    """Classify the database behind ``engine``; the connection is left with no transaction."""
    kwargs.setdefault("replay", False)
    with engine.connect() as connection:
        report = api.inspect_state(connection, **kwargs)
        assert not connection.in_transaction()
    return as_text(report)


def as_text(report: StateReport) -> StateReport:
    """Return ``report`` with its differences as the lines people read, to compare it whole."""
    return dataclasses.replace(report, differences=tuple(map(str, report.differences)))


def drifted(*differences: str, current: str = HEAD) -> StateReport:
    return StateReport(
        state="drifted",
        current=current,
        head=HEAD,
        differences=differences,
        schema_source="ledger",
    )


UP_TO_DATE = StateReport(state="up_to_date", current=HEAD, head=HEAD, schema_source="ledger")


# -- each state, reached for real ----------------------------------------------


def test_empty_database_is_empty_with_every_revision_pending(engine):
    assert state_of(engine) == StateReport(
        state="empty",
        current=None,
        head=HEAD,
        pending=(BASELINE, SECOND, HEAD),
        matches=None,
        nearest=None,
        differences=(),
        ledger="fresh",
        ledger_problems=(),
        schema_source="none",
    )


def test_django_tables_and_an_empty_version_table_leave_the_database_empty(engine):
    execute(
        engine,
        "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app VARCHAR(255), "
        "name VARCHAR(255), applied TIMESTAMP)",
        "CREATE TABLE auth_user (id INTEGER PRIMARY KEY, username VARCHAR(150) NOT NULL)",
        "CREATE TABLE django_session (session_key VARCHAR(40) PRIMARY KEY)",
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
    )

    assert state_of(engine).state == "empty"


@pytest.mark.postgresql
def test_production_schema_without_version_is_unversioned_matching_the_baseline(pg_engine):
    load_production_schema(pg_engine)

    assert state_of(pg_engine) == StateReport(
        state="unversioned",
        current=None,
        head=HEAD,
        pending=(SECOND, HEAD),
        matches=BASELINE,
        nearest=None,
        differences=(),
        ledger="fresh",
        ledger_problems=(),
        schema_source="ledger",
    )


@pytest.mark.parametrize(
    "remove_version", ["DELETE FROM alembic_version", "DROP TABLE alembic_version"]
)
def test_baseline_schema_without_version_is_unversioned_matching_the_baseline(
    engine, remove_version
):
    run(engine, "upgrade", BASELINE)
    execute(engine, remove_version)

    assert state_of(engine) == StateReport(
        state="unversioned",
        current=None,
        head=HEAD,
        pending=(SECOND, HEAD),
        matches=BASELINE,
        schema_source="ledger",
    )


def test_head_schema_without_version_is_unversioned_matching_the_head(engine):
    reach(engine, "unversioned_at_head")

    assert state_of(engine) == StateReport(
        state="unversioned",
        current=None,
        head=HEAD,
        pending=(),
        matches=HEAD,
        nearest=None,
        differences=(),
        schema_source="ledger",
    )


def test_unversioned_schema_matching_no_revision_names_the_nearest_and_the_differences(engine):
    reach(engine, "unversioned_at_baseline")
    execute(engine, "DROP INDEX ix_detected_materials_material_name")

    assert state_of(engine) == StateReport(
        state="unversioned",
        current=None,
        head=HEAD,
        pending=(),
        matches=None,
        nearest=BASELINE,
        differences=("index ix_detected_materials_material_name is missing",),
        schema_source="ledger",
    )


def test_versioned_at_the_baseline_is_behind_with_the_head_pending(engine):
    run(engine, "upgrade", BASELINE)

    assert state_of(engine) == StateReport(
        state="behind",
        current=BASELINE,
        head=HEAD,
        pending=(SECOND, HEAD),
        matches=None,
        nearest=None,
        differences=(),
        ledger="fresh",
        ledger_problems=(),
        schema_source="ledger",
    )


def test_versioned_at_head_with_the_head_schema_is_up_to_date(engine):
    run(engine, "upgrade", HEAD)

    assert state_of(engine) == StateReport(
        state="up_to_date",
        current=HEAD,
        head=HEAD,
        pending=(),
        matches=None,
        nearest=None,
        differences=(),
        ledger="fresh",
        ledger_problems=(),
        schema_source="ledger",
    )


def test_versioned_and_changed_is_drifted_with_every_difference(engine):
    run(engine, "upgrade", HEAD)
    execute(
        engine,
        "DROP INDEX ix_detected_materials_material_name",
        "ALTER TABLE detected_materials ADD COLUMN legacy_score FLOAT",
    )

    assert state_of(engine) == StateReport(
        state="drifted",
        current=HEAD,
        head=HEAD,
        pending=(),
        matches=None,
        nearest=None,
        differences=(
            "column detected_materials.legacy_score is unexpected",
            "index ix_detected_materials_material_name is missing",
        ),
        ledger="fresh",
        ledger_problems=(),
        schema_source="ledger",
    )


def test_head_schema_recorded_at_the_baseline_is_drifted_not_behind(engine):
    run(engine, "upgrade", HEAD)
    execute(engine, f"UPDATE alembic_version SET version_num = '{BASELINE}'")

    enum = (
        [
            "enum jobstatus: labels are (PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED), "
            "expected (PENDING, PROCESSING, COMPLETED, FAILED)"
        ]
        if engine.dialect.name == "postgresql"
        else []
    )
    assert state_of(engine) == drifted(
        *enum,
        "index ix_detected_materials_category is unexpected",
        "index ix_detected_materials_confidence is unexpected",
        "index ix_detected_materials_created_at is unexpected",
        "index ix_detected_materials_job_id_confidence is unexpected",
        "index ix_detected_materials_material_name_pattern is unexpected",
        "column material_detection_jobs.model_version is unexpected",
        current=BASELINE,
    )


@pytest.mark.parametrize(("schema_at", "nearest"), [(HEAD, HEAD), (BASELINE, BASELINE)])
def test_version_no_script_defines_is_unknown_revision_with_the_nearest(engine, schema_at, nearest):
    run(engine, "upgrade", schema_at)
    execute(engine, f"UPDATE alembic_version SET version_num = '{UNKNOWN}'")

    assert state_of(engine) == StateReport(
        state="unknown_revision",
        current=UNKNOWN,
        head=HEAD,
        pending=(),
        matches=None,
        nearest=nearest,
        reason=f"alembic_version records {UNKNOWN}, which no revision script defines",
        ledger="fresh",
        ledger_problems=(),
        schema_source="ledger",
    )


def test_unknown_version_over_a_changed_schema_lists_the_differences_from_the_nearest(engine):
    run(engine, "upgrade", HEAD)
    execute(
        engine,
        f"UPDATE alembic_version SET version_num = '{UNKNOWN}'",
        "ALTER TABLE detected_materials ADD COLUMN legacy_score FLOAT",
    )

    assert state_of(engine) == StateReport(
        state="unknown_revision",
        current=UNKNOWN,
        head=HEAD,
        nearest=HEAD,
        reason=f"alembic_version records {UNKNOWN}, which no revision script defines",
        differences=("column detected_materials.legacy_score is unexpected",),
        schema_source="ledger",
    )


def test_two_known_versions_recorded_on_a_single_head_are_unknown_revision(engine):
    run(engine, "upgrade", HEAD)
    execute(engine, f"INSERT INTO alembic_version (version_num) VALUES ('{BASELINE}')")

    report = state_of(engine)

    # Both rows, in the order the table returns them.
    assert sorted(report.current.split(",")) == sorted([BASELINE, HEAD])
    assert report == StateReport(
        state="unknown_revision",
        current=report.current,
        head=HEAD,
        nearest=HEAD,
        reason=(
            f"alembic_version records 2 versions ({report.current.replace(',', ', ')}), "
            "but the revision history has a single head"
        ),
        schema_source="ledger",
    )


def test_recorded_version_with_no_schema_at_all_is_drifted(engine):
    run(engine, "upgrade", HEAD)
    execute(engine, "DROP TABLE detected_materials", "DROP TABLE material_detection_jobs")
    if engine.dialect.name == "postgresql":
        execute(engine, "DROP TYPE jobstatus")

    assert state_of(engine) == drifted(
        *(["enum jobstatus is missing"] if engine.dialect.name == "postgresql" else []),
        "table detected_materials is missing",
        "table material_detection_jobs is missing",
    )


# -- each kind of difference, broken for real at head ------------------------------


@pytest.fixture
def at_head(engine: Engine) -> Engine:
    run(engine, "upgrade", HEAD)
    assert state_of(engine) == UP_TO_DATE
    return engine


def test_missing_index_is_reported(at_head):
    execute(at_head, "DROP INDEX ix_detected_materials_material_name")

    assert state_of(at_head) == drifted("index ix_detected_materials_material_name is missing")


def test_index_on_other_columns_is_reported(at_head):
    execute(
        at_head,
        "DROP INDEX ix_detected_materials_material_name",
        "CREATE INDEX ix_detected_materials_material_name ON detected_materials (category)",
    )

    assert state_of(at_head) == drifted(
        "index ix_detected_materials_material_name: keys are (category), expected (material_name)"
    )


def test_index_made_unique_is_reported(at_head):
    execute(
        at_head,
        "DROP INDEX ix_detected_materials_material_name",
        "CREATE UNIQUE INDEX ix_detected_materials_material_name "
        "ON detected_materials (material_name)",
    )

    assert state_of(at_head) == drifted(
        "index ix_detected_materials_material_name: uniqueness is unique, expected not unique"
    )


@pytest.mark.postgresql
def test_index_without_its_operator_class_is_reported(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    execute(
        pg_engine,
        "DROP INDEX ix_detected_materials_material_name_pattern",
        "CREATE INDEX ix_detected_materials_material_name_pattern "
        "ON detected_materials (material_name)",
    )

    assert state_of(pg_engine) == drifted(
        "index ix_detected_materials_material_name_pattern: keys are (material_name), "
        "expected (material_name varchar_pattern_ops)"
    )


def test_shorter_varchar_is_reported(at_head):
    if at_head.dialect.name == "postgresql":
        execute(
            at_head, "ALTER TABLE detected_materials ALTER COLUMN material_name TYPE VARCHAR(50)"
        )
    else:
        rebuild_sqlite_table(
            at_head, "detected_materials", "material_name VARCHAR(100)", "material_name VARCHAR(50)"
        )

    assert state_of(at_head) == drifted(
        "column detected_materials.material_name is VARCHAR(50), expected VARCHAR(100)"
    )


def test_column_made_not_null_is_reported(at_head):
    if at_head.dialect.name == "postgresql":
        execute(at_head, "ALTER TABLE detected_materials ALTER COLUMN category SET NOT NULL")
    else:
        rebuild_sqlite_table(
            at_head, "detected_materials", "category VARCHAR(50),", "category VARCHAR(50) NOT NULL,"
        )

    assert state_of(at_head) == drifted(
        "column detected_materials.category is NOT NULL, expected NULL"
    )


def test_column_made_nullable_is_reported(at_head):
    if at_head.dialect.name == "postgresql":
        execute(at_head, "ALTER TABLE detected_materials ALTER COLUMN confidence DROP NOT NULL")
    else:
        rebuild_sqlite_table(
            at_head,
            "detected_materials",
            "confidence DOUBLE NOT NULL",
            "confidence DOUBLE",
        )

    assert state_of(at_head) == drifted(
        "column detected_materials.confidence is NULL, expected NOT NULL"
    )


def test_dropped_default_is_reported(at_head):
    if at_head.dialect.name == "postgresql":
        execute(at_head, "ALTER TABLE detected_materials ALTER COLUMN created_at DROP DEFAULT")
    else:
        rebuild_sqlite_table(
            at_head,
            "detected_materials",
            "created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL",
            "created_at DATETIME NOT NULL",
        )

    assert state_of(at_head) == drifted(
        "column detected_materials.created_at has no default, expected default now()"
    )


def test_other_default_is_reported(at_head):
    if at_head.dialect.name == "postgresql":
        execute(
            at_head,
            "ALTER TABLE detected_materials ALTER COLUMN created_at SET DEFAULT clock_timestamp()",
        )
        other = "clock_timestamp()"
    else:
        # The text 'CURRENT_TIMESTAMP' is a string, not the current time.
        rebuild_sqlite_table(
            at_head,
            "detected_materials",
            "created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL",
            "created_at DATETIME DEFAULT 'CURRENT_TIMESTAMP' NOT NULL",
        )
        other = "'CURRENT_TIMESTAMP'"

    assert state_of(at_head) == drifted(
        f"column detected_materials.created_at has default {other}, expected default now()"
    )


def test_foreign_key_without_on_delete_cascade_is_reported(at_head):
    if at_head.dialect.name == "postgresql":
        execute(
            at_head,
            "ALTER TABLE detected_materials DROP CONSTRAINT detected_materials_job_id_fkey",
            "ALTER TABLE detected_materials ADD CONSTRAINT detected_materials_job_id_fkey "
            "FOREIGN KEY (job_id) REFERENCES material_detection_jobs (id)",
        )
    else:
        rebuild_sqlite_table(at_head, "detected_materials", "(id) ON DELETE CASCADE", "(id)")

    assert state_of(at_head) == drifted(
        "foreign key detected_materials_job_id_fkey on detected_materials: "
        "on delete is no action, expected cascade"
    )


@pytest.mark.postgresql
def test_foreign_key_on_delete_set_null_is_reported(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    execute(
        pg_engine,
        "ALTER TABLE detected_materials ALTER COLUMN job_id DROP NOT NULL",
        "ALTER TABLE detected_materials DROP CONSTRAINT detected_materials_job_id_fkey",
        "ALTER TABLE detected_materials ADD CONSTRAINT detected_materials_job_id_fkey "
        "FOREIGN KEY (job_id) REFERENCES material_detection_jobs (id) ON DELETE SET NULL",
    )

    assert state_of(pg_engine) == drifted(
        "column detected_materials.job_id is NULL, expected NOT NULL",
        "foreign key detected_materials_job_id_fkey on detected_materials: "
        "on delete is set null, expected cascade",
    )


def _recreate_jobstatus(engine: Engine, labels: list[str]) -> None:
    """Replace the ENUM jobstatus by one with ``labels``, keeping the column on it."""
    quoted = ", ".join(f"'{label}'" for label in labels)
    execute(
        engine,
        "ALTER TYPE jobstatus RENAME TO jobstatus_old",
        f"CREATE TYPE jobstatus AS ENUM ({quoted})",
        "ALTER TABLE material_detection_jobs ALTER COLUMN status TYPE jobstatus "
        "USING status::text::jobstatus",
        "DROP TYPE jobstatus_old",
    )


@pytest.mark.postgresql
def test_missing_enum_label_is_reported(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    _recreate_jobstatus(pg_engine, ["PENDING", "PROCESSING", "COMPLETED", "FAILED"])

    assert state_of(pg_engine) == drifted(
        "enum jobstatus: labels are (PENDING, PROCESSING, COMPLETED, FAILED), "
        "expected (PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED)"
    )


@pytest.mark.postgresql
def test_enum_labels_in_another_order_are_reported(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    _recreate_jobstatus(pg_engine, ["PENDING", "PROCESSING", "COMPLETED", "CANCELLED", "FAILED"])

    assert state_of(pg_engine) == drifted(
        "enum jobstatus: labels are (PENDING, PROCESSING, COMPLETED, CANCELLED, FAILED), "
        "expected (PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED)"
    )


def test_extra_column_is_reported(at_head):
    execute(at_head, "ALTER TABLE detected_materials ADD COLUMN legacy_score FLOAT")

    assert state_of(at_head) == drifted("column detected_materials.legacy_score is unexpected")


def test_missing_column_is_reported(at_head):
    execute(at_head, "ALTER TABLE material_detection_jobs DROP COLUMN model_version")

    assert state_of(at_head) == drifted("column material_detection_jobs.model_version is missing")


def test_missing_table_is_reported(at_head):
    execute(at_head, "DROP TABLE detected_materials")

    assert state_of(at_head) == drifted("table detected_materials is missing")


def test_a_table_no_model_or_revision_defines_is_unowned_not_drift(at_head):
    execute(at_head, "CREATE TABLE legacy_things (id INTEGER PRIMARY KEY)")

    assert state_of(at_head) == dataclasses.replace(
        UP_TO_DATE, unowned=(ObjectRef("table", "legacy_things"),)
    )


@pytest.mark.postgresql
def test_double_precision_narrowed_to_real_is_reported(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    execute(pg_engine, "ALTER TABLE detected_materials ALTER COLUMN confidence TYPE float4")

    assert state_of(pg_engine) == drifted(
        "column detected_materials.confidence is REAL, expected DOUBLE PRECISION"
    )


@pytest.mark.postgresql
def test_equivalent_spellings_are_not_differences_on_postgresql(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    execute(
        pg_engine,
        "ALTER TABLE detected_materials ALTER COLUMN created_at SET DEFAULT CURRENT_TIMESTAMP",
        "ALTER TABLE material_detection_jobs ALTER COLUMN created_at "
        "SET DEFAULT transaction_timestamp()",
        "ALTER TABLE material_detection_jobs ALTER COLUMN updated_at SET DEFAULT CURRENT_TIMESTAMP",
        "ALTER TABLE detected_materials ALTER COLUMN confidence TYPE float8",
        "ALTER TABLE detected_materials ALTER COLUMN material_name TYPE character varying(100)",
        "ALTER TABLE detected_materials DROP CONSTRAINT detected_materials_job_id_fkey",
        "ALTER TABLE detected_materials ADD CONSTRAINT detected_materials_job_id_fkey "
        "FOREIGN KEY (job_id) REFERENCES material_detection_jobs (id) "
        "ON UPDATE NO ACTION ON DELETE CASCADE",
    )
    with pg_engine.connect() as connection:
        defaults = dict(
            connection.exec_driver_sql(
                "SELECT table_name || '.' || column_name, column_default "
                "FROM information_schema.columns WHERE column_name IN ('created_at', 'updated_at')"
            ).all()
        )
    assert defaults == {
        "detected_materials.created_at": "CURRENT_TIMESTAMP",
        "material_detection_jobs.created_at": "transaction_timestamp()",
        "material_detection_jobs.updated_at": "CURRENT_TIMESTAMP",
    }

    assert state_of(pg_engine) == UP_TO_DATE


def test_equivalent_spellings_are_not_differences_on_sqlite(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        run(engine, "upgrade", HEAD)
        rebuild_sqlite_table(
            engine,
            "detected_materials",
            "confidence DOUBLE NOT NULL",
            "confidence FLOAT NOT NULL",
        )
        rebuild_sqlite_table(
            engine,
            "detected_materials",
            "created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL",
            "created_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL",
        )
        rebuild_sqlite_table(
            engine,
            "material_detection_jobs",
            "created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL",
            "created_at DATETIME DEFAULT current_timestamp NOT NULL",
        )

        assert state_of(engine) == UP_TO_DATE
    finally:
        engine.dispose()


# -- another PostgreSQL schema on the search_path -----------------------------------


def _fill_other_schema(engine: Engine) -> None:
    """Load the deployed DDL into schema ``other``, and put it on the database's search_path."""
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA other")
        connection.exec_driver_sql("SET LOCAL search_path TO other")
        connection.exec_driver_sql(PRODUCTION_SCHEMA.read_text())
        database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
        connection.exec_driver_sql(f'ALTER DATABASE "{database}" SET search_path = public, other')
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW search_path").scalar_one() == "public, other"
        assert (
            connection.exec_driver_sql(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'other'"
            ).scalar_one()
            == 2
        )


@pytest.mark.postgresql
def test_same_named_tables_in_another_schema_leave_public_empty(pg_engine):
    _fill_other_schema(pg_engine)

    assert state_of(pg_engine) == StateReport(
        state="empty",
        current=None,
        head=HEAD,
        pending=(BASELINE, SECOND, HEAD),
        schema_source="none",
    )


@pytest.mark.postgresql
def test_tables_in_public_are_reported_and_another_schema_is_ignored(pg_engine):
    _fill_other_schema(pg_engine)
    run(pg_engine, "upgrade", HEAD)
    assert state_of(pg_engine) == UP_TO_DATE

    execute(pg_engine, "DROP INDEX public.ix_detected_materials_material_name")

    assert state_of(pg_engine) == drifted("index ix_detected_materials_material_name is missing")


@pytest.mark.postgresql
def test_public_tables_only_in_another_schema_are_missing_not_found(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    _fill_other_schema(pg_engine)
    execute(pg_engine, "DROP TABLE public.detected_materials")

    assert state_of(pg_engine) == drifted("table detected_materials is missing")


@pytest.mark.postgresql
def test_foreign_key_to_a_same_named_table_in_another_schema_is_a_difference(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    _fill_other_schema(pg_engine)
    execute(
        pg_engine,
        "ALTER TABLE public.detected_materials DROP CONSTRAINT detected_materials_job_id_fkey",
        "ALTER TABLE public.detected_materials ADD CONSTRAINT detected_materials_job_id_fkey "
        "FOREIGN KEY (job_id) REFERENCES other.material_detection_jobs (id) ON DELETE CASCADE",
    )

    assert state_of(pg_engine) == drifted(
        "foreign key detected_materials_job_id_fkey on detected_materials: "
        "referred table is other.material_detection_jobs, expected material_detection_jobs",
    )


@pytest.mark.postgresql
def test_expression_indexes_compare_by_their_expressions(pg_engine):
    run(pg_engine, "upgrade", HEAD)
    execute(pg_engine, "CREATE INDEX ix_expr ON detected_materials (lower(material_name))")
    with pg_engine.connect() as connection:
        lower = take_snapshot(connection)
    execute(
        pg_engine,
        "DROP INDEX ix_expr",
        "CREATE INDEX ix_expr ON detected_materials (upper(material_name))",
    )
    with pg_engine.connect() as connection:
        upper = take_snapshot(connection)

    assert [str(d) for d in compare(upper, lower)] == [
        "index ix_expr: keys are (upper((material_name)::text)), "
        "expected (lower((material_name)::text))"
    ]


# -- read-only ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reported"), [("empty", "empty"), ("unversioned_at_baseline", "unversioned")]
)
def test_classify_creates_no_version_table_and_leaves_no_transaction(engine, state, reported):
    reach(engine, state)
    scripts = ScriptDirectory.from_config(api.alembic_config())
    ledger = Ledger.load(ledger_path(scripts))

    with engine.connect() as connection:
        report = classify(connection, scripts, ledger=ledger)
        assert not connection.in_transaction()

    assert report.state == reported
    assert versions(engine) is None


def test_classify_inside_the_callers_transaction_leaves_it_to_the_caller(engine):
    run(engine, "upgrade", HEAD)
    with engine.connect() as connection:
        connection.begin()
        connection.exec_driver_sql("DROP INDEX ix_detected_materials_material_name")

        report = api.inspect_state(connection, replay=False)

        assert connection.in_transaction()
        connection.rollback()
    assert [str(d) for d in report.differences] == [
        "index ix_detected_materials_material_name is missing"
    ]
    assert state_of(engine) == UP_TO_DATE


# -- the ledger ---------------------------------------------------------------------


@pytest.fixture
def copied(tmp_path) -> ProjectCopy:
    """A copy of the project's alembic.ini and alembic/ folder, ledger included."""
    return project_copy(tmp_path / "project")


def test_the_copy_has_a_fresh_ledger(engine, copied):
    run(engine, "upgrade", HEAD)

    assert state_of(engine, config=copied.config) == UP_TO_DATE


def test_edited_script_makes_the_ledger_stale_and_the_state_comes_from_a_replay(engine, copied):
    run(engine, "upgrade", BASELINE)
    edit_script(copied, HEAD)

    assert state_of(engine, config=copied.config, replay=True) == StateReport(
        state="behind",
        current=BASELINE,
        head=HEAD,
        pending=(SECOND, HEAD),
        matches=None,
        nearest=None,
        differences=(),
        ledger="stale",
        ledger_problems=(f"revision {HEAD}'s script changed after the ledger was written",),
        schema_source="replay",
    )


def test_edited_script_without_replay_raises_schema_unknown(engine, copied):
    run(engine, "upgrade", HEAD)
    edit_script(copied, HEAD)

    with engine.connect() as connection:
        with pytest.raises(SchemaUnknown) as raised:
            api.inspect_state(connection, config=copied.config, replay=False)
        assert not connection.in_transaction()

    assert raised.value.reasons == [
        f"revision {HEAD}'s script changed after the ledger was written"
    ]
    assert str(raised.value) == (
        f"the ledger is stale (revision {HEAD}'s script changed after the ledger was written) "
        "and no scratch database may be used to replay the history; regenerate it with "
        "`manage.py alembic_ledger` where a scratch database can be made"
    )


def test_empty_database_needs_no_schema_even_with_a_stale_ledger(engine, copied):
    edit_script(copied, HEAD)

    report = state_of(engine, config=copied.config, replay=False)

    assert (report.state, report.ledger, report.schema_source) == ("empty", "stale", "none")
    assert report.ledger_problems == (
        f"revision {HEAD}'s script changed after the ledger was written",
    )


def test_revision_missing_from_the_ledger_makes_it_stale(engine, copied):
    reach(engine, "unversioned_at_head")
    edit_ledger(copied, lambda data: data["revisions"].pop(HEAD))

    assert state_of(engine, config=copied.config, replay=True) == StateReport(
        state="unversioned",
        current=None,
        head=HEAD,
        matches=HEAD,
        ledger="stale",
        ledger_problems=(f"revision {HEAD} is not in the ledger",),
        schema_source="replay",
    )


def test_ledger_without_this_dialects_schema_is_stale(engine, copied):
    dialect = engine.dialect.name

    def forget_dialect(data):
        for entry in data["revisions"].values():
            del entry["schema"][dialect]

    edit_ledger(copied, forget_dialect)
    run(engine, "upgrade", HEAD)

    with engine.connect() as connection, pytest.raises(SchemaUnknown) as raised:
        api.inspect_state(connection, config=copied.config, replay=False)

    assert raised.value.reasons == [
        f"revision {BASELINE} has no recorded {dialect} schema",
        f"revision {SECOND} has no recorded {dialect} schema",
        f"revision {HEAD} has no recorded {dialect} schema",
    ]


def test_changed_down_revision_makes_the_ledger_stale(engine, copied):
    edit_ledger(copied, lambda data: data["revisions"][HEAD].update(down_revision=None))

    report = state_of(engine, config=copied.config)

    assert report.ledger_problems == (
        f"revision {HEAD}'s down_revision is {SECOND}, the ledger says None",
    )


def test_ledger_entry_without_a_script_makes_it_stale(engine, copied):
    edit_ledger(copied, lambda data: data["revisions"].update({UNKNOWN: data["revisions"][HEAD]}))

    report = state_of(engine, config=copied.config)

    assert report.ledger_problems == (f"revision {UNKNOWN} is in the ledger but has no script",)


def test_ledger_of_a_history_with_a_merge_revision_is_written_and_read(sqlite_url, copied):
    add_branch(copied)
    add_revision(copied, MERGE, (HEAD, BRANCH), "pass")
    scripts = ScriptDirectory.from_config(copied.config)
    path = ledger_path(scripts)
    snapshots = replay_schemas(sa.make_url("sqlite://"), Config(copied.config.config_file_name))
    Ledger.load(path).with_schemas(scripts, {"sqlite": snapshots}).write(path)

    ledger = Ledger.load(path)
    assert ledger.stale_reasons(scripts, "sqlite") == []
    assert ledger.entries[MERGE]["down_revision"] == f"{HEAD},{BRANCH}"
    assert ledger.schemas(scripts, "sqlite") == snapshots

    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            copied.config.attributes["connection"] = connection
            command.upgrade(copied.config, "head")
            connection.commit()
        copied.config.attributes.pop("connection")
        report = state_of(engine, config=copied.config)
    finally:
        engine.dispose()
    assert report == StateReport(
        state="up_to_date", current=MERGE, head=MERGE, schema_source="ledger"
    )


def test_several_heads_raise_multiple_heads_with_the_ids_and_a_merge_hint(engine, copied):
    add_branch(copied)

    with engine.connect() as connection:
        with pytest.raises(MultipleHeads) as raised:
            api.inspect_state(connection, config=copied.config, replay=False)
        assert not connection.in_transaction()

    assert sorted(raised.value.heads) == sorted([HEAD, BRANCH])
    assert str(raised.value) == (
        f"the revision history has 2 heads: {', '.join(raised.value.heads)}; "
        'merge them with `alembic merge heads -m "merge"`'
    )


# -- SQLite keeps the proof for what SQLite has ---------------------------------------

DM = "detected_materials"

# Changes to the SQLite schema at head: a table rebuilt from its own DDL with
# one piece replaced, or an object added; and the difference reported.
SQLITE_CHANGES = {
    "check constraint": (
        ("rebuild", "ON DELETE CASCADE\n", "ON DELETE CASCADE, CHECK (confidence >= 0)\n"),
        "check constraint (confidence >= 0) on detected_materials is unexpected",
    ),
    "named check constraint": (
        (
            "rebuild",
            "ON DELETE CASCADE\n",
            "ON DELETE CASCADE, CONSTRAINT ck_confidence CHECK (confidence >= 0)\n",
        ),
        "check constraint ck_confidence on detected_materials is unexpected",
    ),
    "column collation": (
        (
            "rebuild",
            "material_name VARCHAR(100) NOT NULL",
            "material_name VARCHAR(100) COLLATE NOCASE NOT NULL",
        ),
        "column detected_materials.material_name: collation is NOCASE, expected none",
    ),
    "generated column": (
        ("rebuild", "category VARCHAR(50),", "category VARCHAR(50) AS (upper(material_name)),"),
        "column detected_materials.category: generated is upper(material_name) VIRTUAL, "
        "expected none",
    ),
    "foreign key deferred": (
        ("rebuild", "ON DELETE CASCADE\n", "ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED\n"),
        (
            "foreign key detected_materials_job_id_fkey on detected_materials: deferrability is "
            "DEFERRABLE, expected NOT DEFERRABLE",
            "foreign key detected_materials_job_id_fkey on detected_materials: initial check is "
            "INITIALLY DEFERRED, expected INITIALLY IMMEDIATE",
        ),
    ),
    "foreign key on update": (
        ("rebuild", "ON DELETE CASCADE\n", "ON DELETE CASCADE ON UPDATE CASCADE\n"),
        "foreign key detected_materials_job_id_fkey on detected_materials: on update is "
        "cascade, expected no action",
    ),
    "partial index": (
        (
            "sql",
            "DROP INDEX ix_detected_materials_category",
            "CREATE INDEX ix_detected_materials_category ON detected_materials (category) "
            "WHERE category IS NOT NULL",
        ),
        "index ix_detected_materials_category: predicate is category is not null, expected none",
    ),
    "index sort order": (
        (
            "sql",
            "DROP INDEX ix_detected_materials_confidence",
            "CREATE INDEX ix_detected_materials_confidence ON detected_materials (confidence DESC)",
        ),
        "index ix_detected_materials_confidence: keys are (confidence desc), expected (confidence)",
    ),
    "index collation": (
        (
            "sql",
            "DROP INDEX ix_detected_materials_material_name_pattern",
            "CREATE INDEX ix_detected_materials_material_name_pattern "
            "ON detected_materials (material_name COLLATE NOCASE)",
        ),
        "index ix_detected_materials_material_name_pattern: keys are "
        "(material_name collate nocase), expected (material_name)",
    ),
    "expression index": (
        ("sql", "CREATE INDEX ix_lower_name ON detected_materials (lower(material_name))"),
        "index ix_lower_name is unexpected",
    ),
    "trigger": (
        (
            "sql",
            "CREATE TRIGGER trg_keep AFTER DELETE ON detected_materials "
            "BEGIN SELECT RAISE(ABORT, 'kept'); END",
        ),
        "trigger trg_keep on detected_materials is unexpected",
    ),
}


@pytest.mark.parametrize("name", list(SQLITE_CHANGES))
def test_sqlite_reports_every_property_it_holds(sqlite_url, name):
    (how, *args), differences = SQLITE_CHANGES[name]
    engine = create_engine(sqlite_url)
    try:
        run(engine, "upgrade", HEAD)
        if how == "rebuild":
            rebuild_sqlite_table(engine, DM, *args)
        else:
            execute(engine, *args)

        assert state_of(engine) == drifted(
            *((differences,) if isinstance(differences, str) else differences)
        )
    finally:
        engine.dispose()


def test_sqlite_spelling_of_an_index_does_not_count(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        run(engine, "upgrade", HEAD)
        execute(
            engine,
            "DROP INDEX ix_detected_materials_job_id_confidence",
            'CREATE  INDEX "ix_detected_materials_job_id_confidence" ON detected_materials '
            '( "job_id" ,confidence )',
        )

        assert state_of(engine) == UP_TO_DATE
    finally:
        engine.dispose()


# -- the ledger's format -------------------------------------------------------------------


def test_a_ledger_of_an_older_format_reads_stale_naming_why(engine, copied):
    reach(engine, "up_to_date")
    edit_ledger(copied, lambda data: data.update(format=1))

    with pytest.raises(SchemaUnknown) as raised:
        state_of(engine, config=copied.config)

    assert str(raised.value) == (
        "the ledger is stale (the ledger is in format 1, and this migsupport reads format 2) "
        "and no scratch database may be used to replay the history; regenerate it with "
        "`manage.py alembic_ledger` where a scratch database can be made"
    )
    report = state_of(engine, config=copied.config, replay=True)
    assert (report.state, report.ledger, report.schema_source) == ("up_to_date", "stale", "replay")
    assert report.ledger_problems == (
        "the ledger is in format 1, and this migsupport reads format 2",
    )


@pytest.mark.postgresql
def test_a_connection_cut_during_the_catalog_read_is_the_drivers_error_in_sqlalchemys_words(
    pg_engine,
):
    """The server ends the session between two of the catalog's queries.

    The session is terminated right after the schema's namespace is looked
    up: the read raises SQLAlchemy's OperationalError, flagged as a lost
    connection, and the connection is invalidated, so the commands report
    it in their one line.
    """
    run(pg_engine, "upgrade", HEAD)

    def cut(connection, cursor, statement, *_):
        if "FROM pg_namespace WHERE nspname" in statement:
            with pg_engine.connect() as admin:
                admin.execute(
                    sa.text("SELECT pg_terminate_backend(:pid)"),
                    {"pid": connection.connection.driver_connection.info.backend_pid},
                )

    with pg_engine.connect() as connection:
        sa.event.listen(pg_engine, "after_cursor_execute", cut)
        try:
            with pytest.raises(sa.exc.OperationalError) as cut_off:
                take_snapshot(connection)
        finally:
            sa.event.remove(pg_engine, "after_cursor_execute", cut)
        assert cut_off.value.connection_invalidated
        assert connection.invalidated
        # Which words the driver has depends on when it notices.
        assert re.search(
            "terminating connection due to administrator command|server closed the connection "
            "unexpectedly",
            str(cut_off.value.orig),
        ), cut_off.value
