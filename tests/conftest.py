"""Fixtures: real databases on both dialects.

SQLite databases are files in the test's temporary folder. PostgreSQL
databases are created, uniquely named, on the server at ``TEST_DATABASE_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped after
the test. Without a reachable server the PostgreSQL tests skip with the
reason, loudly; under ``CI=true`` they fail instead, since CI must run them.
"""

from __future__ import annotations

import compileall
import py_compile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.support import rounds
from tests.support.project import PROJECT
from tests.support.server import (
    IN_CI,
    create_pg_database,
    drop_pg_database,
    server_url,
    unreachable,
)
from tests.support.templates import Templates

PG_SKIPPED = "SKIPPED POSTGRESQL TEST: "


def pytest_addoption(parser: pytest.Parser) -> None:
    rounds.add_option(parser)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # once per run, not once per test worker
        compile_project()


def compile_project() -> None:
    """Write the bytecode of the project's own modules, checked by hash, before the tests.

    The tests start manage.py hundreds of times, and each start compiles the
    project's modules again when nothing caches them (PYTHONDONTWRITEBYTECODE,
    which this machine sets): about a sixth of a command's start-up. A
    hash-checked .pyc is used only while its source is unchanged, so a copy
    or an edited script is always compiled afresh.
    """
    for folder in ("config", "materials", "migsupport", "alembic"):
        compileall.compile_dir(
            PROJECT / folder,
            quiet=2,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )


@pytest.fixture(scope="session")
def pg_server() -> URL:
    """Return the PostgreSQL server's URL, or skip (fail under CI) without one."""
    url = server_url()
    reason = unreachable(url)
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(f"{PG_SKIPPED}{reason}")
    return url


@pytest.fixture
def pg_url(pg_server: URL) -> Iterator[URL]:
    """Return the URL of a new, empty PostgreSQL database, dropped afterwards."""
    url = create_pg_database(pg_server)
    try:
        yield url
    finally:
        drop_pg_database(pg_server, url)


@pytest.fixture(scope="session")
def pg_templates(pg_server: URL) -> Iterator[Templates]:
    """Template databases on the server, each built once per session (per test worker)."""
    templates = Templates(pg_server)
    try:
        yield templates
    finally:
        templates.close()


@pytest.fixture
def pg_copy(pg_server: URL, pg_templates: Templates) -> Iterator[Callable[..., tuple[URL, Engine]]]:
    """Return ``copy(name, build)``: a new database copied from a template, and its engine.

    The template ``name`` is built by ``build(engine)`` on first use; every
    copy is dropped after the test.
    """
    made: list[tuple[URL, Engine]] = []

    def copy(name: str, build: Callable[[Engine], None]) -> tuple[URL, Engine]:
        url = pg_templates.copy(name, build)
        made.append((url, create_engine(url)))
        return made[-1]

    try:
        yield copy
    finally:
        for url, engine in made:
            engine.dispose()
            drop_pg_database(pg_server, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> URL:
    """Return the URL of a new, empty SQLite database file."""
    return URL.create("sqlite", database=str(tmp_path / "scratch.sqlite3"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def dialect_name(request: pytest.FixtureRequest) -> str:
    """The dialect, once its server is known to be there (PostgreSQL skips loudly)."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_server")
    return request.param


@pytest.fixture
def database_url(dialect_name: str, request: pytest.FixtureRequest) -> URL:
    """Return an empty database's URL, once per dialect."""
    return request.getfixturevalue("pg_url" if dialect_name == "postgresql" else "sqlite_url")


@pytest.fixture
def engine(database_url: URL) -> Iterator[Engine]:
    """Return an engine on the empty database, as migsupport builds them."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url: URL) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def migration_ops(engine: Engine) -> Iterator[Operations]:
    """Run ``alembic.op`` calls (and so migsupport.ops) on the empty database.

    Everything runs in one transaction that is committed at the end of the
    test, as a revision's would be.
    """
    with engine.begin() as connection:
        context = MigrationContext.configure(connection)
        with Operations.context(context) as operations:
            yield operations


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Give Django's test database the domain tables, from the Alembic migrations."""
    from migsupport import api

    with django_db_blocker.unblock():
        api.upgrade("head", database="default")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # From the skips' reports, which reach this process from every test worker too.
    reasons = [
        str(report.longrepr[2]).removeprefix(f"Skipped: {PG_SKIPPED}")
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and PG_SKIPPED in str(report.longrepr[2])
    ]
    if reasons:
        terminalreporter.section("PostgreSQL tests were SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.line(reasons[0], red=True)
        terminalreporter.line(
            "Start PostgreSQL or set TEST_DATABASE_URL; CI=true makes this a failure."
        )
