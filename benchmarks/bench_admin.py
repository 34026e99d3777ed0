"""Benchmark: the admin pages at 1,000 and at 1,000,000 detected materials.

Issue 6's goal: each of the unfiltered materials list, a filtered list (by
category), a search (by name prefix) and a job page takes at most 2x as long
at 1M rows as at 1k rows, with the same number of queries at both sizes.
Issue 14 adds to the goal the charts page, ``/health/``, the list sorted by
confidence, a search matching 20 rows (its list, and a month of its date
drill-down), and the pages that order by the creation time when every row
carries the same timestamp; a search matching 20 rows with a category the
planner misjudges is reported. The schema page (``/admin/.../schema/``,
uncached: the state read on every request) is in the goal too.

In one run it:

1. creates two scratch PostgreSQL databases, ``bench_admin_<id>_small`` and
   ``bench_admin_<id>_large``, and fills each the way a deploy would:
   ``manage.py migrate``, ``manage.py alembic_upgrade``, then ``manage.py
   load_demo_data --materials N --seed 1`` (1,000 and 1,000,000 by default);
   the large one also gets one job with 10,000 materials, for the "big job"
   row; both get 20 "zircon sand" rows and 20 steel rows filed as wood, for
   the searches of 20 rows; then ``VACUUM ANALYZE``, as autovacuum would have
   done;
2. serves, in this process, the project's admin at ``/admin/`` and, for
   comparison, stock ``admin.ModelAdmin`` classes declaring the same list
   columns, filters, search, date drill-down and inline at ``/plain/`` (on an
   ``AdminSite`` of their own), and the readiness probe, uncached, at
   ``/health/<size>/``;
3. requests every page through Django's test client (the whole middleware
   stack: session, user, CSRF...), logged in as a superuser, on both
   databases, interleaved, ``--repeat`` times after a warm-up, and counts
   each page's queries;
4. does that in phases: without the indexes in ``INDEXES``, dropping them if
   the migrations already made them; after creating them; and then, unless
   ``--no-ties``, after giving every material the same timestamp (the pages
   in ``TIED_PAGES`` only).

It prints, per phase, page and admin: the median time at each size, the ratio
large / small, and the query counts at both sizes; then whether the goal is
met by the project's admin in each phase with the indexes. The extra rows
(confidence filter, job status filter, a month of the date drill-down, the
job list, a job with 10,000 materials) are reported but not part of the goal.
``--few-rows 0`` measures the admin without its plan for filtered lists of a
few rows (``materials.admin.views.main.FEW_ROWS``), as it was before issue 14.

Every scratch database is named ``bench_admin_...`` and dropped however the
run ends, Ctrl-C and SIGTERM included.

Run from the project root::

    .venv/bin/python benchmarks/bench_admin.py [--repeat 5] [--large 1000000] [--smoke]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from benchmarks import smoke  # noqa: E402
from benchmarks.scratch import (  # noqa: E402
    Databases,
    catch_interrupts,
    checkpoint,
    libpq_url,
    log,
)

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "bench_admin_"
GOAL_RATIO = 2.0
BIG_JOB_MATERIALS = 10_000
SEED = 1

# The indexes the admin's pages need beyond the migrations' (name -> the
# columns part of CREATE INDEX ... ON detected_materials). The first three
# are what the goal's pages need (leave one out and its pages read the whole
# table again); the fourth serves the confidence filter, the fifth ties. See README.md.
INDEXES: dict[str, str] = {
    # The default order, -created_at (then -id), and the date drill-down.
    "ix_detected_materials_created_at": "(created_at)",
    # The category filter: its choices (a loose index scan) and its count.
    "ix_detected_materials_category": "(category)",
    # The name prefix search, LIKE 'prefix%', its count as an index-only scan.
    "ix_detected_materials_material_name_pattern": "(material_name varchar_pattern_ops)",
    # The confidence filter's count, and the sort by confidence.
    "ix_detected_materials_confidence": "(confidence)",
    # Not in the migrations yet: the default order's tie-break on id, when many
    # rows share a timestamp (see README.md, "The indexes").
    "ix_detected_materials_created_at_id": "(created_at, id)",
}

# Set by main() once Django is set up.
urlpatterns: list[Any] = []


def manage(url: sa.URL, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": libpq_url(url), "SECRET_KEY": "bench", "DEBUG": "false"}
    completed = subprocess.run(
        [sys.executable, str(PROJECT / "manage.py"), *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    checkpoint()
    if completed.returncode != 0:
        raise SystemExit(
            f"manage.py {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout}{completed.stderr}"
        )


def add_big_job(databases: Databases, database: str, materials: int) -> None:
    """One completed job with ``materials`` materials, all at once: 90 s of detection."""
    databases.execute(
        f"""
        WITH job AS (
            INSERT INTO material_detection_jobs
                (id, image_url, status, created_at, updated_at, completed_at, model_version)
            VALUES (
                gen_random_uuid(), 'https://images.example.com/sites/1/big.jpg', 'COMPLETED',
                now() - interval '2 days 90 seconds', now() - interval '2 days',
                now() - interval '2 days', 'matdet-2.4.0'
            )
            RETURNING id, completed_at
        )
        INSERT INTO detected_materials
            (id, job_id, material_name, category, confidence, bounding_box, created_at)
        SELECT
            gen_random_uuid(), job.id,
            (ARRAY['concrete', 'steel', 'glass', 'brick', 'timber'])[1 + i % 5],
            (ARRAY['mineral', 'metal', 'mineral', 'mineral', 'wood'])[1 + i % 5],
            round(random()::numeric, 4), '{{"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}}',
            job.completed_at
        FROM job, generate_series(1, {int(materials)}) AS i
        """,
        database,
    )


# Twenty rows each, spread over the history: a name no other row starts with,
# and steel filed as wood, which the planner takes for some thousands of rows.
FEW_ROWS_NAME, FEW_ROWS_COUNT = "zircon sand", 20


def add_few_rows(databases: Databases, database: str) -> None:
    """The rows the issue's searches match: 20 of a rare name, 20 steel filed as wood."""
    for name, category in ((FEW_ROWS_NAME, "mineral"), ("steel", "wood")):
        databases.execute(
            f"""
            INSERT INTO detected_materials
                (id, job_id, material_name, category, confidence, bounding_box, created_at)
            SELECT gen_random_uuid(), job.id, '{name}', '{category}', 0.5 + i / 100.0,
                '{{"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}}', job.completed_at
            FROM generate_series(1, {FEW_ROWS_COUNT}) AS i
            CROSS JOIN LATERAL (
                SELECT id, completed_at FROM material_detection_jobs
                WHERE status = 'COMPLETED' ORDER BY id
                OFFSET i * 7 % (SELECT COUNT(*) FROM material_detection_jobs
                                WHERE status = 'COMPLETED')
                LIMIT 1
            ) AS job
            """,
            database,
        )


