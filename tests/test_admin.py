"""The read-only admin over detection jobs and detected materials."""

from __future__ import annotations

import ast
import importlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from materials.admin.display import STATUS_COLOURS, format_duration, short_id, status_badge
from materials.admin.filters import distinct_values
from materials.admin.options import CONFIDENCE_RANGES, INLINE_MATERIALS_LIMIT
from materials.admin.views.main import sorted_after_filtering
from materials.estimates import estimated_count_sql, estimated_table_count, is_unfiltered
from materials.models import DetectedMaterial, JobStatus, MaterialDetectionJob
from tests.support.users import staff_user

MATERIALS_LIST = reverse("admin:materials_detectedmaterial_changelist")
JOBS_LIST = reverse("admin:materials_materialdetectionjob_changelist")


def material_change_url(material: DetectedMaterial) -> str:
    return reverse("admin:materials_detectedmaterial_change", args=[material.pk])


def job_change_url(job: MaterialDetectionJob) -> str:
    return reverse("admin:materials_materialdetectionjob_change", args=[job.pk])


def listed_names(response: Any) -> set[str]:
    return {material.material_name for material in response.context["cl"].result_list}


@pytest.fixture
def make_job() -> Callable[..., MaterialDetectionJob]:
    def make(status: str = JobStatus.COMPLETED, **fields: Any) -> MaterialDetectionJob:
        fields.setdefault("image_url", f"https://images.example.com/{uuid.uuid4().hex}.jpg")
        return MaterialDetectionJob.objects.create(status=status, **fields)

    return make


@pytest.fixture
def make_material() -> Callable[..., DetectedMaterial]:
    def make(job: MaterialDetectionJob, name: str, **fields: Any) -> DetectedMaterial:
        fields.setdefault("category", "mineral")
        fields.setdefault("confidence", 0.9)
        fields.setdefault("bounding_box", {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4})
        return DetectedMaterial.objects.create(job=job, material_name=name, **fields)

    return make


@pytest.fixture
def sample(make_job, make_material) -> dict[str, Any]:
    """Two completed jobs and a failed one, with distinct material names."""
    done = make_job(JobStatus.COMPLETED)
    other = make_job(JobStatus.COMPLETED)
    failed = make_job(JobStatus.FAILED, error_message="image could not be downloaded")
    rows = {
        "concrete slab": make_material(done, "concrete slab", category="mineral"),
        "Concrete block": make_material(done, "Concrete block", category="mineral"),
        "reinforced concrete": make_material(done, "reinforced concrete", category="composite"),
        "steel beam": make_material(other, "steel beam", category="metal"),
        "stainless steel": make_material(other, "stainless steel", category="metal"),
        "timber frame": make_material(failed, "timber frame", category="wood"),
    }
    return {"done": done, "other": other, "failed": failed, "materials": rows}


def require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: run with DATABASE_URL=postgresql://...")


@pytest.fixture
def viewer_client(client: Client) -> Client:
    """A staff user holding both view permissions, and nothing else."""
    client.force_login(staff_user("viewer", "view_detectedmaterial", "view_materialdetectionjob"))
    return client


@pytest.fixture
def superuser_client(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", password=None))
    return client


# Layout

MODEL_AGNOSTIC = (
    "materials.estimates",
    "materials.admin.charts",
    "materials.admin.filters",
    "materials.admin.utils",
    "materials.admin.views.main",
)


@pytest.mark.parametrize("module", MODEL_AGNOSTIC)
def test_model_agnostic_modules_import_no_model(module: str) -> None:
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)

    project = {name for name in imported if name and name.split(".")[0] == "materials"}
    assert project <= set(MODEL_AGNOSTIC), project


# Access


