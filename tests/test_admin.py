"""The read-only admin over detection jobs and detected materials."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from materials.admin import INLINE_MATERIALS_LIMIT
from materials.models import DetectedMaterial, JobStatus, MaterialDetectionJob

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


def staff_user(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="unused", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="materials", codename__in=permissions)
    )
    assert user.user_permissions.count() == len(permissions)
    return user


@pytest.fixture
def viewer_client(client: Client) -> Client:
    """A staff user holding both view permissions, and nothing else."""
    client.force_login(staff_user("viewer", "view_detectedmaterial", "view_materialdetectionjob"))
    return client


@pytest.fixture
def superuser_client(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("root", password="unused"))
    return client


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
    # The job column links to the job's admin page and shows its status.
    assert f'<a href="{job_change_url(sample["failed"])}">{sample["failed"].pk}</a>' in content
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
@pytest.mark.parametrize("term", ["concrete", "CONCRETE", "Conc"])
def test_search_matches_a_name_prefix_case_insensitively(
    viewer_client: Client, sample, term: str
) -> None:
    response = viewer_client.get(MATERIALS_LIST, {"q": term})

    assert response.status_code == 200
    # A prefix search: "reinforced concrete" contains the term but is not listed.
    assert listed_names(response) == {"concrete slab", "Concrete block"}


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
@pytest.mark.parametrize("term", ["not-a-uuid", "12345", str(uuid.uuid4())[:-1], "'%_'"])
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


# Query counts


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.django_db
@pytest.mark.parametrize("url", [MATERIALS_LIST, JOBS_LIST])
def test_changelist_query_count_does_not_grow_with_rows(
    viewer_client: Client, make_job, make_material, url: str
) -> None:
    # One job per material, so a lazy job lookup would cost a query per row.
    def add_rows(count: int) -> None:
        for i in range(count):
            make_material(make_job(), f"material-{i}", category=f"category-{i % 3}")

    add_rows(5)
    viewer_client.get(url)  # warm per-process caches (content types and the like)
    with_5 = count_queries(viewer_client, url)
    add_rows(45)
    with_50 = count_queries(viewer_client, url)

    assert with_5 == with_50


@pytest.mark.django_db
def test_job_page_query_count_does_not_grow_with_materials(
    viewer_client: Client, make_job, make_material
) -> None:
    job = make_job()
    for i in range(5):
        make_material(job, f"material-{i}")
    viewer_client.get(job_change_url(job))
    with_5 = count_queries(viewer_client, job_change_url(job))
    for i in range(5, 50):
        make_material(job, f"material-{i}")
    with_50 = count_queries(viewer_client, job_change_url(job))

    assert with_5 == with_50
