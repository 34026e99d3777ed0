"""``manage.py alembic_verify``, run as CI runs it, on real databases.

Each run is a subprocess of a copy of the whole project tree (manage.py,
config/, materials/, migsupport/, alembic/, alembic.ini), broken on purpose
where a test needs it, run with the project's interpreter. The assertions
read the exit status, the exact check lines or JSON report, and the server's
catalog afterwards: no ``migsupport_scratch_`` database may be left behind.

A verification takes a second or two plus the interpreter's start-up, so the
runs that need no interaction are started together, one batch per dialect,
the first time one of them is asked for (``Runs``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from tests.support.commands import COMMAND_TIMEOUT, command_environ, django_url, shown, wait_for
from tests.support.project import PROJECT
from tests.support.server import (
    abandoned_scratch_databases,
    admin_execute,
    scratch_databases,
)
from tests.support.states import BASELINE, HEAD, SECOND

# The tests here share module-scoped databases and batches of commands: they run on one
# test worker, so that those are built once.
pytestmark = pytest.mark.xdist_group("verify")

SCRATCH_PREFIX = "migsupport_scratch_"
SCRATCH_NAME = re.compile(rf"{SCRATCH_PREFIX}[0-9a-f]{{16}}")
ADDED = "9f8e7d6c5b4a"
BRANCH_A = "aaaa00000001"
BRANCH_B = "bbbb00000001"
TREE = ("manage.py", "alembic.ini", "config", "materials", "migsupport", "alembic")
CHECKS = (
    "single_head",
    "lock_safety",
    "upgrade",
    "idempotent",
    "models_match_ddl",
    "downgrade",
    "upgrade_again",
    "ledger_fresh",
)
TITLES = {
    "single_head": "single head and an intact chain",
    "lock_safety": "no revision takes a lock that blocks production (squawk)",
    "upgrade": "upgrade from empty to head, one revision at a time",
    "idempotent": "running each revision twice is safe",
    "models_match_ddl": "models equal the DDL at head",
    "downgrade": "downgrade to base, one revision at a time, leaving no trace",
    "upgrade_again": "upgrade to head again",
    "ledger_fresh": "the ledger is fresh",
}
# Why each check is skipped when the chain is broken: the first check it needs.
NEEDS = {
    "lock_safety": "single_head",
    "upgrade": "single_head",
    "idempotent": "upgrade",
    "models_match_ddl": "upgrade",
    "downgrade": "upgrade",
    "upgrade_again": "downgrade",
    "ledger_fresh": "upgrade",
}
SKIPPED_BECAUSE = {
    name: f"it needs {TITLES[needed]!r}, which "
    + ("failed" if needed == "single_head" else "did not run")
    for name, needed in NEEDS.items()
}
REGENERATE = "regenerate it with `manage.py alembic_verify --update-ledger`"
STEP_TRACE = (
    f"revision {ADDED}'s downgrade does not leave the schema of {HEAD}: "
    "column material_detection_jobs.priority is unexpected"
)

# Every check passing, as the human-readable output prints it; SCRATCH is the
# line naming the scratch database.
SCRATCH = object()
PASSED_LINES = (
    "  single head and an intact chain: passed",
    "  no revision takes a lock that blocks production (squawk): passed",
    SCRATCH,
    "  upgrade from empty to head, one revision at a time:",
    f"    {BASELINE} OK",
    f"    {SECOND} OK",
    f"    {HEAD} OK",
    "    result: passed",
    "  running each revision twice is safe: passed",
    "  models equal the DDL at head: passed",
    "  downgrade to base, one revision at a time, leaving no trace:",
    f"    {HEAD} -> {SECOND} OK",
    f"    {SECOND} -> {BASELINE} OK",
    f"    {BASELINE} -> base OK",
    "    result: passed",
    "  upgrade to head again: passed",
    "  the ledger is fresh: passed",
    "All 8 checks passed.",
)


# -- copies of the project, broken on purpose -------------------------------------------


def project_tree(folder: Path) -> Path:
    """Copy the project's code and Alembic setup (no venv, no .git, no databases) to ``folder``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3*", ".env")
    folder.mkdir(parents=True)
    for name in TREE:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=ignore)
        else:
            shutil.copy2(source, folder / name)
    return folder