@pytest.mark.django_db
@pytest.mark.parametrize("url", [MATERIALS_LIST, JOBS_LIST])
def test_anonymous_user_is_redirected_to_login(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={url}"


@pytest.mark.django_db
@pytest.mark.parametrize("url", [MATERIALS_LIST, JOBS_LIST])
def test_staff_without_view_permission_is_forbidden(client: Client, url: str) -> None:
    client.force_login(staff_user("nobody"))

    assert client.get(url).status_code == 403


@pytest.mark.django_db
def test_staff_without_view_permission_cannot_open_a_material(client: Client, sample) -> None:
    client.force_login(staff_user("jobs-only", "view_materialdetectionjob"))
    material = sample["materials"]["steel beam"]

    assert client.get(MATERIALS_LIST).status_code == 403
    assert client.get(material_change_url(material)).status_code == 403
    assert client.get(job_change_url(sample["other"])).status_code == 200


@pytest.mark.django_db
def test_viewer_sees_every_material_with_its_job(viewer_client: Client, sample) -> None:
    response = viewer_client.get(MATERIALS_LIST)

    assert response.status_code == 200
    assert listed_names(response) == set(sample["materials"])
    content = response.content.decode()
    for name in sample["materials"]:
        assert name in content
    # The job column links to the job's admin page, by a short id with the
    # whole one on hover, and shows its status.
    failed = sample["failed"].pk
    assert (
        f'<a href="{job_change_url(sample["failed"])}"><span class="short-id" title="{failed}" '
        f'style="font-family: monospace; white-space: nowrap;">{str(failed)[:8]}</span></a>'
    ) in content
    assert f">{failed}<" not in content
    assert "Failed" in content
    # Read-only: no add button, no bulk actions.
    assert reverse("admin:materials_detectedmaterial_add") not in content
    assert "_selected_action" not in content


@pytest.mark.django_db
def test_jobs_list_shows_every_job(viewer_client: Client, sample) -> None:
    response = viewer_client.get(JOBS_LIST)

    assert response.status_code == 200
    listed = {job.pk for job in response.context["cl"].result_list}
    assert listed == {sample["done"].pk, sample["other"].pk, sample["failed"].pk}
    assert reverse("admin:materials_materialdetectionjob_add") not in response.content.decode()


def test_short_id_keeps_the_whole_id_for_the_tooltip() -> None:
    job_id = uuid.UUID("8a872ef2-ceec-46e1-8b49-76ac3b0afda0")

    assert short_id(job_id) == (
        '<span class="short-id" title="8a872ef2-ceec-46e1-8b49-76ac3b0afda0" '
        'style="font-family: monospace; white-space: nowrap;">8a872ef2</span>'
    )


@pytest.mark.django_db
def test_job_list_shows_short_ids_linking_to_each_job(viewer_client: Client, sample) -> None:
    content = viewer_client.get(JOBS_LIST).content.decode()

    for job in (sample["done"], sample["other"], sample["failed"]):
        link = f'<th class="field-short_id"><a href="{job_change_url(job)}">{short_id(job.pk)}</a>'
        assert link in content
        assert f">{job.pk}<" not in content


# Filters and search


@pytest.mark.django_db
def test_category_filter_narrows_the_list(viewer_client: Client, sample) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"category": "metal"})

    assert response.status_code == 200
    assert listed_names(response) == {"steel beam", "stainless steel"}


@pytest.mark.django_db
def test_job_status_filter_narrows_the_list(viewer_client: Client, sample) -> None:
    failed = viewer_client.get(MATERIALS_LIST, {"job__status__exact": JobStatus.FAILED})
    completed = viewer_client.get(MATERIALS_LIST, {"job__status__exact": JobStatus.COMPLETED})

    assert listed_names(failed) == {"timber frame"}
    assert listed_names(completed) == set(sample["materials"]) - {"timber frame"}


@pytest.mark.django_db
def test_filters_combine(viewer_client: Client, sample) -> None:
    response = viewer_client.get(
        MATERIALS_LIST, {"category": "mineral", "job__status__exact": JobStatus.COMPLETED}
    )

    assert listed_names(response) == {"concrete slab", "Concrete block"}


@pytest.mark.django_db
def test_job_status_filter_offers_every_status(viewer_client: Client, sample) -> None:
    content = viewer_client.get(MATERIALS_LIST).content.decode()

    for status in JobStatus:
        assert f"?job__status__exact={status.value}" in content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("term", "on_postgresql", "on_sqlite"),
    [
        ("concrete", {"concrete slab"}, {"concrete slab", "Concrete block"}),
        ("Conc", {"Concrete block"}, {"concrete slab", "Concrete block"}),
        ("CONCRETE", set(), {"concrete slab", "Concrete block"}),
        ('"concrete s"', {"concrete slab"}, {"concrete slab"}),  # quoted: one term
        ("steel", {"steel beam"}, {"steel beam"}),
    ],
)
def test_search_matches_a_name_prefix(
    viewer_client: Client, sample, term: str, on_postgresql: set[str], on_sqlite: set[str]
) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"q": term})

    assert response.status_code == 200
    # A prefix search: "reinforced concrete" and "stainless steel" contain the
    # term but are not listed. Case sensitive, as the pattern index serves it;
    # SQLite's LIKE ignores ASCII case.
    expected = on_postgresql if connection.vendor == "postgresql" else on_sqlite
    assert listed_names(response) == expected


@pytest.mark.django_db
def test_search_help_says_where_the_name_match_is_case_sensitive(viewer_client: Client) -> None:
    content = viewer_client.get(MATERIALS_LIST).content.decode()

    # test_search_matches_a_name_prefix proves it on each dialect.
    assert (
        '<div class="help" id="searchbar_helptext">The start of a material name (case '
        "sensitive on PostgreSQL, not on SQLite), or a job&#x27;s exact UUID.</div>"
    ) in content


@pytest.mark.django_db
@pytest.mark.parametrize("term", ["50%", "a_b", "back\\slash"])
def test_search_treats_like_wildcards_literally(
    viewer_client: Client, make_job, make_material, term: str
) -> None:
    job = make_job()
    make_material(job, "50% recycled steel")
    make_material(job, "500 grade steel")
    make_material(job, "a_b board")
    make_material(job, "axb board")
    make_material(job, "back\\slash")

    response = viewer_client.get(MATERIALS_LIST, {"q": term})

    assert (
        listed_names(response)
        == {
            "50%": {"50% recycled steel"},
            "a_b": {"a_b board"},
            "back\\slash": {"back\\slash"},
        }[term]
    )


