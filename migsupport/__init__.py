"""Guarded Alembic migrations for Django projects.

Alembic owns the tables of the apps in ``MIGSUPPORT_APPS``; their Django
models are the source of truth, and :mod:`migsupport.bridge` derives
Alembic's metadata from them. Public names are re-exported here and loaded
on first use, so that importing ``migsupport.fields`` from a models module
stays cheap while the app registry is populated.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MigsupportError": "migsupport.exceptions",
    "ConfigurationError": "migsupport.exceptions",
    "UnmappableField": "migsupport.exceptions",
    "ShapeConflict": "migsupport.exceptions",
    "EnumValueInUse": "migsupport.exceptions",
    "NotASession": "migsupport.pooler",
    "MigrationFailed": "migsupport.exceptions",
    "DatabaseUnavailable": "migsupport.exceptions",
    "LockNotGranted": "migsupport.exceptions",
    "UpgradeResult": "migsupport.api",
    "AppliedRevision": "migsupport.executor",
    "Timeouts": "migsupport.timeouts",
    "alembic_config": "migsupport.api",
    "upgrade": "migsupport.api",
    "build_metadata": "migsupport.bridge",
    "target_metadata": "migsupport.bridge",
    "EnumField": "migsupport.fields",
    "Index": "migsupport.fields",
    "MigrationState": "migsupport.health",
    "ReadinessView": "migsupport.health",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'migsupport' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