def add_model_field(tree: Path) -> None:
    """Give MaterialDetectionJob a ``priority`` field."""
    models = tree / "materials" / "models.py"
    anchor = "    model_version = models.CharField(max_length=64, null=True, blank=True)\n"
    text = models.read_text()
    assert text.count(anchor) == 1, "MaterialDetectionJob.model_version moved; update the test"
    models.write_text(
        text.replace(anchor, anchor + "    priority = models.IntegerField(null=True)\n")
    )


def add_revision(
    tree: Path, revision: str, down_revision: str, upgrade: str, downgrade: str = "pass"
) -> Path:
    """Write a revision script into the copy's versions folder."""
    script = tree / "alembic" / "versions" / f"{revision}_added.py"
    script.write_text(
        f'"""An added revision.\n\nRevision ID: {revision}\nRevises: {down_revision}\n"""\n\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        "from migsupport import ops\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade():\n"
        f"{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
        "def downgrade():\n"
        f"{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
    )
    return script


def script_of(tree: Path, revision: str) -> Path:
    (script,) = (tree / "alembic" / "versions").glob(f"{revision}_*.py")
    return script


def ledger_of(tree: Path) -> dict[str, Any]:
    return json.loads((tree / "alembic" / "ledger.json").read_text())


ADD_PRIORITY = """
    ops.add_column_if_missing(
        "material_detection_jobs", sa.Column("priority", sa.Integer(), nullable=True)
    )
"""


def model_field_without_migration(tree: Path) -> None:
    add_model_field(tree)


def downgrade_leaves_a_column(tree: Path) -> None:
    add_model_field(tree)
    # The downgrade forgets the column.
    add_revision(tree, ADDED, HEAD, ADD_PRIORITY, "pass")


def two_heads(tree: Path) -> None:
    for revision in (BRANCH_A, BRANCH_B):
        add_revision(tree, revision, HEAD, "pass")


def fails_when_applied_twice(tree: Path) -> None:
    add_model_field(tree)
    add_revision(
        tree,
        ADDED,
        HEAD,
        'op.add_column("material_detection_jobs", sa.Column("priority", sa.Integer()))',
        'op.drop_column("material_detection_jobs", "priority")',
    )


def changes_when_applied_twice(tree: Path) -> None:
    add_model_field(tree)
    add_revision(
        tree,
        ADDED,
        HEAD,
        # IF NOT EXISTS is safe; an index named by how many there are is not.
        """
        op.execute("ALTER TABLE material_detection_jobs ADD COLUMN IF NOT EXISTS priority INTEGER")
        count = len(sa.inspect(op.get_bind()).get_indexes("material_detection_jobs"))
        op.create_index(f"ix_jobs_priority_{count}", "material_detection_jobs", ["priority"])
        """,
        """
        for index in sa.inspect(op.get_bind()).get_indexes("material_detection_jobs"):
            if index["name"].startswith("ix_jobs_priority_"):
                op.drop_index(index["name"], table_name="material_detection_jobs")
        op.drop_column("material_detection_jobs", "priority")
        """,
    )


def script_edited(tree: Path) -> None:
    with script_of(tree, HEAD).open("a") as handle:
        handle.write("# edited after the ledger was written\n")


def sleeps(tree: Path) -> None:
    add_revision(tree, ADDED, HEAD, 'op.execute("SELECT pg_sleep(5)")')


# -- running it --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One run of alembic_verify, in a copy of the project that ``build`` breaks."""

    dialect: str
    # None: in the project itself, as it is.
    build: Callable[[Path], None] | None = None
    args: tuple[str, ...] = ()
    # SQLite: False runs without DATABASE_URL, so beside the project's default database.
    database_url: bool = True