# What the phase with one timestamp measures: the pages that order by it.
TIED_PAGES = ("list", "category", "month", "by_confidence", "charts")


def set_one_timestamp(databases: Databases, database: str) -> None:
    """Give every material the newest timestamp, as one bulk import would."""
    databases.execute(
        "UPDATE detected_materials "
        "SET created_at = (SELECT MAX(created_at) FROM detected_materials)",
        database,
    )
    databases.execute("VACUUM ANALYZE detected_materials", database)


def prepare(databases: Databases, label: str, materials: int, big_job: int) -> sa.URL:
    url = databases.create(label)
    started = time.perf_counter()
    log(f"[{url.database}] migrate, alembic_upgrade, load_demo_data --materials {materials:,}")
    manage(url, "migrate", "--verbosity", "0")
    manage(url, "alembic_upgrade")
    manage(url, "load_demo_data", "--materials", str(materials), "--seed", str(SEED))
    if big_job:
        add_big_job(databases, url.database, big_job)
    add_few_rows(databases, url.database)
    databases.execute("VACUUM ANALYZE", url.database)
    log(f"[{url.database}] ready in {time.perf_counter() - started:.0f}s")
    return url


def drop_indexes(databases: Databases, database: str) -> None:
    for name in INDEXES:
        databases.execute(f'DROP INDEX IF EXISTS "{name}"', database)
    databases.execute("ANALYZE detected_materials", database)


def create_indexes(databases: Databases, database: str, names: Sequence[str]) -> None:
    for name in names:
        databases.execute(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON detected_materials {INDEXES[name]}', database
        )
    databases.execute("VACUUM ANALYZE detected_materials", database)


# -- Django, in this process -----------------------------------------------------------


