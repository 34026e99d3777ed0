"""The PostgreSQL server the tests use, and the databases they create and drop on it.

The server is ``TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Without it, PostgreSQL
tests skip loudly; under ``CI=true`` they fail instead (``fail_or_skip``).
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from migsupport.locking import advisory_key_parts
from migsupport.scratch import KEPT_COMMENT, claim_key
from migsupport.scratch import PREFIX as MIGSUPPORT_SCRATCH_PREFIX

PG_SERVER_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SCRATCH_PREFIX = "migsupport_test_"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_url() -> URL:
    """Return the test server's URL, with the driver migsupport uses."""
    url = sa.make_url(PG_SERVER_URL)
    return url.set(drivername="postgresql+psycopg")


def unreachable(url: URL | str) -> str | None:
    """Return why the PostgreSQL server at ``url`` does not answer, or None when it does.

    The reason is one line, naming the server with its password masked.
    """
    url = sa.make_url(url).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        detail = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        if url.password:
            detail = detail.replace(str(url.password), "***")
        shown = url.set(drivername="postgresql").render_as_string(hide_password=True)
        return f"PostgreSQL is not reachable at {shown}: {detail}"
    finally:
        engine.dispose()
    return None


def fail_or_skip(reason: str) -> None:
    """Skip the test loudly for ``reason``; under ``CI=true``, fail it."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(f"SKIPPED POSTGRESQL TEST: {reason}")


def admin_execute(server: URL, statement: str) -> None:
    """Run ``statement`` on ``server`` in autocommit mode (CREATE DATABASE and the like)."""
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def create_pg_database(server: URL) -> URL:
    """Create a uniquely named scratch database and return its URL."""
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    admin_execute(server, f'CREATE DATABASE "{name}"')
    return server.set(database=name)


def drop_pg_database(server: URL, url: URL) -> None:
    """Drop a scratch database, ending any session still on it."""
    admin_execute(server, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def scratch_databases(server: URL) -> set[str]:
    """Return the names of migsupport's own scratch databases on ``server``."""
    engine = sa.create_engine(server, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return set(
                connection.execute(
                    sa.text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
                    {"prefix": f"{MIGSUPPORT_SCRATCH_PREFIX}%"},
                ).scalars()
            )
    finally:
        engine.dispose()


def abandoned_scratch_databases(server: URL, names: set[str]) -> set[str]:
    """Return which of ``names`` exist on ``server`` unclaimed, and not kept on purpose.

    A scratch database a live run is using is claimed by its creator's
    advisory lock (``migsupport.scratch``), so only the ones left behind by
    runs that have ended are returned, whatever else runs on the server
    meanwhile (other test workers, other checkouts).
    """
    if not names:
        return set()
    claims = [{"name": name, **advisory_key_parts(claim_key(name))} for name in sorted(names)]
    values = ", ".join(f"(:name{i}, :high{i}, :low{i})" for i in range(len(claims)))
    params = {f"{key}{i}": value for i, claim in enumerate(claims) for key, value in claim.items()}
    engine = sa.create_engine(server, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return set(
                connection.execute(
                    sa.text(
                        f"SELECT c.name FROM (VALUES {values}) AS c (name, high, low) "
                        "JOIN pg_database d ON d.datname = c.name "
                        "WHERE coalesce(shobj_description(d.oid, 'pg_database'), '') <> :kept "
                        "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' "
                        "AND l.granted AND l.classid = c.high::oid AND l.objid = c.low::oid "
                        "AND l.objsubid = 1)"
                    ),
                    {**params, "kept": KEPT_COMMENT},
                ).scalars()
            )
    finally:
        engine.dispose()


if __name__ == "__main__":
    # ``python -m tests.support.server URL``: the Makefile's probe of the server a run uses.
    reason = unreachable(sys.argv[1] if len(sys.argv) > 1 else PG_SERVER_URL)
    if reason:
        sys.exit(reason)
