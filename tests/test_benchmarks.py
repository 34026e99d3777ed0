"""Every benchmark still runs: its smoke mode, run as a person runs it.

A smoke run (``--smoke``: the smallest sizes, one repeat) has figures that
mean nothing, and its output says so first. What is asserted is that the
benchmark runs from end to end against today's code, prints its report, and
drops the scratch databases it names. A new ``benchmarks/bench_*.py`` is
picked up here by itself; it fails until it has a smoke mode and a line of
its report in ``REPORT_LINES``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from benchmarks.smoke import BANNER
from tests.support.commands import clean_environ
from tests.support.project import PROJECT

BENCHMARKS = sorted(path.name for path in (PROJECT / "benchmarks").glob("bench_*.py"))
# A line each benchmark's report holds, once the run has measured everything.
REPORT_LINES = {
    "bench_admin.py": re.compile(
        r"Goal \(ours, with the indexes: .*\): ratio <= 2, queries constant"
    ),
    "bench_online.py": re.compile(
        r"index builds: .*: guarded \d+\.\d{3}.*, baseline \d+\.\d{3}.* "
        r"\(goal <= 0\.1: (met|MISSED)\)"
    ),
    "bench_repair.py": re.compile(
        r"ratio repair --plan / status \((in-process|processes)\): \d+\.\d\dx "
        r"\((meets|MISSES) the goal of <= 1\.5x\)"
    ),
    "bench_session.py": re.compile(r"direct +\d+\.\d{3} +\d+\.\d{3} +\d+\.\d\d"),
    "bench_state.py": re.compile(r"Goal: ratio <= 1: (met|MISSED) \(worst \d+\.\d\d\)"),
    "bench_upgrade.py": re.compile(r"\(medians of 1 interleaved runs each; goal .*\)"),
    "bench_verify.py": re.compile(r"ratio verify / raw: \d+\.\d\dx \((meets|MISSES) the goal .*\)"),
}
SCRATCH_NAME = re.compile(
    r"\b(?:bench_state_|bench_admin_|bench_online_|bench_repair_|migsupport_bench_"
    r"|migsupport_scratch_)\w+"
)
SMOKE_TIMEOUT = 900


def databases_named(server: URL, names: set[str]) -> set[str]:
    engine = sa.create_engine(server, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                {"names": sorted(names)},
            ).scalars()
            return set(found)
    finally:
        engine.dispose()


def test_every_benchmark_is_known_here():
    assert sorted(REPORT_LINES) == BENCHMARKS, "add the new benchmark's report line to REPORT_LINES"


@pytest.mark.postgresql
@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_the_benchmark_runs_in_smoke_mode(benchmark, pg_server):
    environ = clean_environ("DATABASE_URL", "DEBUG")
    environ["TEST_DATABASE_URL"] = pg_server.set(drivername="postgresql").render_as_string(
        hide_password=False
    )

    result = subprocess.run(
        [sys.executable, f"benchmarks/{benchmark}", "--smoke"],
        cwd=PROJECT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
    )

    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, output
    assert "Traceback" not in result.stderr, output
    assert result.stdout.splitlines()[0] == BANNER, output
    assert any(REPORT_LINES[benchmark].fullmatch(line) for line in result.stdout.splitlines()), (
        output
    )
    # The scratch databases the run names are gone (bench_upgrade and bench_verify name none).
    named = set(SCRATCH_NAME.findall(output))
    assert databases_named(pg_server, named) == set(), named
