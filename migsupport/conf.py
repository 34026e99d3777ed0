"""migsupport's settings: one function per ``MIGSUPPORT_*`` setting.

Each function reads ``django.conf.settings`` at call time, so tests can
override them, and documents its default.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from migsupport.exceptions import ConfigurationError


def alembic_apps() -> list[str]:
    """Return the labels of the apps whose models Alembic owns.

    ``MIGSUPPORT_APPS``; there is no default, since migsupport must never
    guess which tables it may change.
    """
    apps = getattr(settings, "MIGSUPPORT_APPS", None)
    if not apps:
        raise ConfigurationError(
            "MIGSUPPORT_APPS is not set: list the app labels whose tables Alembic owns"
        )
    return list(apps)


def alembic_ini() -> Path:
    """Return the path of ``alembic.ini``.

    ``MIGSUPPORT_ALEMBIC_INI``; defaults to ``alembic.ini`` in ``BASE_DIR``.
    """
    configured = getattr(settings, "MIGSUPPORT_ALEMBIC_INI", None)
    if configured:
        return Path(configured)
    return Path(getattr(settings, "BASE_DIR", Path.cwd())) / "alembic.ini"


def version_table() -> str:
    """Return the name of Alembic's version table.

    ``MIGSUPPORT_VERSION_TABLE``; defaults to ``alembic_version``.
    """
    return getattr(settings, "MIGSUPPORT_VERSION_TABLE", "alembic_version")


def deploy_log_table() -> str:
    """Return the name of the deploy log's table (:mod:`migsupport.deploylog`).

    ``MIGSUPPORT_DEPLOY_LOG_TABLE``; defaults to ``migsupport_deploy_log``.
    """
    return getattr(settings, "MIGSUPPORT_DEPLOY_LOG_TABLE", "migsupport_deploy_log")


def app_version() -> str | None:
    """Return the application's version, as the deploy log records it.

    ``MIGSUPPORT_APP_VERSION`` (the project reads it from ``APP_VERSION``);
    defaults to None.
    """
    value = getattr(settings, "MIGSUPPORT_APP_VERSION", None)
    return str(value) if value else None


def include_object() -> Callable[[str, str, bool], bool] | None:
    """Return the hook that decides which objects of the schema Alembic owns, if any.

    ``MIGSUPPORT_INCLUDE_OBJECT``: a callable, or its dotted path, called as
    ``include_object(kind, name, owned)`` for every object of the schema
    (``kind`` is ``"tables"``, ``"enums"``, ``"domains"``, ``"sequences"``,
    ``"functions"`` or ``"extensions"``; ``owned`` is the default rule's
    answer: a model's table, or an object some revision creates). True means
    the object is compared; False means it is listed as unowned and ignored.
    Defaults to None: the default rule alone, as Alembic's ``include_object``.
    """
    hook = getattr(settings, "MIGSUPPORT_INCLUDE_OBJECT", None)
    if hook is None or callable(hook):
        return hook
    try:
        return import_string(hook)
    except ImportError as exc:
        raise ConfigurationError(
            f"MIGSUPPORT_INCLUDE_OBJECT: cannot import {hook!r}: {exc}"
        ) from exc


def strict_ownership() -> bool:
    """Return whether objects no model and no revision defines refuse a deploy.

    ``MIGSUPPORT_STRICT_OWNERSHIP``; defaults to False: such objects are
    listed as unowned, as a warning, and never block a deploy.
    """
    return bool(getattr(settings, "MIGSUPPORT_STRICT_OWNERSHIP", False))


def direct_databases() -> dict[str, dict[str, Any]]:
    """Return each alias's direct connection, for the guarded commands, as a DATABASES entry.

    ``MIGSUPPORT_DIRECT_DATABASES``: ``{alias: entry}``, each entry shaped like
    one of Django's ``DATABASES`` (``ENGINE``, ``NAME``, ``USER``, ``PASSWORD``,
    ``HOST``, ``PORT``, ``OPTIONS``); defaults to none. The application keeps
    its own, perhaps pooled, ``DATABASES``; the deploy lock needs a session of
    its own from start to end, which a transaction pooler does not give.
    """
    configured = getattr(settings, "MIGSUPPORT_DIRECT_DATABASES", None) or {}
    if not isinstance(configured, dict):
        raise ConfigurationError(
            "MIGSUPPORT_DIRECT_DATABASES must map database aliases to DATABASES-style entries"
        )
    databases = getattr(settings, "DATABASES", {})
    for alias, entry in configured.items():
        if alias not in databases:
            raise ConfigurationError(
                f"MIGSUPPORT_DIRECT_DATABASES names {alias!r}, which is not in DATABASES"
            )
        if not isinstance(entry, dict) or not entry.get("ENGINE"):
            raise ConfigurationError(
                f"MIGSUPPORT_DIRECT_DATABASES[{alias!r}] must be a DATABASES-style entry "
                "with an ENGINE"
            )
        if entry["ENGINE"] != databases[alias].get("ENGINE"):
            raise ConfigurationError(
                f"MIGSUPPORT_DIRECT_DATABASES[{alias!r}] uses {entry['ENGINE']}, but the "
                f"database {alias!r} uses {databases[alias].get('ENGINE')}: a direct "
                "connection must reach the same database"
            )
    return dict(configured)


def _seconds(name: str, default: float | None, *, allow_none: bool = False) -> float | None:
    value = getattr(settings, name, default)
    if value is None and allow_none:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}") from None
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, not {value!r}")
    return seconds


def ddl_lock_timeout() -> float:
    """Return how long each DDL statement of a guarded command may wait for a lock, in seconds.

    ``MIGSUPPORT_DDL_LOCK_TIMEOUT``; defaults to 2. PostgreSQL's
    ``lock_timeout`` for the revisions' statements, transactional and
    autocommit alike: a lock not granted in time rolls the revision back and
    it is tried again, so that the application never queues behind a
    migration that queues behind a long transaction. 0 waits without limit.
    """
    return _seconds("MIGSUPPORT_DDL_LOCK_TIMEOUT", 2.0) or 0.0


def ddl_retry_budget() -> float:
    """Return how long a revision may keep being retried when its locks are not granted.

    ``MIGSUPPORT_DDL_RETRY_BUDGET``, in seconds; defaults to 600. When it is
    spent the command fails, at the last whole revision.
    """
    return _seconds("MIGSUPPORT_DDL_RETRY_BUDGET", 600.0) or 0.0


def statement_timeout() -> float | None:
    """Return the ``statement_timeout`` of the revisions' statements, in seconds, or None.

    ``MIGSUPPORT_STATEMENT_TIMEOUT``; defaults to None (off). It never
    applies to a concurrent index build unless
    ``MIGSUPPORT_STATEMENT_TIMEOUT_ON_BUILDS`` says so.
    """
    return _seconds("MIGSUPPORT_STATEMENT_TIMEOUT", None, allow_none=True)


def statement_timeout_on_builds() -> bool:
    """Return whether the statement timeout also bounds concurrent index builds.

    ``MIGSUPPORT_STATEMENT_TIMEOUT_ON_BUILDS``; defaults to False: a build on
    a large table takes as long as it takes, and is not blocking anyone.
    """
    return bool(getattr(settings, "MIGSUPPORT_STATEMENT_TIMEOUT_ON_BUILDS", False))


def large_table_rows() -> int:
    """Return the estimated rows from which ``--plan`` warns about a step that blocks a table.

    ``MIGSUPPORT_LARGE_TABLE_ROWS``; defaults to 100,000.
    """
    return int(getattr(settings, "MIGSUPPORT_LARGE_TABLE_ROWS", 100_000))


def health_cache_seconds() -> float:
    """Return how long the readiness probe keeps a database's state, in seconds.

    ``MIGSUPPORT_HEALTH_CACHE_SECONDS``; defaults to 10. 0 reads the state on
    every probe.
    """
    return float(getattr(settings, "MIGSUPPORT_HEALTH_CACHE_SECONDS", 10))


def health_cache() -> str:
    """Return the alias of the Django cache the readiness probe keeps states in.

    ``MIGSUPPORT_HEALTH_CACHE``; defaults to ``default``.
    """
    return getattr(settings, "MIGSUPPORT_HEALTH_CACHE", "default")