class SwitchRouter:
    """Send every query to ``alias``: the admin pages run on one database at a time."""

    alias = "small"

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return self.alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return self.alias

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True


ROUTER = SwitchRouter()


def setup_django(small: sa.URL, large: sa.URL) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["SECRET_KEY"] = "bench"
    os.environ["DEBUG"] = "false"
    os.environ["DATABASE_URL"] = libpq_url(small)
    from django.conf import settings

    default = settings.DATABASES["default"]
    settings.DATABASES = {
        "default": default,
        "small": {**default},
        "large": {**default, "NAME": large.database},
    }
    settings.DATABASE_ROUTERS = [ROUTER]
    settings.ROOT_URLCONF = __name__
    settings.ALLOWED_HOSTS = ["testserver"]
    # The test client speaks plain HTTP, and nothing was collected.
    settings.SECURE_SSL_REDIRECT = False
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.STATIC_ROOT = None
    # The readiness probe reads the state on every request: its cost, uncached.
    settings.MIGSUPPORT_HEALTH_CACHE_SECONDS = 0

    import django

    django.setup()

    import materials.admin.views.schema

    # The schema page too: the state read on every request, not once per interval.
    materials.admin.views.schema.CACHE_SECONDS = 0

    from django.contrib import admin
    from django.urls import path

    from materials.models import DetectedMaterial, MaterialDetectionJob

    # Stock ModelAdmins declaring what the project's admin shows, and nothing
    # of what makes it scale.
    plain = admin.AdminSite(name="plain")

    class PlainMaterialInline(admin.TabularInline):
        model = DetectedMaterial

    class PlainJobAdmin(admin.ModelAdmin):
        list_display = ("id", "status", "created_at", "completed_at", "model_version")
        list_filter = ("status",)
        search_fields = ("=id",)
        inlines = (PlainMaterialInline,)

    class PlainMaterialAdmin(admin.ModelAdmin):
        list_display = ("material_name", "category", "confidence", "job", "created_at")
        list_filter = ("category", "job__status")
        search_fields = ("^material_name",)
        date_hierarchy = "created_at"

    plain.register(MaterialDetectionJob, PlainJobAdmin)
    plain.register(DetectedMaterial, PlainMaterialAdmin)

    from migsupport.health import ReadinessView

    urlpatterns[:] = [
        path("admin/", admin.site.urls),
        path("plain/", plain.urls),
        *(
            path(
                f"health/{size}/",
                ReadinessView.as_view(
                    checks=[("migsupport.health.MigrationState", {"alias": size})]
                ),
            )
            for size in SIZES
        ),
    ]


# -- measuring -----------------------------------------------------------------------

ADMINS = {"ours": "/admin/", "default": "/plain/"}
SIZES = ("small", "large")


@dataclass
class Page:
    key: str
    label: str
    # size -> path under the admin's prefix
    paths: dict[str, str]
    goal: bool = False
    # Measured this many times on the default admin at most (it can take long).
    default_repeat: int | None = None
    # Not an admin page (the paths are whole): measured once, as "ours".
    ours_only: bool = False
    # The answers that count as served (the probe says 503 without the indexes).
    statuses: tuple[int, ...] = (200,)
    # Text the answer must hold (the schema page answers 200 with an error too).
    must_contain: str | None = None


@dataclass
class Measurement:
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    queries: dict[tuple[str, str], int] = field(default_factory=dict)

    def median_ms(self, admin_key: str, size: str) -> float | None:
        samples = self.times.get((admin_key, size))
        return statistics.median(samples) * 1000 if samples else None


