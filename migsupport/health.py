"""A readiness probe: ready only while the database is ``up_to_date``.

A check for django-health-check (``MigrationState``) and its view
(``ReadinessView``), which answers 503 rather than 500 when a check fails, as
load balancers and orchestrators expect of an instance that is not ready::

    path("health/", ReadinessView.as_view(checks=["migsupport.health.MigrationState"]))

The check reads the state as ``alembic_status`` does, from the ledger and one
snapshot of the catalog (never a replay on a scratch database), and keeps it
for ``MIGSUPPORT_HEALTH_CACHE_SECONDS`` in Django's cache, so a probe every
few seconds costs one reading per interval. What it reports names the state,
never a URL or a password; the reason it could not read one goes to the
``migsupport.health`` logger.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponse
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from migsupport import api, conf
from migsupport.exceptions import MigsupportError
from migsupport.state import UP_TO_DATE

logger = logging.getLogger(__name__)

# What the probe says when there is no state to name.
UNREACHABLE = "unreachable"
UNKNOWN = "unknown"


def cached_state(alias: str = DEFAULT_DB_ALIAS) -> str:
    """Return ``alias``'s state (``up_to_date``, ``behind``...), read at most once per interval.

    ``unreachable`` when the database cannot be reached, ``unknown`` when
    its state cannot be decided (a stale ledger, a refusal); why is logged.
    """
    seconds = conf.health_cache_seconds()
    cache = caches[conf.health_cache()]
    key = f"migsupport:health:state:{alias}"
    if seconds > 0:
        state = cache.get(key)
        if state is not None:
            return state
    try:
        state = api.status(alias, replay=False).report.state
    except api.DatabaseUnavailable as exc:
        logger.warning("Readiness of database %r: %s", alias, exc)
        state = UNREACHABLE
    except MigsupportError as exc:
        logger.warning("Readiness of database %r: %s", alias, exc)
        state = UNKNOWN
    if seconds > 0:
        cache.set(key, state, seconds)
    return state


@dataclasses.dataclass
class MigrationState(HealthCheck):
    """Ready when the database behind ``alias`` is ``up_to_date``."""

    alias: str = DEFAULT_DB_ALIAS

    def run(self) -> None:
        state = cached_state(self.alias)
        if state != UP_TO_DATE:
            raise ServiceUnavailable(f"the database is {state}, not {UP_TO_DATE}")


class ReadinessView(HealthCheckView):
    """django-health-check's view, answering 503 Service Unavailable when a check fails."""

    checks = ("migsupport.health.MigrationState",)

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500:
            response.status_code = 503
        return response
