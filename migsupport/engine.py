"""SQLAlchemy engines for Django's database aliases.

Alembic must migrate exactly the database Django uses, so the URL is built
from Django's ``DATABASES`` entry. The one exception is a direct URL for the
guarded commands (``MIGSUPPORT_DIRECT_DATABASES``): the application may reach
PostgreSQL through a transaction pooler, but the deploy lock needs a session
of its own. :func:`command_engine` is how every guarded command connects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from migsupport import conf
from migsupport.exceptions import ConfigurationError

# Seconds to wait for a PostgreSQL connection, unless the URL sets
# ``connect_timeout`` itself (``?connect_timeout=N`` in DATABASE_URL).
CONNECT_TIMEOUT = 10

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "sqlite": "sqlite",
}


# Django's own OPTIONS of the PostgreSQL backend, which are no libpq parameters.
_DJANGO_ONLY_OPTIONS = frozenset(
    {"isolation_level", "server_side_binding", "assume_role", "pool", "prepare_threshold"}
)

# The NAME of each alias when the project started, before a test runner
# switched the alias to its test database (see ``remember_configured_names``).
_configured_names: dict[str, Any] = {}


def remember_configured_names() -> None:
    """Record each alias's database NAME as configured; called once the app registry is ready.

    Django's test runner later renames the alias's database (``test_...``) in
    place; a direct URL, configured apart, must follow it there rather than
    reach the real database.
    """
    _configured_names.clear()
    _configured_names.update(
        {alias: entry.get("NAME") for alias, entry in settings.DATABASES.items()}
    )


def _url_from_entry(alias: str, vendor: str, params: dict[str, Any]) -> URL:
    if vendor not in _DRIVERS:
        raise ConfigurationError(
            f"database {alias!r} uses {vendor}; migsupport supports PostgreSQL and SQLite"
        )
    if vendor == "sqlite":
        return URL.create("sqlite", database=str(params["NAME"]))
    query = {
        key: str(value)
        for key, value in (params.get("OPTIONS") or {}).items()
        if key not in _DJANGO_ONLY_OPTIONS
        and isinstance(value, (str, int))
        and not isinstance(value, bool)
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


def _connection(alias: str) -> Any:
    try:
        return connections[alias]
    except Exception as exc:  # ConnectionDoesNotExist
        raise ConfigurationError(f"unknown database alias {alias!r}") from exc


def url_for_alias(alias: str = DEFAULT_DB_ALIAS) -> URL:
    """Return the SQLAlchemy URL of the Django database ``alias``, as the application uses it.

    The connection's live ``settings_dict`` is used, so under the test
    runner this is the test database.
    """
    connection = _connection(alias)
    return _url_from_entry(alias, connection.vendor, connection.settings_dict)


def direct_url(alias: str = DEFAULT_DB_ALIAS) -> URL | None:
    """Return the direct URL of ``alias`` for the guarded commands, or None without one.

    It comes from ``MIGSUPPORT_DIRECT_DATABASES`` (:func:`conf.direct_databases`).
    Where a test runner has switched the alias to a test database, the
    direct URL names that database too.
    """
    entry = conf.direct_databases().get(alias)
    if entry is None:
        return None
    live = _connection(alias)
    params = dict(entry)
    configured = _configured_names.get(alias, live.settings_dict.get("NAME"))
    if live.settings_dict.get("NAME") != configured:
        params["NAME"] = live.settings_dict.get("NAME")
    return _url_from_entry(alias, live.vendor, params)


@dataclass(frozen=True)
class Target:
    """The database a guarded command works on, and the URL it reaches it by."""

    alias: str
    url: URL
    direct: bool

    @property
    def shown(self) -> str:
        """The URL for people, password masked."""
        return safe_url(self.url)

    @property
    def label(self) -> str:
        """The masked URL, marked when it is the alias's direct URL."""
        return f"{self.shown} (direct)" if self.direct else self.shown

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.shown, "direct": self.direct}


def command_target(alias: str = DEFAULT_DB_ALIAS) -> Target:
    """Return where a guarded command on ``alias`` connects: its direct URL if it has one."""
    direct = direct_url(alias)
    if direct is not None:
        return Target(alias, direct, True)
    return Target(alias, url_for_alias(alias), False)


def command_engine(alias: str, command: str) -> Engine:
    """Return the engine of the guarded command ``command`` on ``alias``.

    Every guarded command builds its engine here, so that all of them reach
    the database the same way: by the alias's direct URL when it has one
    (:func:`command_target`), and named ``migsupport COMMAND`` in
    ``pg_stat_activity``.
    """
    return create_engine(command_target(alias).url, application_name=f"migsupport {command}")


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

    On PostgreSQL, psycopg never prepares statements on the server, so the
    engine works through a transaction pooler.

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
        # No server-side prepared statements: psycopg prepares a query run
        # five times, and a transaction pooler (PgBouncer) may hand that
        # server connection to another client, whose own first prepare then
        # fails ("prepared statement _pg3_0 already exists").
        connect_args["prepare_threshold"] = None
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
