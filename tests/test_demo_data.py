"""``load_demo_data``: the loader and its management command."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Max, Min

from materials.demo import MATERIALS, OTHER_JOBS_RATIO, load_demo_data
from materials.models import DetectedMaterial, JobStatus, MaterialDetectionJob

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def run(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command("load_demo_data", *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def material_rows() -> list[tuple[Any, ...]]:
    return list(
        DetectedMaterial.objects.order_by("id").values_list(
            "id", "job_id", "material_name", "category", "confidence", "bounding_box", "created_at"
        )
    )


def job_rows() -> list[tuple[Any, ...]]:
    return list(
        MaterialDetectionJob.objects.order_by("id").values_list(
            "id",
            "image_url",
            "status",
            "error_message",
            "created_at",
            "updated_at",
            "completed_at",
            "model_version",
        )
    )


@pytest.mark.django_db
def test_command_loads_consistent_rows() -> None:
    output = run("--materials", "200", "--materials-per-job", "4", "--seed", "42")

    completed = math.ceil(200 / 4)
    expected_jobs = completed + round(completed * OTHER_JOBS_RATIO)
    assert DetectedMaterial.objects.count() == 200
    assert MaterialDetectionJob.objects.count() == expected_jobs
    assert MaterialDetectionJob.objects.filter(status=JobStatus.COMPLETED).count() == completed

    job_ids = set(MaterialDetectionJob.objects.values_list("id", flat=True))
    material_job_ids = set(DetectedMaterial.objects.values_list("job_id", flat=True))
    assert material_job_ids <= job_ids
    # Only completed jobs found anything.
    assert set(
        MaterialDetectionJob.objects.filter(id__in=material_job_ids).values_list(
            "status", flat=True
        )
    ) == {JobStatus.COMPLETED}

    bounds = DetectedMaterial.objects.aggregate(low=Min("confidence"), high=Max("confidence"))
    assert 0 <= bounds["low"] <= bounds["high"] <= 1

    statuses = set(MaterialDetectionJob.objects.values_list("status", flat=True))
    assert statuses <= set(JobStatus.values)
    assert JobStatus.COMPLETED in statuses

    assert f"Loaded {expected_jobs} jobs and 200 detected materials into 'default' in " in output


@pytest.mark.django_db
def test_jobs_are_plausible_for_their_status() -> None:
    load_demo_data(materials=400, seed=3, now=NOW)

    for job in MaterialDetectionJob.objects.all():
        assert job.image_url.startswith("https://")
        assert job.created_at <= job.updated_at <= NOW
        if job.status == JobStatus.COMPLETED:
            assert job.completed_at == job.updated_at
            assert job.error_message is None
        else:
            assert job.completed_at is None
        if job.status == JobStatus.FAILED:
            assert job.error_message
        else:
            assert job.error_message is None
        assert (job.model_version is None) == (job.status == JobStatus.PENDING)


@pytest.mark.django_db
def test_materials_are_plausible() -> None:
    load_demo_data(materials=300, seed=5, now=NOW)
    categories = {name: category for name, category, _ in MATERIALS}
    completed_at = dict(MaterialDetectionJob.objects.values_list("id", "completed_at"))

    for material in DetectedMaterial.objects.all():
        assert categories[material.material_name] == material.category
        assert 0 <= material.confidence <= 1
        box = material.bounding_box
        assert set(box) == {"x", "y", "w", "h"}
        assert 0 <= box["x"] <= box["x"] + box["w"] <= 1
        assert 0 <= box["y"] <= box["y"] + box["h"] <= 1
        assert material.created_at == completed_at[material.job_id]


@pytest.mark.django_db
def test_the_same_seed_gives_the_same_rows() -> None:
    load_demo_data(materials=150, seed=11, now=NOW)
    first = (job_rows(), material_rows())

    # Another batch size on purpose: batching must not change the rows.
    load_demo_data(materials=150, seed=11, now=NOW, clear=True, batch_size=7)
    second = (job_rows(), material_rows())
    load_demo_data(materials=150, seed=12, now=NOW, clear=True)
    other_seed = (job_rows(), material_rows())

    assert first == second
    assert len(first[1]) == 150
    assert other_seed != first


@pytest.mark.django_db
def test_progress_is_reported_per_batch_and_ends_at_the_total() -> None:
    calls: list[tuple[str, int, int]] = []

    summary = load_demo_data(
        materials=25,
        materials_per_job=5,
        seed=1,
        batch_size=10,
        progress=lambda *c: calls.append(c),
    )

    assert summary.jobs == 5 + round(5 * OTHER_JOBS_RATIO)
    assert summary.materials == 25
    assert [call for call in calls if call[0] == "detected_materials"] == [
        ("detected_materials", 0, 25),
        ("detected_materials", 10, 25),
        ("detected_materials", 20, 25),
        ("detected_materials", 25, 25),
    ]
    assert calls[0] == ("material_detection_jobs", 0, summary.jobs)
    assert calls.index(("material_detection_jobs", summary.jobs, summary.jobs)) < calls.index(
        ("detected_materials", 0, 25)
    )


@pytest.mark.django_db
def test_command_prints_progress() -> None:
    output = run("--materials", "200", "--seed", "1")

    jobs = MaterialDetectionJob.objects.count()
    lines = output.splitlines()
    assert f"  material_detection_jobs: {jobs}/{jobs} (100%)" in lines
    assert "  detected_materials: 200/200 (100%)" in lines
    assert lines[-1].startswith(f"Loaded {jobs} jobs and 200 detected materials")


@pytest.mark.django_db
def test_command_prints_progress_in_tenths() -> None:
    # Batches of 10 rows: 20 reports, printed once per tenth.
    output = run("--materials", "200", "--seed", "1", "--batch-size", "10")

    progress = [line for line in output.splitlines() if "detected_materials:" in line]
    assert progress == [
        f"  detected_materials: {done}/200 ({done // 2}%)" for done in range(20, 201, 20)
    ]


@pytest.mark.django_db
def test_command_is_silent_with_verbosity_0() -> None:
    assert run("--materials", "50", "--seed", "1", verbosity=0) == ""
    assert DetectedMaterial.objects.count() == 50


@pytest.mark.django_db
def test_clear_replaces_existing_rows() -> None:
    run("--materials", "100", "--seed", "1")
    output = run("--materials", "40", "--seed", "1", "--clear")

    assert DetectedMaterial.objects.count() == 40
    assert MaterialDetectionJob.objects.count() == 10 + round(10 * OTHER_JOBS_RATIO)
    assert "after clearing the tables" in output


@pytest.mark.django_db
def test_without_clear_rows_are_added() -> None:
    run("--materials", "100", "--seed", "1")
    run("--materials", "40", "--seed", "2")

    assert DetectedMaterial.objects.count() == 140


@pytest.mark.django_db
def test_reusing_a_seed_without_clear_fails_cleanly_and_changes_nothing() -> None:
    run("--materials", "100", "--seed", "1")
    before = (job_rows(), material_rows())

    with pytest.raises(CommandError, match="--clear"):
        run("--materials", "100", "--seed", "1")

    assert (job_rows(), material_rows()) == before


@pytest.mark.django_db
def test_zero_materials_loads_nothing() -> None:
    output = run("--materials", "0")

    assert DetectedMaterial.objects.count() == 0
    assert MaterialDetectionJob.objects.count() == 0
    assert "Loaded 0 jobs and 0 detected materials" in output


@pytest.mark.parametrize(
    "args",
    [
        ("--materials", "-1"),
        ("--materials", "many"),
        ("--materials-per-job", "0"),
        ("--batch-size", "0"),
        ("--database", "nowhere"),
    ],
)
def test_command_rejects_bad_arguments(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        run(*args)
