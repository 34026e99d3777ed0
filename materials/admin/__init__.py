"""A read-only admin over the detection results, built for tables of millions.

Split as ``django.contrib.admin`` is: ``options`` (the ModelAdmins),
``filters`` (list filters), ``views.main`` (the change list, its paginator
and date drill-down), ``views.dashboard`` (the charts page), ``charts``
(inline SVG), ``display`` and ``utils``. ``filters``, ``views.main``,
``charts`` and ``utils`` know no model. This module registers the admins.

The detection pipeline is the only writer of these tables, so the admin never
adds, changes or deletes a row, not even for superusers; staff still need the
``view`` permission to see anything.

Every page does a fixed number of queries, each served by an index or by the
planner's statistics, so it costs about the same at a thousand rows as at
millions:

- the unfiltered list is not counted with ``COUNT(*)``: on PostgreSQL the
  paginator reads the planner's row estimate instead (filtered lists are
  counted exactly);
- the category filter finds its choices with one index probe per category,
  not a ``SELECT DISTINCT`` over the table;
- the date drill-down checks each year, month or day it offers with one index
  probe, not a ``SELECT DISTINCT`` over the table;
- a filtered list of a few rows is fetched through its filter's index and
  sorted, never found by walking the index of its order;
- columns sort only where an index serves the order, and the counts shown in
  the job list are counted per listed job, not over the whole table;
- facet counts ("Show counts") are off: each would be a scan of the table;
- the charts read the planner's statistics and a fixed-size sample of a big
  table, and count exactly only what those cannot tell.

The indexes these pages rely on are listed in ``benchmarks/README.md``
(``bench_admin.py``), which measures them.
"""

from __future__ import annotations

from django.contrib import admin

from materials.admin.options import DetectedMaterialAdmin, MaterialDetectionJobAdmin
from materials.models import DetectedMaterial, MaterialDetectionJob

admin.site.register(DetectedMaterial, DetectedMaterialAdmin)
admin.site.register(MaterialDetectionJob, MaterialDetectionJobAdmin)
# The index, with a link to the charts.
admin.site.index_template = "admin/materials/index.html"

__all__ = ["DetectedMaterialAdmin", "MaterialDetectionJobAdmin"]