@pytest.mark.django_db
def test_name_search_is_a_plain_like_on_the_column(rf, sample) -> None:
    # LIKE 'prefix%' on the column itself, which a varchar_pattern_ops index
    # serves, count included; UPPER(...) would need an expression index.
    model_admin = admin.site.get_model_admin(DetectedMaterial)
    queryset, _ = model_admin.get_search_results(
        rf.get(MATERIALS_LIST), DetectedMaterial.objects.all(), "steel"
    )

    sql = str(queryset.query)
    assert "UPPER(" not in sql
    if connection.vendor == "postgresql":
        assert '"detected_materials"."material_name"::text LIKE steel%' in sql


@pytest.mark.django_db
@pytest.mark.parametrize(
    "form", [str, lambda job_id: str(job_id).upper(), lambda job_id: job_id.hex]
)
def test_search_matches_a_job_uuid_exactly(viewer_client: Client, sample, form) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"q": form(sample["other"].pk)})

    assert response.status_code == 200
    assert listed_names(response) == {"steel beam", "stainless steel"}


@pytest.mark.django_db
def test_job_uuid_search_compares_the_indexed_column_directly(rf, sample) -> None:
    # Django's own "=job__id" compares UPPER(job_id::text), which no index serves.
    model_admin = admin.site.get_model_admin(DetectedMaterial)
    queryset, may_have_duplicates = model_admin.get_search_results(
        rf.get(MATERIALS_LIST), DetectedMaterial.objects.all(), str(sample["other"].pk)
    )

    sql = str(queryset.query)
    assert '"detected_materials"."job_id" = ' in sql
    assert 'UPPER("detected_materials"."job_id"' not in sql
    # No name match OR-ed in, which would force a scan of the whole table.
    assert "LIKE" not in sql.upper()
    assert may_have_duplicates is False


@pytest.mark.django_db
def test_search_by_unknown_job_uuid_finds_nothing(viewer_client: Client, sample) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"q": str(uuid.uuid4())})

    assert response.status_code == 200
    assert listed_names(response) == set()


@pytest.mark.django_db
# A UUID one digit short; fixed, so that every test worker collects the same tests.
@pytest.mark.parametrize(
    "term", ["not-a-uuid", "12345", "6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5", "'%_'"]
)
def test_search_with_an_invalid_uuid_does_not_crash(
    viewer_client: Client, sample, term: str
) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"q": term})

    assert response.status_code == 200
    assert listed_names(response) == set()


@pytest.mark.django_db
def test_search_terms_are_all_required(viewer_client: Client, sample) -> None:
    # Each term must match: "steel" by name and the job by id.
    response = viewer_client.get(MATERIALS_LIST, {"q": f"steel {sample['other'].pk}"})
    mismatch = viewer_client.get(MATERIALS_LIST, {"q": f"concrete {sample['other'].pk}"})

    assert listed_names(response) == {"steel beam"}
    assert listed_names(mismatch) == set()


@pytest.mark.django_db
@pytest.mark.parametrize("term", ["not-a-uuid", ""])
def test_jobs_search_by_uuid(viewer_client: Client, sample, term: str) -> None:
    found = viewer_client.get(JOBS_LIST, {"q": str(sample["failed"].pk)})
    other = viewer_client.get(JOBS_LIST, {"q": term})

    assert [job.pk for job in found.context["cl"].result_list] == [sample["failed"].pk]
    assert other.status_code == 200
    expected = 3 if term == "" else 0
    assert len(other.context["cl"].result_list) == expected


# Read-only


@pytest.mark.django_db
def test_material_change_view_is_read_only(viewer_client: Client, sample) -> None:
    material = sample["materials"]["steel beam"]
    response = viewer_client.get(material_change_url(material))

    assert response.status_code == 200
    content = response.content.decode()
    assert "steel beam" in content
    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"'):
        assert button not in content
    assert reverse("admin:materials_detectedmaterial_delete", args=[material.pk]) not in content


@pytest.mark.django_db
@pytest.mark.parametrize("user", ["viewer", "superuser"])
def test_writes_are_refused_even_for_superusers(
    request: pytest.FixtureRequest, sample, user: str
) -> None:
    client: Client = request.getfixturevalue(f"{user}_client")
    material = sample["materials"]["steel beam"]
    job = sample["other"]

    change = client.post(
        material_change_url(material),
        {"material_name": "gold", "category": "metal", "confidence": "1", "_save": "Save"},
    )
    delete = client.post(
        reverse("admin:materials_detectedmaterial_delete", args=[material.pk]), {"post": "yes"}
    )
    add = client.get(reverse("admin:materials_detectedmaterial_add"))
    job_change = client.post(job_change_url(job), {"status": JobStatus.FAILED, "_save": "Save"})
    job_delete = client.post(
        reverse("admin:materials_materialdetectionjob_delete", args=[job.pk]), {"post": "yes"}
    )
    bulk_delete = client.post(
        MATERIALS_LIST, {"action": "delete_selected", "_selected_action": [str(material.pk)]}
    )

    assert change.status_code == 403
    assert delete.status_code == 403
    assert add.status_code == 403
    assert job_change.status_code == 403
    assert job_delete.status_code == 403
    # The changelist has no actions, so the POST changes nothing.
    assert bulk_delete.status_code in (200, 302)
    material.refresh_from_db()
    job.refresh_from_db()
    assert material.material_name == "steel beam"
    assert job.status == JobStatus.COMPLETED
    assert DetectedMaterial.objects.count() == len(sample["materials"])


