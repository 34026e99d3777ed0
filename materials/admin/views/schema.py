"""The schema page: whether the database under the admin is at the head, and its deploy log.

Read-only: it shows what ``manage.py alembic_status`` reports, in its words
(``migsupport.wording``), and the deploy log, a page at a time; it has no
button or form, and nothing it does writes to the database. Staff need the
``materials.view_schema_state`` permission (superusers have it).

The state is read on request, as ``alembic_status`` reads it (the ledger and
one read-only snapshot of the catalog, never a replay on a scratch
database), and kept ``CACHE_SECONDS`` in Django's cache per database alias,
so that reloading the page, or several staff at once, cost one reading per
interval. The deploy log is read on every request, ``LOG_PAGE_SIZE``
entries of it (``migsupport.api.read_log``). The admin's index only links
here: it never reads the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from alembic.script import ScriptDirectory
from django.contrib.admin import AdminSite
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from materials.admin.display import state_badge, with_code
from migsupport import api
from migsupport.engine import command_target, error_line
from migsupport.exceptions import MigsupportError
from migsupport.wording import describe_state

SCHEMA_PERMISSION = "materials.view_schema_state"
# How long a reading of the state is kept, per database alias (0: never).
CACHE_SECONDS = 5.0
CACHE_KEY = "materials:admin:schema:{alias}"
# The query parameter that picks the database alias.
DATABASE_VAR = "database"
# The deploy log's page: its parameter, and its entries a page.
PAGE_VAR = "page"
LOG_PAGE_SIZE = 25


@dataclass(frozen=True)
class Revision:
    """A revision id and its script's description (None when no script has that id)."""

    id: str
    description: str | None = None


@dataclass(frozen=True)
class SchemaReading:
    """What the page shows of a database's state: plain values, kept in the cache.

    ``error`` is set, one line and with any password masked, when the
    state could not be read; the fields of the state are then empty.
    """

    database: str
    url: str
    direct: bool
    read_at: datetime
    error: str | None = None
    state: str | None = None
    severity: str | None = None
    summary: str | None = None
    hint: str | None = None
    reason: str | None = None
    current: Revision | None = None
    head: Revision | None = None
    pending: tuple[Revision, ...] = ()
    matches: Revision | None = None
    nearest: Revision | None = None
    partial: Revision | None = None
    ledger: str | None = None
    ledger_problems: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()
    unowned: tuple[str, ...] = ()
    edited: tuple[str, ...] = ()
    edited_hint: str | None = None


def _revision(scripts: ScriptDirectory | None, revision: str | None) -> Revision | None:
    if revision is None:
        return None
    description = None
    if scripts is not None:
        try:
            script = scripts.get_revision(revision)
        except Exception:  # an unknown id, or several: shown without a description
            script = None
        if script is not None and script.doc:
            description = script.doc
    return Revision(revision, description)


def _one_line(exc: BaseException) -> str:
    return error_line(exc) if str(exc).strip() else type(exc).__name__


def read_schema(alias: str) -> SchemaReading:
    """Read ``alias``'s state now, as ``alembic_status`` does; never raises for the database."""
    now = timezone.now()
    try:
        target = command_target(alias)
        url, direct = target.shown, target.direct
    except MigsupportError as exc:
        return SchemaReading(alias, "", False, now, error=_one_line(exc))
    try:
        result = api.status(alias, replay=False)
    except MigsupportError as exc:
        # Every error of the library masks the password; the ledger's own
        # freshness needs no database.
        return SchemaReading(alias, url, direct, now, error=_one_line(exc), **_ledger_only(alias))
    report = result.report
    try:
        scripts: ScriptDirectory | None = api.script_directory()
    except MigsupportError:
        scripts = None
    wording = describe_state(report)
    return SchemaReading(
        database=alias,
        url=result.url,
        direct=result.direct,
        read_at=now,
        state=report.state,
        severity=wording.severity,
        summary=wording.summary,
        hint=wording.hint,
        reason=report.reason,
        current=_revision(scripts, report.current),
        head=_revision(scripts, report.head),
        pending=tuple(r for r in (_revision(scripts, p) for p in report.pending) if r),
        matches=_revision(scripts, report.matches),
        nearest=_revision(scripts, report.nearest),
        partial=_revision(scripts, report.partial),
        ledger=wording.ledger,
        ledger_problems=tuple(report.ledger_problems),
        differences=tuple(str(difference) for difference in report.differences),
        unowned=tuple(str(obj) for obj in report.unowned),
        edited=tuple(edit.message for edit in report.edited),
        edited_hint=wording.edited_hint,
    )


