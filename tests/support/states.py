"""Databases in every state ``migsupport.state`` knows, reached for real; copies of the scripts.

Every state is built the way it happens in the field: the migrations run
(unguarded, through ``tests.support.migrate``), the deployed DDL loaded, an index
dropped by hand, ``alembic_version`` removed or edited. Commands run in
subprocesses exactly as a deploy runs them (``tests.support.commands``); ``Batch``
runs many of them at once, one database each.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.support.catalog import catalog
from tests.support.commands import spawn
from tests.support.migrate import run
from tests.support.project import PROJECT, load_production_schema
from tests.support.server import create_pg_database, drop_pg_database, server_url

BASELINE = "b662310f1380"
SECOND = "7c1d2e3f4a5b"
HEAD = "3d5f8a9b2c41"
UNKNOWN = "0123456789ab"
BRANCH = "aaaa00000001"
MERGE = "bbbb00000002"
DRIFT_INDEX = "ix_detected_materials_material_name"
DOMAIN_TABLES = ("detected_materials", "material_detection_jobs")
# The revisions in order; None is the empty database before the first.
REVISIONS = (None, BASELINE, SECOND, HEAD)

APPLY_BASELINE = "  Applying b662310f1380 (Baseline: the deployed schema.)... OK"
APPLY_SECOND = (
    "  Applying 7c1d2e3f4a5b (Cancelled jobs, the model version, and an index for a job's "
    "best materials.)... OK"
)
APPLY_HEAD = (
    "  Applying 3d5f8a9b2c41 (Indexes for browsing detected materials at production scale.)... OK"
)

# What alembic_verify prints before its first check that needs a scratch database:
# the checks of the history alone.
VERIFY_BEFORE_SCRATCH = (
    "  single head and an intact chain: passed\n"
    "  no revision takes a lock that blocks production (squawk): passed\n"
)
VERIFY_CHECKS = 8

# What revisions 7c1d2e3f4a5b and 3d5f8a9b2c41 add, as a DBA would have typed it by hand.
HEAD_CHANGES_DDL = (
    "ALTER TYPE jobstatus ADD VALUE 'CANCELLED' AFTER 'FAILED'",
    "ALTER TABLE material_detection_jobs ADD COLUMN model_version VARCHAR(64)",
    "CREATE INDEX ix_detected_materials_job_id_confidence "
    "ON detected_materials (job_id, confidence)",
    "CREATE INDEX ix_detected_materials_created_at ON detected_materials (created_at)",
    "CREATE INDEX ix_detected_materials_category ON detected_materials (category)",
    "CREATE INDEX ix_detected_materials_confidence ON detected_materials (confidence)",
    "CREATE INDEX ix_detected_materials_material_name_pattern "
    "ON detected_materials (material_name varchar_pattern_ops)",
)

STATES = (
    "empty",
    "unversioned_at_baseline",
    "unversioned_at_head",
    "behind",
    "up_to_date",
    "drifted",
    "unknown_revision",
    "unversioned_unmatched",
)

# Ways the deployed (PostgreSQL) schema drifts: the DDL, and the difference reported.
DRIFTS = {
    "missing_index": (
        f"DROP INDEX {DRIFT_INDEX}",
        f"index {DRIFT_INDEX} is missing",
    ),
    "changed_length": (
        "ALTER TABLE detected_materials ALTER COLUMN material_name TYPE VARCHAR(50)",
        "column detected_materials.material_name is VARCHAR(50), expected VARCHAR(100)",
    ),
    "nullability": (
        "ALTER TABLE detected_materials ALTER COLUMN category SET NOT NULL",
        "column detected_materials.category is NOT NULL, expected NULL",
    ),
    "enum_label": (
        "ALTER TYPE jobstatus ADD VALUE 'ARCHIVED'",
        "enum jobstatus: labels are (PENDING, PROCESSING, COMPLETED, FAILED, ARCHIVED), "
        "expected (PENDING, PROCESSING, COMPLETED, FAILED)",
    ),
    "extra_column": (
        "ALTER TABLE material_detection_jobs ADD COLUMN priority INTEGER",
        "column material_detection_jobs.priority is unexpected",
    ),
    "missing_table": (
        "DROP TABLE detected_materials",
        "table detected_materials is missing",
    ),
}


# -- raw SQL, behind Alembic's back ---------------------------------------------------


def execute(engine: Engine, *statements: str) -> None:
    """Run raw SQL statements in one transaction, outside any command, and commit them."""
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    """Return the single value of a query, run on a connection of its own."""
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar()


def versions(engine: Engine) -> list[str] | None:
    """Return the rows of alembic_version, or None when the table does not exist."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return [r[0] for r in connection.exec_driver_sql("SELECT version_num FROM alembic_version")]


