"""Alembic's environment for the Alembic-owned domain tables.

The plain ``alembic`` CLI works from the project root: Django is set up here
when it is not yet, and the database comes from Django's ``DATABASES``
(``-x database=ALIAS``, default ``default``), reached by its direct URL where
it has one. Callers that hold a connection (the guarded management commands,
pytest-alembic) pass it in ``config.attributes["connection"]`` and it is used
as is.
"""

from __future__ import annotations

import logging
import os
from logging.config import fileConfig

import django
import sqlalchemy as sa
from alembic import context
from django.apps import apps

if not apps.ready:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()

import alembic_postgresql_enum  # noqa: F401  (compares ENUM labels in autogenerate)

# It warns on every SQLite run that it only compares PostgreSQL's ENUMs,
# which is expected here: SQLite has none.
logging.getLogger("alembic.alembic_postgresql_enum").setLevel(logging.ERROR)

from migsupport import conf  # noqa: E402
from migsupport.bridge import comparison_options, target_metadata  # noqa: E402
from migsupport.engine import command_engine, command_target  # noqa: E402

config = context.config
external_connection = config.attributes.get("connection")

# Only the bare CLI (which sets cmd_opts) configures logging from alembic.ini;
# called from Django, Django's LOGGING rules.
if config.cmd_opts is not None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

alias = config.attributes.get("database") or context.get_x_argument(as_dictionary=True).get(
    "database", "default"
)


def _options(dialect_name: str) -> dict:
    options = {
        "target_metadata": target_metadata(),
        **comparison_options(),
        "render_as_batch": dialect_name == "sqlite",
        # migsupport.engine gives SQLite transactional DDL; Alembic assumes
        # it has none unless told.
        "transactional_ddl": True,
        "transaction_per_migration": True,
        "version_table": conf.version_table(),
    }
    # Hooks a programmatic caller may hand in: progress reporting, and
    # pytest-alembic's way to autogenerate without writing a file.
    for hook in ("on_version_apply", "process_revision_directives"):
        if config.attributes.get(hook):
            options[hook] = config.attributes[hook]
    return options


def run_migrations_offline() -> None:
    """Emit the migration SQL for review, without a database connection."""
    # A caller may ask for another dialect's script (the lock-safety lint reads PostgreSQL's).
    url = sa.make_url(config.attributes.get("offline_url") or command_target(alias).url)
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the caller's connection, or a new one."""
    if isinstance(external_connection, sa.Connection):
        _run(external_connection)
        return
    # pytest-alembic hands in an Engine rather than a Connection. The bare CLI
    # connects as the guarded commands do: by the alias's direct URL, if set.
    engine = (
        external_connection if external_connection is not None else command_engine(alias, "alembic")
    )
    with engine.connect() as connection:
        _run(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