@dataclass(frozen=True)
class Outcome:
    """A finished run: its tree, temporary folder, and what it printed."""

    tree: Path
    tmpdir: Path
    result: subprocess.CompletedProcess

    @property
    def report(self) -> dict[str, Any]:
        return json.loads(self.result.stdout)


def command(tree: Path, tmpdir: Path, url: URL | None, *args: str) -> dict[str, Any]:
    """Return Popen's arguments for ``manage.py alembic_verify *args`` in ``tree``."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    return {
        "args": [sys.executable, "manage.py", "alembic_verify", *args],
        "cwd": tree,
        # The SQLite scratch folder goes into tmpdir, to be checked afterwards.
        "env": command_environ(url, TMPDIR=str(tmpdir)),
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
    }


JOBS = {
    "pg_text": Job("postgresql"),
    "pg_json": Job("postgresql", args=("--json",)),
    "pg_keep": Job("postgresql", args=("--keep",)),
    "sqlite_text": Job("sqlite", database_url=False),
    "sqlite_json": Job("sqlite", args=("--json",)),
    "model_field": Job("postgresql", model_field_without_migration),
    "downgrade_trace": Job("postgresql", downgrade_leaves_a_column, ("--json",)),
    "two_heads": Job("postgresql", two_heads),
    "twice_fails": Job("postgresql", fails_when_applied_twice, ("--json",)),
    "twice_changes": Job("postgresql", changes_when_applied_twice, ("--json",)),
    "sqlite_twice_fails": Job("sqlite", fails_when_applied_twice, ("--json",)),
    "sqlite_twice_fails_text": Job("sqlite", fails_when_applied_twice),
    "edited": Job("postgresql", script_edited, ("--json",)),
    "edited_update": Job("postgresql", script_edited, ("--json", "--update-ledger")),
}


class Runs:
    """The jobs of a dialect, started together the first time one is asked for."""

    def __init__(self, folder: Path, request: pytest.FixtureRequest) -> None:
        self.folder = folder
        self.request = request
        self.outcomes: dict[str, Outcome] = {}
        # The server's scratch databases before and after the PostgreSQL batch.
        self.scratch_before: set[str] = set()
        self.scratch_after: set[str] = set()
        self.server: URL | None = None

    def __call__(self, name: str) -> Outcome:
        if name not in self.outcomes:
            self._run_all(JOBS[name].dialect)
        return self.outcomes[name]

    def _run_all(self, dialect: str) -> None:
        server = self.request.getfixturevalue("pg_server") if dialect == "postgresql" else None
        if server is not None:
            self.scratch_before = scratch_databases(server)
        started = []
        try:
            for name, job in JOBS.items():
                if job.dialect != dialect:
                    continue
                tmpdir = self.folder / name / "tmp"
                tree = PROJECT
                if job.build is not None:
                    tree = project_tree(self.folder / name / "project")
                    job.build(tree)
                url = server
                if dialect == "sqlite" and job.database_url:
                    url = URL.create("sqlite", database=str(self.database(name)))
                process = subprocess.Popen(**command(tree, tmpdir, url, *job.args))
                started.append((name, tree, tmpdir, process))
        finally:
            for name, tree, tmpdir, process in started:
                stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
                result = subprocess.CompletedProcess(
                    process.args, process.returncode, stdout, stderr
                )
                self.outcomes[name] = Outcome(tree, tmpdir, result)
        if server is not None:
            self.scratch_after = scratch_databases(server)
            self.server = server

    def database(self, name: str) -> Path:
        """Return where a SQLite job's DATABASE_URL points."""
        return self.folder / name / "verify.sqlite3"

    def close(self) -> None:
        """Drop what ``--keep`` kept, should its test not have run."""
        kept = self.outcomes.get("pg_keep")
        if kept is not None:
            for name in set(SCRATCH_NAME.findall(kept.result.stdout)):
                admin_execute(self.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Runs]:
    batch = Runs(tmp_path_factory.mktemp("verify"), request)
    try:
        yield batch
    finally:
        batch.close()


def lines(text: str) -> list[str]:
    return text.splitlines()


