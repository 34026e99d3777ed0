"""The change list, its paginator and its date drill-down, for tables of millions.

As ``django.contrib.admin.views.main``: nothing here knows the detection
models; any ``ModelAdmin`` can use ``IndexedChangeList`` and
``EstimatedCountPaginator``.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import F, Max, Min, OrderBy, QuerySet
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.text import capfirst

from materials.estimates import estimated_table_count, is_unfiltered

# A filtered list of at most this many rows is fetched by its filter's own
# index and sorted, rather than found by walking the index of its order.
FEW_ROWS = 2_000


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts every row of a big table.

    An unfiltered queryset on PostgreSQL takes the planner's row estimate
    (see ``materials.estimates.estimated_table_count``);
    ``count_is_estimate`` then says so, and the list shows "about N".
    Anything filtered, any small table and any other database are counted
    exactly.
    """

    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and is_unfiltered(queryset):
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                count, self.count_is_estimate = estimated_table_count(connection, queryset.model)
                return count
        return super().count


def unindexed(field_name: str) -> Coalesce:
    """``field_name``'s value, in a form no index on it serves.

    ``COALESCE(x, x)`` is ``x``, but the planner cannot walk an index on
    ``x`` for it. Sorting or comparing by it makes the planner find a few
    rows by the filter's own index first, instead of walking the index of
    the order and testing the filter on every row it passes: a plan it
    picks when it believes the filter matches many rows (two correlated
    filters, a name prefix it misjudges) and that reads the whole index when
    it matches a few.
    """
    return Coalesce(F(field_name), F(field_name))


