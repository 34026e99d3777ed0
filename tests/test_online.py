"""Deploys against a database serving traffic: lock timeouts, retries, concurrent builds.

Each test meets the deploy with what production has: a report holding its
transaction open on a table, an application reading jobs and inserting
materials on a steady beat, a session that deadlocks with the deploy, a kill
in the middle of a concurrent index build. Each names the locks the deploy
took (sampled from ``pg_locks``) and the longest wait it caused the
application.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from migsupport import executor
from migsupport.events import BuildProgress
from tests.support.catalog import catalog
from tests.support.commands import manage, shown, spawn, wait_for
from tests.support.live import Application, Holder, LockSpy, kill_in_concurrent_build
from tests.support.rows import data_checksums, seed_sql
from tests.support.states import (
    BASELINE,
    HEAD,
    SECOND,
    THIRD,
    execute,
    project_copy,
    reach,
    scalar,
    versions,
)

pytestmark = pytest.mark.postgresql

# The report: it read the jobs, and sits idle in its transaction.
REPORT = "SELECT count(*) FROM material_detection_jobs"
# A transaction whose snapshot a concurrent build must wait for.
SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ"
# How much longer than the DDL lock timeout an application call may wait: scheduling.
MARGIN = 1.0
APPLYING_SECOND = (
    f"  Applying {SECOND} (Cancelled jobs, the model version, and an index for a job's best "
    "materials.)..."
)


def retry_line(pid: int, timeout: str, budget: str, state: str = "idle in transaction") -> str:
    return (
        rf"    the lock on table material_detection_jobs was not granted within {timeout}s; "
        rf"held by pid {pid}, user postgres, application 'report', state {state}, its "
        r"transaction open for \d+\.\ds; rolled back, retrying in \d+\.\ds \(attempt \d+; "
        rf"\d+s of the {budget}s retry budget spent\)"
    )


@pytest.fixture
def behind(pg_url, pg_engine):
    """The baseline recorded, with rows: revisions 7c1d2e3f4a5b and 3d5f8a9b2c41 pending."""
    reach(pg_engine, "behind")
    execute(pg_engine, *seed_sql(jobs=200, materials=2000), "ANALYZE")
    return pg_url, pg_engine


def deploy_pid(engine) -> int | None:
    return scalar(
        engine,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'migsupport alembic_upgrade' "
        "AND datname = current_database()",
    )


def test_a_deploy_behind_a_long_report_retries_and_finishes_once_it_lets_go(behind):
    url, engine = behind
    before = data_checksums(engine)
    application = Application(url).start()
    spy = LockSpy(url).start()
    with Holder(url, REPORT) as report:
        process = spawn(
            "alembic_upgrade", "--ddl-lock-timeout", "1", "--ddl-retry-budget", "60",
            database_url=url,
        )  # fmt: skip
        # Two attempts at least, while the report keeps its transaction.
        wait_for(
            lambda: scalar(
                engine,
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE a.application_name = 'migsupport alembic_upgrade' AND NOT l.granted",
            ),
            30,
            "the deploy to wait for the report's lock",
        )
        time.sleep(3.5)
    stdout, stderr = process.communicate(timeout=120)
    application.stop()
    locks = spy.stop()

    assert (process.returncode, stderr) == (0, ""), stdout + stderr
    lines = stdout.splitlines()
    retries = [line for line in lines if line.startswith("    the lock on table")]
    assert len(retries) >= 2, stdout
    for line in retries:
        assert re.fullmatch(retry_line(report.pid, "1", "60"), line), line
    assert lines.count(f"{APPLYING_SECOND} lock not granted") == len(retries)
    assert f"{APPLYING_SECOND} OK" in lines
    assert lines[-1] == f"Upgraded {shown(url)} to {HEAD}; the schema equals that revision."
    assert versions(engine) == [HEAD]
    # Every job kept; the materials are those of before, plus what the application inserted.
    after = data_checksums(engine)
    assert after["material_detection_jobs"] == before["material_detection_jobs"]
    inserted = sum(1 for kind, _ in application.waits if kind == "insert")
    assert after["detected_materials"][0] == before["detected_materials"][0] + inserted
    # The locks the deploy took: ACCESS EXCLUSIVE on the jobs (ADD COLUMN), waited for
    # while the report held its lock (granted afterwards for milliseconds, too short to
    # sample); never a lock on the materials that blocks writes. The concurrent builds'
    # SHARE UPDATE EXCLUSIVE lasts milliseconds on these 2,000 rows, so a sample may
    # miss it: tests/reliability/test_index_builds.py asserts it at 1,000,000 rows.
    assert ("material_detection_jobs", "AccessExclusiveLock", False) in locks
    assert not any(
        table == "detected_materials" and mode in ("ShareLock", "AccessExclusiveLock")
        for table, mode, _ in locks
    ), locks
    # The application waited no longer than the DDL lock timeout, and never failed.
    assert application.errors == []
    worst = application.worst()
    print(f"locks: {sorted(locks)}; the application's longest wait: {worst:.2f}s")
    assert worst <= 1.0 + MARGIN, application.waits


def test_the_retry_budget_runs_out_in_one_line_at_the_last_whole_revision(behind):
    url, engine = behind
    before = catalog(engine), data_checksums(engine)
    with Holder(url, REPORT) as report:
        result = manage(
            "alembic_upgrade", "--ddl-lock-timeout", "0.5", "--ddl-retry-budget", "3",
            database_url=url,
        )  # fmt: skip
        pid = report.pid

    assert result.returncode == 1
    assert re.fullmatch(
        rf"CommandError: revision {SECOND} could not take its locks within the retry budget "
        r"\(3s, \d+ attempts\): the lock on table material_detection_jobs was not granted "
        rf"within 0\.5s, held by pid {pid}, user postgres, application 'report', state idle "
        r"in transaction, its transaction open for \d+\.\ds; the database stays at "
        f"{BASELINE}, and nothing else changed; retry when that session has finished, or "
        "raise --ddl-retry-budget\n",
        result.stderr,
    ), result.stderr
    assert result.stdout.splitlines()[-1] == f"{APPLYING_SECOND} FAILED"
    assert (catalog(engine), data_checksums(engine)) == before
    assert versions(engine) == [BASELINE]


def test_a_deadlock_with_the_application_is_retried(pg_url, pg_engine, tmp_path):
    copy = project_copy(tmp_path / "project")
    # A revision that locks the jobs, then the materials: the other order deadlocks.
    (copy.versions / f"{THIRD}_lock_order.py").write_text(
        '"""Lock the jobs, then the materials."""\n\n'
        "from alembic import op\n\n"
        f"revision = {THIRD!r}\ndown_revision = {HEAD!r}\nbranch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade():\n"
        '    op.execute("LOCK TABLE material_detection_jobs IN ACCESS EXCLUSIVE MODE")\n'
        '    op.execute("LOCK TABLE detected_materials IN ACCESS EXCLUSIVE MODE")\n\n\n'
        "def downgrade():\n    pass\n"
    )
    reach(pg_engine, "up_to_date")
    execute(pg_engine, *seed_sql(jobs=20, materials=50))
    other = Holder(pg_url, "LOCK TABLE detected_materials IN ACCESS SHARE MODE")
    process = spawn("alembic_upgrade", "--ddl-lock-timeout", "5", database_url=pg_url, **copy.env)
    try:
        # The deploy holds the jobs and waits for the materials the other session holds...
        wait_for(
            lambda: scalar(
                pg_engine,
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted "
                "AND a.application_name = 'migsupport alembic_upgrade' "
                "AND c.relname = 'detected_materials'",
            ),
            30,
            "the deploy to wait for the materials",
        )
        # ...which now waits for the jobs: a deadlock, found first by the deploy.
        reading = threading.Thread(
            target=lambda: (other.execute(REPORT), other.release()), daemon=True
        )
        reading.start()
        stdout, stderr = process.communicate(timeout=120)
        reading.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        other.release()

    assert (process.returncode, stderr) == (0, ""), stdout + stderr
    applying = f"  Applying {THIRD} (Lock the jobs, then the materials.)..."
    lines = stdout.splitlines()
    assert f"{applying} deadlock" in lines, stdout
    retry = next(line for line in lines if line.startswith("    a deadlock"))
    assert re.fullmatch(
        rf"    a deadlock on table detected_materials; held by pid {other.pid}, user postgres, "
        r"application 'report', state (idle in transaction|active), its transaction open for "
        r"\d+\.\ds; rolled back, retrying in \d+\.\ds \(attempt 2; \d+s of the 600s retry "
        r"budget spent\)",
        retry,
    ), retry
    assert f"{applying} OK" in lines
    assert versions(pg_engine) == [THIRD]


@pytest.mark.parametrize("kill", ["client", "client and server session"])
def test_a_deploy_killed_in_a_concurrent_build_is_resumed_by_the_next(behind, kill):
    url, engine = behind
    before = data_checksums(engine)
    # An old snapshot makes the concurrent build wait in "waiting for old snapshots".
    snapshot = Holder(url, "BEGIN ISOLATION LEVEL REPEATABLE READ", "SELECT 1 FROM alembic_version")
    process = spawn("alembic_upgrade", "--ddl-lock-timeout", "60", database_url=url)
    kill_in_concurrent_build(
        process, engine, kill, snapshot, "the concurrent build to wait for the old snapshot"
    )
    wait_for(lambda: deploy_pid(engine) is None, 60, "the killed deploy's session to end")

    status = manage("alembic_status", "--json", database_url=url)
    assert '"state": "partially_applied"' in status.stdout, status.stdout
    assert f'"partial": "{SECOND}"' in status.stdout

    rerun = manage("alembic_upgrade", database_url=url)

    assert (rerun.returncode, rerun.stderr) == (0, ""), rerun.stdout + rerun.stderr
    assert f"{APPLYING_SECOND} OK" in rerun.stdout.splitlines()
    assert versions(engine) == [HEAD]
    assert data_checksums(engine) == before
    assert manage("alembic_status", "--check", database_url=url).returncode == 0
    assert not scalar(engine, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")


def partially_applied(engine, *extra: str) -> None:
    """Leave what an interrupted 7c1d2e3f4a5b leaves: its transaction, and an INVALID build."""
    execute(
        engine,
        "ALTER TYPE jobstatus ADD VALUE 'CANCELLED' AFTER 'FAILED'",
        "ALTER TABLE material_detection_jobs ADD COLUMN model_version VARCHAR(64)",
        "CREATE INDEX ix_detected_materials_job_id_confidence "
        "ON detected_materials (job_id, confidence)",
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'ix_detected_materials_job_id_confidence'::regclass",
        *extra,
    )


def test_partially_applied_is_recognised_and_resumed(behind):
    url, engine = behind
    partially_applied(engine)

    status = manage("alembic_status", database_url=url)
    assert status.stdout.splitlines()[1:6] == [
        "  State:    partially_applied",
        f"  Current:  {BASELINE}",
        f"  Head:     {HEAD}",
        f"  Pending:  {SECOND}, {HEAD}",
        f"  Partial:  {SECOND} (part of it is in place)",
    ]
    assert "  - column material_detection_jobs.model_version is unexpected" in status.stdout
    assert manage("alembic_status", "--check", database_url=url).returncode == 1

    result = manage("alembic_upgrade", database_url=url)

    assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    assert versions(engine) == [HEAD]
    assert manage("alembic_status", "--check", database_url=url).returncode == 0


def test_anything_beyond_a_partial_revision_is_drift_and_refused(behind):
    url, engine = behind
    partially_applied(engine, "CREATE INDEX ix_by_hand ON detected_materials (category)")
    before = catalog(engine)

    result = manage("alembic_upgrade", database_url=url)

    assert result.returncode == 1
    assert result.stderr.endswith(
        f"CommandError: refused: the schema differs from the recorded revision {BASELINE}; "
        "nothing was changed\n"
    )
    assert "  - index ix_by_hand is unexpected\n" in result.stderr
    assert catalog(engine) == before
    assert versions(engine) == [BASELINE]


def hold_a_snapshot_while_a_build_waits(url, engine, seconds: float) -> threading.Thread:
    """Hold an old snapshot until a concurrent build has waited ``seconds`` for it (or 60 s)."""
    holder = Holder(url, "SELECT 1", begin=SNAPSHOT)

    def release() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if scalar(
                engine,
                "SELECT count(*) FROM pg_stat_progress_create_index "
                "WHERE phase LIKE 'waiting for old snapshots%'",
            ):
                time.sleep(seconds)
                break
            time.sleep(0.05)
        holder.release()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_the_statement_timeout_spares_concurrent_builds_unless_asked(behind):
    url, engine = behind
    # The build waits 3 s for an old snapshot: longer than the 1 s statement timeout.
    waiting = hold_a_snapshot_while_a_build_waits(url, engine, 3)
    asked = manage(
        "alembic_upgrade", SECOND, "--ddl-lock-timeout", "30", "--statement-timeout", "1",
        "--statement-timeout-on-builds", database_url=url,
    )  # fmt: skip
    waiting.join(timeout=90)
    assert asked.returncode == 1, asked.stdout
    assert asked.stderr == (
        f"CommandError: revision {SECOND} failed and its transaction was rolled back; the "
        f"database stays at {BASELINE}, with part of revision {SECOND} applied (what it "
        "builds outside its transaction; the state reads partially_applied): rerun the "
        f"upgrade, which finishes {SECOND}: canceling statement due to statement timeout\n"
    )

    waiting = hold_a_snapshot_while_a_build_waits(url, engine, 3)
    spared = manage(
        "alembic_upgrade", SECOND, "--ddl-lock-timeout", "30", "--statement-timeout", "1",
        "-v", "2", database_url=url,
    )  # fmt: skip
    waiting.join(timeout=90)
    assert (spared.returncode, spared.stderr) == (0, ""), spared.stdout + spared.stderr
    # The revision took as long as the build waited, past the statement timeout.
    took = float(re.search(rf"{re.escape(APPLYING_SECOND)} OK \((\d+\.\d+)s\)", spared.stdout)[1])
    assert took >= 3.0, spared.stdout
    assert versions(engine) == [SECOND]


def test_the_build_watch_reports_the_revisions_builds_and_never_a_probes(pg_engine, monkeypatch):
    """A helper's probe builds an index on an uncommitted temporary table: no build to report.

    The deploy's session builds an index on such a table (as a probe does,
    here on two million rows, so that it lasts), then two on a committed
    table, concurrently and not. Sampled every 0.1 s and reported at once,
    the watch reports the last two and never the first, on a table no other
    session can see.
    """
    monkeypatch.setattr(executor, "PROGRESS_INTERVAL", 0.0)
    rows = "SELECT g, md5(g::text) AS name FROM generate_series(1, 2000000) g"
    execute(pg_engine, f"CREATE TABLE committed AS {rows}")
    events: list[object] = []
    seen: list[tuple[object, ...]] = []
    with pg_engine.connect() as deploy:
        pid = deploy.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        deploy.commit()
        watch = executor.LockWatch(pg_engine.url, pid, events.append)
        stop = threading.Event()

        def sample_everything() -> None:
            # What the watch would see without its filter: proof that the probe was sampled.
            with pg_engine.connect() as spy:
                while not stop.wait(0.05):
                    seen.extend(
                        spy.exec_driver_sql(
                            "SELECT index_relid, phase FROM pg_stat_progress_create_index "
                            f"WHERE pid = {pid}"
                        ).all()
                    )
                    spy.rollback()

        spy = threading.Thread(target=sample_everything)
        spy.start()
        try:
            watch.begin("a revision")
            deploy.exec_driver_sql(f"CREATE TEMPORARY TABLE probe AS {rows}")
            deploy.exec_driver_sql("CREATE INDEX ix_probe ON probe (name)")
            deploy.rollback()
            deploy.execution_options(isolation_level="AUTOCOMMIT")
            deploy.exec_driver_sql(
                "CREATE INDEX CONCURRENTLY ix_committed_name ON committed (name)"
            )
            deploy.exec_driver_sql("CREATE INDEX ix_committed_g ON committed (g)")
        finally:
            stop.set()
            spy.join()
            watch.close()

    builds = [event for event in events if isinstance(event, BuildProgress)]
    assert any(index_relid == 0 for index_relid, _ in seen), seen
    assert builds, events
    # A plain build shows no index (index_relid 0), only its table.
    assert {(event.table, event.index) for event in builds} == {
        ("committed", "ix_committed_name"),
        ("committed", None),
    }
