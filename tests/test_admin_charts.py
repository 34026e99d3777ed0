"""The charts page: detections per day, jobs per status, confidence per category.

Exact counts on both dialects; on PostgreSQL also the estimates a big table
gets (the planner's statistics, a sample), forced on small tables by a
threshold of one row. ``ANALYZE`` of a small table reads every row, so its
statistics are complete, and its row estimate exact.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from materials.admin.charts import bar_chart, column_chart, histogram_rows, nice_ceiling
from materials.estimates import ColumnStatistics, planner_row_estimate
from materials.models import DetectedMaterial, JobStatus, MaterialDetectionJob
from tests.support.users import staff_user

DASHBOARD = reverse("admin:materials_dashboard")
NOW = datetime(2025, 6, 30, 15, 0, tzinfo=UTC)


@pytest.fixture
def make_job() -> Callable[..., MaterialDetectionJob]:
    def make(status: str = JobStatus.COMPLETED, **fields: Any) -> MaterialDetectionJob:
        fields.setdefault("image_url", f"https://images.example.com/{uuid.uuid4().hex}.jpg")
        return MaterialDetectionJob.objects.create(status=status, **fields)

    return make


@pytest.fixture
def make_material(make_job) -> Callable[..., DetectedMaterial]:
    job = None

    def make(name: str = "steel", **fields: Any) -> DetectedMaterial:
        nonlocal job
        if "job" not in fields:
            job = job or make_job()
            fields["job"] = job
        fields.setdefault("category", "metal")
        fields.setdefault("confidence", 0.9)
        return DetectedMaterial.objects.create(material_name=name, **fields)

    return make


def staff_client(client: Client, *codenames: str) -> Client:
    client.force_login(staff_user("staff", *codenames))
    return client


@pytest.fixture
def viewer_client(client: Client) -> Client:
    return staff_client(client, "view_detectedmaterial", "view_materialdetectionjob")


def require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: run with DATABASE_URL=postgresql://...")


def analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE detected_materials")
        cursor.execute("ANALYZE material_detection_jobs")


def at_day(days_ago: int, hour: int = 12) -> datetime:
    day = NOW.date() - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def detections(make_job, make_material) -> dict[str, Any]:
    """Materials over the last days (and one too old), and jobs in four statuses."""
    for days_ago, count in ((0, 3), (1, 1), (5, 2), (29, 1), (30, 4)):
        for i in range(count):
            make_material(f"m-{days_ago}-{i}", created_at=at_day(days_ago, hour=1 + i))
    # With the materials' own job, two completed jobs.
    for status, count in (
        (JobStatus.PENDING, 2),
        (JobStatus.COMPLETED, 1),
        (JobStatus.FAILED, 3),
        (JobStatus.CANCELLED, 2),
    ):
        for _ in range(count):
            make_job(status)
    confidences = {
        "metal": (0.05, 0.15, 0.95, 1.0),
        "wood": (0.55, 0.59),
        None: (0.999,),
    }
    for category, values in confidences.items():
        for value in values:
            make_material("c", category=category, confidence=value, created_at=at_day(200))
    return {"per_day": {0: 3, 1: 1, 5: 2, 29: 1}}


# The counts


@pytest.mark.django_db
def test_per_day_counts_the_last_30_days(detections) -> None:
    daily = DetectedMaterial.objects.per_day(30, now=NOW)

    assert [day for day, _ in daily.days] == [
        NOW.date() - timedelta(days=29 - i) for i in range(30)
    ]
    expected = {NOW.date() - timedelta(days=ago): n for ago, n in detections["per_day"].items()}
    assert dict(daily.days) == {day: expected.get(day, 0) for day, _ in daily.days}
    assert daily.total == 7
    assert daily.estimated is False


@pytest.mark.django_db
def test_per_status_counts_every_status_in_order(detections) -> None:
    statuses = MaterialDetectionJob.objects.per_status()

    assert statuses.counts == (
        ("PENDING", 2),
        ("PROCESSING", 0),
        ("COMPLETED", 2),
        ("FAILED", 3),
        ("CANCELLED", 2),
    )
    assert statuses.total == 9
    assert statuses.estimated is False


@pytest.mark.django_db
def test_confidence_distribution_bins_each_category(detections) -> None:
    distribution = DetectedMaterial.objects.confidence_distribution(10)

    # The dated materials are all metal at 0.9; 1.0 falls in the last bin.
    assert distribution.categories == (
        ("metal", (1, 1, 0, 0, 0, 0, 0, 0, 0, 11 + 2)),
        ("wood", (0, 0, 0, 0, 0, 2, 0, 0, 0, 0)),
        (None, (0, 0, 0, 0, 0, 0, 0, 0, 0, 1)),
    )
    assert distribution.total == 18
    assert distribution.sample_percent is None


@pytest.mark.django_db
def test_charts_of_empty_tables() -> None:
    assert DetectedMaterial.objects.per_day(30, now=NOW).total == 0
    assert MaterialDetectionJob.objects.per_status().counts == tuple(
        (status.value, 0) for status in JobStatus
    )
    assert DetectedMaterial.objects.confidence_distribution().categories == ()


# Estimates (PostgreSQL)


@pytest.fixture
def estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every table counts as big: the charts read statistics and samples."""
    require_postgresql()
    monkeypatch.setattr("materials.estimates.ESTIMATE_THRESHOLD", 1)


