"""``manage.py alembic_status`` and ``alembic_ledger --check``, run as a deploy runs them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from migsupport.engine import create_engine, safe_url
from tests.support.commands import manage
from tests.support.migrate import run
from tests.support.project import PROJECT
from tests.support.states import (
    BASELINE,
    BRANCH,
    DRIFT_INDEX,
    HEAD,
    SECOND,
    UNKNOWN,
    ProjectCopy,
    add_branch,
    edit_script,
    execute,
    project_copy,
    reach,
    versions,
)

HINT_UPGRADE = "Run `manage.py alembic_upgrade` to apply the pending revisions."
STALE = f"revision {HEAD}'s script changed after the ledger was written"


def status(url: URL, *args: str, **env: str):
    return manage("alembic_status", *args, database_url=url, **env)


def human(url: URL, *lines: str) -> list[str]:
    return [f"Database default: {safe_url(url)}", *lines]


# -- the report in each state ----------------------------------------------------

# The report of each state of ``tests.support.states.reach``, after the "Database" line.
EXPECTED = {
    "empty": [
        "  State:    empty",
        "  Current:  (none)",
        f"  Head:     {HEAD}",
        f"  Pending:  {BASELINE}, {SECOND}, {HEAD}",
        "  Ledger:   fresh",
        "  No Alembic-owned objects, and no recorded version.",
        "Run `manage.py alembic_upgrade` to create the schema.",
    ],
    "up_to_date": [
        "  State:    up_to_date",
        f"  Current:  {HEAD}",
        f"  Head:     {HEAD}",
        "  Ledger:   fresh",
        "  The recorded version is the head, and the schema equals it.",
    ],
    "behind": [
        "  State:    behind",
        f"  Current:  {BASELINE}",
        f"  Head:     {HEAD}",
        f"  Pending:  {SECOND}, {HEAD}",
        "  Ledger:   fresh",
        "  The schema equals the recorded version; newer revisions are pending.",
        HINT_UPGRADE,
    ],
    "unversioned_at_baseline": [
        "  State:    unversioned",
        "  Current:  (none)",
        f"  Head:     {HEAD}",
        f"  Pending:  {SECOND}, {HEAD}",
        f"  Matches:  {BASELINE}",
        "  Ledger:   fresh",
        f"  No version is recorded, and the schema equals revision {BASELINE}.",
        f"Run `manage.py alembic_upgrade` to baseline at {BASELINE} and upgrade, "
        f"or `manage.py alembic_stamp {BASELINE}`.",
    ],
    "drifted": [
        "  State:    drifted",
        f"  Current:  {HEAD}",
        f"  Head:     {HEAD}",
        "  Ledger:   fresh",
        "  A version is recorded, but the schema differs from it.",
        "Differences:",
        "  - index ix_detected_materials_material_name is missing",
        "See the safe way back to the recorded revision with `manage.py alembic_repair "
        "--plan`, or write a revision for the change.",
    ],
    "unknown_revision": [
        "  State:    unknown_revision",
        f"  Current:  {UNKNOWN}",
        f"  Head:     {HEAD}",
        f"  Nearest:  {HEAD}",
        "  Ledger:   fresh",
        "  The recorded version is not in the revision scripts.",
        f"  alembic_version records {UNKNOWN}, which no revision script defines",
        "A newer release may have migrated this database, or its revision script was deleted.",
    ],
}


@pytest.mark.parametrize("state", list(EXPECTED))
def test_status_prints_the_report_of_each_state_and_exits_0(database_url, engine, state):
    reach(engine, state)

    result = status(database_url)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == human(database_url, *EXPECTED[state])
    # Read-only: a database with no version keeps having no version table.
    assert (versions(engine) is None) == (state in ("empty", "unversioned_at_baseline"))


def test_status_of_a_sqlite_path_with_no_file_fails_in_one_line_and_creates_none(sqlite_url):
    path = Path(sqlite_url.database)
    assert not path.exists()

    result = status(sqlite_url)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"CommandError: sqlite:///{path}: the database file does not exist\n"
    assert not path.exists()


def test_status_of_an_unversioned_schema_matching_nothing_names_the_nearest(database_url, engine):
    reach(engine, "unversioned_at_baseline")
    execute(engine, f"DROP INDEX {DRIFT_INDEX}")

    result = status(database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == human(
        database_url,
        "  State:    unversioned",
        "  Current:  (none)",
        f"  Head:     {HEAD}",
        f"  Nearest:  {BASELINE}",
        "  Ledger:   fresh",
        "  No version is recorded, and the schema equals no revision.",
        "Differences:",
        "  - index ix_detected_materials_material_name is missing",
        "Bring the schema to a known revision before Alembic can manage it.",
    )


def test_status_at_verbosity_0_leaves_out_the_hint(database_url, engine):
    reach(engine, "behind")

    result = status(database_url, "-v", "0")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == human(database_url, *EXPECTED["behind"][:-1])


# -- --json ---------------------------------------------------------------------


def test_status_json_prints_one_object_with_every_key(database_url, engine):
    reach(engine, "drifted")

    result = status(database_url, "--json")

    assert result.returncode == 0, result.stderr
    index = {"unique": False, "keys": ["material_name"], "valid": True}
    if engine.dialect.name == "postgresql":
        index["method"] = "btree"
    assert json.loads(result.stdout) == {
        "database": "default",
        "url": safe_url(database_url),
        "direct": False,
        "state": "drifted",
        "current": HEAD,
        "head": HEAD,
        "pending": [],
        "matches": None,
        "nearest": None,
        "reason": None,
        "partial": None,
        "differences": [
            {
                "kind": "missing",
                "object": {
                    "type": "index",
                    "name": "ix_detected_materials_material_name",
                    "table": "detected_materials",
                },
                "property": None,
                "expected": index,
                "actual": None,
                "text": "index ix_detected_materials_material_name is missing",
            }
        ],
        "unowned": [],
        "ledger": "fresh",
        "ledger_problems": [],
        "schema_source": "ledger",
        "edited": [],
    }


def test_status_json_of_an_unversioned_database_carries_the_match(database_url, engine):
    reach(engine, "unversioned_at_baseline")

    result = status(database_url, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "database": "default",
        "url": safe_url(database_url),
        "direct": False,
        "state": "unversioned",
        "current": None,
        "head": HEAD,
        "pending": [SECOND, HEAD],
        "matches": BASELINE,
        "nearest": None,
        "reason": None,
        "partial": None,
        "differences": [],
        "unowned": [],
        "ledger": "fresh",
        "ledger_problems": [],
        "schema_source": "ledger",
        "edited": [],
    }


# -- --check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "code", "reported"),
    [
        ("up_to_date", 0, "up_to_date"),
        ("empty", 1, "empty"),
        ("behind", 1, "behind"),
        ("unversioned_at_baseline", 1, "unversioned"),
        ("drifted", 1, "drifted"),
        ("unknown_revision", 1, "unknown_revision"),
    ],
)
def test_status_check_exits_0_only_when_up_to_date(database_url, engine, state, code, reported):
    reach(engine, state)

    result = status(database_url, "--check", "--json")

    assert result.returncode == code, result.stderr
    assert json.loads(result.stdout)["state"] == reported


# -- the ledger, and the scripts ------------------------------------------------------


@pytest.fixture
def copied(tmp_path: Path) -> ProjectCopy:
    """A copy of alembic.ini and alembic/, and the env to run manage.py on it."""
    return project_copy(tmp_path / "project")


def test_status_with_a_stale_ledger_replays_and_says_so(database_url, engine, copied):
    reach(engine, "up_to_date")
    edit_script(copied, HEAD)

    result = status(database_url, **copied.env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == human(
        database_url,
        "  State:    up_to_date",
        f"  Current:  {HEAD}",
        f"  Head:     {HEAD}",
        "  Ledger:   stale, replayed",
        f"    - {STALE}",
        "  The recorded version is the head, and the schema equals it.",
    )


def test_status_with_a_stale_ledger_and_no_replay_fails_in_one_line(database_url, engine, copied):
    reach(engine, "up_to_date")
    edit_script(copied, HEAD)

    result = status(database_url, "--no-replay", **copied.env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"CommandError: the ledger is stale ({STALE}) and no scratch database may be used to "
        "replay the history; regenerate it with `manage.py alembic_ledger` where a scratch "
        "database can be made"
    ]


def test_status_with_several_heads_fails_naming_them_and_the_merge(sqlite_url, copied):
    engine = create_engine(sqlite_url)
    reach(engine, "empty")
    engine.dispose()
    add_branch(copied)

    result = status(sqlite_url, **copied.env)

    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    heads = line.removeprefix("CommandError: the revision history has 2 heads: ").split(";")[0]
    assert sorted(heads.split(", ")) == sorted([HEAD, BRANCH])
    assert line == (
        f"CommandError: the revision history has 2 heads: {heads}; "
        'merge them with `alembic merge heads -m "merge"`'
    )


def test_ledger_check_passes_on_the_project_as_committed():
    result = manage("alembic_ledger", "--check")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"The ledger {PROJECT / 'alembic' / 'ledger.json'} is fresh."
    ]


def test_ledger_check_fails_on_an_edited_script(copied):
    edit_script(copied, HEAD)

    result = manage("alembic_ledger", "--check", **copied.env)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"  - {STALE}"]
    assert result.stderr.splitlines() == [
        f"The ledger {copied.ledger} is stale. Run `manage.py alembic_ledger --database ALIAS` "
        "with a PostgreSQL alias."
    ]


# -- secrets ----------------------------------------------------------------------

PASSWORD = "S3cr3t-pw"


@pytest.fixture
def password_url(pg_server: URL, pg_url: URL) -> Iterator[URL]:
    """Return the scratch database's URL as a role that logs in with a password.

    The role may read the schema but not create databases.
    """
    role = f"status_pw_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    database = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with server.connect() as connection:
            connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        try:
            with database.connect() as connection:
                connection.exec_driver_sql(
                    f'GRANT CONNECT ON DATABASE "{pg_url.database}" TO {role}'
                )
                connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
                connection.exec_driver_sql(
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}"
                )
            yield pg_url.set(username=role, password=PASSWORD)
        finally:
            with database.connect() as connection:
                connection.exec_driver_sql(f"DROP OWNED BY {role}")
            with server.connect() as connection:
                connection.exec_driver_sql(f"DROP ROLE {role}")
    finally:
        database.dispose()
        server.dispose()


def _no_password(result) -> None:
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.postgresql
def test_status_never_prints_the_password(pg_engine, password_url):
    run(pg_engine, "upgrade", HEAD)

    result = status(password_url)
    as_json = status(password_url, "--json")

    _no_password(result)
    _no_password(as_json)
    assert result.returncode == 0, result.stderr
    masked = safe_url(password_url)
    assert "***" in masked
    assert result.stdout.splitlines() == [f"Database default: {masked}", *EXPECTED["up_to_date"]]
    assert json.loads(as_json.stdout)["url"] == masked


@pytest.mark.postgresql
def test_status_on_a_missing_database_fails_without_the_password(password_url):
    missing = password_url.set(database=f"{password_url.database}_missing")

    result = status(missing)

    _no_password(result)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("CommandError: ")
    assert f'database "{missing.database}" does not exist' in line


@pytest.mark.postgresql
def test_status_needing_a_replay_without_createdb_fails_without_the_password(
    pg_engine, password_url, copied
):
    run(pg_engine, "upgrade", HEAD)
    edit_script(copied, HEAD)

    result = status(password_url, **copied.env)

    _no_password(result)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == (
        f"CommandError: user {password_url.username} may not create databases on "
        f"{safe_url(password_url.set(database=None))}: the scratch database needs the CREATEDB "
        "right (ALTER ROLE ... CREATEDB), or a ledger that is up to date "
        "(`manage.py alembic_verify --update-ledger`)"
    )
