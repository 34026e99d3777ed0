"""The deploy log, on real databases: a row for each change, in the change's own transaction.

Each test runs the commands as a deploy runs them (``manage.py`` in a
subprocess) and reads ``migsupport_deploy_log`` back with plain SQL.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.support.catalog import DEPLOY_LOG, catalog, deploy_log_rows
from tests.support.commands import manage, shown, spawn, wait_for
from tests.support.migrate import run
from tests.support.project import PROJECT
from tests.support.states import (
    BASELINE,
    DRIFT_INDEX,
    FAILING_BODY,
    FIXED_BODY,
    HEAD,
    SECOND,
    THIRD,
    ProjectCopy,
    edit_script,
    execute,
    insert_job_with_duplicate_materials,
    project_copy,
    reach,
    scalar,
    versions,
    write_third_revision,
)

UPGRADE = "alembic_upgrade"
SLEEP = "SELECT pg_sleep(60) FROM (SELECT 1 FROM detected_materials LIMIT 1) AS one_row"
SLEEPING = f"SELECT count(*) FROM pg_stat_activity WHERE query = '{SLEEP}'"
APPLIED_FROM_BASE = [
    (UPGRADE, "upgrade", None, BASELINE, "applied"),
    (UPGRADE, "upgrade", BASELINE, SECOND, "applied"),
    (UPGRADE, "upgrade", SECOND, HEAD, "applied"),
]
ENTRY = re.compile(
    r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  (?P<action>\w+) +(?P<before>\w+) -> (?P<after>\w+)"
    r"(?: \[(?P<checksum>[0-9a-f]{12})\])?  (?P<outcome>\w+) in \d+\.\d\ds by \S+@\S+ "
    r"\((?P<command>\w+)(?:, app (?P<app>\S+))?\)(?:: (?P<detail>.*))?"
)


def script_checksum(revision: str, versions_dir=PROJECT / "alembic" / "versions") -> str:
    (path,) = versions_dir.glob(f"{revision}_*.py")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ok(result) -> str:
    assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def db(database_url: URL, engine: Engine) -> tuple[URL, Engine]:
    return database_url, engine


def test_each_applied_revision_has_its_row_with_checksum_user_host_and_version(db):
    url, engine = db
    ok(manage(UPGRADE, database_url=url, APP_VERSION="2026.12.1"))

    assert deploy_log_rows(engine) == APPLIED_FROM_BASE
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT revision_after, checksum, db_user, host, app_version, detail, "
                f"duration_seconds, started_at <= finished_at FROM {DEPLOY_LOG} ORDER BY id"
            )
        ).all()
    for revision, digest, user, host, app, detail, seconds, ordered in rows:
        assert digest == script_checksum(revision)
        assert user and host and ordered
        assert (app, detail) == ("2026.12.1", "")
        assert seconds >= 0
    if engine.dialect.name == "postgresql":
        assert {row[2] for row in rows} == {scalar(engine, "SELECT current_user")}

    listed = ok(manage("alembic_log", database_url=url)).splitlines()
    assert listed[0] == f"Deploy log of default: {shown(url)}"
    entries = [ENTRY.fullmatch(line) for line in listed[1:]]
    assert all(entries), listed
    assert [(m["action"], m["before"], m["after"], m["outcome"]) for m in entries] == [
        ("upgrade", SECOND, HEAD, "applied"),
        ("upgrade", BASELINE, SECOND, "applied"),
        ("upgrade", "base", BASELINE, "applied"),
    ]
    assert entries[0]["checksum"] == script_checksum(HEAD)[:12]
    assert {m["app"] for m in entries} == {"2026.12.1"}


def test_alembic_log_json_and_limit(db):
    url, _ = db
    ok(manage(UPGRADE, database_url=url))

    data = json.loads(ok(manage("alembic_log", "--json", "--limit", "2", database_url=url)))
    assert sorted(data) == ["before_log", "database", "direct", "entries", "total", "url"]
    assert (data["database"], data["url"], data["total"], data["before_log"]) == (
        "default",
        shown(url),
        3,
        [],
    )
    assert [(e["action"], e["revision_before"], e["revision_after"]) for e in data["entries"]] == [
        ("upgrade", SECOND, HEAD),
        ("upgrade", BASELINE, SECOND),
    ]
    entry = data["entries"][0]
    assert sorted(entry) == sorted(
        [
            "id",
            "command",
            "action",
            "revision_before",
            "revision_after",
            "checksum",
            "started_at",
            "finished_at",
            "duration_seconds",
            "db_user",
            "host",
            "app_version",
            "outcome",
            "detail",
        ]
    )
    assert (entry["command"], entry["checksum"], entry["outcome"]) == (
        UPGRADE,
        script_checksum(HEAD),
        "applied",
    )
    assert entry["started_at"].endswith("+00:00")
    plain = ok(manage("alembic_log", "--limit", "1", database_url=url)).splitlines()
    assert plain[-1] == "  ... 2 older row(s); raise --limit to see them."

    bad = manage("alembic_log", "--limit", "0", database_url=url)
    assert bad.returncode != 0 and "0 is not 1 or more" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_baseline_then_the_revisions_after_it(db):
    url, engine = db
    reach(engine, "unversioned_at_baseline")
    ok(manage(UPGRADE, database_url=url))

    assert deploy_log_rows(engine) == [
        (UPGRADE, "baseline", None, BASELINE, "baselined"),
        (UPGRADE, "upgrade", BASELINE, SECOND, "applied"),
        (UPGRADE, "upgrade", SECOND, HEAD, "applied"),
    ]
    assert json.loads(ok(manage("alembic_log", "--json", database_url=url)))["before_log"] == []


def test_revisions_applied_before_the_log_existed_are_shown_as_such(db):
    url, engine = db
    reach(engine, "behind")  # upgraded to the baseline by Alembic itself, unlogged
    ok(manage(UPGRADE, database_url=url))

    assert deploy_log_rows(engine) == APPLIED_FROM_BASE[1:]
    listed = ok(manage("alembic_log", database_url=url))
    assert listed.endswith(f"  Applied before the log existed: {BASELINE}.\n")
    untouched = ok(manage("alembic_log", database_url=url))
    assert untouched == listed  # reading writes nothing


def test_a_database_without_the_log_reads_as_empty(db):
    url, engine = db
    reach(engine, "up_to_date")
    listed = ok(manage("alembic_log", database_url=url))
    assert listed.splitlines()[1:] == [
        "  No deploy has been logged yet.",
        f"  Applied before the log existed: {BASELINE}, {SECOND}, {HEAD}.",
    ]
    assert deploy_log_rows(engine) is None


def test_a_stamp_is_logged_proven_or_forced(db):
    url, engine = db
    reach(engine, "unversioned_at_baseline")
    ok(manage("alembic_stamp", BASELINE, database_url=url))
    forced_result = manage("alembic_stamp", HEAD, "--force", "--noinput", database_url=url)
    assert forced_result.returncode == 0, forced_result.stderr

    assert deploy_log_rows(engine) == [
        ("alembic_stamp", "stamp", None, BASELINE, "stamped"),
        ("alembic_stamp", "stamp", BASELINE, HEAD, "forced"),
    ]
    with engine.connect() as connection:
        details = connection.execute(sa.text(f"SELECT detail FROM {DEPLOY_LOG} ORDER BY id"))
        proven, forced = (d for (d,) in details)
    assert proven == "the live schema equals that revision"
    # As many as the --force warning listed (the SQLite and PostgreSQL schemas differ in one).
    listed = forced_result.stderr.count("\n  - ")
    assert forced == f"forced over {listed} difference(s)"


def test_a_repair_is_logged_in_its_proven_transaction(db):
    url, engine = db
    reach(engine, "drifted")
    before = deploy_log_rows(engine)
    ok(manage("alembic_repair", "--noinput", database_url=url))

    rows = deploy_log_rows(engine)
    assert rows[: len(before or [])] == (before or [])
    assert rows[-1] == ("alembic_repair", "repair", HEAD, HEAD, "repaired")
    with engine.connect() as connection:
        detail = connection.execute(
            sa.text(f"SELECT detail FROM {DEPLOY_LOG} ORDER BY id DESC LIMIT 1")
        ).scalar()
    assert detail == f"to {HEAD}: create index {DRIFT_INDEX}"


def test_a_refusal_writes_nothing(db):
    url, engine = db
    reach(engine, "drifted")
    before = catalog(engine)
    refused = [
        manage(UPGRADE, database_url=url),
        manage("alembic_stamp", BASELINE, database_url=url),
        manage(UPGRADE, "--json", database_url=url),
    ]
    assert [r.returncode for r in refused] == [1, 1, 1]
    assert deploy_log_rows(engine) is None
    assert catalog(engine) == before


def test_json_on_a_refusal_is_one_object_with_state_error_and_differences(db):
    url, engine = db
    reach(engine, "drifted")
    result = manage(UPGRADE, "--json", database_url=url)

    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert sorted(data) == ["differences", "error", "state"]
    assert data["state"] == "drifted"
    assert result.stderr.endswith(f"CommandError: {data['error']}\n")
    assert [d["text"] for d in data["differences"]] == [f"index {DRIFT_INDEX} is missing"]


def test_json_on_a_failure_before_classification_has_no_state():
    unreachable = URL.create(
        "postgresql", username="u", password="s3cret-pw", host="127.0.0.1", port=1, database="db"
    )
    result = manage(UPGRADE, "--json", database_url=unreachable)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "state": None,
        "error": f"{shown(unreachable)}: connection failed: connection to server at "
        '"127.0.0.1", port 1 failed: Connection refused',
        "differences": [],
    }
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_the_log_survives_a_downgrade_and_an_upgrade(db):
    url, engine = db
    ok(manage(UPGRADE, database_url=url))
    run(engine, "downgrade", "base")  # Alembic's own downgrade: no model or revision owns the log
    assert versions(engine) == []
    assert deploy_log_rows(engine) == APPLIED_FROM_BASE
    ok(manage(UPGRADE, database_url=url))

    assert deploy_log_rows(engine) == APPLIED_FROM_BASE * 2
    state = json.loads(ok(manage("alembic_status", "--json", database_url=url)))
    assert (state["state"], state["unowned"], state["edited"]) == ("up_to_date", [], [])


# -- edited after deploy ------------------------------------------------------------------------


@pytest.fixture
def copied(tmp_path) -> ProjectCopy:
    return project_copy(tmp_path / "project")


def test_an_edited_revision_is_reported_refused_and_can_be_accepted(db, copied):
    url, engine = db
    ok(manage(UPGRADE, database_url=url, **copied.env))
    recorded = script_checksum(SECOND, copied.versions)
    edit_script(copied, SECOND)
    current = script_checksum(SECOND, copied.versions)
    edited = (
        f"revision {SECOND} was edited after it was applied: its script's checksum is "
        f"{current[:12]}, the deploy log recorded {recorded[:12]}"
    )

    status = manage("alembic_status", database_url=url, **copied.env)
    assert status.returncode == 0, status.stderr
    assert f"Edited after they were applied:\n  - {edited}\n" in status.stdout
    assert status.stdout.endswith(
        "Restore the edited scripts, or accept each edit with `manage.py alembic_upgrade "
        "--accept-edited REVISION`; until then the upgrade refuses.\n"
    )
    check = manage("alembic_status", "--check", database_url=url, **copied.env)
    assert check.returncode == 1
    data = json.loads(ok(manage("alembic_status", "--json", database_url=url, **copied.env)))
    assert data["state"] == "up_to_date"
    assert data["edited"] == [{"revision": SECOND, "recorded": recorded, "current": current}]

    before = deploy_log_rows(engine)
    refused = manage(UPGRADE, database_url=url, **copied.env)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"CommandError: refused: {edited}. A revision must not change after it was deployed: "
        f"restore its script, or accept the edit with --accept-edited {SECOND}; nothing was "
        "changed\n"
    )
    as_json = manage(UPGRADE, "--json", database_url=url, **copied.env)
    assert json.loads(as_json.stdout)["state"] == "up_to_date"
    wrong = manage(UPGRADE, "--accept-edited", HEAD, database_url=url, **copied.env)
    assert wrong.returncode == 1
    assert wrong.stderr == (
        f"CommandError: refused: --accept-edited {HEAD}: that revision's script matches the "
        "deploy log (or it was never applied under it), so there is no edit to accept; nothing "
        "was changed\n"
    )
    assert deploy_log_rows(engine) == before

    accepted = ok(manage(UPGRADE, "--accept-edited", SECOND, database_url=url, **copied.env))
    assert accepted.splitlines()[0] == (
        f"  Accepted the edit of {SECOND}: the deploy log now expects checksum {current[:12]} "
        f"(was {recorded[:12]})."
    )
    assert deploy_log_rows(engine) == [
        *before,
        (UPGRADE, "accept", SECOND, SECOND, "accepted"),
    ]
    assert ok(manage("alembic_status", "--check", database_url=url, **copied.env))
    ok(manage(UPGRADE, database_url=url, **copied.env))


def test_a_failed_revision_leaves_no_row(db, copied):
    url, engine = db
    reach(engine, "up_to_date")
    # The unique index fails on duplicate rows; the column before it is rolled back with it.
    insert_job_with_duplicate_materials(engine)
    write_third_revision(copied, FAILING_BODY)
    failed = manage(UPGRADE, database_url=url, **copied.env)
    assert failed.returncode == 1, failed.stdout
    assert versions(engine) == [HEAD]
    assert deploy_log_rows(engine) is None  # the table was created in that rolled-back transaction


@pytest.mark.postgresql
def test_a_killed_upgrade_leaves_no_row_for_the_revision_it_did_not_commit(pg_url, copied):
    engine = create_engine(pg_url)
    try:
        ok(manage(UPGRADE, database_url=pg_url))
        insert_job_with_duplicate_materials(engine)
        # Sleeps only where there are rows: the history's replay on a scratch database does not.
        write_third_revision(copied, f'op.execute("{SLEEP}")\n')
        process = spawn(UPGRADE, database_url=pg_url, **copied.env)
        wait_for(
            lambda: scalar(
                engine,
                SLEEPING,
            ),
            60,
            "the third revision to start",
        )
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        # The server notices a vanished client only when it next talks to it.
        execute(
            engine,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = '{SLEEP}'",
        )
        wait_for(
            lambda: (
                not scalar(
                    engine,
                    SLEEPING,
                )
            ),
            30,
            "the killed session to end",
        )
        assert versions(engine) == [HEAD]
        assert deploy_log_rows(engine) == APPLIED_FROM_BASE
    finally:
        engine.dispose()


def test_third_revision_applied_is_logged_after_the_others(db, copied):
    url, engine = db
    ok(manage(UPGRADE, database_url=url))
    write_third_revision(copied, FIXED_BODY)
    ok(manage(UPGRADE, database_url=url, **copied.env))
    assert deploy_log_rows(engine) == [
        *APPLIED_FROM_BASE,
        (UPGRADE, "upgrade", HEAD, THIRD, "applied"),
    ]