@pytest.mark.django_db
def test_per_status_of_a_big_table_comes_from_its_statistics(detections, estimated) -> None:
    analyze()
    make_more = MaterialDetectionJob.objects.create
    # Added after the ANALYZE: the statistics do not know it.
    make_more(status=JobStatus.PROCESSING, image_url="https://images.example.com/late.jpg")

    with CaptureQueriesContext(connection) as queries:
        statuses = MaterialDetectionJob.objects.per_status()

    assert statuses.estimated is True
    assert len(queries) == 1
    # The share of each status as ANALYZE saw it (all of them, in a small
    # table), times the rows the table holds now.
    shares = {"PENDING": 2, "PROCESSING": 0, "COMPLETED": 2, "FAILED": 3, "CANCELLED": 2}
    rows = planner_row_estimate(connection, MaterialDetectionJob)
    assert dict(statuses.counts) == {status: round(n / 9 * rows) for status, n in shares.items()}


@pytest.mark.django_db
def test_per_day_of_a_big_table_counts_the_rows_since_its_analysis(
    detections, estimated, make_material
) -> None:
    analyze()
    for i in range(5):
        # Newer than anything ANALYZE saw: counted one by one.
        make_material(f"late-{i}", created_at=at_day(0, hour=20))

    with CaptureQueriesContext(connection) as queries:
        daily = DetectedMaterial.objects.per_day(30, now=NOW)

    assert daily.estimated is True
    assert len(queries) == 2
    assert "pg_stats" in queries[0]["sql"]
    today = dict(daily.days)[NOW.date()]
    # Today's 3 interpolated from the histogram, and the 5 rows since, exactly.
    assert today - 5 == pytest.approx(3, abs=1)
    # Rounded day by day, a bucket spread thin over many days loses a little.
    assert daily.total == pytest.approx(7 + 5, abs=3)
    make_material("later", created_at=at_day(0, hour=21))
    make_material("later", created_at=at_day(0, hour=22))
    assert dict(DetectedMaterial.objects.per_day(30, now=NOW).days)[NOW.date()] == today + 2


@pytest.mark.django_db
def test_confidence_distribution_of_a_big_table_is_sampled(
    detections, estimated, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyze()
    monkeypatch.setattr("materials.estimates.ESTIMATE_THRESHOLD", 10**9)
    exact = DetectedMaterial.objects.confidence_distribution(10)
    monkeypatch.setattr("materials.estimates.ESTIMATE_THRESHOLD", 1)

    with CaptureQueriesContext(connection) as queries:
        sampled = DetectedMaterial.objects.confidence_distribution(10)

    assert len(queries) == 2
    assert "TABLESAMPLE SYSTEM" in queries[1]["sql"]
    # A table smaller than the sample is read whole: the counts are exact.
    assert sampled.sample_percent == 100.0
    assert sampled.categories == exact.categories


# Statistics, as the planner reads them


def test_range_fractions_weigh_common_values_and_spread_buckets() -> None:
    stats = ColumnStatistics(
        rows=1000,
        analysed=True,
        null_fraction=0.1,
        most_common=((5, 0.3),),
        # Three buckets of 0.2 each (1 - 0.1 - 0.3 = 0.6), the last a single value.
        histogram=(0, 10, 20, 20),
    )

    assert stats.range_fractions([(0, 5)]) == [pytest.approx(0.2 * 0.5)]
    assert stats.range_fractions([(5, 6)]) == [pytest.approx(0.3 + 0.2 * 0.1)]
    assert stats.range_fractions([(10, 20)]) == [pytest.approx(0.2)]
    assert stats.range_fractions([(20, 21)]) == [pytest.approx(0.2)]
    assert stats.range_fractions([(21, 99)]) == [0.0]
    assert sum(stats.range_fractions([(-1, 5), (5, 20), (20, 30)])) == pytest.approx(0.9)
    assert stats.upper_bound == 20


def test_statistics_without_a_histogram() -> None:
    stats = ColumnStatistics(rows=10, analysed=True, most_common=(("a", 0.7), ("b", 0.3)))

    assert stats.value_fraction("a") == 0.7
    assert stats.value_fraction("c") == 0.0
    assert stats.histogram_fraction == pytest.approx(0.0)
    assert stats.range_fractions([("a", "b")]) == [0.7]
    assert stats.upper_bound == "b"
    assert ColumnStatistics(rows=0).upper_bound is None


# The SVG


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20), (4321, 5000)]
)
def test_nice_ceiling(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling


def bars(svg: str) -> list[tuple[str, int]]:
    return [
        (label, int(value))
        for label, value in re.findall(r'data-label="([^"]*)" data-value="(\d+)"', svg)
    ]


def test_column_chart_draws_a_bar_per_point() -> None:
    svg = column_chart(
        [("2025-06-01", "Jun 1", 3), ("2025-06-02", "Jun 2", 0), ("2025-06-03", "Jun 3", 10)],
        label="Detections",
    )

    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" class="chart column-chart"')
    assert bars(svg) == [("2025-06-01", 3), ("2025-06-02", 0), ("2025-06-03", 10)]
    assert "<title>2025-06-03: 10</title>" in svg
    # The tallest bar reaches the top of the scale (10): 188 px of 188.
    assert 'height="188.0" data-label="2025-06-03"' in svg


def test_bar_chart_colours_each_bar() -> None:
    svg = bar_chart([("Failed", 1234, "#b91c1c"), ("Completed", 5, "#15803d")], label="Jobs")

    assert bars(svg) == [("Failed", 1234), ("Completed", 5)]
    assert 'style="fill: #b91c1c"' in svg
    assert ">1,234</text>" in svg


def test_charts_escape_their_labels() -> None:
    svg = histogram_rows(
        [('<script>alert("x")</script>', [1, 2])], label="a & b", edges=["0", "0.5", "1"]
    )

    assert "<script>" not in svg
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in svg
    assert 'aria-label="a &amp; b"' in svg


# The page


@pytest.mark.django_db
def test_anonymous_user_is_redirected_to_login(client: Client) -> None:
    response = client.get(DASHBOARD)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={DASHBOARD}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "codenames", [(), ("view_detectedmaterial",), ("view_materialdetectionjob",)]
)
def test_staff_without_both_view_permissions_is_forbidden(
    client: Client, codenames: tuple[str, ...]
) -> None:
    staff = staff_client(client, *codenames)

    assert staff.get(DASHBOARD).status_code == 403
    assert DASHBOARD not in staff.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