# The job page


@pytest.mark.django_db
def test_job_page_shows_its_materials_inline(viewer_client: Client, sample) -> None:
    response = viewer_client.get(job_change_url(sample["done"]))

    assert response.status_code == 200
    content = response.content.decode()
    for name in ("concrete slab", "Concrete block", "reinforced concrete"):
        assert name in content
    for name in ("steel beam", "stainless steel", "timber frame"):
        assert name not in content
    assert 'name="_save"' not in content
    # A link to the job's full list in the materials changelist.
    assert f"{MATERIALS_LIST}?job__id__exact={sample['done'].pk}" in content
    assert "View all 3 detected materials" in content


@pytest.mark.django_db
def test_job_page_inline_is_capped_at_the_most_confident(
    viewer_client: Client, make_job, make_material
) -> None:
    job = make_job()
    total = INLINE_MATERIALS_LIMIT + 5
    for i in range(total):
        make_material(job, f"material-{i:03d}", confidence=i / total)

    response = viewer_client.get(job_change_url(job))

    assert response.status_code == 200
    (inline,) = response.context["inline_admin_formsets"]
    shown = [form.original.material_name for form in inline]
    expected = [f"material-{i:03d}" for i in reversed(range(total))][:INLINE_MATERIALS_LIMIT]
    assert shown == expected
    content = response.content.decode()
    for i in range(total - INLINE_MATERIALS_LIMIT):
        assert f"material-{i:03d}" not in content
    assert f"View all {total} detected materials" in content


@pytest.mark.django_db
def test_view_all_link_lists_exactly_the_jobs_materials(viewer_client: Client, sample) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"job__id__exact": str(sample["other"].pk)})

    assert response.status_code == 200
    assert listed_names(response) == {"steel beam", "stainless steel"}


# The confidence filter


CONFIDENCES = (0.0, 0.3, 0.4999, 0.5, 0.7, 0.7999, 0.8, 0.9, 0.9499, 0.95, 0.99, 1.0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0-0.5", {0.0, 0.3, 0.4999}),
        ("0.5-0.8", {0.5, 0.7, 0.7999}),
        ("0.8-0.95", {0.8, 0.9, 0.9499}),
        ("0.95-1", {0.95, 0.99, 1.0}),
    ],
)
def test_confidence_filter_lists_exactly_its_range(
    viewer_client: Client, make_job, make_material, value: str, expected: set[float]
) -> None:
    job = make_job()
    for confidence in CONFIDENCES:
        make_material(job, f"c-{confidence}", confidence=confidence)

    response = viewer_client.get(MATERIALS_LIST, {"confidence": value})

    assert response.status_code == 200
    assert listed_names(response) == {f"c-{confidence}" for confidence in expected}
    assert response.context["cl"].result_count == len(expected)


@pytest.mark.django_db
def test_confidence_filter_offers_every_range(viewer_client: Client, sample) -> None:
    content = viewer_client.get(MATERIALS_LIST).content.decode()

    for value, label, _, _ in CONFIDENCE_RANGES:
        assert f"?confidence={value}" in content
        assert label in content


@pytest.mark.django_db
def test_unknown_confidence_range_is_rejected(viewer_client: Client, sample) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"confidence": "0.1-0.2"})

    # Django's answer to bad list parameters: back to the list, flagged.
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


# The category filter


@pytest.mark.django_db
def test_category_filter_offers_each_category_once(
    viewer_client: Client, sample, make_material
) -> None:
    make_material(sample["done"], "mystery", category=None)
    response = viewer_client.get(MATERIALS_LIST)

    (category_filter,) = [
        spec for spec in response.context["cl"].filter_specs if spec.title == "category"
    ]
    assert category_filter.lookup_choices == ["composite", "metal", "mineral", "wood", None]
    content = response.content.decode()
    assert "?category=metal" in content
    assert "?category__isnull=True" in content


def test_distinct_values_use_one_query_whatever_the_rows(
    django_assert_num_queries, make_job, make_material, db
) -> None:
    field = DetectedMaterial._meta.get_field("category")
    assert distinct_values(DetectedMaterial, field) == []

    job = make_job()
    for i in range(12):
        make_material(job, f"m-{i}", category=["b", "a", None, "c"][i % 4])

    with django_assert_num_queries(1):
        assert distinct_values(DetectedMaterial, field) == ["a", "b", "c", None]


@pytest.mark.django_db
def test_uncategorised_filter_lists_them(viewer_client: Client, sample, make_material) -> None:
    make_material(sample["done"], "mystery", category=None)

    response = viewer_client.get(MATERIALS_LIST, {"category__isnull": "True"})

    assert listed_names(response) == {"mystery"}


# The date drill-down


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, 30, tzinfo=UTC)


@pytest.fixture
def dated(make_job, make_material) -> None:
    """Materials on four days: two in March 2024, one in July 2024, one in 2026."""
    job = make_job()
    make_material(job, "early", category="metal", created_at=at(2024, 3, 5))
    make_material(job, "mid-march", category="wood", created_at=at(2024, 3, 20))
    make_material(job, "summer", category="metal", created_at=at(2024, 7, 1))
    make_material(job, "late", category="wood", created_at=at(2026, 1, 15))