def pick_pages(big_job_materials: int = BIG_JOB_MATERIALS) -> list[Page]:
    """The pages to measure, with the ids and dates of each database's rows."""
    from django.db import connections

    per_size: dict[str, dict[str, Any]] = {}
    for size in SIZES:
        with connections[size].cursor() as cursor:
            # A job with the average 4 materials, so both sizes show alike.
            cursor.execute(
                "SELECT job_id FROM detected_materials GROUP BY job_id "
                "HAVING COUNT(*) = 4 ORDER BY job_id LIMIT 1"
            )
            (job_id,) = cursor.fetchone()
            cursor.execute("SELECT MAX(created_at) FROM detected_materials")
            (latest,) = cursor.fetchone()
            cursor.execute(
                "SELECT MAX(created_at) FROM detected_materials WHERE material_name = %s",
                [FEW_ROWS_NAME],
            )
            (latest_few,) = cursor.fetchone()
            per_size[size] = {"job": job_id, "latest": latest, "latest_few": latest_few}
        if size == "large":
            with connections[size].cursor() as cursor:
                cursor.execute(
                    "SELECT job_id FROM detected_materials GROUP BY job_id "
                    "HAVING COUNT(*) >= %s LIMIT 1",
                    [big_job_materials],
                )
                found = cursor.fetchone()
                per_size[size]["big_job"] = found[0] if found else None

    materials = "materials/detectedmaterial/"

    def month(size: str) -> str:
        latest = per_size[size]["latest"]
        return f"{materials}?created_at__year={latest.year}&created_at__month={latest.month}"

    def few_rows_month(size: str) -> str:
        latest = per_size[size]["latest_few"]
        return (
            f"{materials}?q=zircon&created_at__year={latest.year}&created_at__month={latest.month}"
        )

    pages = [
        Page("list", "materials list", {s: materials for s in SIZES}, goal=True),
        Page("category", "category=metal", {s: f"{materials}?category=metal" for s in SIZES}, True),
        Page("search", "search q=steel", {s: f"{materials}?q=steel" for s in SIZES}, goal=True),
        Page(
            "job",
            "job page (4 materials)",
            {s: f"materials/materialdetectionjob/{per_size[s]['job']}/change/" for s in SIZES},
            goal=True,
        ),
        Page(
            "confidence",
            "confidence >= 0.95",
            {s: f"{materials}?confidence=0.95-1" for s in SIZES},
        ),
        Page(
            "status",
            "job status=FAILED",
            {s: f"{materials}?job__status__exact=FAILED" for s in SIZES},
        ),
        Page("month", "date drill-down: month", {s: month(s) for s in SIZES}),
        Page("jobs", "job list", {s: "materials/materialdetectionjob/" for s in SIZES}),
        Page(
            "by_confidence",
            "sorted by confidence",
            {s: f"{materials}?o=-2" for s in SIZES},
            goal=True,
        ),
        Page("few", "search, 20 rows", {s: f"{materials}?q=zircon" for s in SIZES}, goal=True),
        Page(
            "few_month",
            "search, 20 rows: a month",
            {s: few_rows_month(s) for s in SIZES},
            goal=True,
        ),
        # Not in the goal: the planner takes steel and wood for independent
        # and expects thousands of rows, and counting reads the entries of
        # both indexes (see README.md).
        Page(
            "few_filtered",
            "search + category, 20 rows",
            {s: f"{materials}?q=steel&category=wood" for s in SIZES},
        ),
        Page(
            "charts",
            "charts page",
            {s: "materials/materialdetectionjob/dashboard/" for s in SIZES},
            goal=True,
            ours_only=True,
        ),
        Page(
            "schema",
            "schema page (uncached)",
            {s: f"materials/materialdetectionjob/schema/?database={s}" for s in SIZES},
            goal=True,
            ours_only=True,
            must_contain='<span class="schema-state schema-state-',
        ),
        Page(
            "health",
            "/health/ (uncached)",
            {s: f"/health/{s}/" for s in SIZES},
            goal=True,
            ours_only=True,
            statuses=(200, 503),
        ),
    ]
    big_job = per_size["large"].get("big_job")
    if big_job:
        pages.append(
            Page(
                "big_job",
                f"job page ({big_job_materials:,} materials)",
                {"large": f"materials/materialdetectionjob/{big_job}/change/"},
                default_repeat=1,
            )
        )
    return pages


def admin_path(page: Page, admin_key: str, size: str) -> str:
    path = page.paths[size]
    if path.startswith("/"):
        return path
    if admin_key == "default" and page.key == "confidence":
        # The stock admin has no range filter; the same rows by a lookup.
        path = path.replace("confidence=0.95-1", "confidence__gte=0.95")
    return ADMINS[admin_key] + path


def make_clients() -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.test import Client

    clients = {}
    for size in SIZES:
        ROUTER.alias = size
        user, _ = User.objects.get_or_create(
            username="bench", defaults={"is_staff": True, "is_superuser": True}
        )
        client = Client()
        client.force_login(user)
        clients[size] = client
    return clients


