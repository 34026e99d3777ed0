"""The admin, end to end, in a real headless Chromium.

Debian's ``chromium`` package (``/usr/bin/chromium``) driven by Playwright's
Python package; nothing is downloaded at run time (no ``playwright install``).
Without the browser or the package this skips, loudly; under ``CI=true`` it
fails instead, since CI must run it (``.ci/run`` installs Chromium).

The screenshots go to ``test-output/`` at the project's root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from materials.models import DetectedMaterial, JobStatus, MaterialDetectionJob

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
PASSWORD = "correct-horse-battery-staple"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but the browser test cannot run: {reason}", pytrace=False)
    pytest.skip(f"SKIPPED BROWSER TEST: {reason} (CI=true makes this a failure)")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian's package, or a loud skip (a failure under CI)."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found; install Debian's package: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -r requirements.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def rows(transactional_db: None) -> Iterator[dict[str, Any]]:
    """Two completed jobs with their materials, and a viewer allowed to see them.

    The domain tables are Alembic's, not Django's: a transactional test's
    flush leaves them alone, so the rows are deleted here afterwards.
    """
    started = timezone.now() - timedelta(minutes=5)
    steel_job = MaterialDetectionJob.objects.create(
        status=JobStatus.COMPLETED,
        image_url="https://images.example.com/a.jpg",
        created_at=started,
        completed_at=started + timedelta(seconds=12.34),
        model_version="matdet-2.4.0",
    )
    glass_job = MaterialDetectionJob.objects.create(
        status=JobStatus.COMPLETED,
        image_url="https://images.example.com/b.jpg",
        created_at=started + timedelta(minutes=1),
        completed_at=started + timedelta(minutes=1, seconds=75),
        model_version="matdet-2.4.0",
    )
    try:
        for job, name, category, confidence in (
            (steel_job, "steel beam", "metal", 0.97),
            (steel_job, "stainless steel", "metal", 0.91),
            (steel_job, "concrete slab", "mineral", 0.88),
            (glass_job, "steel rebar", "metal", 0.72),
            (glass_job, "glass pane", "mineral", 0.64),
        ):
            DetectedMaterial.objects.create(
                job=job, material_name=name, category=category, confidence=confidence
            )
        viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
        viewer.user_permissions.add(
            *Permission.objects.filter(
                codename__in=["view_detectedmaterial", "view_materialdetectionjob"]
            )
        )
        yield {"steel_job": steel_job, "glass_job": glass_job}
    finally:
        jobs = [steel_job.pk, glass_job.pk]
        DetectedMaterial.objects.filter(job__in=jobs).delete()
        MaterialDetectionJob.objects.filter(pk__in=jobs).delete()


def listed(page: Any) -> list[str]:
    return page.locator("#result_list tbody th.field-material_name").all_inner_texts()


@pytest.mark.django_db(transaction=True)
def test_staff_browse_filter_search_and_open_a_job(
    rows: dict[str, Any], live_server: Any, browser: Any
) -> None:
    # The rows come first: Playwright's sync API runs an event loop in this
    # thread, and Django refuses database calls while one runs.
    from playwright.sync_api import expect

    OUTPUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(20_000)

    # 1. Log in: the admin sends an anonymous visitor to its login form.
    page.goto(f"{live_server.url}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    page.fill("#id_username", "viewer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(f"{live_server.url}/admin/")

    # 2. The detected-materials list, from the admin's index.
    page.get_by_role("link", name="Detected materials", exact=True).first.click()
    expect(page).to_have_url(
        f"{live_server.url}{reverse('admin:materials_detectedmaterial_changelist')}"
    )
    expect(page.locator("#result_list tbody tr")).to_have_count(5)
    expect(page.locator("p.paginator")).to_contain_text("5 detected materials")
    page.screenshot(path=str(OUTPUT / "admin-materials-list.png"), full_page=True)

    # 3. Filter by category.
    page.locator("#changelist-filter").get_by_role("link", name="metal", exact=True).click()
    expect(page).to_have_url(re.compile(r"\?category=metal$"))
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    assert sorted(listed(page)) == ["stainless steel", "steel beam", "steel rebar"]

    # 4. Search by name prefix, within the filter.
    page.fill("#searchbar", "steel")
    page.press("#searchbar", "Enter")
    expect(page).to_have_url(re.compile(r"q=steel"))
    expect(page).to_have_url(re.compile(r"category=metal"))
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    assert sorted(listed(page)) == ["steel beam", "steel rebar"]
    page.screenshot(path=str(OUTPUT / "admin-materials-search.png"), full_page=True)

    # 5. Open a job from its material's row and see its materials inline.
    row = page.locator("#result_list tbody tr", has_text="steel beam")
    expect(row.locator(".job-status-completed")).to_have_text("Completed")
    row.locator("td.field-job_link a").click()
    job = rows["steel_job"]
    expect(page).to_have_url(
        f"{live_server.url}{reverse('admin:materials_materialdetectionjob_change', args=[job.pk])}"
    )
    inline = page.locator(".inline-group")
    expect(inline.locator("h2")).to_have_text("Detected materials (top 50 by confidence)")
    inline_names = inline.locator("td.field-material_name").all_inner_texts()
    assert inline_names == ["steel beam", "stainless steel", "concrete slab"]
    summary = page.locator("table.material-summary")
    summary_rows = summary.locator("tbody tr")
    expect(summary_rows).to_have_count(3)
    expect(summary_rows.nth(0).locator("td")).to_have_text(["metal", "2", "0.940"])
    expect(summary_rows.nth(1).locator("td")).to_have_text(["mineral", "1", "0.880"])
    expect(summary_rows.nth(2).locator("td")).to_have_text(["all", "3", "0.920"])
    expect(page.get_by_role("link", name="View all 3 detected materials")).to_be_visible()
    expect(page.locator(".field-duration .readonly")).to_have_text("12.3 s")

    # 6. The screenshot.
    path = OUTPUT / "admin-job-page.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000

    # And the job list: status badges, material counts, durations.
    page.locator(".breadcrumbs").get_by_role("link", name="Detection jobs").click()
    jobs = page.locator("#result_list tbody tr")
    expect(jobs).to_have_count(2)
    # Newest first: the glass job, then the steel job.
    expect(jobs.nth(0).locator("td.field-material_count")).to_have_text("2")
    expect(jobs.nth(0).locator("td.field-duration")).to_have_text("1 min 15 s")
    expect(jobs.nth(1).locator("td.field-material_count")).to_have_text("3")
    expect(jobs.nth(1).locator("td.field-duration")).to_have_text("12.3 s")
    expect(jobs.locator(".job-status-completed")).to_have_count(2)
    page.screenshot(path=str(OUTPUT / "admin-job-list.png"), full_page=True)


def log_in(page: Any, live_server: Any) -> None:
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "viewer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


@pytest.mark.django_db(transaction=True)
def test_staff_see_the_charts_and_sort_by_confidence(
    rows: dict[str, Any], live_server: Any, browser: Any
) -> None:
    from playwright.sync_api import expect

    today = timezone.localdate().isoformat()
    OUTPUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(20_000)
    log_in(page, live_server)
    expect(page).to_have_url(f"{live_server.url}/admin/")

    # The charts, from the admin's index.
    page.get_by_role("link", name="Detection charts").click()
    expect(page).to_have_url(f"{live_server.url}{reverse('admin:materials_dashboard')}")
    expect(page.locator("svg.chart")).to_have_count(3)
    daily = page.locator("#chart-daily")
    expect(daily.locator(".total")).to_have_text("5")
    expect(daily.locator("rect.bar")).to_have_count(30)
    # All five materials were detected today: the last bar.
    expect(daily.locator(f'rect.bar[data-label="{today}"]')).to_have_attribute("data-value", "5")
    statuses = page.locator("#chart-statuses")
    expect(statuses.locator(".total")).to_have_text("2")
    expect(statuses.locator('rect.bar[data-label="Completed"]')).to_have_attribute(
        "data-value", "2"
    )
    expect(statuses.locator('rect.bar[data-label="Failed"]')).to_have_attribute("data-value", "0")
    confidence = page.locator("#chart-confidence")
    expect(confidence.locator(".total")).to_have_text("5")
    # metal: 0.97 and 0.91 in the last bin, 0.72 in 0.7 to 0.8.
    expect(confidence.locator('rect.bar[data-label="metal, 0.9 to 1"]')).to_have_attribute(
        "data-value", "2"
    )
    expect(confidence.locator('rect.bar[data-label="metal, 0.7 to 0.8"]')).to_have_attribute(
        "data-value", "1"
    )
    expect(confidence.locator('rect.bar[data-label="mineral, 0.6 to 0.7"]')).to_have_attribute(
        "data-value", "1"
    )
    # Each bar's tooltip names it and its count.
    expect(statuses.locator('rect.bar[data-label="Completed"] title')).to_have_text("Completed: 2")
    path = OUTPUT / "admin-charts.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000

    # Sorting the materials by confidence, from its column's header.
    page.goto(f"{live_server.url}{reverse('admin:materials_detectedmaterial_changelist')}")
    page.locator("th.column-confidence a").first.click()
    expect(page).to_have_url(re.compile(r"\?o=2\.-5$"))
    ascending = ["glass pane", "steel rebar", "concrete slab", "stainless steel", "steel beam"]
    expect(page.locator("#result_list tbody th.field-material_name")).to_have_text(ascending)
    expect(page.locator("th.column-confidence")).to_have_class(re.compile("sorted ascending"))
    page.locator("th.column-confidence a.toggle").click()
    expect(page).to_have_url(re.compile(r"\?o=-2\.-5$"))
    expect(page.locator("#result_list tbody th.field-material_name")).to_have_text(ascending[::-1])
    page.screenshot(path=str(OUTPUT / "admin-materials-by-confidence.png"), full_page=True)

    # The job column: a short id, the whole one on hover.
    job = rows["steel_job"]
    short = page.locator("#result_list tbody tr", has_text="steel beam").locator(
        "td.field-job_link .short-id"
    )
    expect(short).to_have_text(str(job.pk)[:8])
    expect(short).to_have_attribute("title", str(job.pk))


# The schema page


@pytest.fixture
def schema_users(transactional_db: None) -> None:
    """A staff user with the schema permission, and one with only the tables' view permissions."""
    dba = User.objects.create_user("dba", password=PASSWORD, is_staff=True)
    dba.user_permissions.add(Permission.objects.get(codename="view_schema_state"))
    viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_detectedmaterial", "view_materialdetectionjob"]
        )
    )