def _ledger_only(alias: str) -> dict[str, Any]:
    """The ledger's freshness for ``alias``'s dialect, when the state could not be read."""
    dialect = "postgresql" if connections[alias].vendor == "postgresql" else "sqlite"
    try:
        checked = api.check_ledger((dialect,))
    except MigsupportError:
        return {}
    problems = tuple(checked.problems)
    return {"ledger": "stale" if problems else "fresh", "ledger_problems": problems}


def cached_schema(alias: str) -> SchemaReading:
    """``read_schema(alias)``, kept ``CACHE_SECONDS`` in Django's default cache."""
    if CACHE_SECONDS <= 0:
        return read_schema(alias)
    key = CACHE_KEY.format(alias=alias)
    reading = cache.get(key)
    if reading is None:
        reading = read_schema(alias)
        cache.set(key, reading, CACHE_SECONDS)
    return reading


def _page_number(request: HttpRequest) -> int:
    """The ``?page=N`` asked for; anything but a positive number is the first page."""
    value = request.GET.get(PAGE_VAR, "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def log_context(request: HttpRequest, alias: str) -> dict[str, Any]:
    """The deploy log's page ``?page=N``: its entries, its links, or the one line of its error.

    One read of the log per page (two when the page asked for is past the
    last one, which is shown instead), through ``migsupport.api.read_log``.
    """
    number = _page_number(request)
    try:
        view = api.read_log(alias, limit=LOG_PAGE_SIZE, offset=(number - 1) * LOG_PAGE_SIZE)
        # A range stands for the entries: the paginator counts it without a query.
        paginator = Paginator(range(view.total), LOG_PAGE_SIZE)
        page = paginator.get_page(number)
        if page.number != number:
            view = api.read_log(
                alias, limit=LOG_PAGE_SIZE, offset=(page.number - 1) * LOG_PAGE_SIZE
            )
    except MigsupportError as exc:
        return {"log_error": _one_line(exc)}

    def link(n: int | str) -> str | None:
        if not isinstance(n, int):
            return None  # the ellipsis
        query = {DATABASE_VAR: alias} if alias != DEFAULT_DB_ALIAS else {}
        return f"?{urlencode({**query, PAGE_VAR: n})}"

    return {
        "log": view,
        "log_page": page,
        "log_links": [
            (n, link(n)) for n in paginator.get_elided_page_range(page.number, on_each_side=2)
        ],
    }


def schema_view(request: HttpRequest, admin_site: AdminSite) -> TemplateResponse:
    """Render the state of ``?database=ALIAS`` (default ``default``); 403 without the permission."""
    if not request.user.has_perm(SCHEMA_PERMISSION):
        raise PermissionDenied
    aliases = tuple(connections)
    alias = request.GET.get(DATABASE_VAR, DEFAULT_DB_ALIAS)
    if alias not in aliases:
        raise Http404(f"No database {alias!r} is configured.")
    reading = cached_schema(alias)
    site = admin_site.each_context(request)
    context = {
        **site,
        # The sidebar lists the models; with none to view, it would only say so.
        "is_nav_sidebar_enabled": site["is_nav_sidebar_enabled"] and bool(site["available_apps"]),
        "title": "Database schema",
        "reading": reading,
        "state_badge": state_badge(reading.state, reading.severity),
        "hint": with_code(reading.hint),
        "edited_hint": with_code(reading.edited_hint),
        "aliases": aliases if len(aliases) > 1 else (),
        "database_var": DATABASE_VAR,
        "cache_seconds": CACHE_SECONDS,
        **log_context(request, alias),
    }
    return TemplateResponse(request, "admin/materials/schema.html", context)