def rebuild_sqlite_table(engine: Engine, table: str, old: str, new: str) -> None:
    """Recreate an empty SQLite table from its own DDL with ``old`` replaced by ``new``.

    SQLite cannot change a column's type, nullability, default or foreign
    key in place, so the table is rebuilt, and its indexes with it.
    """
    with engine.begin() as connection:
        ddl = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).scalar_one()
        assert old in ddl, f"{old!r} is not in the DDL of {table}: {ddl}"
        indexes = [
            sql
            for (sql,) in connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL",
                (table,),
            )
        ]
        connection.exec_driver_sql(f"DROP TABLE {table}")
        connection.exec_driver_sql(ddl.replace(old, new))
        for sql in indexes:
            connection.exec_driver_sql(sql)


# -- the states -------------------------------------------------------------------------


def reach(engine: Engine, state: str) -> None:
    """Bring the new, empty database behind ``engine`` into ``state`` (one of ``STATES``).

    ``empty`` is a database that exists and holds nothing: on SQLite, an
    existing empty file (the commands refuse a path with no file).
    ``unversioned_at_baseline`` and, on PostgreSQL, ``unversioned_at_head``
    are the deployed DDL (with the head's changes typed by hand), never
    migrated; on SQLite, which has no deployed database, they are migrated
    and their version table dropped.
    """
    if state == "empty":
        with engine.connect() as connection:  # SQLite creates the file on connecting
            connection.exec_driver_sql("SELECT 1")
        return
    postgresql = engine.dialect.name == "postgresql"
    if state == "unversioned_at_baseline" and postgresql:
        load_production_schema(engine)
        return
    if state == "unversioned_at_head" and postgresql:
        load_production_schema(engine)
        execute(engine, *HEAD_CHANGES_DDL)
        return
    if state in ("unversioned_at_baseline", "behind"):
        run(engine, "upgrade", BASELINE)
        if state == "unversioned_at_baseline":
            execute(engine, "DROP TABLE alembic_version")
        return
    run(engine, "upgrade", HEAD)
    if state == "unversioned_at_head":
        execute(engine, "DROP TABLE alembic_version")
    elif state == "drifted":
        execute(engine, f"DROP INDEX {DRIFT_INDEX}")
    elif state == "unknown_revision":
        execute(engine, f"UPDATE alembic_version SET version_num = '{UNKNOWN}'")
    elif state == "unversioned_unmatched":
        execute(engine, "DROP TABLE alembic_version", f"DROP INDEX {DRIFT_INDEX}")
    else:
        assert state == "up_to_date", f"no such state: {state}"


def drifted_production(engine: Engine, drift: str, *, versioned: bool) -> None:
    """Load the deployed schema, change it by ``drift``, and record ``BASELINE`` if asked."""
    load_production_schema(engine)
    execute(engine, DRIFTS[drift][0])
    if versioned:
        run(engine, "stamp", BASELINE)  # recorded unchecked, as a hand-run stamp would


def refusal(message: str, *differences: str) -> str:
    """Return the stderr of a refusal: the differences, then the one-line error."""
    return differences_block(*differences) + f"CommandError: {message}\n"


def differences_block(*differences: str) -> str:
    """Return the lines a command writes to stderr before a refusal or a warning."""
    if not differences:
        return ""
    lines = ["Differences from the expected schema:", *(f"  - {d}" for d in differences)]
    return "".join(f"{line}\n" for line in lines)


# -- copies of the project's scripts ----------------------------------------------------


@dataclass(frozen=True)
class ProjectCopy:
    """A copy of alembic.ini and alembic/ (the ledger included), to change freely.

    ``config`` is its Alembic ``Config`` for in-process use; ``env`` runs
    manage.py on it (``manage(..., **copy.env)``) through a settings module
    that only adds ``MIGSUPPORT_ALEMBIC_INI``.
    """

    folder: Path
    config: Config
    env: dict[str, str]

    @property
    def scripts(self) -> Path:
        return Path(self.config.get_main_option("script_location"))

    @property
    def versions(self) -> Path:
        return self.scripts / "versions"

    @property
    def ledger(self) -> Path:
        return self.scripts / "ledger.json"


