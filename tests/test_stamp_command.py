"""``manage.py alembic_stamp``, run for real: it writes a version only with proof.

Proof is the live Alembic-owned schema equal to the revision's schema. The
tests reach each state for real (``tests.support.states``), run the command in a
subprocess and read the exit status, the exact lines printed, and the
catalog and ``alembic_version`` afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from migsupport.engine import create_engine
from migsupport.locking import advisory_key
from tests.support.catalog import catalog
from tests.support.commands import manage, shown
from tests.support.migrate import run
from tests.support.states import (
    BASELINE,
    DRIFT_INDEX,
    DRIFTS,
    HEAD,
    STATES,
    UNKNOWN,
    Batch,
    differences_block,
    reach,
    refusal,
    state_jobs,
    versions,
)

# The tests here share module-scoped databases and batches of commands: they run on one
# test worker, so that those are built once.
pytestmark = pytest.mark.xdist_group("stamp")

NO_PROOF = (
    f"refused: the schema does not equal revision {HEAD}, so it cannot be stamped; "
    "nothing was written (--force stamps without proof)"
)
# How unversioned_unmatched (and drifted) differs from the head, as the commands write it.
MISSING_INDEX = differences_block(f"index {DRIFT_INDEX} is missing")
PROMPT = f"Stamp {HEAD} without proof? Type 'yes' to continue: "
# The indexes on detected_materials that the revisions after the baseline add
# (7c1d2e3f4a5b the first, 3d5f8a9b2c41 the others), in the order differences name them.
HEAD_INDEXES = (
    "ix_detected_materials_category",
    "ix_detected_materials_confidence",
    "ix_detected_materials_created_at",
    "ix_detected_materials_job_id_confidence",
    "ix_detected_materials_material_name_pattern",
)


@pytest.fixture(scope="module")
def stamps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    """``alembic_stamp`` in every state on both dialects, and on each drifted variant."""
    jobs = state_jobs(("alembic_stamp",), ("alembic_stamp", BASELINE), versioned=False)
    batch = Batch(tmp_path_factory.mktemp("stamps"), jobs)
    yield batch
    batch.close()


def differences_from_head(state: str, dialect: str) -> list[str]:
    """Return how a database in ``state`` differs from head, as the command words it."""
    postgresql = dialect == "postgresql"
    if state == "empty":
        tables = ["table detected_materials is missing", "table material_detection_jobs is missing"]
        return ["enum jobstatus is missing", *tables] if postgresql else tables
    if state in ("behind", "unversioned_at_baseline"):
        below = [
            *(f"index {name} is missing" for name in HEAD_INDEXES),
            "column material_detection_jobs.model_version is missing",
        ]
        if postgresql:
            return [
                "enum jobstatus: labels are (PENDING, PROCESSING, COMPLETED, FAILED), "
                "expected (PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED)",
                *below,
            ]
        return below
    assert state == "unversioned_unmatched", state
    return [f"index {DRIFT_INDEX} is missing"]


def expected_outcome(state: str, url: URL) -> tuple[int, str, str, list[str] | str | None]:
    """Return (exit status, stdout, stderr, versions afterwards or "unchanged")."""
    where = shown(url)
    proven = "the live schema equals that revision"
    if state in ("empty", "unversioned_at_baseline", "behind", "unversioned_unmatched"):
        differences = differences_from_head(state, url.get_backend_name())
        return 1, "", refusal(NO_PROOF, *differences), "unchanged"
    if state == "unversioned_at_head":
        return 0, f"Stamped {where} at {HEAD} (was no version): {proven}.\n", "", [HEAD]
    if state == "unknown_revision":
        return 0, f"Stamped {where} at {HEAD} (was {UNKNOWN}): {proven}.\n", "", [HEAD]
    # Already versioned at head: a no-op, even where the schema has drifted
    # since; then it warns with the differences, as alembic_status reports them.
    nothing_to_do = f"{where} is already stamped at {HEAD}; nothing to do.\n"
    if state == "drifted":
        warning = (
            f"Warning: the schema differs from {HEAD}; "
            "`manage.py alembic_status` reports it drifted.\n"
        )
        return 0, nothing_to_do, MISSING_INDEX + warning, "unchanged"
    assert state == "up_to_date", state
    return 0, nothing_to_do, "", "unchanged"


@pytest.mark.parametrize("state", STATES)
def test_stamp_head_in_each_state_writes_only_with_proof(state, dialect_name, stamps):
    done = stamps(dialect_name, state)
    status, stdout, stderr, after = expected_outcome(state, done.url)

    result = done.result
    assert (result.returncode, result.stdout, result.stderr) == (status, stdout, stderr)
    # A stamp never touches the schema; without proof it writes nothing at
    # all, not even an empty alembic_version table.
    assert catalog(done.engine) == done.before
    assert versions(done.engine) == (done.versions_before if after == "unchanged" else after)


@pytest.mark.postgresql
@pytest.mark.parametrize("drift", DRIFTS)
def test_stamp_refuses_a_drifted_production_schema_and_names_the_difference(
    drift, pg_server, stamps
):
    done = stamps("postgresql", drift)

    done.assert_refused(
        refusal(
            f"refused: the schema does not equal revision {BASELINE}, so it cannot be stamped; "
            "nothing was written (--force stamps without proof)",
            DRIFTS[drift][1],
        )
    )
    assert versions(done.engine) is None


@pytest.mark.parametrize("revision", [UNKNOWN, "ff"])
def test_an_unknown_revision_or_prefix_is_refused_in_one_line_naming_the_heads(
    revision, sqlite_url
):
    engine = create_engine(sqlite_url)
    reach(engine, "unversioned_at_head")

    result = manage("alembic_stamp", revision, database_url=sqlite_url)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"CommandError: unknown revision {revision!r}; the known heads are: {HEAD}\n"
    )
    assert versions(engine) is None
    engine.dispose()


def test_a_unique_prefix_stamps_the_revision_it_names(database_url, engine):
    reach(engine, "unversioned_at_baseline")
    before = catalog(engine)

    result = manage("alembic_stamp", "b6623", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"Stamped {shown(database_url)} at {BASELINE} (was no version): "
        "the live schema equals that revision.\n"
    )
    assert versions(engine) == [BASELINE]
    assert catalog(engine) == before


def test_versioned_at_another_revision_is_refused_without_proof(database_url, engine):
    reach(engine, "up_to_date")
    before = catalog(engine)

    result = manage("alembic_stamp", BASELINE, database_url=database_url)

    enum = (
        ["enum jobstatus: labels are (PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED), "
         "expected (PENDING, PROCESSING, COMPLETED, FAILED)"]
        if database_url.get_backend_name() == "postgresql"
        else []
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == refusal(
        f"refused: the schema does not equal revision {BASELINE}, so it cannot be stamped; "
        "nothing was written (--force stamps without proof)",
        *enum,
        *(f"index {name} is unexpected" for name in HEAD_INDEXES),
        "column material_detection_jobs.model_version is unexpected",
    )
    assert versions(engine) == [HEAD]
    assert catalog(engine) == before


def test_versioned_at_another_revision_is_restamped_when_the_schema_proves_the_new_one(
    database_url, engine
):
    reach(engine, "up_to_date")
    run(engine, "stamp", BASELINE)  # a wrong, unchecked stamp by hand
    before = catalog(engine)

    result = manage("alembic_stamp", HEAD, database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"Stamped {shown(database_url)} at {HEAD} (was {BASELINE}): "
        "the live schema equals that revision.\n"
    )
    assert versions(engine) == [HEAD]
    assert catalog(engine) == before


def test_force_noinput_stamps_without_proof_after_warning_with_the_differences(
    database_url, engine
):
    reach(engine, "unversioned_unmatched")
    before = catalog(engine)

    result = manage("alembic_stamp", "--force", "--noinput", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stderr == MISSING_INDEX
    assert result.stdout == (
        f"Stamped {shown(database_url)} at {HEAD} (was no version): WITHOUT proof (--force): "
        "the live schema differs.\n"
    )
    assert versions(engine) == [HEAD]
    assert catalog(engine) == before


def test_force_without_noinput_asks_and_no_cancels_writing_nothing(sqlite_url):
    engine = create_engine(sqlite_url)
    reach(engine, "unversioned_unmatched")
    before = catalog(engine)

    result = manage("alembic_stamp", "--force", database_url=sqlite_url, input="no\n")

    assert result.returncode == 1
    assert result.stdout == PROMPT
    assert result.stderr == MISSING_INDEX + "CommandError: stamp cancelled; nothing was written\n"
    assert versions(engine) is None
    assert catalog(engine) == before
    engine.dispose()


def test_force_without_noinput_and_no_terminal_cancels_in_one_line(sqlite_url):
    engine = create_engine(sqlite_url)
    reach(engine, "unversioned_unmatched")
    before = catalog(engine)

    # Standard input at end of input, as in CI.
    result = manage("alembic_stamp", "--force", database_url=sqlite_url, input="")

    assert result.returncode == 1
    assert result.stdout == PROMPT
    assert result.stderr == MISSING_INDEX + (
        "CommandError: no answer; stamp cancelled, nothing was written "
        "(--noinput stamps without asking)\n"
    )
    assert versions(engine) is None
    assert catalog(engine) == before
    engine.dispose()


def test_force_without_noinput_stamps_when_the_operator_types_yes(sqlite_url):
    engine = create_engine(sqlite_url)
    reach(engine, "unversioned_unmatched")

    result = manage("alembic_stamp", "--force", database_url=sqlite_url, input="yes\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        PROMPT
        + f"Stamped {shown(sqlite_url)} at {HEAD} (was no version): WITHOUT proof (--force): "
        "the live schema differs.\n"
    )
    assert versions(engine) == [HEAD]
    engine.dispose()


@pytest.mark.parametrize(
    ("state", "args", "status"),
    [
        ("unversioned_at_head", (), 0),
        ("unversioned_unmatched", ("--force",), 0),
        ("unversioned_unmatched", (), 1),
    ],
    ids=["proven", "forced", "unproven"],
)
def test_plan_prints_what_it_would_do_and_writes_nothing(state, args, status, database_url, engine):
    reach(engine, state)
    before = catalog(engine)
    where = shown(database_url)

    result = manage("alembic_stamp", "--plan", *args, database_url=database_url)

    assert result.returncode == status
    if state == "unversioned_at_head":
        assert (result.stdout, result.stderr) == (
            f"Plan: stamp {where} at {HEAD} (now no version); "
            "the live schema equals that revision.\n",
            "",
        )
    elif args:
        assert (result.stdout, result.stderr) == (
            f"Plan: stamp {where} at {HEAD} (now no version); WITHOUT proof (--force): "
            "the live schema differs.\n",
            MISSING_INDEX,
        )
    else:
        assert (result.stdout, result.stderr) == ("", MISSING_INDEX + f"CommandError: {NO_PROOF}\n")
    assert versions(engine) is None
    assert catalog(engine) == before


def test_base_on_an_empty_database_is_a_no_op_that_creates_nothing(database_url, engine):
    result = manage("alembic_stamp", "base", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{shown(database_url)} is already stamped at base; nothing to do.\n"
    assert versions(engine) is None
    with engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []


def test_base_clears_a_stale_version_once_the_schema_is_gone(database_url, engine):
    run(engine, "stamp", BASELINE)  # a version, but none of its tables

    result = manage("alembic_stamp", "base", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"Stamped {shown(database_url)} at base (was {BASELINE}): "
        "the live schema equals that revision.\n"
    )
    assert versions(engine) == []


def test_base_is_refused_while_alembic_owned_tables_exist(database_url, engine):
    reach(engine, "up_to_date")
    before = catalog(engine)

    result = manage("alembic_stamp", "base", database_url=database_url)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "Differences from the expected schema:"
    assert "  - table detected_materials is unexpected" in lines
    assert "  - table material_detection_jobs is unexpected" in lines
    assert lines[-1] == (
        "CommandError: refused: the schema does not equal revision base, so it cannot be "
        "stamped; nothing was written (--force stamps without proof)"
    )
    assert versions(engine) == [HEAD]
    assert catalog(engine) == before


@pytest.mark.postgresql
def test_stamp_waits_for_the_deploy_lock_and_times_out_writing_nothing(pg_url, pg_engine):
    reach(pg_engine, "unversioned_at_head")
    key = advisory_key("alembic_version:default")
    with pg_engine.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        holder.commit()
        pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        holder.commit()

        result = manage("alembic_stamp", "--lock-timeout", "1", database_url=pg_url)

    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(
        rf"CommandError: timed out after 1\.\ds waiting for the deploy lock \(PostgreSQL "
        rf"advisory lock {key} \(alembic_version:default\)\); held by pid {pid}, .*",
        line,
    )
    assert versions(pg_engine) is None
