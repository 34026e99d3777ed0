"""Benchmark: deploys on a database serving traffic, against the same deploys unguarded.

Two figures, each a ratio against a baseline measured in the same run, on
copies (``CREATE DATABASE ... TEMPLATE``) of databases built once:

- **lock queue**: a database recorded at b662310f1380 (2,000 jobs, 200,000
  materials). A report holds a transaction that has read
  ``material_detection_jobs`` (ACCESS SHARE); ``manage.py alembic_upgrade``
  runs meanwhile, and an application reads jobs and inserts materials every
  0.2 s. Figure: the application's worst single wait / the DDL lock timeout
  (2 s); goal <= 1.25. Baseline: the same upgrade with ``--ddl-lock-timeout
  0`` (no limit), whose ``ALTER TABLE`` queues behind the report while every
  call of the application queues behind it.
- **index builds**: a database recorded at 7c1d2e3f4a5b with 1,000,000
  materials. The head revision 3d5f8a9b2c41 is applied while a writer inserts
  a material every 50 ms. Figure: the writer's worst insert / the revision's
  duration; goal <= 0.1. Baseline: the same indexes built by plain ``CREATE
  INDEX`` in one transaction, as a revision without ``concurrently=True``
  would.

    .venv/bin/python benchmarks/bench_online.py [--repeat 3] [--server URL] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from benchmarks import smoke  # noqa: E402
from benchmarks.bench_upgrade import django_environment  # noqa: E402
from benchmarks.scratch import Databases, catch_interrupts, libpq_url, log  # noqa: E402
from tests.support.live import Application, Holder  # noqa: E402
from tests.support.rows import seed_sql  # noqa: E402

DEFAULT_SERVER = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "bench_online_"
BASELINE, SECOND, HEAD = "b662310f1380", "7c1d2e3f4a5b", "3d5f8a9b2c41"
DEPLOY = "migsupport alembic_upgrade"
REPORT = "SELECT count(*) FROM material_detection_jobs"
LOCK_QUEUE_GOAL, INDEX_BUILDS_GOAL = 1.25, 0.1
# Revision 3d5f8a9b2c41's indexes as plain DDL: what it would run without concurrently=True.
HEAD_PLAIN_DDL = (
    "CREATE INDEX ix_detected_materials_created_at ON detected_materials (created_at)",
    "CREATE INDEX ix_detected_materials_category ON detected_materials (category)",
    "CREATE INDEX ix_detected_materials_confidence ON detected_materials (confidence)",
    "CREATE INDEX ix_detected_materials_material_name_pattern "
    "ON detected_materials (material_name varchar_pattern_ops)",
)
APPLIED_HEAD = re.compile(rf"  Applying {HEAD} .* OK \((\d+\.\d+)s\)")


def query(url: sa.URL, sql: str) -> Any:
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        row = connection.execute(sql).fetchone()
        return None if row is None else row[0]


def build(databases: Databases, label: str, revision: str, jobs: int, materials: int) -> sa.URL:
    """Create a template database recorded at ``revision``, with its rows and statistics."""
    started = time.monotonic()
    url = databases.create(label)
    subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", revision],
        cwd=PROJECT,
        env=django_environment(url),
        check=True,
        capture_output=True,
    )
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        with connection.transaction():
            for statement in seed_sql(jobs=jobs, materials=materials):
                connection.execute(statement)
        connection.execute("VACUUM ANALYZE")
    log(
        f"template {url.database}: recorded at {revision}, {jobs:,} jobs, {materials:,} "
        f"materials, built in {time.monotonic() - started:.1f}s"
    )
    return url


def upgrade(url: sa.URL, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "alembic_upgrade", *options],
        cwd=PROJECT,
        env=django_environment(url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, what: str, timeout: float = 900) -> str:
    """Wait for an upgrade; return its output, or stop the run if it failed."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    if process.returncode != 0:
        raise SystemExit(f"{what}: alembic_upgrade exited {process.returncode}\n{stdout}{stderr}")
    return stdout


def check_head(url: sa.URL, what: str) -> None:
    version = query(url, "SELECT string_agg(version_num, ',') FROM alembic_version")
    if version != HEAD:
        raise SystemExit(f"{what}: the database is at {version}, not {HEAD}")


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")


# -- the lock queue ---------------------------------------------------------------------