SETTINGS_MODULE = "migsupport_copy_settings"


def project_copy(folder: Path) -> ProjectCopy:
    """Copy the project's Alembic setup into ``folder``, created if need be."""
    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "alembic.ini"
    shutil.copy(PROJECT / "alembic.ini", ini)
    shutil.copytree(
        PROJECT / "alembic", folder / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    (folder / f"{SETTINGS_MODULE}.py").write_text(
        f"from tests.settings import *  # noqa: F403\n\nMIGSUPPORT_ALEMBIC_INI = {str(ini)!r}\n"
    )
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "PYTHONPATH": str(folder)}
    return ProjectCopy(folder, Config(str(ini)), env)


def edit_script(copy: ProjectCopy, revision: str) -> None:
    """Append a comment to a revision's script: the same behaviour, another checksum."""
    (script,) = copy.versions.glob(f"{revision}_*.py")
    with script.open("a") as handle:
        handle.write("# edited after the ledger was written\n")


def edit_ledger(copy: ProjectCopy, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``edit`` to the ledger's parsed JSON, and write it back."""
    data = json.loads(copy.ledger.read_text())
    edit(data)
    copy.ledger.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def add_revision(
    copy: ProjectCopy, revision: str, down_revision: str | tuple[str, ...], statement: str
) -> None:
    """Write a revision script into the copy; ``statement`` is its upgrade."""
    (copy.versions / f"{revision}_added.py").write_text(
        '"""An added revision."""\n\n'
        "from alembic import op  # noqa: F401\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade():\n"
        f"    {statement}\n\n\n"
        "def downgrade():\n"
        "    pass\n"
    )


def add_branch(copy: ProjectCopy) -> None:
    """Add a second head: a revision whose down_revision is the baseline."""
    add_revision(
        copy,
        BRANCH,
        BASELINE,
        'op.create_index("ix_detected_materials_branch", "detected_materials", '
        '["category", "confidence"])',
    )


# A third revision over the head, written into a copy: a column, then ``body``.
THIRD = "9e8d7c6b5a40"
THIRD_DOC = "Verified materials."
THIRD_TEMPLATE = '''\
"""{doc}

Revision ID: {revision}
Revises: {down}
Create Date: 2026-12-01 00:00:00
"""

import sqlalchemy as sa

from alembic import op
from migsupport import ops

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    ops.add_column_if_missing(
        "detected_materials", sa.Column("verified", sa.Boolean(), nullable=True)
    )
{body}

def downgrade():
    ops.drop_column_if_present("detected_materials", "verified")
'''

# The unique index is fine on an empty database (so the replay on a scratch
# database passes, as CI would) and fails on this one's duplicate rows.
FAILING_BODY = (
    'op.create_index("ux_detected_materials_job_material", "detected_materials",\n'
    '                ["job_id", "material_name"], unique=True)\n'
)
FIXED_BODY = (
    'op.create_index("ix_detected_materials_job_material", "detected_materials",\n'
    '                ["job_id", "material_name"])\n'
)


def write_third_revision(copy: ProjectCopy, body: str, revision: str = THIRD) -> None:
    """Write revision ``THIRD`` over the head into the copy, its upgrade ending in ``body``."""
    (copy.versions / f"{revision}_verified_materials.py").write_text(
        THIRD_TEMPLATE.format(
            doc=THIRD_DOC, revision=revision, down=HEAD, body=textwrap.indent(body, "    ")
        )
    )


def insert_job_with_duplicate_materials(engine: Engine) -> None:
    """Insert a job with two materials of the same name, on which ``FAILING_BODY`` fails."""
    job = uuid.UUID(int=1)
    hexes = {"job": job.hex, "a": uuid.UUID(int=2).hex, "b": uuid.UUID(int=3).hex}
    if engine.dialect.name == "postgresql":
        hexes = {k: str(uuid.UUID(v)) for k, v in hexes.items()}
    execute(
        engine,
        "INSERT INTO material_detection_jobs (id, image_url, status) "
        f"VALUES ('{hexes['job']}', 'https://img/1.jpg', 'COMPLETED')",
        "INSERT INTO detected_materials (id, job_id, material_name, confidence) VALUES "
        f"('{hexes['a']}', '{hexes['job']}', 'steel', 0.9), "
        f"('{hexes['b']}', '{hexes['job']}', 'steel', 0.8)",
    )


# -- the head's catalog, and commands run in a batch ----------------------------------------


class HeadCatalogs:
    """The catalog of a database freshly upgraded to head, built once per dialect."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cache: dict[str, dict[str, Any]] = {}
        self.pg_url: URL | None = None

    def __call__(self, engine: Engine) -> dict[str, Any]:
        dialect = engine.dialect.name
        if dialect not in self.cache:
            if dialect == "postgresql":
                self.pg_url = url = create_pg_database(server_url())
            else:
                url = URL.create("sqlite", database=str(self.folder / "head.sqlite3"))
            fresh = create_engine(url)
            try:
                run(fresh, "upgrade", "head")
                self.cache[dialect] = catalog(fresh)
            finally:
                fresh.dispose()
        return self.cache[dialect]

    def close(self) -> None:
        if self.pg_url is not None:
            drop_pg_database(server_url(), self.pg_url)


@dataclass(frozen=True)
class Job:
    """One command to run on a new database of ``dialect``, once ``prepare`` has built it."""

    dialect: str
    prepare: Callable[[Engine], None]
    args: tuple[str, ...]


def state_jobs(
    args: tuple[str, ...], drift_args: tuple[str, ...], *, versioned: bool
) -> dict[tuple[str, str], Job]:
    """Return the jobs that run ``args`` in every state on both dialects, and ``drift_args``
    on the deployed PostgreSQL schema drifted each way of ``DRIFTS`` (``BASELINE`` recorded
    if ``versioned``)."""
    jobs = {
        (dialect, state): Job(dialect, partial(reach, state=state), args)
        for dialect in ("sqlite", "postgresql")
        for state in STATES
    }
    for drift in DRIFTS:
        prepare = partial(drifted_production, drift=drift, versioned=versioned)
        jobs[("postgresql", drift)] = Job("postgresql", prepare, drift_args)
    return jobs


@dataclass(frozen=True)
class Run:
    """A job's database, what it held before the command, and what the command did."""

    url: URL
    engine: Engine
    before: dict[str, Any]
    versions_before: list[str] | None
    result: subprocess.CompletedProcess

    def assert_refused(self, stderr: str) -> None:
        """Assert the command exited 1 with only ``stderr``, and changed nothing.

        Neither the schema nor the version table changed, and no version
        table was created where there was none.
        """
        assert (self.result.returncode, self.result.stdout, self.result.stderr) == (1, "", stderr)
        assert catalog(self.engine) == self.before
        assert versions(self.engine) == self.versions_before


class Batch:
    """Independent jobs, each on its own database, run as concurrent processes.

    A command costs about a second of interpreter start-up, so the jobs of a
    dialect are all started together the first time one of them is asked
    for, and their results are kept for the tests that assert on them.
    """

    def __init__(self, folder: Path, jobs: Mapping[tuple[str, str], Job]) -> None:
        self.folder = folder
        self.jobs = jobs
        self.runs: dict[tuple[str, str], Run] = {}
        self.pg_urls: list[URL] = []

    def __call__(self, dialect: str, name: str) -> Run:
        if (dialect, name) not in self.runs:
            self._run_all(dialect)
        return self.runs[(dialect, name)]

    def _new_url(self, dialect: str, name: str) -> URL:
        if dialect == "postgresql":
            url = create_pg_database(server_url())
            self.pg_urls.append(url)
            return url
        return URL.create("sqlite", database=str(self.folder / f"{name}.sqlite3"))

    def _run_all(self, dialect: str) -> None:
        started = []
        try:
            for (job_dialect, name), job in self.jobs.items():
                if job_dialect != dialect:
                    continue
                url = self._new_url(dialect, name)
                engine = create_engine(url)
                job.prepare(engine)
                before = catalog(engine), versions(engine)
                started.append((name, url, engine, before, spawn(*job.args, database_url=url)))
        except BaseException:
            for *_, engine, _, process in started:
                process.kill()
                process.communicate()
                engine.dispose()
            raise
        for name, url, engine, (before, versions_before), process in started:
            stdout, stderr = process.communicate(timeout=300)
            result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            self.runs[(dialect, name)] = Run(url, engine, before, versions_before, result)

    def close(self) -> None:
        for done in self.runs.values():
            done.engine.dispose()
        for url in self.pg_urls:
            drop_pg_database(server_url(), url)