def hierarchy(client: Client, **params: Any) -> tuple[Any, list[str], Any]:
    response = client.get(MATERIALS_LIST, params)
    assert response.status_code == 200
    context = response.context["cl"].date_hierarchy_context
    return response, [choice["title"] for choice in context["choices"]], context["back"]


@pytest.mark.django_db
def test_date_hierarchy_offers_only_years_with_rows(viewer_client: Client, dated) -> None:
    response, titles, back = hierarchy(viewer_client)

    # No 2025: nothing was detected then.
    assert titles == ["2024", "2026"]
    assert back is None
    assert "?created_at__year=2024" in response.content.decode()


@pytest.mark.django_db
def test_date_hierarchy_drills_down_to_months_and_days(viewer_client: Client, dated) -> None:
    response, months, back = hierarchy(viewer_client, created_at__year="2024")
    assert months == ["March 2024", "July 2024"]
    assert back["title"] == "All dates"
    assert listed_names(response) == {"early", "mid-march", "summer"}

    response, days, back = hierarchy(viewer_client, created_at__year="2024", created_at__month="3")
    assert days == ["March 5", "March 20"]
    assert back["title"] == "2024"
    assert listed_names(response) == {"early", "mid-march"}

    response, day, back = hierarchy(
        viewer_client, created_at__year="2024", created_at__month="3", created_at__day="20"
    )
    assert day == ["March 20"]
    assert back["title"] == "March 2024"
    assert listed_names(response) == {"mid-march"}


@pytest.mark.django_db
def test_date_hierarchy_follows_the_filters(viewer_client: Client, dated) -> None:
    _, years, _ = hierarchy(viewer_client, category="metal")
    # Both metal rows are in 2024, in different months: Django starts at the year.
    assert years == ["March 2024", "July 2024"]

    _, wood_march, _ = hierarchy(
        viewer_client, category="wood", created_at__year="2024", created_at__month="3"
    )
    assert wood_march == ["March 20"]


@pytest.mark.django_db
@pytest.mark.parametrize("few_rows", [2000, 0], ids=["over the rows found", "by probes"])
def test_date_hierarchy_of_a_filtered_list_at_every_level(
    viewer_client: Client, dated, monkeypatch: pytest.MonkeyPatch, few_rows: int
) -> None:
    monkeypatch.setattr("materials.admin.views.main.FEW_ROWS", few_rows)
    # Every dated row has confidence 0.9: filtered, but all four of them.
    filtered = {"confidence": "0.8-0.95"}

    response, years, _ = hierarchy(viewer_client, **filtered)
    _, months, _ = hierarchy(viewer_client, created_at__year="2024", **filtered)
    _, days, _ = hierarchy(
        viewer_client, created_at__year="2024", created_at__month="3", **filtered
    )

    assert response.context["cl"].few_rows is bool(few_rows)
    assert years == ["2024", "2026"]
    assert months == ["March 2024", "July 2024"]
    assert days == ["March 5", "March 20"]


@pytest.mark.django_db
def test_date_hierarchy_of_one_month_starts_at_its_days(
    viewer_client: Client, make_job, make_material
) -> None:
    job = make_job()
    make_material(job, "a", created_at=at(2025, 2, 3))
    make_material(job, "b", created_at=at(2025, 2, 28))

    _, days, back = hierarchy(viewer_client)

    assert days == ["February 3", "February 28"]
    assert back["title"] == "2025"


@pytest.mark.django_db
def test_date_hierarchy_of_nothing_is_empty(viewer_client: Client, dated) -> None:
    response, titles, _ = hierarchy(viewer_client, q="no such material")

    assert titles == []
    assert listed_names(response) == set()


# Sorting


def names(response: Any) -> list[str]:
    return [m.material_name for m in response.context["cl"].result_list]


@pytest.mark.django_db
def test_only_the_indexed_columns_sort(viewer_client: Client, dated) -> None:
    newest_first = ["late", "summer", "mid-march", "early"]

    default = viewer_client.get(MATERIALS_LIST)
    # "o" holds list_display indexes: 0 is material_name, 2 confidence, 5 created_at.
    by_name = viewer_client.get(MATERIALS_LIST, {"o": "0"})  # refused: no index serves it
    oldest_first = viewer_client.get(MATERIALS_LIST, {"o": "5"})

    assert names(default) == newest_first
    assert names(by_name) == newest_first
    assert names(oldest_first) == newest_first[::-1]
    content = default.content.decode()
    assert content.count('class="sortable') == 2
    assert '<th scope="col" class="sortable column-confidence">' in content
    assert '<th scope="col" class="sortable column-created_at sorted descending">' in content