def sorted_after_filtering(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` in the same order, its first sort key made ``unindexed``."""
    ordering = list(queryset.query.order_by)
    if not ordering:
        return queryset
    first = ordering[0]
    if isinstance(first, str) and first.lstrip("-") not in ("", "?"):
        ordering[0] = OrderBy(unindexed(first.lstrip("-")), descending=first.startswith("-"))
    elif isinstance(first, OrderBy) and isinstance(first.expression, F):
        ordering[0] = OrderBy(unindexed(first.expression.name), descending=first.descending)
    elif isinstance(first, F):
        ordering[0] = OrderBy(unindexed(first.name))
    return queryset.order_by(*ordering)


# The date drill-down


def any_rows_per_period(
    queryset: QuerySet[Any],
    field_name: str,
    periods: Sequence[tuple[datetime, datetime]],
    *,
    few_rows: str | None = None,
) -> list[bool]:
    """Whether ``queryset`` has a row in each ``[start, end)`` period, in one query.

    Each period is one ``EXISTS`` probe of the index on the field, so this
    costs the same whatever the table's size. With ``few_rows``, the kind of
    period (``year``, ``month`` or ``day``) of a queryset matching at most
    ``FEW_ROWS`` rows, the query lists the periods of the rows the filter
    finds instead, evaluating the filter once (see ``unindexed``).
    """
    if not periods:
        return []
    connection = connections[queryset.db]
    queryset = queryset.order_by()
    if few_rows:
        found = set(
            queryset.alias(_period_key=unindexed(field_name))
            .filter(_period_key__gte=periods[0][0], _period_key__lt=periods[-1][1])
            .datetimes(field_name, few_rows)
        )
        # Truncated in the current time zone, as the periods' starts are.
        starts = {timezone.localtime(moment) if settings.USE_TZ else moment for moment in found}
        return [start in starts for start, _ in periods]
    probes, params = [], []
    for start, end in periods:
        subquery = queryset.filter(
            **{f"{field_name}__gte": start, f"{field_name}__lt": end}
        ).values("pk")[:1]
        sql, subquery_params = subquery.query.get_compiler(connection=connection).as_sql()
        probes.append(f"EXISTS ({sql})")
        params.extend(subquery_params)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(probes)}", params)
        return [bool(found) for found in cursor.fetchone()]


def _start_of(day: date) -> datetime:
    # As ChangeList.get_filters turns the drill-down into a range.
    moment = datetime(day.year, day.month, day.day)
    return timezone.make_aware(moment) if settings.USE_TZ else moment


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def date_hierarchy_context(cl: ChangeList, *, few_rows: bool = False) -> dict[str, Any]:
    """The context of ``admin/date_hierarchy.html``, as Django's tag makes it.

    Django's tag lists the years, months or days with rows by a ``SELECT
    DISTINCT`` over the filtered table. This one finds the range with
    ``MIN``/``MAX`` and then probes each candidate period (see
    ``any_rows_per_period``): two queries, both on the index, or with
    ``few_rows`` both over the rows the filter finds.
    """
    field_name = cl.date_hierarchy
    year_field, month_field, day_field = (
        f"{field_name}__{part}" for part in ("year", "month", "day")
    )
    year, month, day = (cl.params.get(name) for name in (year_field, month_field, day_field))

    def link(filters: dict[str, Any]) -> str:
        return cl.get_query_string(filters, [f"{field_name}__"])

    def probe(kind: str, periods: Sequence[tuple[datetime, datetime]]) -> list[bool]:
        return any_rows_per_period(
            queryset, field_name, periods, few_rows=kind if few_rows else None
        )

    queryset = cl.queryset
    first = last = None
    if not year:
        bounded: Combinable | str = unindexed(field_name) if few_rows else field_name
        bounds = queryset.order_by().aggregate(first=Min(bounded), last=Max(bounded))
        first, last = bounds["first"], bounds["last"]
        if first is None or last is None:
            return {"show": True, "back": None, "choices": []}
        if timezone.is_aware(first):
            first, last = timezone.localtime(first), timezone.localtime(last)
        if first.year == last.year:
            year = first.year
            if first.month == last.month:
                month = first.month

    if year and month and day:
        chosen = date(int(year), int(month), int(day))
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }
    if year and month:
        year, month = int(year), int(month)
        if first is not None and last is not None:
            days = [date(year, month, d) for d in range(first.day, last.day + 1)]
        else:
            days = [date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)]
        found = probe("day", [(_start_of(d), _start_of(d + timedelta(days=1))) for d in days])
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: d.day}),
                    "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT")),
                }
                for d, has_rows in zip(days, found, strict=True)
                if has_rows
            ],
        }
    if year:
        year = int(year)
        if first is not None and last is not None:
            months = [date(year, m, 1) for m in range(first.month, last.month + 1)]
        else:
            months = [date(year, m, 1) for m in range(1, 13)]
        found = probe("month", [(_start_of(m), _start_of(_next_month(m))) for m in months])
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({year_field: year, month_field: m.month}),
                    "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT")),
                }
                for m, has_rows in zip(months, found, strict=True)
                if has_rows
            ],
        }
    # No year asked for, and the rows span several years (first and last are set).
    assert first is not None and last is not None
    years = [date(y, 1, 1) for y in range(first.year, last.year + 1)]
    found = probe("year", [(_start_of(y), _start_of(date(y.year + 1, 1, 1))) for y in years])
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({year_field: str(y.year)}), "title": str(y.year)}
            for y, has_rows in zip(years, found, strict=True)
            if has_rows
        ],
    }


class IndexedChangeList(ChangeList):
    """A change list whose every query an index can serve.

    - ``date_hierarchy_context``: see ``date_hierarchy_context``; the
      templates in ``materials/templates/admin/materials/`` use it.
    - A page counted empty is not fetched (nor drilled down into).
    - A filtered list of at most ``FEW_ROWS`` rows is fetched, and drilled
      down into, through its filter's index (``few_rows``; see
      ``unindexed``).
    - Sorting by a column outside ``sortable_by`` is refused even when asked
      for in the URL (Django only hides the header link): the parameter is
      dropped, and the default order stays.
    """

    few_rows = False

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        requested = self.params.get(ORDER_VAR)
        if requested:
            kept = ".".join(part for part in requested.split(".") if self._sortable_part(part))
            # params decides the order and the sorted headers; filter_params
            # the links (as in Django 5.2; test_an_unsortable_order_is_dropped_
            # from_the_page fails if that changes). Nothing sortable kept: the
            # default order, as without the parameter (Django would order by
            # the primary key alone).
            if kept:
                self.params[ORDER_VAR] = kept
                self.filter_params[ORDER_VAR] = [kept]
            else:
                del self.params[ORDER_VAR]
                self.filter_params.pop(ORDER_VAR, None)
        return super().get_ordering(request, queryset)

    def _sortable_part(self, part: str) -> bool:
        """Whether one ``o`` parameter part (``-2``, ``5``) names a sortable column."""
        index = part.rpartition("-")[2]
        if not index.isdigit() or int(index) >= len(self.list_display):
            return False
        return bool(self.get_ordering_field(self.list_display[int(index)]))

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        if self.result_count == 0:
            # Counted exactly (an estimate is never below the threshold), so
            # the page is empty: do not ask the database to search for it.
            # A filter matching nothing (the materials of failed jobs) is
            # what the planner gets most wrong: it would walk the whole
            # index of the order looking for the first row.
            self.result_list = self.queryset.none()
            return
        if self.result_count <= FEW_ROWS and not is_unfiltered(self.queryset):
            # Counted exactly too: the filter's index finds these rows at
            # once, where walking the index of the order may pass most of
            # the table between two of them.
            self.few_rows = True
            self.queryset = sorted_after_filtering(self.queryset)
            if (self.show_all and self.can_show_all) or not self.multi_page:
                self.result_list = self.queryset.all()
            else:
                self.paginator.object_list = self.queryset
                self.result_list = self.paginator.page(self.page_num).object_list

    @cached_property
    def date_hierarchy_context(self) -> dict[str, Any]:
        if self.result_count == 0:
            return {"show": True, "back": None, "choices": []}
        return date_hierarchy_context(self, few_rows=self.few_rows)