def reasons(report: dict[str, Any]) -> dict[str, str | None]:
    return {check["name"]: check["reason"] for check in report["checks"]}


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


def problems(report: dict[str, Any]) -> dict[str, list[str]]:
    return {check["name"]: check["problems"] for check in report["checks"] if check["problems"]}


def scratch_of(outcome: Outcome) -> str:
    """Return the name of the scratch database a PostgreSQL run reported."""
    (name,) = set(SCRATCH_NAME.findall(outcome.result.stdout))
    return name


def expected_passed_lines(scratch_line: str) -> list[str]:
    return [scratch_line if line is SCRATCH else line for line in PASSED_LINES]


# -- the project as it is -------------------------------------------------------------------


@pytest.mark.postgresql
def test_passes_on_postgresql(runs: Runs, pg_server: URL) -> None:
    outcome = runs("pg_text")
    assert outcome.result.returncode == 0, outcome.result.stderr
    scratch = scratch_of(outcome)
    shown_scratch = shown(pg_server.set(database=scratch))
    assert lines(outcome.result.stdout) == expected_passed_lines(
        f"Scratch database: {shown_scratch}"
    )
    assert outcome.result.stderr == ""


@pytest.mark.postgresql
def test_json_report_on_postgresql(runs: Runs, pg_server: URL) -> None:
    outcome = runs("pg_json")
    assert outcome.result.returncode == 0, outcome.result.stderr
    assert outcome.result.stderr == ""
    report = outcome.report
    assert list(report) == [
        "database", "url", "direct", "passed", "dialect", "scratch", "ledger_written", "checks",
    ]  # fmt: skip
    assert (report["database"], report["url"], report["direct"]) == (
        "default",
        shown(pg_server),
        False,
    )
    assert report["passed"] is True
    assert report["dialect"] == "postgresql"
    assert SCRATCH_NAME.fullmatch(sa.make_url(report["scratch"]).database)
    assert report["scratch"] == shown(
        pg_server.set(database=sa.make_url(report["scratch"]).database)
    )
    assert report["ledger_written"] is False
    assert [check["name"] for check in report["checks"]] == list(CHECKS)
    for check in report["checks"]:
        assert list(check) == ["name", "title", "status", "seconds", "problems", "reason", "notes"]
        assert check["title"] == TITLES[check["name"]]
        assert check["status"] == "passed"
        assert check["problems"] == []
        assert isinstance(check["seconds"], float)
        assert check["seconds"] >= 0
    # The steps that touch the database take measurable time.
    durations = {check["name"]: check["seconds"] for check in report["checks"]}
    assert durations["upgrade"] > 0
    assert durations["downgrade"] > 0


def test_passes_on_sqlite_without_database_url(runs: Runs) -> None:
    default_db = PROJECT / "db.sqlite3"
    before = default_db.stat() if default_db.exists() else None
    outcome = runs("sqlite_text")
    assert outcome.result.returncode == 0, outcome.result.stderr
    (scratch_line,) = [line for line in lines(outcome.result.stdout) if "Scratch" in line]
    assert re.fullmatch(
        rf"Scratch database: sqlite:///{re.escape(str(outcome.tmpdir))}/"
        rf"{SCRATCH_PREFIX}\w+/scratch\.sqlite3",
        scratch_line,
    ), scratch_line
    assert lines(outcome.result.stdout) == expected_passed_lines(scratch_line)
    assert outcome.result.stderr == ""
    # The scratch file is gone, and the project's own database was never touched.
    assert list(outcome.tmpdir.iterdir()) == []
    after = default_db.stat() if default_db.exists() else None
    assert (after and (after.st_mtime_ns, after.st_size)) == (
        before and (before.st_mtime_ns, before.st_size)
    )


def test_json_report_on_sqlite(runs: Runs) -> None:
    outcome = runs("sqlite_json")
    assert outcome.result.returncode == 0, outcome.result.stderr
    report = outcome.report
    assert report["passed"] is True
    assert report["dialect"] == "sqlite"
    assert report["ledger_written"] is False
    assert statuses(report) == dict.fromkeys(CHECKS, "passed")
    assert list(outcome.tmpdir.iterdir()) == []
    # Verification never creates the database it is pointed at.
    assert not runs.database("sqlite_json").exists()