@pytest.mark.django_db
def test_materials_sort_by_confidence(viewer_client: Client, make_job, make_material) -> None:
    job = make_job()
    for name, confidence, day in (("low", 0.31, 1), ("top", 0.99, 2), ("mid", 0.7, 3)):
        make_material(job, name, confidence=confidence, created_at=at(2025, 1, day))

    ascending = viewer_client.get(MATERIALS_LIST, {"o": "2"})
    descending = viewer_client.get(MATERIALS_LIST, {"o": "-2"})
    then_newest = viewer_client.get(MATERIALS_LIST, {"o": "-2.-5"})

    assert names(ascending) == ["low", "mid", "top"]
    assert names(descending) == ["top", "mid", "low"]
    assert names(then_newest) == ["top", "mid", "low"]
    content = ascending.content.decode()
    assert '<th scope="col" class="sortable column-confidence sorted ascending">' in content
    assert ascending.context["cl"].get_ordering_field_columns() == {2: "asc"}


@pytest.mark.django_db
def test_an_unsortable_order_is_dropped_from_the_page(viewer_client: Client, dated) -> None:
    mixed = viewer_client.get(MATERIALS_LIST, {"o": "0.5"})
    refused = viewer_client.get(MATERIALS_LIST, {"o": "0.x.-9"})

    # The name part is dropped; the creation date's is kept.
    assert mixed.context["cl"].params["o"] == "5"
    assert names(mixed) == ["early", "mid-march", "summer", "late"]
    # Nothing sortable is left: the default order, and no "o" in the links.
    assert "o" not in refused.context["cl"].params
    assert names(refused) == ["late", "summer", "mid-march", "early"]
    assert "o=0" not in refused.content.decode()


# A few matching rows


# 20,000 materials over two weeks, a third of them steel (metal), and 150
# steel ones filed as wood: the planner takes "steel" and "wood" for
# independent, expects some 2,000 rows, and would rather walk the
# created_at index than sort them.
FEW_ROWS_SQL = (
    "INSERT INTO material_detection_jobs (id, image_url, status) "
    "SELECT md5('job' || i)::uuid, 'https://images.example.com/' || i, 'COMPLETED' "
    "FROM generate_series(1, 2000) AS i",
    "INSERT INTO detected_materials (id, job_id, material_name, category, confidence, created_at) "
    "SELECT md5('material' || i)::uuid, md5('job' || (1 + i % 2000))::uuid, "
    "(ARRAY['steel', 'timber', 'glass'])[1 + i % 3], "
    "(ARRAY['metal', 'wood', 'mineral'])[1 + i % 3], "
    "(i % 100) / 100.0, timestamptz '2025-01-01 00:00+00' + i * interval '1 minute' "
    "FROM generate_series(1, 20000) AS i",
    "UPDATE detected_materials SET category = 'wood' WHERE id IN "
    "(SELECT id FROM detected_materials WHERE material_name = 'steel' ORDER BY id LIMIT 150)",
    "ANALYZE detected_materials",
    "ANALYZE material_detection_jobs",
)


def plans(queries: CaptureQueriesContext, needle: str) -> list[str]:
    """The plans of the captured queries whose SQL holds ``needle``."""
    found = []
    with connection.cursor() as cursor:
        for query in queries:
            if needle in query["sql"]:
                cursor.execute(f"EXPLAIN {query['sql']}")
                found.append("\n".join(row for (row,) in cursor.fetchall()))
    return found


@pytest.mark.django_db
@pytest.mark.parametrize("few_rows", [True, False], ids=["fixed", "without the fix"])
def test_a_few_matching_rows_are_found_by_their_filters_indexes(
    viewer_client: Client, monkeypatch: pytest.MonkeyPatch, few_rows: bool
) -> None:
    require_postgresql()
    with connection.cursor() as cursor:
        for statement in FEW_ROWS_SQL:
            cursor.execute(statement)
    if not few_rows:
        monkeypatch.setattr("materials.admin.views.main.FEW_ROWS", 0)

    with CaptureQueriesContext(connection) as queries:
        response = viewer_client.get(MATERIALS_LIST, {"q": "steel", "category": "wood"})

    cl = response.context["cl"]
    assert cl.result_count == 150
    assert len(cl.result_list) == 100
    assert listed_names(response) == {"steel"}
    # All in January 2025: the drill-down offers the days with rows.
    assert [c["title"] for c in cl.date_hierarchy_context["choices"]][:2] == [
        "January 1",
        "January 2",
    ]
    filtered = plans(queries, "LIKE")
    # The count, the page, the drill-down's bounds and its probes.
    assert len(filtered) == 4
    walks = [plan for plan in filtered if "ix_detected_materials_created_at" in plan]
    if few_rows:
        assert walks == []
    else:
        # What the fix prevents: the page and the drill-down walk the index
        # of the order, testing the filter on every row they pass.
        assert len(walks) >= 2, filtered


@pytest.mark.django_db
def test_few_rows_sort_by_a_value_no_index_serves(sample) -> None:
    queryset = DetectedMaterial.objects.filter(category="metal").order_by("-created_at", "-pk")

    resorted = sorted_after_filtering(queryset)

    sql = str(resorted.query)
    column = '"detected_materials"."created_at"'
    assert f"ORDER BY COALESCE({column}, {column}) DESC" in sql
    assert sql.endswith('"detected_materials"."id" DESC')
    assert list(resorted) == list(queryset)


# Counting


