"""Benchmark: ``alembic_repair --plan`` against ``alembic_status`` on the same drifted database.

One scratch PostgreSQL database is set up as the field has it: upgraded to
head by ``manage.py alembic_upgrade``, filled with rows (``--materials``
detected materials over ``--jobs`` jobs, by the bulk SQL of
``tests/support/rows.py``), analysed, then drifted by hand a few ways that
``alembic_repair`` plans safe fixes for (``--drifts``; by default a missing
index, a dropped default, an unexpected index and a narrowed VARCHAR).

Then it times both commands, interleaved, ``--repeat`` times after one
warm-up of each, two ways, one after the other (``--only`` picks one):

- **in-process**, the commands' own work without the interpreter's start-up:
  ``call_command("alembic_status")`` and ``call_command("alembic_repair",
  "--plan")`` in this process, each opening its own connection;
- **processes**, as a person or a deploy meets the commands: ``manage.py
  alembic_status`` and ``manage.py alembic_repair --plan``, each a process of
  its own with ``DATABASE_URL``.

The figure is the ratio of medians, repair --plan / status; the goal is at
most 1.5x, judged on the in-process ratio, since a process's start-up (most
of a second, the same on both sides) would hide the work. Before timing, the
run checks that the status reads ``drifted`` with one difference per drift
and that the plan has a safe fix for each; it stops if not.

The scratch database is named ``bench_repair_...`` and dropped however the
run ends, Ctrl-C and SIGTERM included. ``--smoke`` uses 400 materials and one
repeat, to check that it still runs.

Run from the project root::

    .venv/bin/python benchmarks/bench_repair.py [--materials 200000] [--repeat 5] [--smoke]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from benchmarks import smoke  # noqa: E402
from benchmarks.scratch import (  # noqa: E402
    Databases,
    catch_interrupts,
    checkpoint,
    execute,
    libpq_url,
    log,
)
from tests.support.rows import seed_sql  # noqa: E402

DEFAULT_SERVER = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "bench_repair_"
GOAL = 1.5

# Drifts a person at a psql prompt makes, and that the repair has a safe fix for:
# the SQL, the difference alembic_status reports, and the fix alembic_repair --plan prints.
DRIFTS: dict[str, tuple[str, str, str]] = {
    "missing_index": (
        "DROP INDEX ix_detected_materials_material_name",
        "index ix_detected_materials_material_name is missing",
        "create index ix_detected_materials_material_name concurrently",
    ),
    "dropped_default": (
        "ALTER TABLE detected_materials ALTER COLUMN created_at DROP DEFAULT",
        "column detected_materials.created_at has no default, expected default now()",
        "set the default of detected_materials.created_at",
    ),
    "unexpected_index": (
        "CREATE INDEX ix_by_hand ON detected_materials (category, confidence)",
        "index ix_by_hand is unexpected",
        "drop index ix_by_hand",
    ),
    "narrowed_varchar": (
        "ALTER TABLE material_detection_jobs ALTER COLUMN model_version TYPE varchar(20)",
        "column material_detection_jobs.model_version is VARCHAR(20), expected VARCHAR(64)",
        "widen material_detection_jobs.model_version to VARCHAR(64)",
    ),
    # Two more, not in the default set: their plans read the rows (a count of the NULLs,
    # a count of the rows the foreign key would reject), so the plan grows with the table.
    "not_null_dropped": (
        "ALTER TABLE detected_materials ALTER COLUMN confidence DROP NOT NULL",
        "column detected_materials.confidence is NULL, expected NOT NULL",
        "set NOT NULL on detected_materials.confidence through a validated check",
    ),
    "foreign_key_dropped": (
        "ALTER TABLE detected_materials DROP CONSTRAINT detected_materials_job_id_fkey",
        "foreign key detected_materials_job_id_fkey on detected_materials is missing",
        "add foreign key detected_materials_job_id_fkey on detected_materials NOT VALID, "
        "then validate it",
    ),
}
DEFAULT_DRIFTS = "missing_index,dropped_default,unexpected_index,narrowed_varchar"


def environment(url: sa.URL) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    environ.update(DATABASE_URL=libpq_url(url), SECRET_KEY="benchmark", DEBUG="false")
    return environ


def manage(url: sa.URL, *args: str) -> subprocess.CompletedProcess:
    """Run ``manage.py *args`` on ``url``; stop the run if it fails."""
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=environment(url),
        capture_output=True,
        text=True,
    )
    checkpoint()
    if completed.returncode != 0:
        raise SystemExit(
            f"manage.py {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return completed


def prepare(url: sa.URL, materials: int, jobs: int, drifts: list[str]) -> None:
    """Upgrade to head, fill with rows, analyse, then drift by hand."""
    started = time.perf_counter()
    manage(url, "alembic_upgrade", "-v", "0")
    execute(url, *seed_sql(jobs=jobs, materials=materials), "VACUUM ANALYZE")
    execute(url, *(DRIFTS[name][0] for name in drifts))
    log(
        f"set up {url.database}: head, {materials:,} materials over {jobs:,} jobs, "
        f"{len(drifts)} drifts ({time.perf_counter() - started:.1f}s)"
    )


def check_outputs(status: str, plan: str, drifts: list[str]) -> None:
    """Stop the run unless the status reads drifted and the plan fixes every drift safely."""
    problems = []
    if "State:    drifted" not in status:
        problems.append("alembic_status does not read drifted")
    for name in drifts:
        _, difference, action = DRIFTS[name]
        if f"  - {difference}\n" not in status:
            problems.append(f"alembic_status does not report {difference!r}")
        if f"      {action}\n" not in plan:
            problems.append(f"alembic_repair --plan does not plan {action!r}")
    if "NEEDS" in plan:
        problems.append("the plan has a fix that is not safe")
    if problems:
        raise SystemExit(
            "the drifted database is not what the benchmark expects: "
            + "; ".join(problems)
            + f"\n--- status:\n{status}--- plan:\n{plan}"
        )


# -- the two ways of timing ---------------------------------------------------------

STATUS = ("alembic_status",)
PLAN = ("alembic_repair", "--plan")


def in_process(url: sa.URL) -> Callable[[tuple[str, ...]], tuple[float, str]]:
    """Set Django up on ``url`` and return a runner of a command in this process."""
    os.environ.update(environment(url))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command

    def run(command: tuple[str, ...]) -> tuple[float, str]:
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        call_command(*command, stdout=out, stderr=err, no_color=True)
        return time.perf_counter() - started, out.getvalue()

    return run


def in_a_process(url: sa.URL) -> Callable[[tuple[str, ...]], tuple[float, str]]:
    """Return a runner of ``manage.py COMMAND`` as a process of its own on ``url``."""

    def run(command: tuple[str, ...]) -> tuple[float, str]:
        started = time.perf_counter()
        completed = manage(url, *command, "--no-color")
        return time.perf_counter() - started, completed.stdout

    return run


def measure(
    runners: dict[str, Callable[[tuple[str, ...]], tuple[float, str]]],
    repeat: int,
    drifts: list[str],
) -> dict[tuple[str, str], list[float]]:
    """Time status and the plan with each runner, interleaved, after one warm-up of each.

    One way after the other: a process's start-up and exit, next to a call
    in this process, would fall on whichever side came next.
    """
    times: dict[tuple[str, str], list[float]] = {}
    for way, runner in runners.items():
        _, status = runner(STATUS)
        _, plan = runner(PLAN)
        check_outputs(status, plan, drifts)
        times[(way, "status")], times[(way, "plan")] = [], []
        sides = (("status", STATUS), ("plan", PLAN))
        for index in range(repeat):
            # Interleaved, the order swapped every other round, so that the machine's
            # noise and any warming of the server's caches fall on both sides alike.
            for side, command in sides if index % 2 == 0 else sides[::-1]:
                seconds, _ = runner(command)
                times[(way, side)].append(seconds)
    return times


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=200_000, help="default 200,000")
    parser.add_argument("--jobs", type=int, default=None, help="default: materials / 50")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--drifts",
        default=DEFAULT_DRIFTS,
        help=f"comma-separated, of {', '.join(DRIFTS)} (default: {DEFAULT_DRIFTS})",
    )
    parser.add_argument(
        "--only",
        choices=("processes", "in-process"),
        help="time one way only (default: both)",
    )
    parser.add_argument("--server", default=DEFAULT_SERVER)
    smoke.add_argument(parser)
    args = smoke.apply(parser.parse_args(argv), materials=400, repeat=1)
    args.drift_names = [name for name in args.drifts.split(",") if name]
    unknown = set(args.drift_names) - set(DRIFTS)
    if unknown or not args.drift_names:
        parser.error(f"--drifts: unknown {sorted(unknown)}; known: {', '.join(DRIFTS)}")
    if args.repeat < 1 or args.materials < 1:
        parser.error("--repeat and --materials must be at least 1")
    args.jobs = args.jobs or max(1, args.materials // 50)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = sa.make_url(args.server).set(drivername="postgresql+psycopg")
    catch_interrupts()
    databases = Databases(server, PREFIX)
    times: dict[tuple[str, str], list[float]] = {}
    try:
        url = databases.create("drifted")
        log(f"scratch database {url.database}")
        prepare(url, args.materials, args.jobs, args.drift_names)
        runners = {}
        if args.only != "processes":
            runners["in-process"] = in_process(url)
        if args.only != "in-process":
            runners["processes"] = in_a_process(url)
        times = measure(runners, args.repeat, args.drift_names)
    except KeyboardInterrupt:
        log("interrupted; dropping the scratch database")
        return 130
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        databases.drop_all()

    med = statistics.median
    print(
        f"Drifted database: head, {args.materials:,} detected materials over {args.jobs:,} jobs; "
        f"drifts: {', '.join(args.drift_names)}"
    )
    print(f"{'timed':<12}{'alembic_status (s)':>20}{'repair --plan (s)':>19}{'ratio':>8}")
    ratios = {}
    for way in ("processes", "in-process"):
        if (way, "status") not in times:
            continue
        status, plan = med(times[(way, "status")]), med(times[(way, "plan")])
        ratios[way] = plan / status
        print(f"{way:<12}{status:>20.3f}{plan:>19.3f}{ratios[way]:>7.2f}x")
    judged = "in-process" if "in-process" in ratios else "processes"
    verdict = "meets" if ratios[judged] <= GOAL else "MISSES"
    print(
        f"ratio repair --plan / status ({judged}): {ratios[judged]:.2f}x "
        f"({verdict} the goal of <= {GOAL:g}x)"
    )
    print(f"(medians of {args.repeat} interleaved runs each, after one warm-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