# -- broken variants, each in its own copy of the project -------------------------------------


@pytest.mark.postgresql
def test_model_field_without_migration(runs: Runs, pg_server: URL) -> None:
    outcome = runs("model_field")
    assert outcome.result.returncode == 1
    scratch = shown(pg_server.set(database=scratch_of(outcome)))
    expected = expected_passed_lines(f"Scratch database: {scratch}")[:-1]
    at = expected.index("  models equal the DDL at head: passed")
    expected[at : at + 1] = [
        "  models equal the DDL at head: FAILED",
        "    - materials.MaterialDetectionJob.priority: "
        "column material_detection_jobs.priority is missing",
    ]
    assert lines(outcome.result.stdout) == expected
    assert outcome.result.stderr == "Verification failed: models equal the DDL at head.\n"


@pytest.mark.postgresql
def test_downgrade_that_leaves_a_column(runs: Runs) -> None:
    outcome = runs("downgrade_trace")
    assert outcome.result.returncode == 1, outcome.result.stderr
    report = outcome.report
    assert report["passed"] is False
    assert statuses(report) == {
        **dict.fromkeys(CHECKS, "passed"),
        "downgrade": "failed",
        # It would upgrade from the trace the downgrade left.
        "upgrade_again": "skipped",
        "ledger_fresh": "failed",
    }
    assert problems(report) == {
        "downgrade": [STEP_TRACE],
        "ledger_fresh": [f"revision {ADDED} is not in the ledger", REGENERATE],
    }


@pytest.mark.postgresql
def test_two_heads(runs: Runs) -> None:
    outcome = runs("two_heads")
    assert outcome.result.returncode == 1
    heads = re.search(r"2 heads: (\w+), (\w+);", outcome.result.stdout)
    assert heads is not None, outcome.result.stdout
    assert sorted(heads.groups()) == [BRANCH_A, BRANCH_B]
    assert lines(outcome.result.stdout) == [
        "  single head and an intact chain: FAILED",
        f"    - 2 heads: {heads[1]}, {heads[2]}; merge them with `alembic merge heads`",
        *(f"  {TITLES[name]}: skipped ({SKIPPED_BECAUSE[name]})" for name in CHECKS[1:]),
    ]
    assert outcome.result.stderr == ("Verification failed: single head and an intact chain.\n")


@pytest.mark.postgresql
def test_revision_that_fails_when_applied_twice(runs: Runs) -> None:
    report = runs("twice_fails").report
    assert runs("twice_fails").result.returncode == 1
    assert statuses(report) == {
        **dict.fromkeys(CHECKS, "passed"),
        "idempotent": "failed",
        # They would read what the second application made of the schema.
        **dict.fromkeys(("models_match_ddl", "downgrade", "upgrade_again"), "skipped"),
        "ledger_fresh": "failed",
    }
    assert problems(report)["idempotent"] == [
        f"revision {ADDED} fails when applied a second time: "
        'column "priority" of relation "material_detection_jobs" already exists'
    ]


def test_revision_that_fails_when_applied_twice_on_sqlite(runs: Runs) -> None:
    outcome = runs("sqlite_twice_fails")
    assert outcome.result.returncode == 1
    report = outcome.report
    assert statuses(report) == {
        **dict.fromkeys(CHECKS, "passed"),
        "idempotent": "failed",
        # They would read what the second application made of the schema.
        **dict.fromkeys(("models_match_ddl", "downgrade", "upgrade_again"), "skipped"),
        "ledger_fresh": "failed",
    }
    assert problems(report)["idempotent"] == [
        f"revision {ADDED} fails when applied a second time: duplicate column name: priority"
    ]
    assert list(outcome.tmpdir.iterdir()) == []