@pytest.mark.django_db
def test_unfiltered_list_is_counted_exactly_below_the_threshold(
    viewer_client: Client, sample
) -> None:
    response = viewer_client.get(MATERIALS_LIST)

    cl = response.context["cl"]
    assert cl.result_count == len(sample["materials"])
    assert cl.paginator.count_is_estimate is False
    assert f"{len(sample['materials'])} detected materials" in response.content.decode()


def test_is_unfiltered() -> None:
    materials = DetectedMaterial.objects.all()

    assert is_unfiltered(materials)
    assert is_unfiltered(materials.select_related("job").order_by("-created_at"))
    assert not is_unfiltered(materials.filter(category="metal"))
    assert not is_unfiltered(materials.distinct())
    assert not is_unfiltered(materials[:10])
    assert not is_unfiltered(materials.none())


@pytest.mark.django_db
def test_big_unfiltered_list_shows_the_planner_estimate(
    viewer_client: Client, sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgresql()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE detected_materials")
    monkeypatch.setattr("materials.estimates.ESTIMATE_THRESHOLD", 1)

    unfiltered = viewer_client.get(MATERIALS_LIST)
    filtered = viewer_client.get(MATERIALS_LIST, {"category": "metal"})

    cl = unfiltered.context["cl"]
    assert cl.paginator.count_is_estimate is True
    # ANALYZE of a small table reads every row: the estimate is exact here.
    assert cl.result_count == len(sample["materials"])
    count = len(sample["materials"])
    shown = f'statistics">about {count}</span> detected materials'
    assert shown in unfiltered.content.decode()
    assert filtered.context["cl"].paginator.count_is_estimate is False
    assert filtered.context["cl"].result_count == 2


@pytest.mark.django_db
@pytest.mark.parametrize(("threshold", "counts"), [(1, False), (10**9, True)])
def test_estimate_query_counts_the_table_only_below_the_threshold(
    sample, threshold: int, counts: bool
) -> None:
    require_postgresql()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE detected_materials")
        cursor.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
            + estimated_count_sql(connection, DetectedMaterial),
            ['"detected_materials"', threshold, threshold],
        )
        plan = "\n".join(row for (row,) in cursor.fetchall())

    count, estimated = estimated_table_count(connection, DetectedMaterial, threshold)

    assert count == len(sample["materials"])
    assert estimated is not counts
    assert ("Aggregate (never executed)" in plan) is not counts, plan


@pytest.mark.django_db
def test_a_page_counted_empty_is_not_fetched(viewer_client: Client, sample) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = viewer_client.get(MATERIALS_LIST, {"job__status__exact": JobStatus.CANCELLED})

    assert listed_names(response) == set()
    # Counted, then neither fetched nor drilled down into.
    material_queries = [q["sql"] for q in queries if "detected_materials" in q["sql"]]
    assert len(material_queries) == 2, material_queries  # the category choices and the count
    assert "COUNT(" in material_queries[1]


# The job list


@pytest.mark.parametrize("status", list(JobStatus))
def test_status_badge_colours_each_status(status: JobStatus) -> None:
    html = status_badge(status)

    assert html == (
        f'<span class="job-status job-status-{status.value.lower()}" '
        f'style="background-color: {STATUS_COLOURS[status]}; color: #fff; padding: 2px 8px; '
        f'border-radius: 9px; white-space: nowrap;">{status.label}</span>'
    )


