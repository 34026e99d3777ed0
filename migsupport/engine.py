"""SQLAlchemy engines for Django's database aliases.

Alembic must migrate exactly the database Django uses, so the URL is built
from Django's ``DATABASES`` entry and never from a second configuration.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from django.db import DEFAULT_DB_ALIAS, connections
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from migsupport.exceptions import ConfigurationError

# Seconds to wait for a PostgreSQL connection, unless the URL sets
# ``connect_timeout`` itself (``?connect_timeout=N`` in DATABASE_URL).
CONNECT_TIMEOUT = 10

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "sqlite": "sqlite",
}


def url_for_alias(alias: str = DEFAULT_DB_ALIAS) -> URL:
    """Return the SQLAlchemy URL of the Django database ``alias``.

    The connection's live ``settings_dict`` is used, so under the test
    runner this is the test database.
    """
    try:
        connection = connections[alias]
    except Exception as exc:  # ConnectionDoesNotExist
        raise ConfigurationError(f"unknown database alias {alias!r}") from exc
    vendor = connection.vendor
    params: dict[str, Any] = connection.settings_dict
    if vendor not in _DRIVERS:
        raise ConfigurationError(
            f"database {alias!r} uses {vendor}; migsupport supports PostgreSQL and SQLite"
        )
    if vendor == "sqlite":
        return URL.create("sqlite", database=str(params["NAME"]))
    query = {
        key: str(value)
        for key, value in (params.get("OPTIONS") or {}).items()
        if isinstance(value, (str, int))
    }
    return URL.create(
        _DRIVERS[vendor],
        username=params.get("USER") or None,
        password=params.get("PASSWORD") or None,
        host=params.get("HOST") or None,
        port=int(params["PORT"]) if params.get("PORT") else None,
        database=params.get("NAME") or None,
        query=query,
    )


def safe_url(url: URL | str) -> str:
    """Render ``url`` for people: the password, if any, is masked."""
    url = sa.make_url(url)
    # The driver is an implementation detail: show the URL as DATABASE_URL spells it.
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def error_line(exc: BaseException, url: URL | None = None) -> str:
    """Return the first line of what went wrong, for a one-line error.

    For a driver error it is the driver's own message, not SQLAlchemy's
    wrapper with the statement; the password of ``url``, if any, is masked;
    an exception without a message gives its type's name.
    """
    orig = getattr(exc, "orig", None)
    cause = orig if orig is not None else exc
    line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if url is not None and url.password:
        line = line.replace(str(url.password), "***")
    return line


def create_engine(url: URL | str, *, application_name: str | None = None) -> Engine:
    """Return a new engine on ``url``, with transactional DDL on SQLite too.

    ``NullPool``: each operation holds one connection for its whole life (lock,
    checks, stamp, upgrade) and closes it, so no pooled session keeps a lock.
    On PostgreSQL, connecting gives up after ``CONNECT_TIMEOUT`` seconds
    unless the URL says otherwise. On SQLite, the driver's own transaction
    handling is switched off and SQLAlchemy emits ``BEGIN`` itself, so a
    failing revision's DDL rolls back instead of being half-applied (the
    recipe from SQLAlchemy's SQLite notes).
    """
    url = sa.make_url(url)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        if application_name:
            # Shown in pg_stat_activity, so a lock's holder can be named.
            connect_args["application_name"] = application_name
        if "connect_timeout" not in url.query:
            # A host that never answers would otherwise hold a deploy for
            # minutes (the operating system's TCP timeout) before failing.
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
            # Foreign keys stay unenforced (SQLite's default) on migration
            # connections: a batch-mode table rebuild drops the old table, and
            # with enforcement on that would cascade into the child rows.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection: sa.Connection) -> None:
            connection.exec_driver_sql("BEGIN")

    return engine


def engine_for_alias(
    alias: str = DEFAULT_DB_ALIAS, *, application_name: str | None = None
) -> Engine:
    """Return a new engine on the Django database ``alias``."""
    return create_engine(url_for_alias(alias), application_name=application_name)
