"""The sessions and advisory locks the commands leave on a PostgreSQL server."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from tests.support.states import scalar

# The deploy lock of the ``default`` alias, as alembic_upgrade and alembic_stamp name it.
PG_LOCK_NAME = "alembic_version:default"
UPGRADE_APPLICATION = "migsupport alembic_upgrade"


def upgrade_sessions(engine: Engine) -> list[int]:
    """Return the pids of the upgrade command's sessions on the database behind ``engine``."""
    pids = scalar(
        engine,
        "SELECT array_agg(pid ORDER BY pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = :application",
        application=UPGRADE_APPLICATION,
    )
    return pids or []


def command_sessions(engine: Engine) -> int:
    """Return how many sessions of any migsupport command are on the database behind ``engine``."""
    return scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'migsupport %'",
    )


def advisory_locks(engine: Engine) -> int:
    """Return how many advisory locks are held in the database behind ``engine``."""
    return scalar(
        engine,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
    )
