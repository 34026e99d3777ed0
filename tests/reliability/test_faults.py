"""Faults in the middle of a deploy: processes killed, connections cut, on real PostgreSQL.

``alembic_upgrade`` is killed with SIGKILL at random points of its run, in
every phase: before it takes the deploy lock, while it waits for it, in the
middle of a revision, and between two revisions. The points are drawn from a
seeded random generator; the seed is printed, and ``MIGSUPPORT_FAULT_SEED``
replays a run. After each kill the database must be whole: the killed
session gone with its advisory lock, ``alembic_version`` naming one whole
revision (or none), the catalog exactly that revision's, every row intact,
and a rerun must finish at head.

The server also cuts the connection itself (``pg_terminate_backend``): the
command must then say in one line what failed and where the database stands.

``alembic_verify`` killed while its scratch database exists leaves it behind;
the next run must drop it, and never drop the scratch database of a run that
is still going. These clean-up tests run on the suite's private cluster
(``password_server``), where no other run makes or drops scratch databases.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from migsupport.locking import advisory_key
from migsupport.scratch import KEPT_COMMENT, claim_key
from migsupport.scratch import PREFIX as SCRATCH_PREFIX
from tests.support.catalog import catalog
from tests.support.commands import manage, shown, spawn, wait_for
from tests.support.migrate import run
from tests.support.rows import data_checksums, production_database, seed_sql
from tests.support.server import (
    admin_execute,
    drop_pg_database,
    scratch_databases,
)
from tests.support.sessions import PG_LOCK_NAME, advisory_locks, upgrade_sessions
from tests.support.states import (
    APPLY_BASELINE,
    APPLY_HEAD,
    APPLY_SECOND,
    BASELINE,
    HEAD,
    REVISIONS,
    SECOND,
    ProjectCopy,
    add_revision,
    execute,
    project_copy,
    scalar,
    versions,
)
from tests.support.templates import Templates

# The tests here share module-scoped databases and batches of commands: they run on one
# test worker, so that those are built once.
pytestmark = pytest.mark.xdist_group("faults")

SLEEP_SECONDS = 3
# Sleeps at the end of the head revision, after its indexes are built, only
# where there are rows: the replay on an empty scratch database stays quick.
SLEEP_STATEMENT = (
    "    from alembic import op\n\n"
    f'    op.execute("SELECT pg_sleep({SLEEP_SECONDS}) FROM '
    '(SELECT 1 FROM detected_materials LIMIT 1) AS one_row")\n'
)
APPLYING_HEAD = APPLY_HEAD.removesuffix(" OK")
LOCK_WAIT = re.compile(
    rf"Waiting for the deploy lock: PostgreSQL advisory lock {advisory_key(PG_LOCK_NAME)} "
    rf"\({PG_LOCK_NAME}\) is held by pid \d+, .*"
)
MATERIALS, JOBS = 20_000, 400
# Alembic's ``op`` and ``context`` are module globals: one in-process migration at a time.
IN_PROCESS_ALEMBIC = threading.Lock()


# -- the seed ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed() -> int:
    """The seed of every random choice in this module; ``MIGSUPPORT_FAULT_SEED`` replays one."""
    chosen = os.environ.get("MIGSUPPORT_FAULT_SEED")
    value = int(chosen) if chosen else random.SystemRandom().randrange(2**32)
    print(f"\nfault injection seed: {value} (replay with MIGSUPPORT_FAULT_SEED={value})")
    return value


# -- the server's view ----------------------------------------------------------------------


def sleeping_backend(engine: Engine) -> int | None:
    return scalar(
        engine,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
    )


def terminate(engine: Engine, pid: int) -> None:
    assert scalar(engine, "SELECT pg_terminate_backend(:pid)", pid=pid) is True


@contextmanager
def deploy_lock_held(engine: Engine) -> Iterator[sa.Connection]:
    """Hold the deploy lock of the database behind ``engine``, as another deploy would."""
    with engine.connect() as connection:
        connection.execute(
            sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(PG_LOCK_NAME)}
        )
        connection.commit()
        yield connection


# -- databases and projects -------------------------------------------------------------------


@dataclass
class Trial:
    """One database with rows, what it held before the fault, and what the fault left."""

    url: URL
    engine: Engine
    kind: str
    catalog_before: dict[str, Any]
    versions_before: list[str] | None
    checksums_before: dict[str, tuple[int, str]]
    note: str = ""


def _trial_template(kind: str, materials: int) -> Callable[[Engine], None]:
    def build(engine: Engine) -> None:
        if kind == "production":
            production_database(engine, materials=materials, jobs=JOBS)
        else:
            assert kind == "behind", kind
            with IN_PROCESS_ALEMBIC:
                run(engine, "upgrade", BASELINE)
            execute(engine, *seed_sql(jobs=JOBS, materials=materials), "ANALYZE")

    return build


@contextmanager
def trial_database(templates: Templates, kind: str, materials: int = MATERIALS) -> Iterator[Trial]:
    """A new database of ``kind``, dropped afterwards.

    ``production``: the deployed schema, unversioned, with rows. ``behind``:
    migrated to the baseline, versioned, with the same rows. Each is copied
    from a template built once.
    """
    url = templates.copy(f"faults {kind} {materials}", _trial_template(kind, materials))
    engine = create_engine(url)
    try:
        yield Trial(url, engine, kind, catalog(engine), versions(engine), data_checksums(engine))
    finally:
        engine.dispose()
        drop_pg_database(templates.server, url)


@pytest.fixture(scope="module")
def sleeping_head(tmp_path_factory: pytest.TempPathFactory) -> ProjectCopy:
    """A copy of the project whose head revision sleeps after building its indexes."""
    copy = project_copy(tmp_path_factory.mktemp("sleeping") / "project")
    (script,) = copy.versions.glob(f"{HEAD}_*.py")
    text = script.read_text()
    marker = "\n\ndef downgrade()"
    assert text.count(marker) == 1
    script.write_text(text.replace(marker, SLEEP_STATEMENT + marker))
    return copy


# -- what must hold after any fault ------------------------------------------------------------


def assert_whole(trial: Trial, revision_catalogs: dict[str | None, Any], context: str) -> str:
    """Assert the database is at one whole revision with every row; return that revision.

    The revision after it may be partly there: what a revision builds outside
    its transaction (a concurrent index build commits what precedes it) stays
    when the process dies, and the state reads partially_applied.
    """
    wait_for(
        lambda: not upgrade_sessions(trial.engine), 30, f"the killed session to end ({context})"
    )
    assert advisory_locks(trial.engine) == 0, context
    recorded = versions(trial.engine)
    if not recorded:
        assert recorded == trial.versions_before or recorded == [], (recorded, context)
        at = "(none)"
        whole = following = trial.catalog_before
    else:
        assert len(recorded) == 1 and recorded[0] in REVISIONS, (recorded, context)
        (at,) = recorded
        whole = revision_catalogs[at]
        after = REVISIONS.index(at) + 1
        following = revision_catalogs[REVISIONS[after]] if after < len(REVISIONS) else whole
    assert_between(catalog(trial.engine), whole, following, context)
    assert data_checksums(trial.engine) == trial.checksums_before, context
    return at


def assert_between(live: dict[str, Any], whole: dict[str, Any], following: dict[str, Any], context):
    """Assert ``live`` is ``whole``, or ``whole`` on the way to ``following``, kind by kind."""
    if live == whole:
        return
    for kind, rows in live.items():
        present = {repr(row) for row in rows}
        below = {repr(row) for row in whole[kind]}
        above = {repr(row) for row in following[kind]}
        assert below & above <= present <= below | above, (kind, sorted(present), context)


def assert_rerun_reaches_head(trial: Trial, revision_catalogs: dict[str | None, Any], context: str):
    rerun = manage("alembic_upgrade", database_url=trial.url)
    assert (rerun.returncode, rerun.stderr) == (0, ""), context
    assert versions(trial.engine) == [HEAD], context
    assert catalog(trial.engine) == revision_catalogs[HEAD], context
    assert data_checksums(trial.engine) == trial.checksums_before, context


def kill(process: subprocess.Popen) -> tuple[str, str]:
    os.kill(process.pid, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return stdout, stderr


def killed_in_time(process: subprocess.Popen) -> bool:
    """SIGKILL ``process``; return False if it had already finished, successfully, by itself."""
    os.kill(process.pid, signal.SIGKILL)  # an unreaped child keeps its pid
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGKILL), (process.returncode, stderr)
    return process.returncode == -signal.SIGKILL


# -- SIGKILL, phase by phase -------------------------------------------------------------------

TRIALS_PER_PHASE = 2
# Kills the ``connected`` phase may try before one lands: a command that
# finished first is tried again, on a new database, with a shorter delay.
CONNECTED_ATTEMPTS = 5


def run_trials(phase: str, seed: int, count: int, trial: Callable[[random.Random, str], str]):
    """Run ``count`` trials of ``phase``, two at a time, each with its own seeded generator."""
    rng = random.Random(f"{seed}:{phase}")
    generators = [random.Random(rng.getrandbits(64)) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = list(
            pool.map(
                lambda number: (
                    f"#{number} " + trial(generators[number], f"seed {seed}, {phase} #{number}")
                ),
                range(count),
            )
        )
    print(f"\n{phase} (seed {seed}):")
    for row in rows:
        print(f"  {row}")


@pytest.mark.parametrize("phase", ["at_start", "during_django_start_up", "connected"])
def test_sigkill_before_the_lock_leaves_a_whole_revision(
    phase, seed, pg_server, pg_templates, revision_catalogs
):
    """Killed while Python or Django starts, or just after connecting (lock, classification)."""

    connected = phase == "connected"

    def trial(rng: random.Random, name: str) -> str:
        kind = rng.choice(["production", "behind"])
        # After connecting, a fast machine may finish the upgrade within the delay.
        bound = 0.4
        finished_first: list[str] = []
        for _ in range(CONNECTED_ATTEMPTS if connected else 1):
            with trial_database(pg_templates, kind) as db:
                process = spawn("alembic_upgrade", database_url=db.url)
                if connected:
                    wait_for(lambda: upgrade_sessions(db.engine), 60, "the command to connect")
                    delay = rng.uniform(0.0, bound)
                else:
                    delay = rng.uniform(0.0, 0.15) if phase == "at_start" else rng.uniform(0.2, 0.6)
                time.sleep(delay)
                context = f"{name}: {kind}, killed after {delay:.3f}s"
                if not killed_in_time(process):
                    assert connected, f"{context}: it finished before the kill"
                    assert versions(db.engine) == [HEAD], context
                    assert catalog(db.engine) == revision_catalogs[HEAD], context
                    assert data_checksums(db.engine) == db.checksums_before, context
                    finished_first.append(f"{delay:.3f}s")
                    bound = delay
                    continue
                at = assert_whole(db, revision_catalogs, context)
                assert_rerun_reaches_head(db, revision_catalogs, context)
                row = f"{kind}: killed {delay:.3f}s after {phase}, left at {at}; rerun at head"
                if finished_first:
                    row += f" (finished before kills at {', '.join(finished_first)})"
                return row
        raise AssertionError(f"{name}: every upgrade finished before its kill: {finished_first}")

    run_trials(phase, seed, TRIALS_PER_PHASE, trial)


def test_sigkill_while_waiting_for_the_lock_changes_nothing(
    seed, pg_server, pg_templates, revision_catalogs
):
    def trial(rng: random.Random, name: str) -> str:
        kind = rng.choice(["production", "behind"])
        with trial_database(pg_templates, kind) as db:
            with deploy_lock_held(db.engine) as holder:
                process = spawn("alembic_upgrade", database_url=db.url, PYTHONUNBUFFERED="1")
                line = process.stdout.readline().rstrip("\n")
                assert LOCK_WAIT.fullmatch(line), line
                delay = rng.uniform(0.0, 0.6)
                time.sleep(delay)
                kill(process)
                context = f"{name}: {kind}, killed {delay:.3f}s into the wait"
                wait_for(lambda: upgrade_sessions(db.engine) == [], 30, "the killed session to end")
                # Only the test's own lock is left, and nothing changed.
                assert advisory_locks(db.engine) == 1, context
                assert versions(db.engine) == db.versions_before, context
                assert catalog(db.engine) == db.catalog_before, context
                holder.execute(
                    sa.text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(PG_LOCK_NAME)}
                )
                holder.commit()
            at = assert_whole(db, revision_catalogs, context)
            assert_rerun_reaches_head(db, revision_catalogs, context)
            return f"{kind}: killed {delay:.3f}s into the wait, left at {at}; rerun at head"

    run_trials("lock_wait", seed, TRIALS_PER_PHASE, trial)


def test_sigkill_mid_revision_keeps_the_last_whole_revision_and_the_rerun_finishes(
    seed, pg_server, pg_templates, revision_catalogs, sleeping_head
):
    """Killed while the head revision sleeps, after its concurrent index builds.

    Those builds commit as they finish, outside the revision's transaction:
    they stay, the version stays at the revision before, and the rerun
    finishes the head revision by finding its indexes already built.
    """

    def trial(rng: random.Random, name: str) -> str:
        kind = rng.choice(["production", "behind"])
        with trial_database(pg_templates, kind) as db:
            process = spawn("alembic_upgrade", database_url=db.url, **sleeping_head.env)
            try:
                wait_for(lambda: sleeping_backend(db.engine), 60, "the head revision's sleep")
            except AssertionError:
                process.kill()
                raise AssertionError(process.communicate()) from None
            delay = rng.uniform(0.0, SLEEP_SECONDS - 1.0)
            time.sleep(delay)
            stdout, _ = kill(process)
            context = f"{name}: {kind}, killed {delay:.3f}s into the sleep"
            assert stdout.endswith(APPLYING_HEAD), context
            at = assert_whole(db, revision_catalogs, context)
            assert at == SECOND, context
            assert catalog(db.engine) == revision_catalogs[HEAD], context
            assert_rerun_reaches_head(db, revision_catalogs, context)
            return f"{kind}: killed {delay:.3f}s into {HEAD}'s sleep, left at {at}; rerun at head"

    run_trials("mid_revision", seed, TRIALS_PER_PHASE, trial)


def test_sigkill_at_a_random_point_of_a_long_upgrade(
    seed, pg_server, pg_templates, revision_catalogs
):
    """A production database with more rows, killed at a random moment of the whole run."""

    def trial(rng: random.Random, name: str) -> str:
        with trial_database(pg_templates, "production", materials=150_000) as db:
            process = spawn("alembic_upgrade", database_url=db.url)
            wait_for(lambda: upgrade_sessions(db.engine), 60, "the command to connect")
            delay = rng.uniform(0.0, 1.2)
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=60)
            if process.returncode == 0:
                # On a quiet machine the whole upgrade can end first: then it
                # must have succeeded, and the database is at the head.
                assert stderr == "", (name, stderr)
                at = assert_whole(db, revision_catalogs, name)
                assert at == HEAD, name
                return f"production: finished within {delay:.3f}s, before the kill, at {at}"
            assert process.returncode == -signal.SIGKILL, (name, stderr)
            context = f"{name}: killed {delay:.3f}s after connecting"
            at = assert_whole(db, revision_catalogs, context)
            assert_rerun_reaches_head(db, revision_catalogs, context)
            said = len(stdout.splitlines())
            return (
                f"production: killed {delay:.3f}s after connecting, {said} line(s) printed, "
                f"left at {at}; rerun at head"
            )

    run_trials("random_point", seed, TRIALS_PER_PHASE, trial)


# Each line the command prints once a step is committed, and the revision it commits.
COMMITTED_LINES = {
    f"  Baselined at {BASELINE}: the live schema equals that revision.": BASELINE,
    APPLY_BASELINE: BASELINE,
    APPLY_SECOND: SECOND,
    APPLY_HEAD: HEAD,
}


def test_sigkill_between_revisions_keeps_every_revision_reported_done(
    seed, pg_server, pg_templates, revision_catalogs
):
    """Killed as soon as a line says a step is done: that step must be in the database."""

    def trial(rng: random.Random, name: str) -> str:
        kind = rng.choice(["production", "behind"])
        steps = 3 if kind == "production" else 2  # the baseline, then each revision
        after = rng.randrange(1, steps + 1)
        with trial_database(pg_templates, kind) as db:
            process = spawn("alembic_upgrade", database_url=db.url, PYTHONUNBUFFERED="1")
            read = [process.stdout.readline().rstrip("\n") for _ in range(after)]
            kill(process)
            context = f"{name}: {kind}, killed after {read}"
            assert read[-1] in COMMITTED_LINES, context
            reported = COMMITTED_LINES[read[-1]]
            at = assert_whole(db, revision_catalogs, context)
            assert at in REVISIONS[REVISIONS.index(reported) :], context
            assert_rerun_reaches_head(db, revision_catalogs, context)
            return f"{kind}: killed on {read[-1].strip()!r}, left at {at}; rerun at head"

    run_trials("between_revisions", seed, TRIALS_PER_PHASE + 1, trial)


# -- the server cuts the connection ------------------------------------------------------------


def test_connection_terminated_mid_revision_is_one_clear_line(
    pg_server, pg_templates, revision_catalogs, sleeping_head
):
    with trial_database(pg_templates, "behind") as trial:
        process = spawn("alembic_upgrade", database_url=trial.url, **sleeping_head.env)
        backend = wait_for(lambda: sleeping_backend(trial.engine), 60, "the head revision's sleep")
        terminate(trial.engine, backend)
        stdout, stderr = process.communicate(timeout=60)

        assert process.returncode == 1
        assert stdout.splitlines() == [APPLY_SECOND, f"{APPLYING_HEAD} FAILED"]
        # The head's indexes were built, concurrently, before its sleep: read on
        # a new connection, the schema tells that they stay.
        assert stderr == (
            f"CommandError: revision {HEAD} failed and its transaction was rolled back; the "
            f"database stays at {SECOND}, with part of revision {HEAD} applied (what it builds "
            "outside its transaction; the state reads partially_applied): rerun the upgrade, "
            f"which finishes {HEAD}: the connection to the database was lost (terminating "
            "connection due to administrator command)\n"
        )
        assert assert_whole(trial, revision_catalogs, "terminated mid-revision") == SECOND
        assert catalog(trial.engine) == revision_catalogs[HEAD]
        assert_rerun_reaches_head(trial, revision_catalogs, "terminated mid-revision")
        assert_rerun_reaches_head(trial, revision_catalogs, "terminated mid-revision")


def test_connection_terminated_while_waiting_for_the_lock_is_one_clear_line(
    pg_server, pg_templates, revision_catalogs
):
    with trial_database(pg_templates, "production") as trial:
        with deploy_lock_held(trial.engine) as holder:
            process = spawn("alembic_upgrade", database_url=trial.url, PYTHONUNBUFFERED="1")
            line = process.stdout.readline().rstrip("\n")
            assert LOCK_WAIT.fullmatch(line), line
            (backend,) = upgrade_sessions(trial.engine)
            terminate(trial.engine, backend)
            stdout, stderr = process.communicate(timeout=60)
            holder.execute(
                sa.text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(PG_LOCK_NAME)}
            )
            holder.commit()

        assert process.returncode == 1
        assert stdout == ""
        key = advisory_key(PG_LOCK_NAME)
        assert stderr == (
            f"CommandError: {shown(trial.url)}: the connection to the database was lost while "
            f"waiting for the deploy lock (PostgreSQL advisory lock {key} ({PG_LOCK_NAME})); "
            "nothing was changed: terminating connection due to administrator command\n"
        )
        assert versions(trial.engine) is None
        assert assert_whole(trial, revision_catalogs, "terminated in the lock wait") == "(none)"
        assert_rerun_reaches_head(trial, revision_catalogs, "terminated in the lock wait")


# -- alembic_verify's scratch databases ---------------------------------------------------------

SLEEPER = "5e5e5e5e5e5e"


@pytest.fixture
def sleeping_verify(tmp_path: Path) -> ProjectCopy:
    """A copy of the project with a revision after head that sleeps on PostgreSQL.

    After its sleep it also waits, up to 120 s, while the file :func:`gate`
    names exists: a test that creates it keeps the run inside its scratch
    database until it removes it (rendered as SQL, it never waits).
    """
    copy = project_copy(tmp_path / "project")
    add_revision(
        copy,
        SLEEPER,
        HEAD,
        'if op.get_bind().dialect.name == "postgresql":\n'
        f'        op.execute("SELECT pg_sleep({SLEEP_SECONDS})")\n'
        "        import os, time\n"
        # Not while the lint renders the revisions as SQL: nothing runs then.
        "        for _ in range(0 if op.get_context().as_sql else 2400):\n"
        f"            if not os.path.exists({str(gate(copy))!r}):\n"
        "                break\n"
        "            time.sleep(0.05)",
    )
    return copy


def gate(copy: ProjectCopy) -> Path:
    """The file whose existence holds the sleeping revision of ``copy`` after its sleep."""
    return copy.folder / "sleeper.gate"


def sleeping_scratch(server_engine: Engine) -> str | None:
    """Return the scratch database where a revision sleeps, if any."""
    return scalar(
        server_engine,
        "SELECT datname FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
        "AND state = 'active' AND datname LIKE 'migsupport\\_scratch\\_%'",
    )


def claimed(server_engine: Engine, name: str) -> bool:
    key = claim_key(name) & 0xFFFFFFFFFFFFFFFF
    return bool(
        scalar(
            server_engine,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = :high AND objid = :low AND objsubid = 1",
            high=key >> 32,
            low=key & 0xFFFFFFFF,
        )
    )


@pytest.fixture
def scratch_server(password_server: URL) -> URL:
    """The server of the clean-up tests: the private cluster, which no other run uses.

    They look at every scratch database on their server, and on the shared
    one other runs (test workers, other checkouts) make and drop theirs
    meanwhile, and their verify runs drop abandoned ones too.
    """
    return password_server


@pytest.fixture
def server_engine(scratch_server: URL) -> Iterator[Engine]:
    engine = create_engine(scratch_server)
    yield engine
    engine.dispose()


def test_a_killed_verifys_scratch_database_is_dropped_by_the_next_run(
    scratch_server, server_engine, sleeping_verify
):
    before = scratch_databases(scratch_server)
    process = spawn("alembic_verify", database_url=scratch_server, **sleeping_verify.env)
    scratch = None
    try:
        scratch = wait_for(lambda: sleeping_scratch(server_engine), 60, "a scratch database")
        assert claimed(server_engine, scratch)
        kill(process)
        # SIGKILL skips every finally: the database stays, its claim goes with the session.
        assert scratch in scratch_databases(scratch_server)
        wait_for(lambda: not claimed(server_engine, scratch), 30, "the killed run's claim to go")

        result = manage("alembic_verify", database_url=scratch_server)

        assert (result.returncode, result.stderr) == (0, ""), result.stdout
        left = scratch_databases(scratch_server)
        assert scratch not in left
        assert left <= before
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if scratch is not None:
            admin_execute(scratch_server, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def test_a_running_verifys_scratch_database_survives_another_verify(
    scratch_server, server_engine, sleeping_verify
):
    before = scratch_databases(scratch_server)
    # The first run stays in its scratch database until the second has finished.
    held = gate(sleeping_verify)
    held.touch()
    # The sleeping revision is not in the copy's ledger: --update-ledger records it.
    first = spawn(
        "alembic_verify", "--update-ledger", database_url=scratch_server, **sleeping_verify.env
    )
    scratch = None
    try:
        scratch = wait_for(lambda: sleeping_scratch(server_engine), 60, "a scratch database")

        second = manage("alembic_verify", database_url=scratch_server)

        assert (second.returncode, second.stderr) == (0, ""), second.stdout
        assert first.poll() is None
        assert scratch in scratch_databases(scratch_server)
        held.unlink()
        # Its own scratch database dropped under it, the first run could not pass.
        stdout, stderr = first.communicate(timeout=120)
        assert (first.returncode, stderr) == (0, ""), stdout
        assert f"    {SLEEPER} OK" in stdout.splitlines()
        assert scratch_databases(scratch_server) <= before
    finally:
        held.unlink(missing_ok=True)
        if first.poll() is None:
            first.kill()
            first.communicate()
        if scratch is not None:
            admin_execute(scratch_server, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


# -- "OK" means committed ---------------------------------------------------------------------

SLOW_COMMIT = "5c5c5c5c5c5c"
# Sleeps in its COMMIT, through a deferred trigger on a temporary table, where
# there are rows (not on the empty scratch database the ledger is replayed on).
SLOW_COMMIT_BODY = "\n    ".join(
    f"op.execute({statement!r})"
    for statement in (
        "CREATE TEMPORARY TABLE slow_commit (id integer) ON COMMIT DROP",
        "CREATE FUNCTION pg_temp.sleep_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({SLEEP_SECONDS}); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER sleep_at_commit AFTER INSERT ON slow_commit "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.sleep_at_commit()",
        "INSERT INTO slow_commit SELECT 1 FROM detected_materials LIMIT 1",
    )
)


def test_a_revision_printed_ok_is_committed_even_when_its_commit_is_slow(
    pg_server, pg_templates, revision_catalogs, tmp_path
):
    copy = project_copy(tmp_path / "project")
    add_revision(copy, SLOW_COMMIT, HEAD, SLOW_COMMIT_BODY)
    with trial_database(pg_templates, "behind") as db:
        process = spawn("alembic_upgrade", database_url=db.url, PYTHONUNBUFFERED="1", **copy.env)
        read = [process.stdout.readline().rstrip("\n") for _ in range(3)]
        kill(process)

        assert read == [
            APPLY_SECOND,
            APPLY_HEAD,
            f"  Applying {SLOW_COMMIT} (An added revision.)... OK",
        ]
        wait_for(lambda: not upgrade_sessions(db.engine), 30, "the killed session to end")
        assert advisory_locks(db.engine) == 0
        assert versions(db.engine) == [SLOW_COMMIT]
        assert catalog(db.engine) == revision_catalogs[HEAD]  # it changes nothing lasting
        assert data_checksums(db.engine) == db.checksums_before
        rerun = manage("alembic_upgrade", database_url=db.url, **copy.env)
        assert (rerun.returncode, rerun.stderr) == (0, "")
        assert rerun.stdout == f"No revisions to apply: {shown(db.url)} is at {SLOW_COMMIT}.\n"


ROLE_PASSWORD = "Createdb-pw-3"


@pytest.fixture
def createdb_role(scratch_server: URL) -> Iterator[URL]:
    """Return the scratch server as a new role with CREATEDB, not superuser; drop it after."""
    role = f"migsupport_test_createdb_{uuid.uuid4().hex[:8]}"
    admin_execute(scratch_server, f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{ROLE_PASSWORD}'")
    admin_execute(
        scratch_server, f'GRANT CONNECT ON DATABASE "{scratch_server.database}" TO {role}'
    )
    try:
        yield scratch_server.set(username=role, password=ROLE_PASSWORD)
    finally:
        admin_execute(
            scratch_server, f'REVOKE ALL ON DATABASE "{scratch_server.database}" FROM {role}'
        )
        admin_execute(scratch_server, f"DROP OWNED BY {role}")
        admin_execute(scratch_server, f"DROP ROLE {role}")


def test_the_cleanup_leaves_kept_databases_and_those_it_may_not_drop(scratch_server, createdb_role):
    role = createdb_role.username
    names = {what: f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:16]}" for what in ("own", "kept", "other")}
    try:
        # Abandoned (nobody claims them): the role's own, the role's kept one, the superuser's.
        for what, name in names.items():
            admin_execute(scratch_server, f'CREATE DATABASE "{name}"')
            if what != "other":
                admin_execute(scratch_server, f'ALTER DATABASE "{name}" OWNER TO {role}')
        admin_execute(
            scratch_server, f"COMMENT ON DATABASE \"{names['kept']}\" IS '{KEPT_COMMENT}'"
        )

        result = manage("alembic_verify", database_url=createdb_role)

        assert (result.returncode, result.stderr) == (0, ""), result.stdout
        left = scratch_databases(scratch_server)
        assert names["own"] not in left
        assert {names["kept"], names["other"]} <= left
    finally:
        for name in names.values():
            admin_execute(scratch_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
