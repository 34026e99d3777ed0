"""Shared by the guarded-command tests: databases in each state, reached for real.

Every state is built the way it happens in the field: the migrations run
(unguarded, through ``tests.migrate``), the deployed DDL loaded, an index
dropped by hand, ``alembic_version`` removed or edited. Commands run in
subprocesses exactly as a deploy runs them (``spawn``/``manage``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.catalog import catalog
from tests.conftest import PROJECT, _server_url, create_pg_database, drop_pg_database
from tests.migrate import run
from tests.test_commands import clean_environ, django_url
from tests.test_production_schema import load_production_schema

BASELINE = "b662310f1380"
HEAD = "7c1d2e3f4a5b"
UNKNOWN = "0123456789ab"
DRIFT_INDEX = "ix_detected_materials_material_name"
DOMAIN_TABLES = ("detected_materials", "material_detection_jobs")

APPLY_BASELINE = "  Applying b662310f1380 (Baseline: the deployed schema.)... OK"
APPLY_HEAD = (
    "  Applying 7c1d2e3f4a5b (Cancelled jobs, the model version, and an index for a job's "
    "best materials.)... OK"
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


def execute(engine: Engine, *statements: str) -> None:
    """Run SQL statements outside any command, and commit them."""
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def versions(engine: Engine) -> list[str] | None:
    """Return the rows of alembic_version, or None when the table does not exist."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return [r[0] for r in connection.exec_driver_sql("SELECT version_num FROM alembic_version")]


def reach(engine: Engine, state: str) -> None:
    """Bring the empty database behind ``engine`` into ``state``."""
    if state == "empty":
        return
    if state == "unversioned_at_baseline":
        if engine.dialect.name == "postgresql":
            load_production_schema(engine)
        else:
            run(engine, "upgrade", BASELINE)
            execute(engine, "DROP TABLE alembic_version")
        return
    if state == "behind":
        run(engine, "upgrade", BASELINE)
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
        assert state == "up_to_date", state


def refusal(message: str, *differences: str) -> str:
    """Return the stderr of a refusal: the differences, then the one-line error."""
    lines = ["Differences from the expected schema:", *(f"  - {d}" for d in differences)]
    return "\n".join([*(lines if differences else []), f"CommandError: {message}", ""])


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
                self.pg_url = url = create_pg_database(_server_url())
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
            drop_pg_database(_server_url(), self.pg_url)


def command_environ(database_url: URL | None, **env: str) -> dict[str, str]:
    """Return the environment ``tests.test_commands.manage`` gives manage.py."""
    environ = clean_environ("DATABASE_URL", "DEBUG")
    environ["SECRET_KEY"] = "tests-only-not-secret"
    if database_url is not None:
        environ["DATABASE_URL"] = django_url(database_url)
    environ.update(env)
    return environ


def spawn(*args: str, database_url: URL, **env: str) -> subprocess.Popen:
    """Start ``manage.py *args`` in a new process, without waiting for it."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=command_environ(database_url, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def project_copy(folder: Path) -> tuple[Path, dict[str, str]]:
    """Copy the project's Alembic setup into ``folder``; return its versions folder and env.

    The environment points manage.py at the copy through a settings module
    that only adds ``MIGSUPPORT_ALEMBIC_INI``, so revisions can be added to
    the copy without touching the project.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "alembic.ini", folder / "alembic.ini")
    shutil.copytree(
        PROJECT / "alembic", folder / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    module = "migsupport_copy_settings"
    (folder / f"{module}.py").write_text(
        "from tests.settings import *  # noqa: F403\n\n"
        f"MIGSUPPORT_ALEMBIC_INI = {str(folder / 'alembic.ini')!r}\n"
    )
    return folder / "alembic" / "versions", {
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONPATH": str(folder),
    }


@dataclass(frozen=True)
class Job:
    """One command to run on a new database of ``dialect``, once ``prepare`` has built it."""

    dialect: str
    prepare: Callable[[Engine], None]
    args: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """A job's database, what it held before the command, and what the command did."""

    url: URL
    engine: Engine
    before: dict[str, Any]
    versions_before: list[str] | None
    result: subprocess.CompletedProcess


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
            url = create_pg_database(_server_url())
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
            drop_pg_database(_server_url(), url)
