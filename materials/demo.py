"""Plausible demo rows for the detection tables, fast enough for a million.

``load_demo_data`` never prints; it reports through a ``progress`` callback,
and the ``load_demo_data`` management command renders that. On PostgreSQL the
rows go in with ``COPY``; elsewhere with batched ``executemany``.
"""

from __future__ import annotations

import math
import random
import uuid
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate, islice
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model
from django.utils import timezone

from materials.models import DetectedMaterial, JobStatus, MaterialDetectionJob

Progress = Callable[[str, int, int], None]
"""Called as ``progress(table, rows_done, rows_total)`` after each batch."""

BATCH_SIZE = 10_000

# Name, category (None: the model could not tell) and how common it is.
MATERIALS: Sequence[tuple[str, str | None, int]] = (
    ("concrete", "mineral", 30),
    ("reinforced concrete", "composite", 8),
    ("steel", "metal", 20),
    ("stainless steel", "metal", 4),
    ("aluminium", "metal", 6),
    ("copper", "metal", 3),
    ("glass", "mineral", 15),
    ("brick", "mineral", 14),
    ("stone", "mineral", 6),
    ("gypsum board", "mineral", 5),
    ("asphalt", "composite", 8),
    ("fiberglass", "composite", 3),
    ("timber", "wood", 12),
    ("plywood", "wood", 5),
    ("bamboo", "wood", 1),
    ("pvc", "polymer", 6),
    ("hdpe", "polymer", 3),
    ("rubber", "polymer", 2),
    ("polystyrene", "polymer", 2),
    ("unknown", None, 2),
)
_MATERIAL_WEIGHTS = list(accumulate(weight for _, _, weight in MATERIALS))

# Completed jobs carry the materials; the others are a quarter as many.
JOB_STATUS_WEIGHTS: Sequence[tuple[str, int]] = (
    (JobStatus.PENDING, 35),
    (JobStatus.PROCESSING, 25),
    (JobStatus.FAILED, 30),
    (JobStatus.CANCELLED, 10),
)
OTHER_JOBS_RATIO = 0.25
MODEL_VERSIONS = ("matdet-2.3.1", "matdet-2.4.0", "matdet-3.0.0-rc1")
ERROR_MESSAGES = (
    "image could not be downloaded: HTTP 404",
    "image could not be downloaded: connection timed out",
    "unsupported image format: image/heic",
    "image too large: 48.2 MB exceeds the 25 MB limit",
    "model inference failed: CUDA out of memory",
)
IMAGE_HOSTS = ("images.example.com", "cdn.example.org", "uploads.example.net")
# Jobs are spread over this window before ``now``.
HISTORY = timedelta(days=90)

JOB_COLUMNS = (
    "id",
    "image_url",
    "status",
    "error_message",
    "created_at",
    "updated_at",
    "completed_at",
    "model_version",
)
MATERIAL_COLUMNS = (
    "id",
    "job_id",
    "material_name",
    "category",
    "confidence",
    "bounding_box",
    "created_at",
)


@dataclass(frozen=True)
class DemoSummary:
    jobs: int
    materials: int
    cleared: bool


