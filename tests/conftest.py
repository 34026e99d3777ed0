"""Fixtures: real databases on both dialects.

SQLite databases are files in the test's temporary folder. PostgreSQL
databases are created, uniquely named, on the server at ``TEST_DATABASE_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped after
the test. Without a reachable server the PostgreSQL tests skip with the
reason, loudly; under ``CI=true`` they fail instead, since CI must run them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.support.server import (
    IN_CI,
    create_pg_database,
    drop_pg_database,
    server_url,
    unreachable,
)

_pg_unavailable: list[str] = []


@pytest.fixture(scope="session")
def pg_server() -> URL:
    """Return the PostgreSQL server's URL, or skip (fail under CI) without one."""
    url = server_url()
    reason = unreachable(url)
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        _pg_unavailable.append(reason)
        pytest.skip(f"SKIPPED POSTGRESQL TEST: {reason}")
    return url


@pytest.fixture
def pg_url(pg_server: URL) -> Iterator[URL]:
    """Return the URL of a new, empty PostgreSQL database, dropped afterwards."""
    url = create_pg_database(pg_server)
    try:
        yield url
    finally:
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
    if _pg_unavailable:
        terminalreporter.section("PostgreSQL tests were SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.line(_pg_unavailable[0], red=True)
        terminalreporter.line(
            "Start PostgreSQL or set TEST_DATABASE_URL; CI=true makes this a failure."
        )