@dataclass
class QueueRun:
    worst: float  # the application's worst single wait, seconds
    retries: int  # the revision's attempts the lock timeout rolled back
    finished_after: float  # seconds from the report's end to the upgrade's end


def lock_queue(url: sa.URL, args: argparse.Namespace, ddl_lock_timeout: float) -> QueueRun:
    """Run the upgrade behind a long report while the application works; measure its waits."""
    what = f"lock queue (--ddl-lock-timeout {ddl_lock_timeout:g})"
    application = Application(url, interval=args.app_interval).start()
    report = Holder(url, REPORT)
    process = None
    try:
        process = upgrade(url, "--ddl-lock-timeout", f"{ddl_lock_timeout:g}")

        def queued() -> bool:
            if process.poll() is not None:
                raise SystemExit(f"{what}: the upgrade ended before it waited for the report")
            return bool(
                query(
                    url,
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    f"WHERE a.application_name = '{DEPLOY}' AND a.datname = current_database() "
                    "AND NOT l.granted",
                )
            )

        # The report lasts --report-seconds from the moment the deploy first asks for the
        # lock it holds, whatever the command's start-up took.
        wait_until(queued, 120, "the deploy to queue behind the report")
        first_queued = time.monotonic()
        time.sleep(max(0.0, first_queued + args.report_seconds - time.monotonic()))
        if process.poll() is not None:
            raise SystemExit(f"{what}: the upgrade ended while the report held its lock")
        report.release()
        released = time.monotonic()
        stdout = finish(process, what)
        finished_after = time.monotonic() - released
    finally:
        report.release()
        application.stop()
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()
    if application.errors:
        raise SystemExit(f"{what}: the application failed: {application.errors[:3]}")
    check_head(url, what)
    retries = sum(1 for line in stdout.splitlines() if line.startswith("    the lock on table"))
    return QueueRun(application.worst(), retries, finished_after)


# -- the index builds ---------------------------------------------------------------------


@dataclass
class BuildRun:
    worst: float  # the writer's worst insert, seconds
    duration: float  # the revision's duration, seconds
    inserts: int


def index_builds(url: sa.URL, args: argparse.Namespace, concurrent: bool) -> BuildRun:
    """Apply the head revision's indexes while a writer inserts; measure its worst insert."""
    writer = Application(url, interval=args.write_interval, kinds=("insert",)).start()
    try:
        wait_until(lambda: writer.inserted, 30, "the writer's first insert")
        if concurrent:
            stdout = finish(upgrade(url, "-v", "2"), "index builds")
            (duration,) = (
                float(m[1]) for m in map(APPLIED_HEAD.fullmatch, stdout.splitlines()) if m
            )
        else:
            with psycopg.connect(libpq_url(url)) as connection:  # one transaction, committed
                started = time.monotonic()
                for statement in HEAD_PLAIN_DDL:
                    connection.execute(statement)
                connection.execute(f"UPDATE alembic_version SET version_num = '{HEAD}'")
                connection.commit()
                duration = time.monotonic() - started
        time.sleep(3 * args.write_interval)  # an insert or two after the revision
    finally:
        writer.stop()
    if writer.errors:
        raise SystemExit(f"index builds: the writer failed: {writer.errors[:3]}")
    check_head(url, "index builds")
    return BuildRun(writer.worst("insert"), duration, len(writer.inserted))


# -- the run -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--materials", type=int, default=200_000, help="lock queue's (200,000)")
    parser.add_argument(
        "--index-materials", type=int, default=1_000_000, help="index builds' (1,000,000)"
    )
    parser.add_argument(
        "--report-seconds",
        type=float,
        default=12.0,
        help="how long the report holds its lock once the deploy asks for it (12)",
    )
    parser.add_argument("--ddl-lock-timeout", type=float, default=2.0)
    parser.add_argument("--app-interval", type=float, default=0.2)
    parser.add_argument("--write-interval", type=float, default=0.05)
    smoke.add_argument(parser)
    args = smoke.apply(
        parser.parse_args(argv),
        repeat=1,
        jobs=20,
        materials=2_000,
        index_materials=5_000,
        report_seconds=2.0,
        ddl_lock_timeout=0.5,
    )
    if args.repeat < 1 or min(args.jobs, args.materials, args.index_materials) < 1:
        parser.error("--repeat, --jobs, --materials and --index-materials must be at least 1")
    if args.ddl_lock_timeout <= 0 or args.report_seconds <= args.ddl_lock_timeout:
        parser.error("--ddl-lock-timeout must be above 0 and below --report-seconds")
    return args


