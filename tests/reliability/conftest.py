"""Fixtures of the reliability suite: real PostgreSQL servers and revision catalogs.

Everything here runs against real servers: the one at ``TEST_DATABASE_URL``
(``pg_server``), and, for what needs password authentication, a private
PostgreSQL cluster this suite starts itself with ``scram-sha-256``
(``password_server``, from ``tests.support.cluster``), since the shared
server trusts every local user. The helpers live in ``tests.support``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from migsupport.engine import create_engine
from tests.support.catalog import catalog
from tests.support.cluster import password_cluster
from tests.support.migrate import run
from tests.support.server import create_pg_database, drop_pg_database
from tests.support.states import REVISIONS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.postgresql)
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def revision_catalogs(pg_server: URL) -> dict[str | None, dict[str, Any]]:
    """Return the catalog of a PostgreSQL database at each revision, built once."""
    url = create_pg_database(pg_server)
    engine = create_engine(url)
    try:
        catalogs = {None: catalog(engine)}
        for revision in REVISIONS[1:]:
            run(engine, "upgrade", revision)
            catalogs[revision] = catalog(engine)
        return catalogs
    finally:
        engine.dispose()
        drop_pg_database(pg_server, url)


@pytest.fixture(scope="session")
def password_server(pg_server: URL) -> Iterator[URL]:
    """Return a private PostgreSQL cluster that authenticates with passwords.

    Its superuser is ``postgres`` with ``SUPERUSER_PASSWORD``. The cluster
    is stopped and deleted at the end of the session.
    """
    with password_cluster(pg_server) as url:
        yield url