def test_revision_that_fails_when_applied_twice_is_flagged_in_the_upgrade_check(
    runs: Runs,
) -> None:
    """The upgrade check passes, and its line for the revision flags the second application."""
    result = runs("sqlite_twice_fails_text").result
    lines = result.stdout.splitlines()
    upgrade = lines.index(f"  {TITLES['upgrade']}:")
    assert lines[upgrade + 1 : upgrade + 6] == [
        f"    {BASELINE} OK",
        f"    {SECOND} OK",
        f"    {HEAD} OK",
        f"    {ADDED} OK (not safe to apply twice)",
        "    result: passed",
    ]
    assert result.stderr == (
        f"Verification failed: {TITLES['idempotent']}, {TITLES['ledger_fresh']}.\n"
    )


@pytest.mark.postgresql
def test_revision_that_changes_the_schema_when_applied_twice(runs: Runs) -> None:
    outcome = runs("twice_changes")
    assert outcome.result.returncode == 1
    report = outcome.report
    assert problems(report)["idempotent"] == [
        f"revision {ADDED} changes the schema when applied a second time: "
        "index ix_jobs_priority_3 is unexpected"
    ]
    assert statuses(report) == {
        **dict.fromkeys(CHECKS, "passed"),
        # It inspects the database as it runs: there is no offline SQL to lint.
        "lock_safety": "failed",
        "idempotent": "failed",
        # The second application's index is on the scratch database: the checks that
        # would read it are skipped, and say why, instead of failing because of it.
        **dict.fromkeys(("models_match_ddl", "downgrade", "upgrade_again"), "skipped"),
        "ledger_fresh": "failed",
    }
    assert reasons(report)["models_match_ddl"] == (
        f"it needs {TITLES['idempotent']!r}, which failed"
    )


@pytest.mark.postgresql
def test_script_edited_after_the_ledger(runs: Runs) -> None:
    outcome = runs("edited")
    assert outcome.result.returncode == 1
    report = outcome.report
    assert statuses(report) == {**dict.fromkeys(CHECKS, "passed"), "ledger_fresh": "failed"}
    assert problems(report) == {
        "ledger_fresh": [
            f"revision {HEAD}'s script changed after the ledger was written",
            REGENERATE,
        ]
    }
    assert report["ledger_written"] is False
    assert ledger_of(outcome.tree) == ledger_of(PROJECT)


@pytest.mark.postgresql
def test_update_ledger_rewrites_the_stale_ledger(runs: Runs) -> None:
    outcome = runs("edited_update")
    assert outcome.result.returncode == 0, outcome.result.stderr
    report = outcome.report
    assert report["passed"] is True
    assert report["ledger_written"] is True
    assert statuses(report) == {**dict.fromkeys(CHECKS, "passed"), "ledger_fresh": "updated"}
    # Only the edited script's checksum changed: the schemas are the same.
    new, old = ledger_of(outcome.tree), ledger_of(PROJECT)
    digest = hashlib.sha256(script_of(outcome.tree, HEAD).read_bytes()).hexdigest()
    assert new["revisions"][HEAD]["checksum"] == f"sha256:{digest}"
    assert old["revisions"][HEAD]["checksum"] != f"sha256:{digest}"
    old["revisions"][HEAD]["checksum"] = f"sha256:{digest}"
    assert new == old


# -- scratch databases ---------------------------------------------------------------------


@pytest.mark.postgresql
def test_no_scratch_database_is_left(runs: Runs) -> None:
    outcomes = {name: runs(name) for name, job in JOBS.items() if job.dialect == "postgresql"}
    # Two heads end before any is made.
    assert not SCRATCH_NAME.findall(outcomes["two_heads"].result.stdout)
    kept = scratch_of(outcomes["pg_keep"])
    # Only --keep's stays; two heads end before any is made. Other runs on the
    # server (test workers, checkouts) may be using scratch databases of their
    # own meanwhile: those are claimed, and not counted.
    assert kept in runs.scratch_after
    new = runs.scratch_after - runs.scratch_before - {kept}
    assert abandoned_scratch_databases(runs.server, new) == set()
    for name, outcome in outcomes.items():
        if name not in ("two_heads", "pg_keep"):
            assert scratch_of(outcome) not in runs.scratch_after, name


