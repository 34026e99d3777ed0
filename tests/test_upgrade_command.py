"""``manage.py alembic_upgrade``, run as a deploy runs it, on real databases.

Every state is reached for real (``tests.support.states``), the command runs in a
subprocess, and the assertions read the exit status, the exact lines it
printed, and the catalog and ``alembic_version`` afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from migsupport.locking import advisory_key
from tests.support.catalog import catalog
from tests.support.commands import manage, shown, spawn, wait_for
from tests.support.project import load_production_schema
from tests.support.rows import SEED_SQL, data_checksums, seed_sql
from tests.support.server import admin_execute, create_pg_database, drop_pg_database
from tests.support.sessions import PG_LOCK_NAME
from tests.support.states import (
    APPLY_BASELINE,
    APPLY_HEAD,
    APPLY_SECOND,
    BASELINE,
    DOMAIN_TABLES,
    DRIFT_INDEX,
    DRIFTS,
    FAILING_BODY,
    FIXED_BODY,
    HEAD,
    SECOND,
    SETTINGS_MODULE,
    STATES,
    THIRD,
    THIRD_DOC,
    UNKNOWN,
    Batch,
    HeadCatalogs,
    execute,
    insert_job_with_duplicate_materials,
    project_copy,
    reach,
    refusal,
    scalar,
    state_jobs,
    versions,
    write_third_revision,
)

# The tests here share module-scoped databases and batches of commands: they run on one
# test worker, so that those are built once.
pytestmark = pytest.mark.xdist_group("upgrade")


@pytest.fixture(scope="module")
def upgrades(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    """``alembic_upgrade`` in every state on both dialects, and on each drifted variant."""
    jobs = state_jobs(("alembic_upgrade",), ("alembic_upgrade",), versioned=True)
    batch = Batch(tmp_path_factory.mktemp("upgrades"), jobs)
    yield batch
    batch.close()


@pytest.fixture(scope="module")
def head_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadCatalogs]:
    catalogs = HeadCatalogs(tmp_path_factory.mktemp("head"))
    yield catalogs
    catalogs.close()


# -- every state -------------------------------------------------------------------


def expected_outcome(state: str, url: URL) -> tuple[int, str, str, str]:
    """Return (exit status, stdout, stderr, catalog afterwards: "head" or "unchanged")."""
    where = shown(url)
    upgraded = f"Upgraded {where} to {HEAD}; the schema equals that revision."
    outcomes = {
        "empty": (0, [APPLY_BASELINE, APPLY_SECOND, APPLY_HEAD, upgraded], "", "head"),
        "unversioned_at_baseline": (
            0,
            [
                f"  Baselined at {BASELINE}: the live schema equals that revision.",
                APPLY_SECOND,
                APPLY_HEAD,
                upgraded,
            ],
            "",
            "head",
        ),
        "unversioned_at_head": (
            0,
            [
                f"  Baselined at {HEAD}: the live schema equals that revision.",
                f"{where} is at {HEAD}.",
            ],
            "",
            "unchanged",
        ),
        "behind": (0, [APPLY_SECOND, APPLY_HEAD, upgraded], "", "head"),
        "up_to_date": (0, [f"No revisions to apply: {where} is at {HEAD}."], "", "unchanged"),
        "drifted": (
            1,
            [],
            refusal(
                f"refused: the schema differs from the recorded revision {HEAD}; "
                "nothing was changed",
                f"index {DRIFT_INDEX} is missing",
            ),
            "unchanged",
        ),
        "unknown_revision": (
            1,
            [],
            refusal(
                f"refused: alembic_version records {UNKNOWN}, which no revision script defines "
                "(a newer release migrated this database, or a revision was deleted); "
                "nothing was changed",
            ),
            "unchanged",
        ),
        "unversioned_unmatched": (
            1,
            [],
            refusal(
                "refused: no version is recorded, and the schema equals no revision "
                f"(nearest: {HEAD}); nothing was changed",
                f"index {DRIFT_INDEX} is missing",
            ),
            "unchanged",
        ),
    }
    status, lines, stderr, after = outcomes[state]
    return status, "".join(f"{line}\n" for line in lines), stderr, after


@pytest.mark.parametrize("state", STATES)
def test_upgrade_in_each_state_applies_or_refuses_as_the_state_demands(
    state, dialect_name, upgrades, head_catalog
):
    done = upgrades(dialect_name, state)
    status, stdout, stderr, after = expected_outcome(state, done.url)

    result = done.result
    assert (result.returncode, result.stdout, result.stderr) == (status, stdout, stderr)
    if status == 0:
        assert versions(done.engine) == [HEAD]
        assert catalog(done.engine) == head_catalog(done.engine)
        if after == "unchanged":
            assert done.before == head_catalog(done.engine)
    else:
        done.assert_refused(stderr)


# -- the production schema, with data -------------------------------------------------


def domain_catalog(full: dict[str, Any]) -> dict[str, Any]:
    """Return the parts of a PostgreSQL catalog that describe the Alembic-owned objects."""
    return {
        part: rows if part == "enums" else [row for row in rows if row[0] in DOMAIN_TABLES]
        for part, rows in full.items()
    }


def assert_production_upgrade(url: URL, engine: Engine, head_catalog: HeadCatalogs) -> None:
    before = data_checksums(engine)
    assert before == {
        "material_detection_jobs": (300, before["material_detection_jobs"][1]),
        "detected_materials": (450, before["detected_materials"][1]),
    }

    result = manage("alembic_upgrade", database_url=url)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "  Baselined at b662310f1380: the live schema equals that revision.",
        APPLY_SECOND,
        APPLY_HEAD,
        f"Upgraded {shown(url)} to {HEAD}; the schema equals that revision.",
    ]
    assert versions(engine) == [HEAD]
    assert domain_catalog(catalog(engine)) == head_catalog(engine)
    assert data_checksums(engine) == before


@pytest.mark.postgresql
def test_production_schema_with_data_is_baselined_upgraded_and_keeps_every_row(
    pg_url, pg_engine, head_catalog
):
    load_production_schema(pg_engine)
    execute(pg_engine, *SEED_SQL)

    assert_production_upgrade(pg_url, pg_engine, head_catalog)


@pytest.mark.postgresql
def test_production_schema_with_django_tables_is_upgraded_and_leaves_them_alone(
    pg_url, pg_engine, head_catalog
):
    load_production_schema(pg_engine)
    execute(pg_engine, *SEED_SQL)
    migrated = manage("migrate", "--noinput", database_url=pg_url)
    assert migrated.returncode == 0, migrated.stderr
    django_before = {
        part: [row for row in rows if row[0] not in DOMAIN_TABLES]
        for part, rows in catalog(pg_engine).items()
        if part != "enums"
    }
    assert any(row[0] == "django_migrations" for row in django_before["columns"])
    with pg_engine.connect() as connection:
        applied = connection.exec_driver_sql("SELECT count(*) FROM django_migrations").scalar()

    assert_production_upgrade(pg_url, pg_engine, head_catalog)

    django_after = {
        part: [row for row in rows if row[0] not in DOMAIN_TABLES]
        for part, rows in catalog(pg_engine).items()
        if part != "enums"
    }
    assert django_after == django_before
    with pg_engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM django_migrations").scalar() == (
            applied
        )


# -- drift ----------------------------------------------------------------------------


@pytest.mark.postgresql
@pytest.mark.parametrize("drift", DRIFTS)
def test_upgrade_refuses_a_drifted_production_database_and_names_the_difference(
    drift, pg_server, upgrades
):
    done = upgrades("postgresql", drift)

    done.assert_refused(
        refusal(
            f"refused: the schema differs from the recorded revision {BASELINE}; "
            "nothing was changed",
            DRIFTS[drift][1],
        )
    )
    assert versions(done.engine) == [BASELINE]


def test_no_baseline_refuses_an_unversioned_matching_database_and_suggests_stamp(
    database_url, engine
):
    reach(engine, "unversioned_at_baseline")
    before = catalog(engine)

    result = manage("alembic_upgrade", "--no-baseline", database_url=database_url)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "CommandError: refused: no version is recorded, but the schema equals revision "
        f"{BASELINE}; record it with `manage.py alembic_stamp {BASELINE}`, or run without "
        "--no-baseline\n"
    )
    assert catalog(engine) == before
    assert versions(engine) is None


# -- revisions named on the command line -----------------------------------------------


@pytest.mark.parametrize("revision", ["0123456789ab", "ff"])
def test_an_unknown_revision_or_prefix_is_refused_in_one_line_naming_the_heads(
    revision, sqlite_url
):
    engine = create_engine(sqlite_url)
    reach(engine, "behind")
    before = catalog(engine)

    result = manage("alembic_upgrade", revision, database_url=sqlite_url)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"CommandError: unknown revision {revision!r}; the known heads are: {HEAD}\n"
    )
    assert catalog(engine) == before
    assert versions(engine) == [BASELINE]
    engine.dispose()


def test_a_unique_prefix_names_its_revision(sqlite_url):
    engine = create_engine(sqlite_url)

    result = manage("alembic_upgrade", "b66", database_url=sqlite_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"{APPLY_BASELINE}\nUpgraded {shown(sqlite_url)} to {BASELINE}; "
        "the schema equals that revision.\n"
    )
    assert versions(engine) == [BASELINE]
    engine.dispose()


# -- --plan, --sql, --json -------------------------------------------------------------


@pytest.mark.parametrize("state", ["empty", "unversioned_at_baseline"])
def test_plan_prints_the_baseline_and_revisions_and_changes_nothing(state, database_url, engine):
    reach(engine, state)
    before = catalog(engine)

    result = manage("alembic_upgrade", "--plan", database_url=database_url)

    assert result.returncode == 0, result.stderr
    header = f"Plan for default: {shown(database_url)}"
    if state == "empty":
        expected = [header, "  State:    empty", "  Current:  (none)", "  Apply:"]
        expected += [f"    {BASELINE}", f"    {SECOND}", f"    {HEAD}"]
    else:
        expected = [header, "  State:    unversioned", "  Current:  (none)"]
        expected += [f"  Baseline: {BASELINE} (the live schema equals that revision)"]
        expected += ["  Apply:", f"    {SECOND}", f"    {HEAD}"]
    # Under each revision, its steps (on PostgreSQL, test_plan_names_each_steps_lock).
    assert [line for line in result.stdout.splitlines() if not line.startswith(" " * 6)] == (
        expected
    )
    assert catalog(engine) == before
    assert versions(engine) is None


@pytest.mark.postgresql
def test_plan_names_each_steps_lock_and_warns_on_a_large_table(pg_url, pg_engine, tmp_path):
    copy = project_copy(tmp_path / "project")
    with (copy.folder / f"{SETTINGS_MODULE}.py").open("a") as settings:
        settings.write("MIGSUPPORT_LARGE_TABLE_ROWS = 1000\n")
    write_third_revision(copy, FIXED_BODY)
    reach(pg_engine, "up_to_date")
    execute(pg_engine, *seed_sql(jobs=50, materials=3000), "ANALYZE")
    before = catalog(pg_engine)

    result = manage("alembic_upgrade", "--plan", database_url=pg_url, **copy.env)

    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    size = scalar(pg_engine, "SELECT pg_total_relation_size('detected_materials')")
    megabytes = f"{size / (1024 * 1024):,.1f}"
    assert result.stdout.splitlines()[3:] == [
        "  Apply:",
        f"    {THIRD}",
        "      ALTER TABLE detected_materials ADD COLUMN IF NOT EXISTS verified BOOLEAN: "
        f"ACCESS EXCLUSIVE on detected_materials (about 3,000 rows, {megabytes} MB); "
        "blocks reads and writes",
        "      CREATE INDEX ix_detected_materials_job_material ON detected_materials...: "
        f"SHARE on detected_materials (about 3,000 rows, {megabytes} MB); blocks writes",
        f"  Warning: {THIRD} takes ACCESS EXCLUSIVE on detected_materials (about 3,000 rows, "
        f"{megabytes} MB): it blocks reads and writes while `ALTER TABLE detected_materials ADD "
        "COLUMN IF NOT EXISTS verified BOOLEAN` runs.",
        f"  Warning: {THIRD} takes SHARE on detected_materials (about 3,000 rows, {megabytes} MB):"
        " it blocks writes while `CREATE INDEX ix_detected_materials_job_material ON "
        "detected_materials...` runs.",
    ]
    summary = json.loads(
        manage("alembic_upgrade", "--plan", "--json", database_url=pg_url, **copy.env).stdout
    )
    assert [(s["lock"], s["blocks"], s["rows"], s["warning"]) for s in summary["steps"]] == [
        ("ACCESS EXCLUSIVE", "reads and writes", 3000, True),
        ("SHARE", "writes", 3000, True),
    ]
    assert catalog(pg_engine) == before


# The indexes revision 3d5f8a9b2c41 adds, as --sql prints them on PostgreSQL.
HEAD_INDEXES_SQL = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_detected_materials_created_at "
    "ON detected_materials (created_at);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_detected_materials_category "
    "ON detected_materials (category);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_detected_materials_confidence "
    "ON detected_materials (confidence);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_detected_materials_material_name_pattern "
    "ON detected_materials (material_name varchar_pattern_ops);",
)


def transactions_and_builds(sql: str) -> list[str]:
    """Return the script's transactions and concurrent builds in order; none is inside another.

    A transaction that holds nothing but comments (what an autocommit block
    leaves between two builds) is left out.
    """
    seen: list[str] = []
    inside: list[str] | None = None
    for chunk in sql.split(";\n"):
        lines = [line for line in chunk.splitlines() if not line.startswith("--")]
        statement = "\n".join(lines).strip()
        if statement == "BEGIN":
            assert inside is None, "a transaction inside a transaction"
            inside = []
        elif statement == "COMMIT":
            assert inside is not None, "COMMIT outside a transaction"
            if inside:
                seen.append("transaction")
            inside = None
        elif "CONCURRENTLY" in statement:
            assert inside is None, f"a concurrent build inside a transaction: {statement}"
            seen.append("build")
        elif statement and inside is not None:
            inside.append(statement)
    assert inside is None, "the script ends inside a transaction"
    return seen


@pytest.mark.postgresql
def test_sql_from_empty_prints_every_revisions_ddl_and_changes_nothing(pg_url, pg_engine):
    result = manage("alembic_upgrade", "--sql", database_url=pg_url)

    assert result.returncode == 0, result.stderr
    sql = result.stdout
    for statement in (
        "CREATE TABLE alembic_version (",
        "CREATE TABLE IF NOT EXISTS material_detection_jobs (",
        "CREATE TABLE IF NOT EXISTS detected_materials (",
        f"CREATE INDEX IF NOT EXISTS {DRIFT_INDEX} ON detected_materials (material_name);",
        f"INSERT INTO alembic_version (version_num) VALUES ('{BASELINE}')",
        "ALTER TYPE jobstatus ADD VALUE IF NOT EXISTS 'CANCELLED' AFTER 'FAILED';",
        "ALTER TABLE material_detection_jobs ADD COLUMN IF NOT EXISTS model_version VARCHAR(64);",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_detected_materials_job_id_confidence "
        "ON detected_materials (job_id, confidence);",
        f"UPDATE alembic_version SET version_num='{SECOND}' "
        f"WHERE alembic_version.version_num = '{BASELINE}';",
        *HEAD_INDEXES_SQL,
        f"UPDATE alembic_version SET version_num='{HEAD}' "
        f"WHERE alembic_version.version_num = '{SECOND}';",
    ):
        assert statement in sql
    # One transaction per revision, and each concurrent build between two of them.
    assert transactions_and_builds(sql) == [
        "transaction", "transaction", "build", "transaction",
        "build", "build", "build", "build", "transaction",
    ]  # fmt: skip
    with pg_engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []


@pytest.mark.postgresql
def test_sql_over_the_production_schema_records_the_baseline_then_upgrades(pg_url, pg_engine):
    load_production_schema(pg_engine)
    before = catalog(pg_engine)

    result = manage("alembic_upgrade", "--sql", database_url=pg_url)

    assert result.returncode == 0, result.stderr
    sql = result.stdout
    assert sql.startswith(f"-- Baseline: the live schema equals {BASELINE}; record it.\n")
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{BASELINE}')" in sql
    assert "CREATE TABLE IF NOT EXISTS material_detection_jobs" not in sql
    assert f"-- Running upgrade {BASELINE} -> {SECOND}" in sql
    assert "ADD COLUMN IF NOT EXISTS model_version VARCHAR(64);" in sql
    assert f"-- Running upgrade {SECOND} -> {HEAD}" in sql
    for statement in HEAD_INDEXES_SQL:
        assert statement in sql
    # The baseline, then each revision, with its concurrent builds outside them.
    assert transactions_and_builds(sql) == [
        "transaction", "transaction", "build", "transaction",
        "build", "build", "build", "build", "transaction",
    ]  # fmt: skip
    assert catalog(pg_engine) == before
    assert versions(pg_engine) is None


def test_json_prints_the_summary_of_what_was_done(sqlite_url):
    database_url, engine = sqlite_url, create_engine(sqlite_url)
    reach(engine, "unversioned_at_baseline")

    result = manage("alembic_upgrade", "--json", database_url=database_url)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {
        "database", "url", "direct", "state", "current", "target", "baseline", "revisions",
        "applied", "after", "backup", "dry_run", "steps", "differences", "unowned", "edited",
        "accepted",
    }  # fmt: skip
    assert summary["database"] == "default"
    assert (summary["url"], summary["direct"]) == (shown(database_url), False)
    assert (summary["state"], summary["current"], summary["target"]) == ("unversioned", None, HEAD)
    assert (summary["baseline"], summary["revisions"]) == (BASELINE, [SECOND, HEAD])
    assert [item["revision"] for item in summary["applied"]] == [SECOND, HEAD]
    assert all(item["seconds"] >= 0 for item in summary["applied"])
    assert (summary["after"], summary["backup"], summary["dry_run"]) == (HEAD, None, False)
    assert summary["differences"] == []
    assert versions(engine) == [HEAD]
    engine.dispose()


# -- --backup-dir -----------------------------------------------------------------------


def backup_line(stdout: str) -> Path:
    (line,) = [line for line in stdout.splitlines() if line.startswith("  Backup written to ")]
    return Path(line.removeprefix("  Backup written to "))


@pytest.mark.postgresql
def test_backup_dir_on_postgresql_writes_a_pg_dump_custom_archive_first(
    pg_url, pg_engine, tmp_path
):
    reach(pg_engine, "behind")
    folder = tmp_path / "backups"

    result = manage("alembic_upgrade", "--backup-dir", str(folder), database_url=pg_url)

    assert result.returncode == 0, result.stderr
    path = backup_line(result.stdout)
    assert result.stdout.splitlines()[0] == f"  Backup written to {path}"  # before any change
    assert path.parent == folder
    assert re.fullmatch(rf"{pg_url.database}-\d{{8}}T\d{{6}}Z-{BASELINE}\.dump", path.name)
    assert path.read_bytes()[:5] == b"PGDMP"
    listing = subprocess.run(
        ["pg_restore", "--list", str(path)], capture_output=True, text=True, check=False
    )
    assert listing.returncode == 0, listing.stderr
    for table in ("alembic_version", "detected_materials", "material_detection_jobs"):
        assert f"TABLE public {table} " in listing.stdout
    assert versions(pg_engine) == [HEAD]


def test_backup_dir_on_sqlite_writes_a_copy_that_opens(sqlite_url, tmp_path):
    engine = create_engine(sqlite_url)
    reach(engine, "behind")
    execute(
        engine,
        "INSERT INTO material_detection_jobs (id, image_url, status) "
        "VALUES ('00000000000000000000000000000001', 'https://img/1.jpg', 'COMPLETED')",
    )
    folder = tmp_path / "backups"

    result = manage("alembic_upgrade", "--backup-dir", str(folder), database_url=sqlite_url)

    assert result.returncode == 0, result.stderr
    path = backup_line(result.stdout)
    assert path.parent == folder and path.name.endswith(f"-{BASELINE}.sqlite3")
    copy = sqlite3.connect(path)
    try:
        assert copy.execute("SELECT version_num FROM alembic_version").fetchall() == [(BASELINE,)]
        assert copy.execute("SELECT image_url FROM material_detection_jobs").fetchall() == [
            ("https://img/1.jpg",)
        ]
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        copy.close()
    assert versions(engine) == [HEAD]
    engine.dispose()


def server_major(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SHOW server_version_num").scalar()) // 10000


@pytest.mark.postgresql
@pytest.mark.parametrize("pg_dump", ["missing", "too_old"])
def test_backup_dir_without_a_usable_pg_dump_fails_in_one_line_before_any_change(
    pg_dump, pg_url, pg_engine, tmp_path
):
    load_production_schema(pg_engine)  # unversioned: the first change would be the baseline
    before = catalog(pg_engine)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    major = server_major(pg_engine)
    if pg_dump == "missing":
        message = (
            "pg_dump is not on PATH; install the PostgreSQL client tools "
            f"(version {major} or newer), or leave out --backup-dir"
        )
    else:
        fake = bin_dir / "pg_dump"
        fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
        fake.chmod(0o755)
        message = (
            f"{fake} is version 9, older than the server ({major}); "
            f"install pg_dump {major} or newer"
        )

    result = manage(
        "alembic_upgrade",
        "--backup-dir",
        str(tmp_path / "backups"),
        database_url=pg_url,
        PATH=str(bin_dir),
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"CommandError: {message}\n"
    assert catalog(pg_engine) == before
    assert versions(pg_engine) is None
    assert not list((tmp_path / "backups").glob("*"))


# -- the deploy lock ----------------------------------------------------------------------


@pytest.mark.postgresql
def test_lock_timeout_on_postgresql_exits_cleanly_naming_the_lock_and_its_holder(pg_url, pg_engine):
    load_production_schema(pg_engine)
    before = catalog(pg_engine)
    key = advisory_key(PG_LOCK_NAME)
    label = f"PostgreSQL advisory lock {key} ({PG_LOCK_NAME})"
    with pg_engine.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        holder.commit()
        pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        holder.commit()

        started = time.monotonic()
        result = manage("alembic_upgrade", "--lock-timeout", "2", database_url=pg_url)
        elapsed = time.monotonic() - started

    assert result.returncode == 1
    # The wait itself is in the message (2.x s); the wall time adds a start-up of any length.
    assert elapsed >= 2.0
    stdout = result.stdout.splitlines()
    assert len(stdout) == 1
    assert stdout[0].startswith(
        f"Waiting for the deploy lock: {label} is held by pid {pid}, user postgres, "
    )
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(
        r"CommandError: timed out after 2\.\ds waiting for the deploy lock "
        rf"\({re.escape(label)}\); "
        rf"held by pid {pid}, user postgres, .*; nothing was changed\. Retry when the other "
        r"deploy has finished, or raise --lock-timeout",
        line,
    )
    assert catalog(pg_engine) == before
    assert versions(pg_engine) is None


def test_lock_timeout_on_sqlite_exits_cleanly_naming_the_file_lock(sqlite_url):
    engine = create_engine(sqlite_url)
    reach(engine, "behind")
    before = catalog(engine)
    path = f"{sqlite_url.database}.migsupport-lock"
    label = f"file lock {path}"

    with filelock.FileLock(path):
        started = time.monotonic()
        result = manage("alembic_upgrade", "--lock-timeout", "2", database_url=sqlite_url)
        elapsed = time.monotonic() - started

    assert result.returncode == 1
    # The wait itself is in the message (2.x s); the wall time adds a start-up of any length.
    assert elapsed >= 2.0
    assert result.stdout == f"Waiting for the deploy lock: {label} is held by another process\n"
    assert re.fullmatch(
        r"CommandError: timed out after 2\.\ds waiting for the deploy lock "
        rf"\({re.escape(label)}\); "
        r"held by another process; nothing was changed\. Retry when the other deploy has "
        r"finished, or raise --lock-timeout\n",
        result.stderr,
    )
    assert catalog(engine) == before
    assert versions(engine) == [BASELINE]
    engine.dispose()


# -- concurrent deploys ---------------------------------------------------------------------


def run_at_once(count: int, url: URL) -> list[subprocess.CompletedProcess]:
    processes = [spawn("alembic_upgrade", database_url=url) for _ in range(count)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        status = process.returncode
        results.append(subprocess.CompletedProcess(process.args, status, stdout, stderr))
    return results


def assert_one_deploy_did_the_work(
    results: list[subprocess.CompletedProcess], url: URL, first: str
) -> None:
    """Every process succeeded; one applied the revisions, the others found nothing to do."""
    assert [(r.returncode, r.stderr) for r in results] == [(0, "")] * len(results)
    workers = [r for r in results if first in r.stdout]
    assert len(workers) == 1, [r.stdout for r in results]
    for result in results:
        if result is workers[0]:
            continue
        lines = result.stdout.splitlines()
        # Those that came while the lock was held said so, then classified again.
        waited = lines[:-1]
        assert waited == [] or (
            len(waited) == 1 and waited[0].startswith("Waiting for the deploy lock: ")
        ), lines
        assert lines[-1] == f"No revisions to apply: {shown(url)} is at {HEAD}."


@pytest.mark.postgresql
@pytest.mark.parametrize("state", ["empty", "unversioned_at_baseline"])
def test_concurrent_upgrades_on_postgresql_apply_once_and_all_succeed(
    state, pg_url, pg_engine, head_catalog
):
    reach(pg_engine, state)

    results = run_at_once(6, pg_url)

    first = APPLY_BASELINE if state == "empty" else "  Baselined at "
    assert_one_deploy_did_the_work(results, pg_url, first)
    assert versions(pg_engine) == [HEAD]
    assert catalog(pg_engine) == head_catalog(pg_engine)


def test_concurrent_upgrades_on_sqlite_apply_once_and_all_succeed(sqlite_url, head_catalog):
    engine = create_engine(sqlite_url)

    results = run_at_once(3, sqlite_url)

    assert_one_deploy_did_the_work(results, sqlite_url, APPLY_BASELINE)
    assert versions(engine) == [HEAD]
    assert catalog(engine) == head_catalog(engine)
    engine.dispose()


# -- a revision that fails, a process that dies ------------------------------------------------


def columns_of(engine: Engine, table: str) -> list[str]:
    with engine.connect() as connection:
        return [c["name"] for c in sa.inspect(connection).get_columns(table)]


def test_a_revision_failing_halfway_rolls_back_whole_and_a_fixed_rerun_succeeds(
    database_url, engine, tmp_path, head_catalog
):
    copy = project_copy(tmp_path / "project")
    write_third_revision(copy, FAILING_BODY)
    reach(engine, "behind")
    insert_job_with_duplicate_materials(engine)

    failed = manage("alembic_upgrade", database_url=database_url, **copy.env)

    assert failed.returncode == 1
    assert failed.stdout.splitlines() == [
        APPLY_SECOND,
        APPLY_HEAD,
        f"  Applying {THIRD} ({THIRD_DOC})... FAILED",
    ]
    (line,) = failed.stderr.splitlines()
    duplicate = (
        'could not create unique index "ux_detected_materials_job_material"'
        if engine.dialect.name == "postgresql"
        else "UNIQUE constraint failed: detected_materials.job_id, detected_materials.material_name"
    )
    assert line == (
        f"CommandError: revision {THIRD} failed and was rolled back; the database stays at "
        f"{HEAD}: {duplicate}"
    )
    # The revision's first step (the column) went with it; the ones before stayed.
    assert versions(engine) == [HEAD]
    assert catalog(engine) == head_catalog(engine)
    assert "verified" not in columns_of(engine, "detected_materials")
    assert "model_version" in columns_of(engine, "material_detection_jobs")

    write_third_revision(copy, FIXED_BODY)
    rerun = manage("alembic_upgrade", database_url=database_url, **copy.env)

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines() == [
        f"  Applying {THIRD} ({THIRD_DOC})... OK",
        f"Upgraded {shown(database_url)} to {THIRD}; the schema equals that revision.",
    ]
    assert versions(engine) == [THIRD]
    assert "verified" in columns_of(engine, "detected_materials")


# Creates an index only where there are rows: the scratch replay (empty) and
# this database disagree on the schema the revision produces.
DATA_DEPENDENT_BODY = (
    'if op.get_bind().exec_driver_sql("SELECT count(*) FROM detected_materials").scalar():\n'
    '    op.create_index("ix_detected_materials_bounding_box", "detected_materials",\n'
    '                    ["bounding_box"])\n'
)


def test_a_result_that_differs_from_the_target_schema_is_reported_as_an_error(sqlite_url, tmp_path):
    copy = project_copy(tmp_path / "project")
    write_third_revision(copy, DATA_DEPENDENT_BODY)
    engine = create_engine(sqlite_url)
    reach(engine, "up_to_date")
    insert_job_with_duplicate_materials(engine)

    result = manage("alembic_upgrade", database_url=sqlite_url, **copy.env)

    assert result.returncode == 1
    assert result.stdout == f"  Applying {THIRD} ({THIRD_DOC})... OK\n"
    assert result.stderr == refusal(
        f"the upgrade to {THIRD} finished, but the database records {THIRD} and its schema "
        "differs from that revision",
        "index ix_detected_materials_bounding_box is unexpected",
    )
    engine.dispose()


def test_an_ambiguous_prefix_is_refused_naming_the_candidates(sqlite_url, tmp_path):
    copy = project_copy(tmp_path / "project")
    other = "7c99aa000000"  # shares "7c" with SECOND
    write_third_revision(copy, "", revision=other)

    result = manage("alembic_upgrade", "7c", database_url=sqlite_url, **copy.env)

    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("CommandError: ")
    assert "'7c'" in line and SECOND in line and other in line
    assert line.endswith(f"; the known heads are: {other}")
    assert not Path(sqlite_url.database).exists()


SLEEP_SECONDS = 3
SLEEPING_BODY = (
    # Sleeps only where there are rows, so the replay on an empty scratch
    # database is quick; here it holds the revision's transaction open.
    f'op.execute("SELECT pg_sleep({SLEEP_SECONDS}) FROM '
    '(SELECT 1 FROM detected_materials LIMIT 1) AS one_row")\n'
)


@pytest.mark.postgresql
def test_a_process_killed_mid_revision_leaves_the_last_whole_revision_and_no_lock(
    pg_url, pg_engine, tmp_path, head_catalog
):
    copy = project_copy(tmp_path / "project")
    write_third_revision(copy, SLEEPING_BODY)
    reach(pg_engine, "behind")
    insert_job_with_duplicate_materials(pg_engine)
    database = pg_url.database

    process = spawn("alembic_upgrade", database_url=pg_url, **copy.env)
    try:
        backend = wait_for(
            lambda: scalar(
                pg_engine,
                "SELECT pid FROM pg_stat_activity WHERE datname = :db "
                "AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                db=database,
            ),
            60,
            "the revision's pg_sleep",
        )
        # One connection carries both the deploy lock and the revision's work.
        sessions = scalar(
            pg_engine,
            "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = :db "
            "AND application_name = 'migsupport alembic_upgrade'",
            db=database,
        )
        holder = scalar(
            pg_engine,
            # This database's lock: the same key is every database's deploy lock.
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = :high AND objid = :low "
            "AND database = (SELECT oid FROM pg_database WHERE datname = :db)",
            high=(advisory_key(PG_LOCK_NAME) & 0xFFFFFFFFFFFFFFFF) >> 32,
            low=advisory_key(PG_LOCK_NAME) & 0xFFFFFFFF,
            db=database,
        )
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert (sessions, holder) == ([backend], backend)

    # The server ends the orphaned session once the statement returns; the
    # session's advisory lock and its open transaction end with it.
    wait_for(
        lambda: (
            not scalar(
                pg_engine, "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=backend
            )
        ),
        SLEEP_SECONDS + 15,
        "the killed deploy's session to end",
    )
    assert (
        scalar(
            pg_engine,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = :db)",
            db=database,
        )
        == 0
    )
    assert versions(pg_engine) == [HEAD]
    assert "verified" not in columns_of(pg_engine, "detected_materials")
    assert catalog(pg_engine) == head_catalog(pg_engine)

    write_third_revision(copy, "")
    rerun = manage("alembic_upgrade", database_url=pg_url, **copy.env)

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines() == [
        f"  Applying {THIRD} ({THIRD_DOC})... OK",
        f"Upgraded {shown(pg_url)} to {THIRD}; the schema equals that revision.",
    ]
    assert versions(pg_engine) == [THIRD]


# -- secrets ------------------------------------------------------------------------------------

PASSWORD = "Pw-Secret-9"


@pytest.fixture
def password_url(pg_server: URL) -> Iterator[URL]:
    """Return the URL of a new database owned by a role with a password; drop both after."""
    role = f"migsupport_test_pw_{uuid.uuid4().hex[:8]}"
    admin_execute(pg_server, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    url = create_pg_database(pg_server)
    try:
        admin_execute(pg_server, f'ALTER DATABASE "{url.database}" OWNER TO {role}')
        yield url.set(username=role, password=PASSWORD)
    finally:
        drop_pg_database(pg_server, url)
        admin_execute(pg_server, f"DROP ROLE IF EXISTS {role}")


@pytest.mark.postgresql
def test_the_password_never_appears_in_any_output(password_url, pg_server, tmp_path):
    engine = create_engine(pg_server.set(database=password_url.database))
    missing = password_url.set(database="migsupport_no_such_database")
    outputs: list[tuple[tuple[str, ...], subprocess.CompletedProcess]] = []

    def at_once(*calls: tuple[int, URL, tuple[str, ...]]) -> None:
        """Run independent calls concurrently; check each one's exit status."""
        started = [(status, args, spawn(*args, database_url=url)) for status, url, args in calls]
        for status, args, process in started:
            stdout, stderr = process.communicate(timeout=120)
            outputs.append(
                (args, subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
            )
            assert process.returncode == status, (args, stderr)

    url = password_url
    at_once(
        (0, url, ("alembic_upgrade", "--plan")),
        (0, url, ("alembic_upgrade", "--sql")),
        (1, url, ("alembic_upgrade", "deadbeef")),
        (1, url, ("alembic_stamp", BASELINE)),
        (1, missing, ("alembic_upgrade", "-v", "3")),
    )
    at_once((0, url, ("alembic_upgrade", "-v", "3", "--backup-dir", str(tmp_path / "backups"))))
    at_once(
        (0, url, ("alembic_upgrade", "--json")),
        (0, url, ("alembic_stamp", "--plan", "-v", "3")),
    )
    at_once((0, url, ("alembic_stamp", BASELINE, "--force", "--noinput")))
    at_once((1, url, ("alembic_upgrade", "-v", "3")))  # drifted now
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(PG_LOCK_NAME)})
        holder.commit()
        at_once((1, url, ("alembic_upgrade", "--lock-timeout", "0.5")))
    engine.dispose()

    assert list((tmp_path / "backups").glob("*.dump"))
    masked = shown(password_url)
    assert ":***@" in masked
    for args, result in outputs:
        assert PASSWORD not in result.stdout + result.stderr, args
    # The URL is shown, masked, where a person needs to know which database it was.
    shown_in = [args for args, result in outputs if masked in result.stdout + result.stderr]
    assert len(shown_in) >= 4, shown_in
    assert any(shown(missing) in result.stderr for _, result in outputs)
