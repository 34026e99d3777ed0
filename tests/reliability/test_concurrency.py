"""Sixteen deploys at once, on one database, repeated: the outcome holds every time.

Each round starts 16 ``alembic_upgrade`` processes together on one
PostgreSQL database, in a mix of modes: plain, ``--json``, and a short
``--lock-timeout`` that may give up cleanly. Readers run beside them
(``alembic_status`` and ``alembic_upgrade --plan``, which take no lock), and
in the stamp scenario an ``alembic_stamp`` joins the race. Afterwards: every
process exited 0, or timed out cleanly where a timeout was asked for;
exactly one process did the work; ``alembic_version`` holds one row, the
head; the catalog is the head's; every row is kept; no session or lock is
left behind.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import URL, Engine

from tests.support.catalog import catalog
from tests.support.commands import shown, spawn, wait_for
from tests.support.deploys import TIMED_OUT, WAITING, Deploy, work_done
from tests.support.rounds import concurrency_rounds
from tests.support.rows import data_checksums, production_database
from tests.support.sessions import advisory_locks, command_sessions
from tests.support.states import (
    APPLY_BASELINE,
    APPLY_HEAD,
    APPLY_SECOND,
    BASELINE,
    HEAD,
    HEAD_CHANGES_DDL,
    execute,
    versions,
)

DEPLOYS = 16
SHORT_TIMEOUT = "0.5"
SEED = 20261127
# data_checksums of the domain tables holding no rows.
NO_ROWS = {
    "material_detection_jobs": (0, "d41d8cd98f00b204e9800998ecf8427e"),
    "detected_materials": (0, "d41d8cd98f00b204e9800998ecf8427e"),
}


def modes(rng: random.Random) -> list[tuple[str, ...]]:
    """Return the 16 deploys of a round: 10 plain, 3 --json, 3 short timeouts, shuffled."""
    deploys = (
        [("alembic_upgrade",)] * 10
        + [("alembic_upgrade", "--json")] * 3
        + [("alembic_upgrade", "--lock-timeout", SHORT_TIMEOUT)] * 3
    )
    rng.shuffle(deploys)
    return deploys


def race(url: URL, commands: list[tuple[str, ...]]) -> list[Deploy]:
    """Start every command at once on ``url``; return each one's result."""
    started = []
    try:
        for args in commands:
            started.append((args, spawn(*args, database_url=url)))
    except BaseException:
        for _, process in started:
            process.kill()
            process.communicate()
        raise
    done = []
    for args, process in started:
        stdout, stderr = process.communicate(timeout=600)
        done.append(
            Deploy(args, subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
        )
    return done


def assert_round(
    deploys: list[Deploy], url: URL, expected_work: tuple[str, ...], final_line: str
) -> None:
    """Every deploy exited 0 (or timed out cleanly); exactly one did ``expected_work``."""
    workers = []
    for deploy in deploys:
        result = deploy.result
        if deploy.mode == "timeout" and result.returncode == 1:
            assert TIMED_OUT.fullmatch(result.stderr), result.stderr
            assert [WAITING.fullmatch(line) is not None for line in result.stdout.splitlines()] in (
                [],
                [True],
            ), result.stdout
            continue
        assert (result.returncode, result.stderr) == (0, ""), (deploy.args, result)
        work = work_done(deploy)
        if work:
            workers.append((deploy, work))
        elif deploy.mode != "json":
            last = result.stdout.splitlines()[-1]
            assert last == f"No revisions to apply: {shown(url)} is at {HEAD}.", result.stdout
    assert [work for _, work in workers] == [expected_work], [d.result.stdout for d in deploys]
    (worker, _), *_ = workers
    if worker.mode != "json":
        assert worker.result.stdout.splitlines()[-1] == final_line


def assert_left_clean(engine: Engine, revision_catalogs, data_before) -> None:
    """One version row at head, the head's catalog, every row, and no lock left."""
    assert versions(engine) == [HEAD]
    assert catalog(engine) == revision_catalogs[HEAD]
    assert data_checksums(engine) == data_before

    def leftovers() -> tuple[int, int]:
        return advisory_locks(engine), command_sessions(engine)

    # Every process has exited; the server ends their sessions a moment later.
    wait_for(lambda: leftovers() == (0, 0), 10, "the deploys' sessions and locks to end")


def assert_readers_saw_a_real_state(readers: list[Deploy]) -> None:
    """Status and plan, which take no lock, never mistake a deploy in progress for drift."""
    for reader in readers:
        result = reader.result
        assert (result.returncode, result.stderr) == (0, ""), (reader.args, result)
        assert "drifted" not in result.stdout and "unmatched" not in result.stdout, result.stdout


READERS = [("alembic_status",), ("alembic_upgrade", "--plan")]


@dataclass(frozen=True)
class Scenario:
    prepare: Callable[[Engine], None]
    extra: tuple[tuple[str, ...], ...]
    expected_work: tuple[str, ...]
    final_line: Callable[[URL], str]


def _empty(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def _production_at_head(engine: Engine) -> None:
    production_database(engine)
    execute(engine, *HEAD_CHANGES_DDL)


SCENARIOS = {
    # An empty database: one deploy applies every revision.
    "empty": Scenario(
        _empty,
        (),
        tuple(line.split()[1] for line in (APPLY_BASELINE, APPLY_SECOND, APPLY_HEAD)),
        lambda url: f"Upgraded {shown(url)} to {HEAD}; the schema equals that revision.",
    ),
    # The deployed schema, unversioned, with 100,000 materials: one deploy
    # baselines it and applies the two later revisions.
    "production_100k": Scenario(
        production_database,
        (),
        ("baseline", BASELINE, *(line.split()[1] for line in (APPLY_SECOND, APPLY_HEAD))),
        lambda url: f"Upgraded {shown(url)} to {HEAD}; the schema equals that revision.",
    ),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The rounds: all of them (ROUNDS) by default and under CI=true, fewer with
    # --concurrency-rounds N.
    if "round_number" in metafunc.fixturenames:
        metafunc.parametrize("round_number", range(concurrency_rounds(metafunc.config)))


# Sixteen processes a round: the rounds run one at a time, on one test worker,
# so that no two of them share the machine or the server's connections.
pytestmark = pytest.mark.xdist_group("concurrency")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sixteen_upgrades_at_once_apply_once_and_all_succeed(
    scenario, round_number, pg_copy, revision_catalogs
):
    case = SCENARIOS[scenario]
    # Copied from a template built once: 100,000 rows take seconds to load.
    pg_url, pg_engine = pg_copy(f"concurrency {scenario}", case.prepare)
    data_before = data_checksums(pg_engine) if scenario != "empty" else NO_ROWS
    rng = random.Random(f"{SEED}:{scenario}:{round_number}")

    done = race(pg_url, [*modes(rng), *READERS])

    deploys, readers = done[:DEPLOYS], done[DEPLOYS:]
    assert_round(deploys, pg_url, case.expected_work, case.final_line(pg_url))
    assert_readers_saw_a_real_state(readers)
    assert_left_clean(pg_engine, revision_catalogs, data_before)


def test_sixteen_upgrades_racing_a_stamp_agree_on_one_version(
    round_number, pg_copy, revision_catalogs
):
    """The deployed schema with the head's changes typed by hand, 100,000 rows, unversioned.

    ``alembic_stamp head`` and 16 upgrades race: whichever takes the lock
    first records the head (the stamp, or an upgrade baselining there), and
    every other process finds the database at the head.
    """
    pg_url, pg_engine = pg_copy("concurrency production at head", _production_at_head)
    data_before = data_checksums(pg_engine)
    rng = random.Random(f"{SEED}:stamp:{round_number}")
    commands = modes(rng)
    stamp_at = rng.randrange(DEPLOYS + 1)
    commands.insert(stamp_at, ("alembic_stamp", "head"))

    done = race(pg_url, [*commands, *READERS])

    stamp = done[stamp_at]
    deploys = done[:stamp_at] + done[stamp_at + 1 : DEPLOYS + 1]
    readers = done[DEPLOYS + 1 :]
    url = shown(pg_url)
    assert (stamp.result.returncode, stamp.result.stderr) == (0, ""), stamp.result
    stamp_lines = [line for line in stamp.result.stdout.splitlines() if not WAITING.fullmatch(line)]
    stamped = stamp_lines == [
        f"Stamped {url} at {HEAD} (was no version): the live schema equals that revision."
    ]
    if stamped:
        # The stamp won: no upgrade had anything to do.
        for deploy in deploys:
            if deploy.mode == "timeout" and deploy.result.returncode == 1:
                assert TIMED_OUT.fullmatch(deploy.result.stderr), deploy.result.stderr
                continue
            assert (deploy.result.returncode, deploy.result.stderr) == (0, ""), deploy.result
            assert work_done(deploy) == ()
    else:
        # An upgrade won and baselined at the head; the stamp found it done.
        assert stamp_lines == [f"{url} is already stamped at {HEAD}; nothing to do."]
        assert_round(deploys, pg_url, ("baseline", HEAD), f"{url} is at {HEAD}.")
    assert_readers_saw_a_real_state(readers)
    assert_left_clean(pg_engine, revision_catalogs, data_before)