@pytest.fixture
def drifted_alias(tmp_path: Path) -> Iterator[str]:
    """A drifted SQLite database (an index dropped by hand) under a Django alias of its own."""
    from sqlalchemy.engine import URL

    from migsupport.engine import create_engine
    from tests.support.inprocess import database_alias
    from tests.support.states import reach

    url = URL.create("sqlite", database=str(tmp_path / "drifted.sqlite3"))
    engine = create_engine(url)
    try:
        reach(engine, "drifted")
    finally:
        engine.dispose()
    with database_alias(url) as alias:
        yield alias


@pytest.mark.django_db(transaction=True)
def test_the_schema_page_shows_the_state_to_staff_allowed_to_see_it(
    schema_users: None, drifted_alias: str, live_server: Any, browser: Any
) -> None:
    from django.core.cache import cache
    from playwright.sync_api import expect

    from tests.support.states import DRIFT_INDEX, HEAD

    cache.clear()
    schema_page = reverse("admin:materials_schema")
    OUTPUT.mkdir(exist_ok=True)

    # Anonymous: the admin's login form, then back to the page.
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}{schema_page}")
    expect(page).to_have_url(f"{live_server.url}/admin/login/?next={schema_page}")
    page.fill("#id_username", "dba")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(f"{live_server.url}{schema_page}")

    # The test database is at the head: a green badge.
    badge = page.locator("#schema-row-state .schema-state")
    expect(badge).to_have_text("up_to_date")
    expect(badge).to_have_class("schema-state schema-state-up-to-date")
    expect(badge).to_have_css("background-color", "rgb(21, 128, 61)")
    expect(page.locator("#schema-row-head .revision")).to_have_text(HEAD)
    expect(page.locator(".schema-summary")).to_have_text(
        "The recorded version is the head, and the schema equals it."
    )
    expect(page.locator("#content-main form")).to_have_count(0)
    # The test database was upgraded by the guarded command: its deploys are logged.
    expect(page.locator("#schema-log .schema-log-entry").first).to_contain_text("alembic_upgrade")
    path = OUTPUT / "admin-schema-up-to-date.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000

    # From the index too.
    page.goto(f"{live_server.url}/admin/")
    page.get_by_role("link", name="Database schema").click()
    expect(page).to_have_url(f"{live_server.url}{schema_page}")

    # The drifted database, from the page's list of databases: a red badge, the difference.
    page.locator(".schema-databases").get_by_role("link", name=drifted_alias).click()
    expect(page).to_have_url(f"{live_server.url}{schema_page}?database={drifted_alias}")
    badge = page.locator("#schema-row-state .schema-state")
    expect(badge).to_have_text("drifted")
    expect(badge).to_have_css("background-color", "rgb(185, 28, 28)")
    expect(page.locator("#schema-differences li")).to_have_text([f"index {DRIFT_INDEX} is missing"])
    # Migrated by plain Alembic, before any guarded command: nothing logged.
    expect(page.locator(".schema-log-empty")).to_have_text("No deploy has been logged yet.")
    expect(page.locator(".schema-before-log")).to_have_text(
        "Revisions applied before the log existed: b662310f1380, 7c1d2e3f4a5b, 3d5f8a9b2c41"
    )
    path = OUTPUT / "admin-schema-drifted.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    page.close()

    # Staff without the permission: no link on the index, and 403 at the page.
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(20_000)
    log_in(page, live_server)
    expect(page).to_have_url(f"{live_server.url}/admin/")
    expect(page.get_by_role("link", name="Database schema")).to_have_count(0)
    response = page.goto(f"{live_server.url}{schema_page}")
    assert response is not None and response.status == 403
    page.screenshot(path=str(OUTPUT / "admin-schema-forbidden.png"), full_page=True)
    page.close()
