"""migsupport's settings: one function per ``MIGSUPPORT_*`` setting.

Each function reads ``django.conf.settings`` at call time, so tests can
override them, and documents its default.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

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