@pytest.mark.postgresql
def test_keep_keeps_the_scratch_database(runs: Runs, pg_server: URL) -> None:
    outcome = runs("pg_keep")
    name = scratch_of(outcome)
    try:
        assert outcome.result.returncode == 0, outcome.result.stderr
        expected = expected_passed_lines(
            f"Scratch database: {shown(pg_server.set(database=name))} (kept)"
        )
        assert lines(outcome.result.stdout) == expected
        assert name in scratch_databases(pg_server)
        # It is left at head, ready to look at.
        engine = sa.create_engine(pg_server.set(database=name), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                version = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
                assert version.scalars().all() == [HEAD]
        finally:
            engine.dispose()
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert name not in scratch_databases(pg_server)


@pytest.mark.postgresql
def test_sigint_mid_upgrade_drops_the_scratch_database(tmp_path: Path, pg_server: URL) -> None:
    tree = project_tree(tmp_path / "project")
    sleeps(tree)
    before = scratch_databases(pg_server)
    admin = sa.create_engine(pg_server, poolclass=sa.pool.NullPool)

    def sleeping() -> str | None:
        with admin.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT datname FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' "
                    "AND state = 'active' AND datname LIKE :prefix"
                ),
                {"prefix": f"{SCRATCH_PREFIX}%"},
            ).scalar()

    # SIGINT as at a terminal, even where this test runs with it ignored.
    process = subprocess.Popen(
        **command(tree, tmp_path / "tmp", pg_server),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    scratch = None
    try:
        scratch = wait_for(sleeping, 60, "the revision's pg_sleep on a scratch database")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        left = scratch_databases(pg_server)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if scratch is not None:
            admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        admin.dispose()
    # Interrupted while the added revision sleeps, the first time it is applied.
    assert process.returncode == 130
    assert stderr == "Interrupted: any open transaction was rolled back.\n", stderr
    assert lines(stdout) == [
        "  single head and an intact chain: passed",
        f"  {TITLES['lock_safety']}: passed",
        f"Scratch database: {shown(pg_server.set(database=scratch))}",
        "  upgrade from empty to head, one revision at a time:",
        f"    {BASELINE} OK",
        f"    {SECOND} OK",
        f"    {HEAD} OK",
    ]
    assert scratch not in left
    assert abandoned_scratch_databases(pg_server, left - before) == set()


@pytest.mark.postgresql
def test_user_without_createdb(tmp_path: Path, pg_server: URL) -> None:
    role, password = f"verify_nocreatedb_{uuid.uuid4().hex[:8]}", "x-Pass-1"
    admin_execute(pg_server, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        admin_execute(pg_server, f'GRANT CONNECT ON DATABASE "{pg_server.database}" TO {role}')
        url = pg_server.set(username=role, password=password)
        process = subprocess.Popen(**command(PROJECT, tmp_path / "tmp", url))
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
        owned = databases_owned_by(pg_server, role)
    finally:
        admin_execute(pg_server, f'REVOKE ALL ON DATABASE "{pg_server.database}" FROM {role}')
        admin_execute(pg_server, f"DROP ROLE {role}")
    assert process.returncode == 1
    server = shown(url.set(database=None))
    assert stderr == (
        f"CommandError: user {role} may not create databases on {server}: the scratch database "
        "needs the CREATEDB right (ALTER ROLE ... CREATEDB)\n"
    )
    assert stdout == (
        f"  single head and an intact chain: passed\n  {TITLES['lock_safety']}: passed\n"
    )
    assert password not in stdout + stderr
    assert django_url(url) not in stdout + stderr
    # Nothing was made (other runs on the server make their own meanwhile).
    assert owned == []


def databases_owned_by(server: URL, role: str) -> list[str]:
    engine = sa.create_engine(server, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    sa.text(
                        "SELECT datname FROM pg_database "
                        "WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = :role)"
                    ),
                    {"role": role},
                ).scalars()
            )
    finally:
        engine.dispose()