def test_index_and_job_list_link_to_the_charts(viewer_client: Client) -> None:
    index = viewer_client.get(reverse("admin:index")).content.decode()
    jobs = viewer_client.get(reverse("admin:materials_materialdetectionjob_changelist"))
    materials = viewer_client.get(reverse("admin:materials_detectedmaterial_changelist"))

    assert f'<a href="{DASHBOARD}">Detection charts</a>' in index
    assert f'<a href="{DASHBOARD}" class="viewlink">Charts</a>' in jobs.content.decode()
    assert DASHBOARD not in materials.content.decode()


def section(content: str, name: str) -> str:
    match = re.search(rf'<section id="chart-{name}">(.*?)</section>', content, re.DOTALL)
    assert match, name
    return match.group(1)


@pytest.mark.django_db
def test_dashboard_shows_the_three_charts_with_their_totals(
    viewer_client: Client, detections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)

    content = viewer_client.get(DASHBOARD).content.decode()

    daily = section(content, "daily")
    assert '<strong class="total" data-total="7">7</strong> detections' in daily
    assert "estimated" not in daily
    assert bars(daily)[-1] == ("2025-06-30", 3)
    assert sum(value for _, value in bars(daily)) == 7
    statuses = section(content, "statuses")
    assert '<strong class="total" data-total="9">9</strong> jobs' in statuses
    assert bars(statuses) == [
        ("Pending", 2),
        ("Processing", 0),
        ("Completed", 2),
        ("Failed", 3),
        ("Cancelled", 2),
    ]
    confidence = section(content, "confidence")
    assert '<strong class="total" data-total="18">18</strong> detected materials' in confidence
    assert ("wood, 0.5 to 0.6", 2) in bars(confidence)
    assert ("(none), 0.9 to 1", 1) in bars(confidence)


@pytest.mark.django_db
def test_dashboard_says_what_is_estimated(viewer_client: Client, detections, estimated) -> None:
    analyze()

    content = viewer_client.get(DASHBOARD).content.decode()

    assert "(estimated from the table's statistics, with the rows since" in section(
        content, "daily"
    )
    assert "(estimated from the table's statistics)" in section(content, "statuses")
    assert "(estimated from a sample of 100% of the table)" in section(content, "confidence")


def count_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(DASHBOARD).status_code == 200
    return len(queries)


@pytest.mark.django_db
@pytest.mark.parametrize("big", [False, True], ids=["counted", "estimated"])
def test_dashboard_query_count_does_not_grow_with_rows(
    viewer_client: Client, make_job, make_material, monkeypatch: pytest.MonkeyPatch, big: bool
) -> None:
    if big:
        require_postgresql()
        monkeypatch.setattr("materials.estimates.ESTIMATE_THRESHOLD", 1)
    today = timezone.now()

    def add(start: int, stop: int) -> None:
        for i in range(start, stop):
            job = make_job(list(JobStatus)[i % len(JobStatus)])
            make_material(
                f"m-{i}",
                job=job,
                category=f"category-{i % 7}",
                confidence=i / 60,
                created_at=today - timedelta(days=i % 40),
            )
        if connection.vendor == "postgresql":
            analyze()

    add(0, 5)
    viewer_client.get(DASHBOARD)  # warm per-process caches (content types and the like)
    with_5 = count_queries(viewer_client)
    add(5, 60)
    with_60 = count_queries(viewer_client)

    assert with_5 == with_60
