"""The head revision's index builds on a million materials, while a writer keeps inserting.

A database recorded at 7c1d2e3f4a5b holds 1,000,000 detected materials
(``INSERT ... SELECT`` over ``generate_series``, built once for the module
and copied from a template). ``manage.py alembic_upgrade`` applies
3d5f8a9b2c41, which builds four indexes on that table, in a subprocess as a
deploy runs it, while a writer inserts a material every 50 ms.

The builds are concurrent: ``CREATE INDEX CONCURRENTLY`` takes SHARE UPDATE
EXCLUSIVE on the table, which conflicts with neither reads nor writes (a
plain ``CREATE INDEX`` takes SHARE, which blocks every insert until the build
ends: seconds at this size). So the writer's worst wait stays under a second,
a bound of behaviour, far from the builds' seconds; the speed itself is
measured by ``benchmarks/bench_online.py``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.support.catalog import catalog
from tests.support.commands import manage, shown
from tests.support.live import Application, LockSpy
from tests.support.migrate import run
from tests.support.rows import missing_materials, seed_sql
from tests.support.server import drop_pg_database
from tests.support.states import APPLY_HEAD, HEAD, SECOND, execute, scalar, versions
from tests.support.templates import Templates

# One template of a million rows, built once: its tests run on one test worker.
pytestmark = pytest.mark.xdist_group("index_builds")

MATERIALS, JOBS = 1_000_000, 2_000
WRITE_EVERY = 0.05
# The writer's worst wait: well above an insert's milliseconds, far below a blocking build.
WORST_WAIT = 1.0
HEAD_INDEXES = (
    "ix_detected_materials_category",
    "ix_detected_materials_confidence",
    "ix_detected_materials_created_at",
    "ix_detected_materials_material_name_pattern",
)
APPLYING_HEAD = APPLY_HEAD.removesuffix(" OK")
BUILD_LINE = re.compile(
    rf"    building ({'|'.join(HEAD_INDEXES)}) on detected_materials: [^,]+(, \d+/\d+ blocks)?"
)
# Locks on the materials that would block the writer (INSERT takes ROW EXCLUSIVE).
BLOCKING_WRITES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")


def recorded_at_second(engine: Engine) -> None:
    """Migrate to 7c1d2e3f4a5b, then load the jobs and the million materials."""
    run(engine, "upgrade", SECOND)
    execute(engine, *seed_sql(jobs=JOBS, materials=MATERIALS))
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


@pytest.fixture(scope="module")
def templates(pg_server: URL) -> Iterator[Templates]:
    made = Templates(pg_server)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def million(templates: Templates) -> Iterator[tuple[URL, Engine]]:
    """A copy of the database at 7c1d2e3f4a5b with a million materials, dropped afterwards."""
    url = templates.copy("a million materials at 7c1d2e3f4a5b", recorded_at_second)
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        drop_pg_database(templates.server, url)


class BuildWatch:
    """Counts the writer's inserts seen while a concurrent index build is in progress."""

    def __init__(self, engine: Engine, writer: Application) -> None:
        self.engine, self.writer = engine, writer
        self.counts: list[int] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(0.05):
            if scalar(
                self.engine,
                "SELECT count(*) FROM pg_stat_progress_create_index "
                "WHERE datname = current_database()",
            ):
                self.counts.append(len(self.writer.inserted))

    def stop(self) -> int:
        """Stop watching; return how many inserts committed while builds ran."""
        self.stopped.set()
        self.thread.join(timeout=30)
        return self.counts[-1] - self.counts[0] if self.counts else 0


def test_the_head_indexes_build_concurrently_while_a_writer_inserts(million, revision_catalogs):
    url, engine = million
    assert scalar(engine, "SELECT count(*) FROM detected_materials") == MATERIALS
    writer = Application(url, interval=WRITE_EVERY, kinds=("insert",)).start()
    spy = LockSpy(url).start()
    watch = BuildWatch(engine, writer)
    try:
        result = manage("alembic_upgrade", database_url=url)
    finally:
        during_builds = watch.stop()
        writer.stop()
        locks = spy.stop()

    assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # The revision's line, with the builds' progress (every 2 s of a build) inside it.
    progress = [line for line in lines if line.startswith("    building ")]
    for line in progress:
        assert BUILD_LINE.fullmatch(line), line
    assert [line for line in lines if line not in progress] == [
        *([APPLYING_HEAD] if progress else []),
        APPLY_HEAD,
        f"Upgraded {shown(url)} to {HEAD}; the schema equals that revision.",
    ], result.stdout
    assert versions(engine) == [HEAD]
    # The head's indexes are there, every one VALID: no build was left half done.
    with engine.connect() as connection:
        indexes = dict(
            connection.exec_driver_sql(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'detected_materials'::regclass"
            ).all()
        )
    assert set(HEAD_INDEXES) <= set(indexes), sorted(indexes)
    assert all(indexes.values()), indexes
    assert catalog(engine) == revision_catalogs[HEAD]
    # Every material the writer inserted is there, and the writer kept writing during the
    # builds: none of its inserts failed.
    assert writer.errors == []
    assert missing_materials(engine, writer.inserted) == []
    assert scalar(engine, "SELECT count(*) FROM detected_materials") == MATERIALS + len(
        writer.inserted
    )
    assert during_builds > 0, "no insert committed while the indexes were being built"
    # The locks the deploy took on the materials: SHARE UPDATE EXCLUSIVE for the concurrent
    # builds, which blocks neither reads nor writes; never one that blocks an insert.
    assert ("detected_materials", "ShareUpdateExclusiveLock", True) in locks, sorted(locks)
    assert not any(
        table == "detected_materials" and mode in BLOCKING_WRITES for table, mode, _ in locks
    ), sorted(locks)
    worst = writer.worst("insert")
    print(
        f"\n{len(writer.inserted)} inserts ({during_builds} during the builds), the worst "
        f"waited {worst:.3f}s; locks on the tables: {sorted(locks)}"
    )
    assert worst < WORST_WAIT, sorted(wait for _, wait in writer.waits)[-5:]