def request(
    clients: dict[str, Any],
    size: str,
    path: str,
    statuses: tuple[int, ...] = (200,),
    must_contain: str | None = None,
) -> tuple[float, int]:
    """GET ``path`` on the ``size`` database; return the seconds and the query count.

    The count is of Django's queries and of the statements migsupport's
    SQLAlchemy engines run (the state of ``/health/`` and the schema page,
    the deploy log).
    """
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    statements: list[str] = []

    def count_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    ROUTER.alias = size
    gc.collect()
    checkpoint()
    # Capturing only appends each query's SQL to a list: far below the noise.
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count_statement)
    try:
        with CaptureQueriesContext(connections[size]) as captured:
            started = time.perf_counter()
            response = clients[size].get(path)
            seconds = time.perf_counter() - started
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count_statement)
    checkpoint()
    if response.status_code not in statuses:
        raise SystemExit(f"GET {path} on {size}: HTTP {response.status_code}")
    if must_contain is not None and must_contain not in response.content.decode():
        raise SystemExit(f"GET {path} on {size}: the answer lacks {must_contain!r}")
    return seconds, len(captured) + len(statements)


def measure(pages: Sequence[Page], clients: dict[str, Any], repeat: int) -> dict[str, Measurement]:
    results = {page.key: Measurement() for page in pages}

    def runs(page: Page, admin_key: str) -> int:
        if page.ours_only and admin_key != "ours":
            return 0
        limit = page.default_repeat if admin_key == "default" else None
        return repeat if limit is None else min(repeat, limit)

    # One warm-up request per page, admin and size (content types and other
    # per-database caches fill on the first), except for the pages measured
    # only once: they would take as long again.
    for page in pages:
        for admin_key in ADMINS:
            if runs(page, admin_key) == repeat:
                for size in page.paths:
                    request(
                        clients,
                        size,
                        admin_path(page, admin_key, size),
                        page.statuses,
                        page.must_contain,
                    )
    for turn in range(repeat):
        log(f"  repeat {turn + 1}/{repeat}")
        for page in pages:
            for admin_key in ADMINS:
                if turn >= runs(page, admin_key):
                    continue
                sizes = list(page.paths)
                # Alternate which size goes first, so that drift hits both alike.
                for size in sizes if turn % 2 == 0 else sizes[::-1]:
                    seconds, queries = request(
                        clients,
                        size,
                        admin_path(page, admin_key, size),
                        page.statuses,
                        page.must_contain,
                    )
                    result = results[page.key]
                    result.times.setdefault((admin_key, size), []).append(seconds)
                    counted = result.queries.setdefault((admin_key, size), queries)
                    if counted != queries:
                        log(
                            f"  note: {page.label} ({admin_key}, {size}): "
                            f"{counted} queries, then {queries}"
                        )
    return results


# -- the report -----------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def print_phase(
    title: str, pages: Sequence[Page], results: dict[str, Measurement], sizes: dict[str, int]
) -> None:
    small, large = f"{sizes['small']:,}", f"{sizes['large']:,}"
    print(f"\n{title}")
    header = (
        f"{'page':<28} {'admin':<8} {small + ' (ms)':>12} {large + ' (ms)':>14} "
        f"{'ratio':>7} {'queries':>9}"
    )
    print(header)
    print("-" * len(header))
    for page in pages:
        measurement = results[page.key]
        for admin_key in ADMINS:
            if page.ours_only and admin_key != "ours":
                continue
            t_small = measurement.median_ms(admin_key, "small")
            t_large = measurement.median_ms(admin_key, "large")
            ratio = f"{t_large / t_small:.2f}" if t_small and t_large else "-"
            q_small = measurement.queries.get((admin_key, "small"), "-")
            q_large = measurement.queries.get((admin_key, "large"), "-")
            label = (page.label + (" *" if page.goal else "")) if admin_key == "ours" else ""
            print(
                f"{label:<28} {admin_key:<8} {fmt_ms(t_small):>12} {fmt_ms(t_large):>14} "
                f"{ratio:>7} {f'{q_small}/{q_large}':>9}"
            )