def load_demo_data(
    alias: str = "default",
    materials: int = 1000,
    *,
    materials_per_job: int = 4,
    seed: int | None = None,
    clear: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> DemoSummary:
    """Insert demo jobs and ``materials`` detected materials into ``alias``.

    Materials belong to completed jobs, about ``materials_per_job`` each; a
    quarter as many jobs again are pending, processing, failed or cancelled.
    The same ``seed`` and ``now`` give the same rows. Everything runs in one
    transaction, so a failure leaves the tables as they were.
    """
    if materials < 0:
        raise ValueError("materials must be >= 0")
    if materials_per_job < 1:
        raise ValueError("materials_per_job must be >= 1")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rng = random.Random(seed)
    now = now or timezone.now()
    report = progress or (lambda table, done, total: None)
    connection = connections[alias]

    completed_count = math.ceil(materials / materials_per_job)
    other_count = round(completed_count * OTHER_JOBS_RATIO)
    jobs = _make_jobs(rng, completed_count, other_count, now)
    # Each material's job and timestamp come from this list of completed jobs.
    completed = [(job[0], job[6]) for job in jobs if job[2] == JobStatus.COMPLETED]

    with transaction.atomic(using=alias):
        if clear:
            _clear(connection)
        _insert(connection, MaterialDetectionJob, JOB_COLUMNS, jobs, len(jobs), batch_size, report)
        _insert(
            connection,
            DetectedMaterial,
            MATERIAL_COLUMNS,
            _make_materials(rng, completed, materials),
            materials,
            batch_size,
            report,
        )
    return DemoSummary(jobs=len(jobs), materials=materials, cleared=clear)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _make_jobs(
    rng: random.Random, completed_count: int, other_count: int, now: datetime
) -> list[tuple[Any, ...]]:
    statuses = [JobStatus.COMPLETED] * completed_count + rng.choices(
        [status for status, _ in JOB_STATUS_WEIGHTS],
        weights=[weight for _, weight in JOB_STATUS_WEIGHTS],
        k=other_count,
    )
    rng.shuffle(statuses)
    history = HISTORY.total_seconds()
    jobs = []
    for status in statuses:
        job_id = _uuid(rng)
        host = rng.choice(IMAGE_HOSTS)
        image_url = f"https://{host}/sites/{rng.randrange(1, 500)}/{job_id.hex[:12]}.jpg"
        created_at = now - timedelta(seconds=rng.uniform(0, history))
        # Detection takes seconds to minutes; unfinished jobs were touched once.
        updated_at = min(now, created_at + timedelta(seconds=rng.uniform(1, 180)))
        completed_at = updated_at if status == JobStatus.COMPLETED else None
        error_message = rng.choice(ERROR_MESSAGES) if status == JobStatus.FAILED else None
        if status == JobStatus.PENDING:
            updated_at = created_at
            model_version = None
        else:
            model_version = rng.choice(MODEL_VERSIONS)
        jobs.append(
            (
                job_id,
                image_url,
                str(status),
                error_message,
                created_at,
                updated_at,
                completed_at,
                model_version,
            )
        )
    # Inserted in id order, the primary key index only ever appends.
    jobs.sort(key=lambda job: job[0])
    return jobs


def _make_materials(
    rng: random.Random, completed: Sequence[tuple[uuid.UUID, datetime]], count: int
) -> Iterator[tuple[Any, ...]]:
    if not completed:
        return
    # Scatter the materials over the jobs at random (some find nothing), then
    # emit them job by job: jobs are in id order, so the job_id indexes and
    # the foreign key checks see ascending keys, which loads far faster.
    per_job = [0] * len(completed)
    for _ in range(count):
        per_job[rng.randrange(len(completed))] += 1
    total_weight = _MATERIAL_WEIGHTS[-1]
    for (job_id, completed_at), found in zip(completed, per_job, strict=True):
        for _ in range(found):
            name, category, _weight = MATERIALS[
                bisect(_MATERIAL_WEIGHTS, rng.random() * total_weight)
            ]
            # Mostly confident detections, with a tail of doubtful ones.
            confidence = round(rng.random() ** 0.3, 4)
            width = round(rng.uniform(0.02, 0.6), 4)
            height = round(rng.uniform(0.02, 0.6), 4)
            x = round(rng.uniform(0, 1 - width), 4)
            y = round(rng.uniform(0, 1 - height), 4)
            yield (
                _uuid(rng),
                job_id,
                name,
                category,
                confidence,
                {"x": x, "y": y, "w": width, "h": height},
                completed_at,
            )


def _clear(connection: BaseDatabaseWrapper) -> None:
    materials = connection.ops.quote_name(DetectedMaterial._meta.db_table)
    jobs = connection.ops.quote_name(MaterialDetectionJob._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {materials}, {jobs}")
        else:
            cursor.execute(f"DELETE FROM {materials}")
            cursor.execute(f"DELETE FROM {jobs}")


def _batches(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _insert(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
    total: int,
    batch_size: int,
    report: Progress,
) -> None:
    table = model._meta.db_table
    report(table, 0, total)
    done = 0
    if connection.vendor == "postgresql":
        writer = _copy_writer(connection, table, columns)
    else:
        writer = _executemany_writer(connection, model, columns)
    with writer as write:
        for batch in _batches(rows, batch_size):
            write(batch)
            done += len(batch)
            if done < total:
                report(table, done, total)
    # Only now has the database accepted every row.
    report(table, done, total)


Writer = Callable[[list[tuple[Any, ...]]], None]


@contextmanager
def _copy_writer(
    connection: BaseDatabaseWrapper, table: str, columns: Sequence[str]
) -> Iterator[Writer]:
    qn = connection.ops.quote_name
    sql = f"COPY {qn(table)} ({', '.join(qn(c) for c in columns)}) FROM STDIN"
    json_index = columns.index("bounding_box") if "bounding_box" in columns else None

    # One COPY for the whole table, so the server stores rows while the next
    # ones are generated. Errors are wrapped into Django's (IntegrityError...).
    with (
        connection.wrap_database_errors,
        connection.cursor() as wrapper,
        wrapper.cursor.copy(sql) as copy,
    ):

        def write(batch: list[tuple[Any, ...]]) -> None:
            for row in batch:
                if json_index is not None:
                    row = _with_json(row, json_index)
                copy.write_row(row)

        yield write


def _with_json(row: tuple[Any, ...], index: int) -> tuple[Any, ...]:
    box = row[index]
    if box is None:
        return row
    # Text COPY takes JSON as its text; formatting it here beats json.dumps.
    text = f'{{"x": {box["x"]}, "y": {box["y"]}, "w": {box["w"]}, "h": {box["h"]}}}'
    return (*row[:index], text, *row[index + 1 :])


@contextmanager
def _executemany_writer(
    connection: BaseDatabaseWrapper, model: type[Model], columns: Sequence[str]
) -> Iterator[Writer]:
    qn = connection.ops.quote_name
    # get_field also takes a foreign key's attname (``job_id``).
    fields = [model._meta.get_field(column) for column in columns]
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        qn(model._meta.db_table),
        ", ".join(qn(field.column) for field in fields),
        ", ".join(["%s"] * len(fields)),
    )

    with connection.cursor() as cursor:

        def write(batch: list[tuple[Any, ...]]) -> None:
            # get_db_prep_save gives each backend its own form: hex UUIDs and
            # text datetimes on SQLite, JSON text, and so on.
            params = [
                tuple(
                    field.get_db_prep_save(value, connection)
                    for field, value in zip(fields, row, strict=True)
                )
                for row in batch
            ]
            cursor.executemany(sql, params)

        yield write
