"""``alembic_repair`` on real databases with rows in both tables: safe fixes, refusals, proof.

Each case drifts a database at head one way, recorded (``drifted``) or not
(``unversioned``, matching no revision), the way a person at a psql prompt
would. A safe fix must leave the database ``up_to_date`` (or, unversioned,
equal to the target, which ``alembic_upgrade`` then baselines) with every
row kept; a fix that needs a person must be refused, the whole plan shown,
and the database left byte-identical (``pg_dump`` with data).

Most commands run in this process on an alias of their own; the kill and
the two repairs at once run as processes, as a deploy does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from migsupport import api
from migsupport.engine import create_engine
from migsupport.repair import BUILD, CHANGE, Fix, Step
from tests.support.commands import manage, shown, spawn, wait_for
from tests.support.inprocess import Templates, database_alias, pg_dump, run_command
from tests.support.live import Holder, kill_in_concurrent_build
from tests.support.migrate import run
from tests.support.rows import DEPLOYED_COLUMNS, seed_sql
from tests.support.server import create_pg_database, drop_pg_database
from tests.support.states import BASELINE, HEAD, execute, scalar, versions

pytestmark = [pytest.mark.postgresql, pytest.mark.xdist_group("repair")]

NAME_INDEX = "ix_detected_materials_material_name"
FKEY = "detected_materials_job_id_fkey"
FK = f"foreign key {FKEY} on detected_materials"

# The jobstatus type rebuilt without CANCELLED, as a hand-made copy of the baseline would be.
JOBSTATUS_WITHOUT_CANCELLED = (
    "DROP INDEX ix_material_detection_jobs_status",
    "ALTER TABLE material_detection_jobs ALTER COLUMN status TYPE text",
    "DROP TYPE jobstatus",
    "CREATE TYPE jobstatus AS ENUM ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')",
    "ALTER TABLE material_detection_jobs ALTER COLUMN status TYPE jobstatus "
    "USING status::jobstatus",
    "CREATE INDEX ix_material_detection_jobs_status ON material_detection_jobs (status)",
)

# Drifts a safe fix repairs: the SQL, and the fix's action as the command prints it.
SAFE = {
    "index missing": (
        (f"DROP INDEX {NAME_INDEX}",),
        f"create index {NAME_INDEX} concurrently",
    ),
    "index unexpected": (
        ("CREATE INDEX ix_by_hand ON detected_materials (category, confidence)",),
        "drop index ix_by_hand",
    ),
    "index changed": (
        (
            "DROP INDEX ix_detected_materials_category",
            "CREATE INDEX ix_detected_materials_category ON detected_materials (category DESC)",
        ),
        "re-create index ix_detected_materials_category (build concurrently, then swap)",
    ),
    "index invalid": (
        (
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'ix_detected_materials_category'::regclass",
        ),
        "re-create index ix_detected_materials_category (build concurrently, then swap)",
    ),
    "enum label missing": (JOBSTATUS_WITHOUT_CANCELLED, "add label CANCELLED to enum jobstatus"),
    "table missing": (("DROP TABLE detected_materials",), "create table detected_materials"),
    "column missing": (
        ("ALTER TABLE material_detection_jobs DROP COLUMN model_version",),
        "add column material_detection_jobs.model_version",
    ),
    "default dropped": (
        ("ALTER TABLE detected_materials ALTER COLUMN created_at DROP DEFAULT",),
        "set the default of detected_materials.created_at",
    ),
    "default unexpected": (
        ("ALTER TABLE material_detection_jobs ALTER COLUMN completed_at SET DEFAULT now()",),
        "drop the default of material_detection_jobs.completed_at",
    ),
    "not null to relax": (
        (
            "UPDATE detected_materials SET category = 'none' WHERE category IS NULL",
            "ALTER TABLE detected_materials ALTER COLUMN category SET NOT NULL",
        ),
        "drop NOT NULL on detected_materials.category",
    ),
    "not null to restore": (
        ("ALTER TABLE detected_materials ALTER COLUMN confidence DROP NOT NULL",),
        "set NOT NULL on detected_materials.confidence through a validated check",
    ),
    "varchar to widen": (
        ("ALTER TABLE material_detection_jobs ALTER COLUMN model_version TYPE varchar(20)",),
        "widen material_detection_jobs.model_version to VARCHAR(64)",
    ),
    "foreign key missing": (
        (f"ALTER TABLE detected_materials DROP CONSTRAINT {FKEY}",),
        f"add {FK} NOT VALID, then validate it",
    ),
    "foreign key action": (
        (
            f"ALTER TABLE detected_materials DROP CONSTRAINT {FKEY}",
            f"ALTER TABLE detected_materials ADD CONSTRAINT {FKEY} FOREIGN KEY (job_id) "
            "REFERENCES material_detection_jobs (id) ON DELETE RESTRICT",
        ),
        f"re-create {FK} NOT VALID, then validate it",
    ),
    "foreign key not valid": (
        (
            f"ALTER TABLE detected_materials DROP CONSTRAINT {FKEY}",
            f"ALTER TABLE detected_materials ADD CONSTRAINT {FKEY} FOREIGN KEY (job_id) "
            "REFERENCES material_detection_jobs (id) ON DELETE CASCADE NOT VALID",
        ),
        f"validate {FK}",
    ),
    "primary key missing": (
        ("ALTER TABLE detected_materials DROP CONSTRAINT detected_materials_pkey",),
        "add primary key detected_materials_pkey on detected_materials through a "
        "concurrently built index",
    ),
    "check unexpected": (
        ("ALTER TABLE detected_materials ADD CONSTRAINT ck_confidence CHECK (confidence >= 0)",),
        "drop check constraint ck_confidence on detected_materials",
    ),
    "unique unexpected": (
        ("ALTER TABLE material_detection_jobs ADD CONSTRAINT uq_image UNIQUE (image_url)",),
        "drop unique constraint uq_image on material_detection_jobs",
    ),
}

# Drifts that need a person: the SQL, and the reason the plan gives.
PERSON = {
    "varchar to narrow": (
        ("ALTER TABLE detected_materials ALTER COLUMN material_name TYPE varchar(200)",),
        "it narrows the type",
    ),
    "a type that rewrites": (
        ("ALTER TABLE detected_materials ALTER COLUMN confidence TYPE numeric",),
        "changing the type rewrites the table",
    ),
    "an enum label to remove": (
        ("ALTER TYPE jobstatus ADD VALUE 'ARCHIVED'",),
        "labels would have to be removed or reordered",
    ),
    "NULLs where NOT NULL is expected": (
        (
            "ALTER TABLE detected_materials ALTER COLUMN confidence DROP NOT NULL",
            "UPDATE detected_materials SET confidence = NULL WHERE id = "
            "(SELECT min(id::text)::uuid FROM detected_materials)",
        ),
        "1 rows hold NULL in detected_materials.confidence",
    ),
    "a column that holds rows": (
        ("ALTER TABLE material_detection_jobs ADD COLUMN priority integer DEFAULT 1",),
        "table material_detection_jobs holds rows; dropping the column would lose its values",
    ),
    "a foreign key the rows violate": (
        (
            f"ALTER TABLE detected_materials DROP CONSTRAINT {FKEY}",
            "INSERT INTO detected_materials (id, job_id, material_name, confidence) VALUES "
            "('00000000-0000-0000-0000-0000000000aa', "
            "'00000000-0000-0000-0000-0000000000bb', 'orphan', 0.5)",
        ),
        "1 rows violate it",
    ),
    "an unlogged table": (
        ("ALTER TABLE detected_materials SET UNLOGGED",),
        "changing a table's persistence rewrites it",
    ),
}

REFUSED = (
    "refused: the repair to {target} is not safe as a whole: 1 difference need a person; "
    "nothing was changed"
)


DROP_DEFAULT = "ALTER TABLE detected_materials ALTER COLUMN created_at DROP DEFAULT"


def created_at_default(engine: sa.Engine) -> str | None:
    return scalar(
        engine,
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_name = 'detected_materials' AND column_name = 'created_at'",
    )


def checksums(engine: sa.Engine) -> dict[str, tuple[int, str]]:
    """Return (rows, md5 of the deployed columns in id order) of each domain table there is."""
    found = {}
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        for table, columns in DEPLOYED_COLUMNS.items():
            if table in tables:
                found[table] = tuple(
                    connection.exec_driver_sql(
                        f"SELECT count(*), md5(coalesce(string_agg(ROW({columns})::text, E'\\n' "
                        f"ORDER BY id), '')) FROM {table}"
                    ).one()
                )
    return found


@pytest.fixture(scope="module")
def templates(pg_server: URL):
    made = Templates(pg_server)
    url = made.made["head"] = create_pg_database(pg_server)
    engine = create_engine(url)
    try:
        run(engine, "upgrade", HEAD)
        execute(engine, *seed_sql(jobs=60, materials=400), "ANALYZE")
    finally:
        engine.dispose()
    yield made
    drop_pg_database(pg_server, url)


@pytest.fixture
def drifted(templates):
    """Return a function making a copy of the head database drifted by ``sql``."""
    made: list[URL] = []

    def make(*sql: str, versioned: bool = True) -> tuple[URL, sa.Engine]:
        url = templates.copy("head")
        made.append(url)
        engine = create_engine(url)
        execute(engine, *sql, *(() if versioned else ("DROP TABLE alembic_version",)))
        return url, engine

    yield make
    for url in made:
        drop_pg_database(templates.server, url)


@pytest.mark.parametrize("versioned", [True, False], ids=["drifted", "unversioned"])
@pytest.mark.parametrize("name", list(SAFE))
def test_a_safe_fix_converges_and_keeps_every_row(drifted, name, versioned):
    sql, action = SAFE[name]
    url, engine = drifted(*sql, versioned=versioned)
    before = checksums(engine)
    with database_alias(url) as alias:
        planned = run_command("alembic_repair", "--plan", alias=alias)
        assert planned.error is None, planned
        assert f"      {action}\n" in planned.stdout

        repaired = run_command("alembic_repair", "--noinput", alias=alias)
        assert repaired.error is None, repaired
        lines = repaired.stdout.splitlines()
        assert any(line.startswith("  Fixed: ") and line.endswith(f"({action})") for line in lines)
        if versioned:
            assert lines[-1] == (
                f"Repaired {shown(url)}: the schema equals {HEAD}; it reads up_to_date."
            )
        else:
            assert lines[-2:] == [
                f"Repaired {shown(url)}: the schema equals {HEAD}; it reads unversioned.",
                f"Run `manage.py alembic_upgrade` to baseline it at {HEAD} and upgrade.",
            ]
            upgrade = run_command("alembic_upgrade", alias=alias)
            assert upgrade.error is None, upgrade
            assert f"  Baselined at {HEAD}: the live schema equals that revision." in (
                upgrade.stdout.splitlines()
            )
        # Every row kept (a table the repair creates is new, and empty).
        after = checksums(engine)
        assert {table: after[table] for table in before} == before
        assert all(after[table][0] == 0 for table in after.keys() - before.keys())
        status = run_command("alembic_status", "--json", alias=alias)
        assert '"state": "up_to_date"' in status.stdout, status.stdout
    assert not scalar(engine, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")
    engine.dispose()


@pytest.mark.parametrize("versioned", [True, False], ids=["drifted", "unversioned"])
@pytest.mark.parametrize("name", list(PERSON))
def test_a_fix_that_needs_a_person_is_refused_and_changes_nothing(drifted, name, versioned):
    sql, reason = PERSON[name]
    url, engine = drifted(*sql, versioned=versioned)
    before = pg_dump(url)
    with database_alias(url) as alias:
        for args in (("--plan",), ("--sql",), ("--noinput",)):
            outcome = run_command("alembic_repair", *args, alias=alias)
            assert outcome.code == 1, (args, outcome)
            if args == ("--noinput",):
                assert outcome.error == REFUSED.format(target=HEAD), outcome
                assert f"      NEEDS A PERSON: {reason}\n" in outcome.stderr
            elif args == ("--plan",):
                assert f"      NEEDS A PERSON: {reason}\n" in outcome.stdout
    assert pg_dump(url) == before
    engine.dispose()


def test_nothing_to_repair_says_so_and_check_tells(drifted):
    url, engine = drifted()
    with database_alias(url) as alias:
        outcome = run_command("alembic_repair", "--noinput", alias=alias)
        assert (outcome.error, outcome.stdout) == (
            None,
            "Nothing to repair: the database is up_to_date: there is nothing to repair.\n",
        )
        assert run_command("alembic_repair", "--check", alias=alias).error is None
    engine.dispose()


def test_check_exits_1_when_there_is_something_to_repair(drifted):
    url, engine = drifted(f"DROP INDEX {NAME_INDEX}")
    before = pg_dump(url)
    result = manage("alembic_repair", "--check", database_url=url)
    assert result.returncode == 1
    assert f"  Target:   {HEAD} (the revision the database records)\n" in result.stdout
    assert pg_dump(url) == before
    engine.dispose()


def test_plan_and_sql_change_nothing(drifted):
    url, engine = drifted(
        f"DROP INDEX {NAME_INDEX}",
        f"ALTER TABLE detected_materials DROP CONSTRAINT {FKEY}",
        "ALTER TABLE detected_materials ALTER COLUMN confidence DROP NOT NULL",
    )
    before = pg_dump(url)
    with database_alias(url) as alias:
        sql = run_command("alembic_repair", "--sql", alias=alias)
        plan = run_command("alembic_repair", "--plan", "--json", alias=alias)
    assert sql.error is None and plan.error is None
    statements = sql.stdout.splitlines()
    assert statements[0] == f"-- Repair to {HEAD}: the revision the database records."
    assert statements[1:3] == [
        "-- Concurrent builds, outside any transaction.",
        f"CREATE INDEX CONCURRENTLY {NAME_INDEX} ON detected_materials USING btree "
        "(material_name);",
    ]
    assert "BEGIN;" in statements and "COMMIT;" in statements
    assert (
        f"ALTER TABLE detected_materials VALIDATE CONSTRAINT {FKEY};" in statements
        and statements.index("COMMIT;")
        < statements.index(f"ALTER TABLE detected_materials VALIDATE CONSTRAINT {FKEY};")
    )
    assert '"repairable": true' in plan.stdout
    assert pg_dump(url) == before
    engine.dispose()


def test_an_unexpected_rule_needs_leave_to_change_behaviour(drifted):
    url, engine = drifted("CREATE RULE keep AS ON DELETE TO detected_materials DO INSTEAD NOTHING")
    before = pg_dump(url)
    with database_alias(url) as alias:
        refused = run_command("alembic_repair", "--noinput", alias=alias)
        assert refused.error == (
            f"refused: the repair to {HEAD} is not safe as a whole: 1 fix change what the "
            "database does (--allow-behaviour-changes); nothing was changed"
        )
        assert (
            "      drop rule keep on detected_materials: NEEDS --allow-behaviour-changes: "
            "removing the rule changes what the database does\n"
        ) in refused.stderr
        assert pg_dump(url) == before
        allowed = run_command(
            "alembic_repair", "--noinput", "--allow-behaviour-changes", alias=alias
        )
    assert allowed.error is None, allowed
    assert not scalar(engine, "SELECT count(*) FROM pg_rewrite WHERE rulename = 'keep'")
    engine.dispose()


def test_a_failing_proof_rolls_back_and_drops_what_was_built(drifted, monkeypatch):
    url, engine = drifted(f"DROP INDEX {NAME_INDEX}")
    before = pg_dump(url)
    real = api.plan_repair

    def astray(*args, **kwargs):
        # A plan whose steps do not lead to the target: the proof must catch it.
        plan = real(*args, **kwargs)
        stray = Fix(
            plan.fixes[0].difference,
            "a step astray",
            (
                Step("CREATE INDEX CONCURRENTLY ix_astray_built ON detected_materials (category)",
                     BUILD, "DROP INDEX CONCURRENTLY IF EXISTS ix_astray_built"),
                Step("CREATE INDEX ix_astray ON detected_materials (confidence)", CHANGE),
            ),
        )  # fmt: skip
        return type(plan)(plan.report, plan.target, plan.why, (*plan.fixes, stray))

    monkeypatch.setattr(api, "plan_repair", astray)
    with database_alias(url) as alias:
        outcome = run_command("alembic_repair", "--noinput", alias=alias)
    assert outcome.error == (
        f"refused: the repair to {HEAD} would not converge; its transaction was rolled back, "
        "and what was built concurrently was dropped again; nothing else was changed"
    )
    assert outcome.stderr.splitlines() == [
        "Differences from the expected schema:",
        "  - index ix_astray is unexpected",
        "  - index ix_astray_built is unexpected",
    ]
    assert pg_dump(url) == before
    engine.dispose()


def test_two_repairs_at_once_one_does_the_work(drifted):
    url, engine = drifted(
        f"DROP INDEX {NAME_INDEX}",
        DROP_DEFAULT,
    )
    processes = [spawn("alembic_repair", "--noinput", database_url=url) for _ in range(2)]
    results = [(*process.communicate(timeout=120), process.returncode) for process in processes]
    assert [code for _, _, code in results] == [0, 0], results
    workers = [out for out, _, _ in results if "  Fixed: " in out]
    nothing = "Nothing to repair: the database is up_to_date: there is nothing to repair.\n"
    idle = [out for out, _, _ in results if out.endswith(nothing)]
    assert (len(workers), len(idle)) == (1, 1), results
    assert manage("alembic_status", "--check", database_url=url).returncode == 0
    engine.dispose()


@pytest.mark.parametrize("kill", ["client", "client and server session"])
def test_a_repair_killed_in_its_concurrent_build_is_finished_by_the_next(drifted, kill):
    url, engine = drifted(
        f"DROP INDEX {NAME_INDEX}",
        DROP_DEFAULT,
    )
    before = checksums(engine)
    snapshot = Holder(url, "SELECT 1", begin="BEGIN ISOLATION LEVEL REPEATABLE READ")
    process = spawn("alembic_repair", "--noinput", "--ddl-lock-timeout", "60", database_url=url)
    kill_in_concurrent_build(
        process,
        engine,
        kill,
        snapshot,
        "the repair's concurrent build to wait for the old snapshot",
    )
    wait_for(
        lambda: (
            not scalar(
                engine,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'migsupport alembic_repair' AND datname = current_database()",
            )
        ),
        60,
        "the killed repair's session to end",
    )
    # Nothing of the transaction was committed: the default is still missing.
    assert created_at_default(engine) is None

    rerun = manage("alembic_repair", "--noinput", database_url=url)

    assert (rerun.returncode, rerun.stderr) == (0, ""), rerun.stdout + rerun.stderr
    assert rerun.stdout.splitlines()[-1] == (
        f"Repaired {shown(url)}: the schema equals {HEAD}; it reads up_to_date."
    )
    assert checksums(engine) == before
    assert versions(engine) == [HEAD]
    assert not scalar(engine, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")
    engine.dispose()


def test_a_repair_behind_a_long_report_waits_no_longer_than_its_lock_timeout(drifted):
    url, engine = drifted(DROP_DEFAULT)
    with Holder(url, "SELECT count(*) FROM detected_materials"):
        result = manage(
            "alembic_repair", "--noinput", "--ddl-lock-timeout", "0.5", "--ddl-retry-budget", "2",
            database_url=url,
        )  # fmt: skip
    assert result.returncode == 1
    assert re.fullmatch(
        r"CommandError: the repair could not take its locks within the retry budget \(2s, \d+ "
        r"attempts\): the lock on table detected_materials was not granted within 0\.5s, held by "
        r"pid \d+, user postgres, application 'report', state idle in transaction, its "
        rf"transaction open for \d+\.\ds; the database stays at {HEAD}; retry when that session "
        r"has finished, or raise --ddl-retry-budget\n",
        result.stderr,
    ), result.stderr
    assert created_at_default(engine) is None
    engine.dispose()


def test_an_unversioned_database_is_repaired_to_the_revision_asked_for(drifted):
    url, engine = drifted(
        "ALTER TABLE material_detection_jobs DROP COLUMN model_version",
        f"DROP INDEX {NAME_INDEX}",
        versioned=False,
    )
    with database_alias(url) as alias:
        nearest = run_command("alembic_repair", "--plan", alias=alias)
        asked = run_command("alembic_repair", BASELINE, "--plan", alias=alias)
    assert f"  Target:   {HEAD} (the nearest revision: 2 differences away, the fewest of all " \
        "revisions (no version is recorded))\n" in nearest.stdout  # fmt: skip
    assert f"  Target:   {BASELINE} (the revision asked for)\n" in asked.stdout
    engine.dispose()


# -- SQLite: the fixes it can do without rebuilding a table ------------------------------

SQLITE_SAFE = {
    "index missing": (f"DROP INDEX {NAME_INDEX}", f"create index {NAME_INDEX}"),
    "index unexpected": (
        "CREATE INDEX ix_by_hand ON detected_materials (category)",
        "drop index ix_by_hand",
    ),
    "column missing": (
        "ALTER TABLE material_detection_jobs DROP COLUMN model_version",
        "add column material_detection_jobs.model_version",
    ),
}


@pytest.mark.parametrize("name", list(SQLITE_SAFE))
def test_sqlite_does_the_fixes_it_can_without_a_rebuild(sqlite_url, name):
    sql, action = SQLITE_SAFE[name]
    engine = create_engine(sqlite_url)
    try:
        run(engine, "upgrade", HEAD)
        execute(engine, sql)
        result = manage("alembic_repair", "--noinput", database_url=sqlite_url)
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
        assert f"({action})" in result.stdout
        status = manage("alembic_status", "--check", database_url=sqlite_url)
        assert status.returncode == 0, status.stdout
    finally:
        engine.dispose()


def test_sqlite_refuses_what_needs_a_table_rebuild(sqlite_url, tmp_path):
    from tests.support.states import rebuild_sqlite_table

    engine = create_engine(sqlite_url)
    try:
        run(engine, "upgrade", HEAD)
        rebuild_sqlite_table(
            engine, "detected_materials", "category VARCHAR(50),", "category VARCHAR(80),"
        )
        before = Path(sqlite_url.database).read_bytes()
        result = manage("alembic_repair", "--noinput", database_url=sqlite_url)
    finally:
        engine.dispose()
    assert result.returncode == 1
    assert result.stderr.endswith(REFUSED.format(target=HEAD) + "\n")
    assert (
        "      NEEDS A PERSON: SQLite cannot change a column without rebuilding its table\n"
        in result.stderr
    )
    assert Path(sqlite_url.database).read_bytes() == before