def verdict(pages: Sequence[Page], results: dict[str, Measurement]) -> bool:
    met = True
    for page in pages:
        if not page.goal:
            continue
        measurement = results[page.key]
        t_small = measurement.median_ms("ours", "small")
        t_large = measurement.median_ms("ours", "large")
        ratio = t_large / t_small if t_small and t_large else float("inf")
        same = measurement.queries["ours", "small"] == measurement.queries["ours", "large"]
        if ratio > GOAL_RATIO or not same:
            met = False
            print(f"  {page.label}: ratio {ratio:.2f}, queries constant: {same}")
    return met


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000, help="materials in the small database")
    parser.add_argument(
        "--large", type=int, default=1_000_000, help="materials in the large database"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument(
        "--server",
        default=os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER),
        help="PostgreSQL server to create the scratch databases on "
        "(default: $TEST_DATABASE_URL or %(default)s)",
    )
    parser.add_argument(
        "--indexes",
        default=",".join(INDEXES),
        help="comma-separated names from INDEXES to create for the second phase "
        "(default: all of them)",
    )
    parser.add_argument(
        "--only-with-indexes",
        action="store_true",
        help="skip the phase without the indexes",
    )
    parser.add_argument(
        "--no-ties",
        action="store_true",
        help="skip the last phase, with every material at one timestamp",
    )
    parser.add_argument(
        "--few-rows",
        type=int,
        default=None,
        metavar="N",
        help="the admin's FEW_ROWS (a filtered list of at most N rows is found by its "
        "filter's index); 0 measures the admin without that",
    )
    parser.add_argument(
        "--big-job",
        type=int,
        default=BIG_JOB_MATERIALS,
        metavar="N",
        help=f"materials of the one big job in the large database (default {BIG_JOB_MATERIALS:,})",
    )
    smoke.add_argument(parser)
    args = smoke.apply(parser.parse_args(argv), small=200, large=400, repeat=1, big_job=20)
    args.index_names = [name for name in args.indexes.split(",") if name]
    unknown = set(args.index_names) - set(INDEXES)
    if unknown:
        parser.error(f"unknown indexes {sorted(unknown)}; known: {sorted(INDEXES)}")
    if args.repeat < 1 or args.small < 1 or args.large < 1:
        parser.error("--repeat, --small and --large must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = sa.make_url(args.server).set(drivername="postgresql")
    catch_interrupts()
    databases = Databases(server, PREFIX)
    sizes = {"small": args.small, "large": args.large}
    phases: list[tuple[str, list[Page], dict[str, Measurement], bool]] = []
    django_ready = False
    try:
        small = prepare(databases, "small", args.small, big_job=0)
        large = prepare(databases, "large", args.large, big_job=args.big_job)
        setup_django(small, large)
        django_ready = True
        if args.few_rows is not None:
            import materials.admin.views.main

            materials.admin.views.main.FEW_ROWS = args.few_rows
        clients = make_clients()
        pages = pick_pages(args.big_job)
        # (title, what to do to each database first, the pages to measure, in the goal)
        steps: list[tuple[str, Callable[[str], None], list[Page], bool]] = []
        if not args.only_with_indexes:
            steps.append(
                (
                    "Without the indexes (the migrations' own only)",
                    lambda database: drop_indexes(databases, database),
                    pages,
                    False,
                )
            )
        steps.append(
            (
                f"With the indexes: {', '.join(args.index_names)}",
                lambda database: create_indexes(databases, database, args.index_names),
                pages,
                True,
            )
        )
        if not args.no_ties:
            tied = [page for page in pages if page.key in TIED_PAGES]
            steps.append(
                (
                    "With the indexes, every material at one timestamp",
                    lambda database: set_one_timestamp(databases, database),
                    tied,
                    True,
                )
            )
        for title, apply, measured, in_goal in steps:
            log(title)
            from django.db import connections

            for size, url in (("small", small), ("large", large)):
                connections[size].close()
                apply(url.database)
            results = measure(measured, clients, args.repeat)
            phases.append((title, measured, results, in_goal))
    except KeyboardInterrupt:
        log("interrupted; dropping the scratch databases")
        interrupted = True
    else:
        interrupted = False
    finally:
        if django_ready:
            from django.db import connections

            connections.close_all()
        databases.drop_all()

    print(
        f"Admin pages at {args.small:,} and {args.large:,} detected materials "
        f"(median of {args.repeat} interleaved repeats; ratio = large / small; "
        f"* = the goal's pages)"
    )
    for title, pages, results, _ in phases:
        print_phase(title, pages, results, sizes)
    for title, pages, results, in_goal in phases:
        if in_goal:
            print(f"\nGoal (ours, {title.lower()}): ratio <= {GOAL_RATIO:g}, queries constant")
            print("  met" if verdict(pages, results) else "  MISSED")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