def spread(values: list[float], digits: int) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = sa.make_url(args.server).set(drivername="postgresql")
    catch_interrupts()
    databases = Databases(server, PREFIX)
    queue: dict[str, list[QueueRun]] = {"guarded": [], "baseline": []}
    builds: dict[str, list[BuildRun]] = {"guarded": [], "baseline": []}
    try:
        at_baseline = build(databases, "queue", BASELINE, args.jobs, args.materials)
        at_second = build(databases, "builds", SECOND, args.jobs, args.index_materials)
        for repeat in range(args.repeat):
            # Interleaved, so that the machine's noise falls on both sides alike.
            for side, timeout in (("guarded", args.ddl_lock_timeout), ("baseline", 0.0)):
                url = databases.create("queue_copy", template=at_baseline)
                queue[side].append(lock_queue(url, args, timeout))
                databases.drop(url)
                run = queue[side][-1]
                log(
                    f"[{repeat + 1}/{args.repeat}] lock queue, {side}: worst wait "
                    f"{run.worst:.2f}s, {run.retries} retries, done {run.finished_after:.1f}s "
                    "after the report"
                )
            for side, concurrent in (("guarded", True), ("baseline", False)):
                url = databases.create("builds_copy", template=at_second)
                builds[side].append(index_builds(url, args, concurrent))
                databases.drop(url)
                run = builds[side][-1]
                log(
                    f"[{repeat + 1}/{args.repeat}] index builds, {side}: worst insert "
                    f"{run.worst:.3f}s of {run.duration:.2f}s, {run.inserts} inserts"
                )
    except KeyboardInterrupt:
        log("interrupted; dropping the scratch databases")
        return 130
    finally:
        databases.drop_all()

    lock = args.ddl_lock_timeout
    ratio_q = {side: [r.worst / lock for r in runs] for side, runs in queue.items()}
    ratio_b = {side: [r.worst / r.duration for r in runs] for side, runs in builds.items()}
    print(
        f"Deploys on a live database (medians of {args.repeat} interleaved runs, range in "
        "brackets; guarded = manage.py alembic_upgrade)"
    )
    print(
        f"lock queue: {args.jobs:,} jobs, {args.materials:,} materials at {BASELINE}; a report "
        f"holds the jobs {args.report_seconds:g}s after the deploy asks for them; the "
        f"application reads and inserts every {args.app_interval:g}s"
    )
    for side, runs in queue.items():
        option = f"--ddl-lock-timeout {lock:g}" if side == "guarded" else "--ddl-lock-timeout 0"
        print(
            f"  {side:<9} ({option}): worst wait {spread([r.worst for r in runs], 2)}s, "
            f"retries {spread([float(r.retries) for r in runs], 0)}, at {HEAD} "
            f"{spread([r.finished_after for r in runs], 1)}s after the report ended"
        )
    print(
        f"index builds: {args.index_materials:,} materials at {SECOND}, {HEAD} applied while "
        f"a writer inserts every {args.write_interval:g}s"
    )
    for side, runs in builds.items():
        how = "CREATE INDEX CONCURRENTLY" if side == "guarded" else "CREATE INDEX, one transaction"
        print(
            f"  {side:<9} ({how}): worst insert {spread([r.worst for r in runs], 3)}s, "
            f"revision {spread([r.duration for r in runs], 2)}s, "
            f"{spread([float(r.inserts) for r in runs], 0)} inserts"
        )
    met_q = statistics.median(ratio_q["guarded"]) <= LOCK_QUEUE_GOAL
    met_b = statistics.median(ratio_b["guarded"]) <= INDEX_BUILDS_GOAL
    print(
        f"lock queue: the application's worst wait / the DDL lock timeout ({lock:g}s): guarded "
        f"{spread(ratio_q['guarded'], 2)}, baseline {spread(ratio_q['baseline'], 2)} "
        f"(goal <= {LOCK_QUEUE_GOAL:g}: {'met' if met_q else 'MISSED'})"
    )
    print(
        f"index builds: the writer's worst insert / the revision's duration: guarded "
        f"{spread(ratio_b['guarded'], 3)}, baseline {spread(ratio_b['baseline'], 3)} "
        f"(goal <= {INDEX_BUILDS_GOAL:g}: {'met' if met_b else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