def test_status_colours_are_distinct() -> None:
    assert set(STATUS_COLOURS) == set(JobStatus)
    assert len(set(STATUS_COLOURS.values())) == len(JobStatus)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0.0 s"),
        (12.34, "12.3 s"),
        (59.94, "59.9 s"),
        (60, "1 min 00 s"),
        (185.7, "3 min 05 s"),
        (3600, "1 h 00 min"),
        (3725, "1 h 02 min"),
    ],
)
def test_format_duration(seconds: float, shown: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == shown


def test_format_duration_of_an_unfinished_job() -> None:
    assert format_duration(None) == "—"


@pytest.mark.django_db
def test_job_list_shows_status_count_and_duration(
    viewer_client: Client, make_job, make_material
) -> None:
    started = at(2025, 6, 1)
    done = make_job(
        JobStatus.COMPLETED, created_at=started, completed_at=started + timedelta(seconds=12.34)
    )
    slow = make_job(
        JobStatus.COMPLETED, created_at=started, completed_at=started + timedelta(seconds=185)
    )
    pending = make_job(JobStatus.PENDING, created_at=started)
    failed = make_job(JobStatus.FAILED, created_at=started)
    for i in range(3):
        make_material(done, f"d-{i}")
    make_material(slow, "s-0")

    response = viewer_client.get(JOBS_LIST)

    assert response.status_code == 200
    rows = {job.pk: job for job in response.context["cl"].result_list}
    assert {pk: job.material_count for pk, job in rows.items()} == {
        done.pk: 3,
        slow.pk: 1,
        pending.pk: 0,
        failed.pk: 0,
    }
    model_admin = admin.site.get_model_admin(MaterialDetectionJob)
    assert model_admin.duration(rows[done.pk]) == "12.3 s"
    assert model_admin.duration(rows[slow.pk]) == "3 min 05 s"
    assert model_admin.duration(rows[pending.pk]) == "—"
    content = response.content.decode()
    for job in (done, pending, failed):
        assert str(status_badge(job.status)) in content
    assert "12.3 s" in content
    assert "3 min 05 s" in content


# The job page summary


@pytest.mark.django_db
def test_summary_counts_each_category_with_its_mean_confidence(make_job, make_material) -> None:
    job = make_job()
    other = make_job()
    make_material(job, "a", category="mineral", confidence=0.9)
    make_material(job, "b", category="mineral", confidence=0.8)
    make_material(job, "c", category="mineral", confidence=0.4)
    make_material(job, "d", category="metal", confidence=0.6)
    make_material(job, "e", category=None, confidence=0.5)
    make_material(other, "f", category="wood", confidence=0.1)

    with CaptureQueriesContext(connection) as queries:
        summary = DetectedMaterial.objects.filter(job=job).summarize()

    assert len(queries) == 1
    assert summary.total == 5
    assert summary.mean_confidence == pytest.approx(3.2 / 5)
    assert [(c.category, c.count) for c in summary.categories] == [
        ("mineral", 3),
        ("metal", 1),
        (None, 1),
    ]
    assert [c.mean_confidence for c in summary.categories] == pytest.approx([0.7, 0.6, 0.5])


@pytest.mark.django_db
def test_job_page_shows_the_summary(viewer_client: Client, make_job, make_material) -> None:
    job = make_job()
    make_material(job, "a", category="mineral", confidence=0.9)
    make_material(job, "b", category="mineral", confidence=0.8)
    make_material(job, "d", category="metal", confidence=0.6)

    content = viewer_client.get(job_change_url(job)).content.decode()

    assert "<tr><td>mineral</td><td>2</td><td>0.850</td></tr>" in content
    assert "<tr><td>metal</td><td>1</td><td>0.600</td></tr>" in content
    assert (
        '<tr class="total"><td><strong>all</strong></td><td><strong>3</strong></td>'
        "<td><strong>0.767</strong></td></tr></tbody>"
    ) in content
    assert str(status_badge(job.status)) in content


@pytest.mark.django_db
def test_job_page_without_materials(viewer_client: Client, make_job) -> None:
    job = make_job(JobStatus.FAILED, error_message="image could not be downloaded")

    content = viewer_client.get(job_change_url(job)).content.decode()

    assert "No materials detected." in content
    assert "View all 0 detected materials" in content


# CSRF


@pytest.mark.django_db
def test_csrf_protects_the_admin_login() -> None:
    User.objects.create_user("staff", password="a-long-password-1", is_staff=True)
    client = Client(enforce_csrf_checks=True)

    login_page = client.get(reverse("admin:login"))
    forged = client.post(
        reverse("admin:login"), {"username": "staff", "password": "a-long-password-1"}
    )
    token = login_page.cookies["csrftoken"].value
    genuine = client.post(
        reverse("admin:login"),
        {"username": "staff", "password": "a-long-password-1", "csrfmiddlewaretoken": token},
    )

    assert 'name="csrfmiddlewaretoken"' in login_page.content.decode()
    assert forged.status_code == 403
    assert genuine.status_code == 302


# Query counts


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    assert "e=1" not in response.get("Location", "")
    return len(queries)


def this_month() -> str:
    now = timezone.now()
    return f"created_at__year={now.year}&created_at__month={now.month}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        MATERIALS_LIST,
        f"{MATERIALS_LIST}?category=category-1",
        f"{MATERIALS_LIST}?q=material-1",
        f"{MATERIALS_LIST}?confidence=0.8-0.95",
        f"{MATERIALS_LIST}?job__status__exact=COMPLETED",
        f"{MATERIALS_LIST}?category=category-1&confidence=0.8-0.95&q=material",
        "this month",
        JOBS_LIST,
        f"{JOBS_LIST}?status=COMPLETED",
    ],
)
def test_changelist_query_count_does_not_grow_with_rows(
    viewer_client: Client, make_job, make_material, url: str
) -> None:
    if url == "this month":
        url = f"{MATERIALS_LIST}?{this_month()}"

    # One job per material, so a lazy job lookup would cost a query per row.
    def add_rows(start: int, stop: int) -> None:
        for i in range(start, stop):
            make_material(make_job(), f"material-{i}", category=f"category-{i % 3}")

    add_rows(0, 5)
    viewer_client.get(url)  # warm per-process caches (content types and the like)
    with_5 = count_queries(viewer_client, url)
    add_rows(5, 60)
    with_60 = count_queries(viewer_client, url)

    assert with_5 == with_60


@pytest.mark.django_db
def test_job_page_query_count_does_not_grow_with_materials(
    viewer_client: Client, make_job, make_material
) -> None:
    job = make_job()
    for i in range(5):
        make_material(job, f"material-{i}", category=f"category-{i % 3}")
    viewer_client.get(job_change_url(job))
    with_5 = count_queries(viewer_client, job_change_url(job))
    # Past the inline's cap, and in more categories.
    for i in range(5, 60):
        make_material(job, f"material-{i}", category=f"category-{i % 7}")
    with_60 = count_queries(viewer_client, job_change_url(job))

    assert with_5 == with_60
