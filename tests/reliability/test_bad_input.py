"""Bad input to every command: a clear line, a non-zero exit, nothing changed.

Each case runs the commands it concerns (status, stamp, upgrade with its
``--plan`` and ``--sql`` modes, verify, ledger) as a deploy runs them, in
subprocesses started together. Each asserts the exact line on stderr (a
``fullmatch`` where a port or path varies), the exit status, that no
traceback was printed and no password shown, and that the database is as it
was: catalog, ``alembic_version`` (in every schema), and the rows.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.support.catalog import DEPLOY_LOG, catalog, deploy_log_rows
from tests.support.cluster import SUPERUSER_PASSWORD
from tests.support.commands import shown, spawn
from tests.support.migrate import run
from tests.support.project import PROJECT, load_production_schema
from tests.support.rows import data_checksums, seed_sql
from tests.support.server import admin_execute, create_pg_database, drop_pg_database
from tests.support.states import (
    APPLY_HEAD,
    APPLY_SECOND,
    BASELINE,
    HEAD,
    SECOND,
    VERIFY_BEFORE_SCRATCH,
    ProjectCopy,
    differences_block,
    edit_script,
    execute,
    project_copy,
)

# The tests here share module-scoped databases and batches of commands: they run on one
# test worker, so that those are built once.
pytestmark = pytest.mark.xdist_group("bad_input")

SECRET = "Secr3t-pw"
PER_COMMAND_TIMEOUT = 120
NOTHING = "nothing was changed"
# alembic_verify checks the scripts before it connects.


# -- running many commands at once ----------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One manage.py run: its arguments, DATABASE_URL (a URL, or raw text) and environment."""

    args: tuple[str, ...]
    url: URL | str | None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = PER_COMMAND_TIMEOUT


def run_all(jobs: Mapping[Any, Job], workers: int = 6) -> dict[Any, subprocess.CompletedProcess]:
    """Run every job, ``workers`` at a time, and return their results by key."""

    def one(job: Job) -> subprocess.CompletedProcess:
        env = dict(job.env)
        url = job.url
        if isinstance(url, str):  # raw text, passed as it is
            env["DATABASE_URL"] = url
            url = None
        process = spawn(*job.args, database_url=url, **env)
        try:
            stdout, stderr = process.communicate(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            stderr += f"\n(hung: killed after {job.timeout}s)"
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    with ThreadPoolExecutor(workers) as pool:
        futures = {key: pool.submit(one, job) for key, job in jobs.items()}
    return {key: future.result() for key, future in futures.items()}


def assert_one_line(
    result: subprocess.CompletedProcess,
    line: str | re.Pattern[str],
    *,
    stdout: str = "",
    before: str = "",
) -> None:
    """Assert exit 1, ``stdout``, and a stderr of ``before`` then exactly ``line``."""
    where = f"{result.args[2:]}: {result.stderr}"
    assert "Traceback" not in result.stderr, where
    assert result.returncode == 1, where
    assert result.stdout == stdout, where
    assert result.stderr.endswith("\n") and result.stderr.startswith(before), where
    last = result.stderr[len(before) : -1]
    assert "\n" not in last, where
    if isinstance(line, re.Pattern):
        assert line.fullmatch(last), where
    else:
        assert last == line, where
    assert SECRET not in result.stdout + result.stderr, where


# -- databases, roles, and what they hold -----------------------------------------------------


class Resources:
    """Databases and roles made for one test, all dropped at its end (databases first)."""

    def __init__(self, server: URL) -> None:
        self.server = server
        self.urls: list[URL] = []
        self.engines: list[Engine] = []
        self.roles: list[str] = []

    def database(self, template: str | None = None) -> tuple[URL, Engine]:
        if template is None:
            url = create_pg_database(self.server)
        else:
            name = f"migsupport_test_{uuid.uuid4().hex[:12]}"
            admin_execute(self.server, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            url = self.server.set(database=name)
        self.urls.append(url)
        engine = create_engine(url)
        self.engines.append(engine)
        return url, engine

    def role(self, *options: str) -> str:
        name = f"migsupport_test_{uuid.uuid4().hex[:8]}"
        admin_execute(self.server, f"CREATE ROLE {name} LOGIN {' '.join(options)}")
        self.roles.append(name)
        return name

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda url: drop_pg_database(self.server, url), self.urls))
        for role in self.roles:
            admin_execute(self.server, f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def resources(pg_server: URL) -> Iterator[Resources]:
    made = Resources(pg_server)
    try:
        yield made
    finally:
        made.close()


def _seeded(engine: Engine) -> None:
    execute(engine, *seed_sql(jobs=40, materials=160))


@pytest.fixture(scope="module")
def templates(pg_server: URL) -> Iterator[dict[str, str]]:
    """Template databases, built once: the deployed schema unversioned, behind, up to date.

    Each holds rows; a test copies one with ``CREATE DATABASE ... TEMPLATE``.
    """
    built: dict[str, str] = {}
    urls = []
    try:
        for name in ("production", "behind", "up_to_date"):
            url = create_pg_database(pg_server)
            urls.append(url)
            engine = create_engine(url)
            try:
                if name == "production":
                    load_production_schema(engine)
                else:
                    run(engine, "upgrade", BASELINE)
                _seeded(engine)
                if name == "up_to_date":
                    run(engine, "upgrade", HEAD)
            finally:
                engine.dispose()
            built[name] = url.database
        yield built
    finally:
        for url in urls:
            drop_pg_database(pg_server, url)


def _rows(connection: sa.Connection, sql: str, **params: Any) -> list[tuple]:
    return [tuple(row) for row in connection.execute(sa.text(sql), params)]


USER_SCHEMAS = (
    "n.nspname NOT IN ('information_schema', 'pg_catalog') AND n.nspname NOT LIKE 'pg\\_%'"
)


def fingerprint(engine: Engine) -> dict[str, Any]:
    """Return what must not change: the catalog, every relation and version table, the rows."""
    with engine.connect() as connection:
        relations = _rows(
            connection,
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} ORDER BY 1, 2",
        )
        version_tables = {
            schema: sorted(map(str, _rows(connection, f'SELECT * FROM "{schema}".alembic_version')))
            for schema, name, kind in relations
            if name == "alembic_version" and kind == "r"
        }
        public = {name for schema, name, _ in relations if schema == "public"}
    data = None
    if {"detected_materials", "material_detection_jobs"} <= public:
        data = data_checksums(engine)
    return {
        "catalog": catalog(engine),
        "relations": relations,
        "versions": version_tables,
        "data": data,
    }


def catalog_in(engine: Engine, schema: str) -> dict[str, Any]:
    """Return the domain catalog of ``schema``, with the schema's name taken out of it.

    ``tests.support.catalog.catalog`` reads schema public only; this reads any one, in
    a form comparable with public's.
    """
    with engine.connect() as connection:
        found = {
            "columns": _rows(
                connection,
                "SELECT table_name, column_name, data_type, udt_name, character_maximum_length, "
                "numeric_precision, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name NOT IN ('alembic_version', :log) "
                "ORDER BY table_name, ordinal_position",
                s=schema,
                log=DEPLOY_LOG,
            ),
            "constraints": _rows(
                connection,
                "SELECT c.conrelid::regclass::text, c.conname, c.contype, "
                "pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = :s "
                "AND c.conrelid::regclass::text NOT LIKE '%alembic_version' "
                "AND c.conrelid::regclass::text NOT LIKE '%' || :log ORDER BY 2",
                s=schema,
                log=DEPLOY_LOG,
            ),
            "indexes": _rows(
                connection,
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :s "
                "AND tablename NOT IN ('alembic_version', :log) ORDER BY 1, 2",
                s=schema,
                log=DEPLOY_LOG,
            ),
            "enums": _rows(
                connection,
                "SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) "
                "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = :s "
                "GROUP BY t.typname ORDER BY 1",
                s=schema,
            ),
        }

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(f"{schema}.", "")
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return value

    return {key: plain(rows) for key, rows in found.items()}


def schema_versions(engine: Engine, schema: str) -> list[str] | None:
    with engine.connect() as connection:
        exists = connection.execute(
            sa.text("SELECT to_regclass(:name)"), {"name": f"{schema}.alembic_version"}
        ).scalar()
        if exists is None:
            return None
        return [r[0] for r in connection.exec_driver_sql(f"SELECT * FROM {schema}.alembic_version")]


# The read-only and failing modes of each command; the revision is added where one is taken.
def command_modes(revision: str | None = None) -> dict[str, tuple[str, ...]]:
    rev = (revision,) if revision else ()
    return {
        "status": ("alembic_status",),
        "stamp": ("alembic_stamp", *rev, "--noinput"),
        "stamp --plan": ("alembic_stamp", *rev, "--plan"),
        "upgrade": ("alembic_upgrade", *rev),
        "upgrade --plan": ("alembic_upgrade", *rev, "--plan"),
        "upgrade --sql": ("alembic_upgrade", *rev, "--sql"),
    }


# -- revisions ---------------------------------------------------------------------------------

OTHER = "7c99aa000000"  # shares the prefix "7c" with SECOND


def test_an_unknown_revision_prefix_or_ambiguous_prefix_is_refused_before_connecting(
    resources, templates, tmp_path
):
    copy = project_copy(tmp_path / "project")
    (copy.versions / f"{OTHER}_added.py").write_text(
        f'"""Another revision."""\n\nrevision = {OTHER!r}\ndown_revision = {HEAD!r}\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    url, engine = resources.database(templates["behind"])
    before = fingerprint(engine)
    expected = {
        "0123456789ab": "unknown revision '0123456789ab'",
        "ff": "unknown revision 'ff'",
        "7c": f"the prefix '7c' is ambiguous: it matches {SECOND}, {OTHER}",
    }
    jobs = {
        (revision, mode): Job(args, url, copy.env)
        for revision in expected
        for mode, args in command_modes(revision).items()
        if mode != "status"
    }

    results = run_all(jobs)

    for (revision, _mode), result in results.items():
        assert_one_line(result, f"CommandError: {expected[revision]}; the known heads are: {OTHER}")
    assert fingerprint(engine) == before


# -- DATABASE_URL ------------------------------------------------------------------------------

MALFORMED_URLS = {
    f"postgresql://u:{SECRET}@127.0.0.1:notaport/db": (
        "DATABASE_URL postgresql://u:***@127.0.0.1:notaport/db is malformed: the port is not "
        "a number from 0 to 65535 (percent-encode any @ : / # ? in the user name or password)"
    ),
    f"postgresql://u:{SECRET}@127.0.0.1:99999/db": (
        "DATABASE_URL postgresql://u:***@127.0.0.1:99999/db is malformed: the port is not "
        "a number from 0 to 65535 (percent-encode any @ : / # ? in the user name or password)"
    ),
    # A password with a "/" in it, not percent-encoded: the URL's host part ends early.
    f"postgresql://u:p@ss:w/rd%Z9{SECRET}@127.0.0.1/db": (
        "DATABASE_URL postgresql://u:***@127.0.0.1/db is malformed: the port is not "
        "a number from 0 to 65535 (percent-encode any @ : / # ? in the user name or password)"
    ),
    "not a url": (
        "DATABASE_URL not a url is not a URL; expected "
        "postgresql://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
    ),
    f"u:{SECRET}@127.0.0.1/db": (
        "DATABASE_URL u:***@127.0.0.1/db is not a URL; expected "
        "postgresql://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
    ),
    f"postgresql://u:{SECRET}@[::1/db": (
        "DATABASE_URL postgresql://u:***@[::1/db is malformed: Invalid IPv6 URL"
    ),
    f"mysql://u:{SECRET}@127.0.0.1/db": (
        "DATABASE_URL mysql://u:***@127.0.0.1/db uses the scheme 'mysql'; this project supports "
        "PostgreSQL and SQLite only (postgres://, postgresql://, pgsql://, sqlite://)"
    ),
    f"postgresql://u:{SECRET}@127.0.0.1": (
        "DATABASE_URL postgresql://u:***@127.0.0.1 names no database; expected "
        "postgresql://USER:PASSWORD@HOST:PORT/NAME"
    ),
    "": (
        "DATABASE_URL is empty; set a postgresql:// or sqlite:// URL, or unset it to use db.sqlite3"
    ),
}

ALL_COMMANDS = {
    **command_modes(),
    "verify": ("alembic_verify",),
    "ledger": ("alembic_ledger", "--check"),
}


def test_a_malformed_database_url_is_one_line_with_the_password_masked():
    default_db = PROJECT / "db.sqlite3"
    existed = default_db.exists()
    jobs = {
        (raw, mode): Job(args, raw) for raw in MALFORMED_URLS for mode, args in ALL_COMMANDS.items()
    }
    first = next(iter(MALFORMED_URLS))
    jobs[(first, "traceback")] = Job(("alembic_status", "--traceback"), first)

    results = run_all(jobs)

    traced = results.pop((first, "traceback"))
    for (raw, _mode), result in results.items():
        assert_one_line(result, f"Error: {MALFORMED_URLS[raw]}")
    # --traceback shows where it came from, and still not the password.
    assert traced.returncode == 1
    assert traced.stderr.startswith("Traceback (most recent call last):\n")
    assert traced.stderr.endswith(
        f"django.core.exceptions.ImproperlyConfigured: {MALFORMED_URLS[first]}\n"
    )
    assert SECRET not in traced.stderr
    # An empty DATABASE_URL is an error, not the SQLite file of a fresh checkout.
    assert default_db.exists() == existed


# -- unreachable servers -------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a server that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_an_unreachable_server_fails_in_one_line(silent_server):
    silent = f"postgresql://u:{SECRET}@127.0.0.1:{silent_server}/db"
    cases = {
        "refused": (
            f"postgresql://u:{SECRET}@127.0.0.1:1/db",
            "postgresql://u:***@127.0.0.1:1/db: connection failed: connection to server at "
            '"127.0.0.1", port 1 failed: Connection refused',
        ),
        "unresolvable": (
            f"postgresql://u:{SECRET}@no-such-host.invalid/db",
            "postgresql://u:***@no-such-host.invalid/db: failed to resolve host "
            "'no-such-host.invalid': [Errno -2] Name or service not known",
        ),
        "silent": (
            f"{silent}?connect_timeout=2",
            f"postgresql://u:***@127.0.0.1:{silent_server}/db?connect_timeout=2: "
            "connection timeout expired",
        ),
    }
    commands = {**command_modes(), "verify": ("alembic_verify",)}
    jobs = {
        (case, mode): Job(args, raw, timeout=60)
        for case, (raw, _) in cases.items()
        for mode, args in commands.items()
    }
    # Without connect_timeout in the URL, the default (10 s) still ends the wait.
    jobs[("silent default", "status")] = Job(("alembic_status",), silent, timeout=60)

    results = run_all(jobs, workers=8)

    default = results.pop(("silent default", "status"))
    assert_one_line(
        default,
        f"CommandError: postgresql://u:***@127.0.0.1:{silent_server}/db: "
        "connection timeout expired",
    )
    for (case, mode), result in results.items():
        assert_one_line(
            result,
            f"CommandError: {cases[case][1]}",
            stdout=VERIFY_BEFORE_SCRATCH if mode == "verify" else "",
        )


# -- credentials and rights ------------------------------------------------------------------------


def test_a_wrong_password_fails_in_one_line_and_changes_nothing(password_server):
    url = create_pg_database(password_server)
    engine = create_engine(url)
    try:
        load_production_schema(engine)
        _seeded(engine)
        before = fingerprint(engine)
        wrong = url.set(password=SECRET)
        commands = {**command_modes(), "verify": ("alembic_verify",)}
        results = run_all({mode: Job(args, wrong) for mode, args in commands.items()})
        for mode, result in results.items():
            assert_one_line(
                result,
                f"CommandError: {shown(wrong)}: connection failed: connection to server at "
                f'"127.0.0.1", port {url.port} failed: FATAL:  password authentication failed '
                'for user "postgres"',
                stdout=VERIFY_BEFORE_SCRATCH if mode == "verify" else "",
            )
            assert SUPERUSER_PASSWORD not in result.stdout + result.stderr
        assert fingerprint(engine) == before
    finally:
        engine.dispose()
        drop_pg_database(password_server, url)


def grant_read_only(resources: Resources, role: str, url: URL, engine: Engine) -> None:
    """Let ``role`` connect to ``url``'s database and read its tables, nothing more."""
    admin_execute(resources.server, f'GRANT CONNECT ON DATABASE "{url.database}" TO {role}')
    execute(
        engine,
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
    )


def test_a_read_only_user_may_read_the_state_but_not_baseline_or_upgrade(resources, templates):
    role = resources.role()
    databases = {}
    # The commands that try to write get a database each, so none waits for another's lock.
    for name in ("production", "production stamp", "behind", "behind stamp"):
        url, engine = resources.database(templates[name.split()[0]])
        grant_read_only(resources, role, url, engine)
        databases[name] = (url.set(username=role), engine, fingerprint(engine))
    production, behind = databases["production"][0], databases["behind"][0]
    jobs = {
        ("production", "status"): Job(("alembic_status",), production),
        ("production", "upgrade"): Job(("alembic_upgrade",), production),
        ("production", "upgrade --plan"): Job(("alembic_upgrade", "--plan"), production),
        ("production", "stamp"): Job(("alembic_stamp", BASELINE), databases["production stamp"][0]),
        ("behind", "status"): Job(("alembic_status",), behind),
        ("behind", "upgrade"): Job(("alembic_upgrade",), behind),
        ("behind", "upgrade --sql"): Job(("alembic_upgrade", "--sql"), behind),
        ("behind", "stamp"): Job(
            ("alembic_stamp", HEAD, "--force", "--noinput"), databases["behind stamp"][0]
        ),
    }

    results = run_all(jobs)

    denied = "permission denied for schema public"
    assert_one_line(
        results[("production", "upgrade")], f"CommandError: {shown(production)}: {denied}"
    )
    assert_one_line(
        results[("production", "stamp")],
        f"CommandError: {shown(databases['production stamp'][0])}: {denied}",
    )
    assert_one_line(
        results[("behind", "upgrade")],
        f"CommandError: revision {SECOND} failed and was rolled back; the database stays at "
        f"{BASELINE}: must be owner of type jobstatus",
        stdout=APPLY_SECOND.removesuffix(" OK") + " FAILED\n",
    )
    assert_one_line(
        results[("behind", "stamp")],
        f"CommandError: {shown(databases['behind stamp'][0])}: permission denied for table "
        "alembic_version",
        before=differences_block(
            "enum jobstatus: labels are (PENDING, PROCESSING, COMPLETED, FAILED), "
            "expected (PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED)",
            "index ix_detected_materials_category is missing",
            "index ix_detected_materials_confidence is missing",
            "index ix_detected_materials_created_at is missing",
            "index ix_detected_materials_job_id_confidence is missing",
            "index ix_detected_materials_material_name_pattern is missing",
            "column material_detection_jobs.model_version is missing",
        ),
    )
    # Reading works: the state, the plan and the SQL for review.
    for key, state in ((("production", "status"), "unversioned"), (("behind", "status"), "behind")):
        result = results[key]
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        assert f"  State:    {state}\n" in result.stdout
    plan = results[("production", "upgrade --plan")]
    assert (plan.returncode, plan.stderr) == (0, "")
    assert f"  Baseline: {BASELINE} (the live schema equals that revision)\n" in plan.stdout
    sql = results[("behind", "upgrade --sql")]
    assert (sql.returncode, sql.stderr) == (0, "")
    assert f"UPDATE alembic_version SET version_num='{HEAD}'" in sql.stdout
    for _url, engine, before in databases.values():
        assert fingerprint(engine) == before


def test_a_user_without_createdb(resources, templates, tmp_path):
    role = resources.role()
    url, engine = resources.database(templates["up_to_date"])
    grant_read_only(resources, role, url, engine)
    before = fingerprint(engine)
    as_role = url.set(username=role)
    stale = project_copy(tmp_path / "project")
    edit_script(stale, HEAD)  # the ledger no longer vouches for the head's schema
    jobs = {
        "verify": Job(("alembic_verify",), as_role),
        "status, stale ledger": Job(("alembic_status",), as_role, stale.env),
        "upgrade, stale ledger": Job(("alembic_upgrade",), as_role, stale.env),
        "status --no-replay": Job(("alembic_status", "--no-replay"), as_role, stale.env),
        "status": Job(("alembic_status", "--check"), as_role),
    }

    results = run_all(jobs)

    server = shown(as_role.set(database=None))
    no_createdb = (
        f"CommandError: user {role} may not create databases on {server}: the scratch database "
        "needs the CREATEDB right (ALTER ROLE ... CREATEDB)"
    )
    assert_one_line(results["verify"], no_createdb, stdout=VERIFY_BEFORE_SCRATCH)
    replay_hint = ", or a ledger that is up to date (`manage.py alembic_verify --update-ledger`)"
    assert_one_line(results["status, stale ledger"], no_createdb + replay_hint)
    assert_one_line(results["upgrade, stale ledger"], no_createdb + replay_hint)
    assert_one_line(
        results["status --no-replay"],
        re.compile(
            r"CommandError: the ledger is stale \(.*3d5f8a9b2c41.*\) and no scratch database may "
            r"be used to replay the history; regenerate it with `manage.py alembic_ledger` where "
            r"a scratch database can be made"
        ),
    )
    # With a fresh ledger, no scratch database is needed to read the state.
    assert results["status"].returncode == 0, results["status"].stderr
    assert "  State:    up_to_date\n" in results["status"].stdout
    assert fingerprint(engine) == before


def test_backup_dir_without_pg_dump_fails_before_any_change(resources, templates, tmp_path):
    url, engine = resources.database(templates["production"])
    before = fingerprint(engine)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    with engine.connect() as connection:
        major = int(connection.exec_driver_sql("SHOW server_version_num").scalar()) // 10000
    backups = tmp_path / "backups"

    (result,) = run_all(
        {
            "upgrade": Job(
                ("alembic_upgrade", "--backup-dir", str(backups)), url, {"PATH": str(bin_dir)}
            )
        }
    ).values()

    assert_one_line(
        result,
        "CommandError: pg_dump is not on PATH; install the PostgreSQL client tools "
        f"(version {major} or newer), or leave out --backup-dir",
    )
    assert fingerprint(engine) == before
    assert not list(backups.glob("*"))


# -- alembic_version holding what it should not ---------------------------------------------------

CORRUPT_VERSIONS = {
    "two rows": [f"INSERT INTO alembic_version VALUES ('{BASELINE}')"],
    "garbage": ["UPDATE alembic_version SET version_num = 'garbage!!'"],
    "empty string": ["UPDATE alembic_version SET version_num = ''"],
    "null": [
        "ALTER TABLE alembic_version DROP CONSTRAINT alembic_version_pkc",
        "ALTER TABLE alembic_version ALTER COLUMN version_num DROP NOT NULL",
        "UPDATE alembic_version SET version_num = NULL",
    ],
    "other layout": [
        "DROP TABLE alembic_version",
        "CREATE TABLE alembic_version (id serial PRIMARY KEY, version text)",
        f"INSERT INTO alembic_version (version) VALUES ('{HEAD}')",
    ],
}
RECORDED = {
    "garbage": "'garbage!!'",
    "empty string": "''",
    "null": "NULL",
}


def test_a_corrupt_version_table_is_reported_and_refused(resources, templates):
    """What each command does with a version table no revision explains.

    Status reports ``unknown_revision`` (exit 0, 1 with ``--check``), as for
    any version the scripts do not define. Upgrade refuses in one line.
    Stamping a revision the schema does not prove is refused; stamping the
    one it proves (head here) replaces the rows, which is how an operator
    repairs the table. A table without ``version_num`` is not Alembic's:
    every command refuses to touch or interpret it.
    """
    databases: dict[str, tuple[URL, Engine, dict[str, Any]]] = {}
    jobs = {}
    for case, statements in CORRUPT_VERSIONS.items():
        # Each command that takes the deploy lock gets a database of its own.
        for purpose in ("read", "upgrade", "stamp unproven", "repair"):
            url, engine = resources.database(templates["up_to_date"])
            execute(engine, *statements)
            databases[(case, purpose)] = (url, engine, fingerprint(engine))
        read = databases[(case, "read")][0]
        jobs[(case, "status")] = Job(("alembic_status",), read)
        jobs[(case, "status --check")] = Job(("alembic_status", "--check"), read)
        jobs[(case, "upgrade --plan")] = Job(("alembic_upgrade", "--plan"), read)
        if case == "garbage":  # --sql classifies as --plan does: once is enough
            jobs[(case, "upgrade --sql")] = Job(("alembic_upgrade", "--sql"), read)
        jobs[(case, "upgrade")] = Job(("alembic_upgrade",), databases[(case, "upgrade")][0])
        jobs[(case, "stamp unproven")] = Job(
            ("alembic_stamp", BASELINE), databases[(case, "stamp unproven")][0]
        )
        jobs[(case, "stamp")] = Job(("alembic_stamp",), databases[(case, "repair")][0])

    results = run_all(jobs)

    for (case, purpose), (_, engine, before) in databases.items():
        if purpose != "repair" or case == "other layout":
            assert fingerprint(engine) == before, (case, purpose)
    for case in CORRUPT_VERSIONS:
        repair_url, repair_engine, repair_before = databases[(case, "repair")]
        if case == "other layout":
            line = (
                "CommandError: the table alembic_version is not Alembic's version table: it has "
                "no version_num column (its columns: id, version); nothing was changed. Rename "
                "it, or set MIGSUPPORT_VERSION_TABLE to another name"
            )
            for (each, _mode), result in results.items():
                if each == case:
                    assert_one_line(result, line)
            continue
        if case == "two rows":
            reason = (
                f"alembic_version records 2 versions ({HEAD}, {BASELINE}), but the revision "
                "history has a single head"
            )
            refused = f"CommandError: refused: {reason}; {NOTHING}"
            was = f"{HEAD},{BASELINE}"
        else:
            reason = f"alembic_version records {RECORDED[case]}, which no revision script defines"
            refused = (
                f"CommandError: refused: {reason} (a newer release migrated this database, or a "
                f"revision was deleted); {NOTHING}"
            )
            was = RECORDED[case]
        status = results[(case, "status")]
        assert (status.returncode, status.stderr) == (0, ""), status.stderr
        assert "  State:    unknown_revision\n" in status.stdout
        assert f"  {reason}\n" in status.stdout
        assert "Differences:" not in status.stdout
        checked = results[(case, "status --check")]
        assert (checked.returncode, checked.stdout, checked.stderr) == (1, status.stdout, "")
        for mode in ("upgrade", "upgrade --plan", "upgrade --sql"):
            if (case, mode) in results:
                assert_one_line(results[(case, mode)], refused)
        unproven = results[(case, "stamp unproven")]
        assert_one_line(
            unproven,
            f"CommandError: refused: the schema does not equal revision {BASELINE}, so it cannot "
            "be stamped; nothing was written (--force stamps without proof)",
            before=unproven.stderr.split("CommandError:")[0],
        )
        assert unproven.stderr.startswith("Differences from the expected schema:\n")
        repaired = results[(case, "stamp")]
        assert (repaired.returncode, repaired.stderr) == (0, ""), repaired.stderr
        assert repaired.stdout == (
            f"Stamped {shown(repair_url)} at {HEAD} (was {was}): the live schema equals that "
            "revision.\n"
        )
        after = fingerprint(repair_engine)
        assert after["versions"] == {"public": [f"('{HEAD}',)"]}
        # The proven stamp is logged: the deploy log is all it adds besides the version.
        logged = [r for r in after["relations"] if r[1].startswith(DEPLOY_LOG)]
        assert [r[1] for r in logged] == [DEPLOY_LOG, f"{DEPLOY_LOG}_id_seq", f"{DEPLOY_LOG}_pkey"]
        after["relations"] = [r for r in after["relations"] if r not in logged]
        assert deploy_log_rows(repair_engine) == [("alembic_stamp", "stamp", was, HEAD, "stamped")]
        assert {k: v for k, v in after.items() if k != "versions"} == {
            k: v for k, v in repair_before.items() if k != "versions"
        }


# -- the search_path ------------------------------------------------------------------------------


def tables_in_app(engine: Engine) -> None:
    """Load the deployed schema, with rows, into schema ``app`` (public stays empty)."""
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA app")
        connection.exec_driver_sql("SET LOCAL search_path TO app")
        connection.exec_driver_sql((PROJECT / "tests/data/production_schema.sql").read_text())
        for statement in seed_sql(jobs=40, materials=160):
            connection.exec_driver_sql(statement)


def app_data(url: URL) -> dict[str, tuple[int, str]]:
    engine = create_engine(url.set(query={"options": "-csearch_path=app"}))
    try:
        return data_checksums(engine)
    finally:
        engine.dispose()


def test_tables_in_the_search_path_schema_are_baselined_and_upgraded_there(
    resources, templates, revision_catalogs
):
    url, engine = resources.database()
    tables_in_app(engine)
    in_app = url.set(query={"options": "-csearch_path=app"})
    # The other way to set it: for every session on the database (as ALTER ROLE would).
    stamp_url, stamp_engine = resources.database()
    tables_in_app(stamp_engine)
    execute(stamp_engine, f'ALTER DATABASE "{stamp_url.database}" SET search_path = app')
    _, reference = resources.database(templates["up_to_date"])
    head_catalog = catalog_in(reference, "public")
    data = app_data(url)

    first = run_all(
        {
            "status": Job(("alembic_status",), in_app),
            "upgrade --plan": Job(("alembic_upgrade", "--plan"), in_app),
            "stamp": Job(("alembic_stamp", BASELINE), stamp_url),
        }
    )
    upgraded = run_all({"upgrade": Job(("alembic_upgrade",), in_app)})["upgrade"]
    after = run_all({"status": Job(("alembic_status", "--check"), in_app)})["status"]

    assert (first["status"].returncode, first["status"].stderr) == (0, "")
    assert "  State:    unversioned\n" in first["status"].stdout
    assert f"  Matches:  {BASELINE}\n" in first["status"].stdout
    assert first["upgrade --plan"].returncode == 0, first["upgrade --plan"].stderr
    assert first["stamp"].returncode == 0, first["stamp"].stderr
    assert first["stamp"].stdout == (
        f"Stamped {shown(stamp_url)} at {BASELINE} (was no version): the live schema equals "
        "that revision.\n"
    )
    assert (upgraded.returncode, upgraded.stderr) == (0, "")
    assert upgraded.stdout.splitlines() == [
        f"  Baselined at {BASELINE}: the live schema equals that revision.",
        APPLY_SECOND,
        APPLY_HEAD,
        f"Upgraded {shown(in_app)} to {HEAD}; the schema equals that revision.",
    ]
    assert (after.returncode, after.stderr) == (0, "")
    assert "  State:    up_to_date\n" in after.stdout
    # Everything happened in app: public is as empty as a new database.
    assert catalog_in(engine, "app") == head_catalog
    assert schema_versions(engine, "app") == [HEAD]
    assert schema_versions(engine, "public") is None
    assert catalog(engine) == revision_catalogs[None]
    assert app_data(url) == data
    assert schema_versions(stamp_engine, "app") == [BASELINE]
    assert schema_versions(stamp_engine, "public") is None
    assert catalog(stamp_engine) == revision_catalogs[None]


def test_tables_in_another_schema_than_the_search_path_are_not_built_twice(resources):
    source_url, source = resources.database()
    tables_in_app(source)
    source.dispose()  # a template must have no sessions
    modes = {**command_modes(), "status --check": ("alembic_status", "--check")}
    modes["stamp base"] = ("alembic_stamp", "base", "--noinput")
    locking = ("upgrade", "stamp", "stamp base")
    databases: dict[tuple[str, str], tuple[URL, Engine]] = {}
    # Each command that takes the deploy lock gets a database of its own.
    for purpose in ("read", *locking):
        databases[("app", purpose)] = resources.database(source_url.database)
        # And a search_path naming no schema at all: there is nowhere to work.
        url, engine = resources.database()
        databases[("nowhere", purpose)] = (
            url.set(query={"options": "-csearch_path=nosuch"}),
            engine,
        )
    befores = {key: fingerprint(engine) for key, (_, engine) in databases.items()}
    jobs = {}
    for case in ("app", "nowhere"):
        for mode, args in modes.items():
            if case == "nowhere" and mode not in ("status", "upgrade --plan", *locking):
                continue
            url = databases[(case, mode if mode in locking else "read")][0]
            jobs[(case, mode)] = Job(args, url)

    results = run_all(jobs)

    lines = {
        "app": (
            "CommandError: refused: the current schema public holds none of the Alembic-owned "
            "tables, but schema app holds detected_materials, material_detection_jobs; put app "
            "first on the search_path (ALTER ROLE ... SET search_path = app, or "
            f"?options=-csearch_path%3Dapp in DATABASE_URL); {NOTHING}"
        ),
        "nowhere": (
            "CommandError: refused: the search_path (nosuch) names no schema that exists and "
            "this user may use, so there is none to read or migrate; create the schema, grant "
            f"USAGE on it, or correct the search_path; {NOTHING}"
        ),
    }
    for (case, _mode), result in results.items():
        assert_one_line(result, lines[case])
    for key, (_, engine) in databases.items():
        assert fingerprint(engine) == befores[key], key


# -- a revision script that does not parse ---------------------------------------------------------


def write_revision(copy: ProjectCopy, name: str, doc: str, header: str, body: str = "pass") -> Path:
    """Write revision 9999aaaa0000 after the head into ``copy``: ``header`` on line 7, ``body``
    on line 8; return its path."""
    script = copy.versions / f"9999aaaa0000_{name}.py"
    script.write_text(
        f'"""{doc}"""\n\n'
        f"revision = '9999aaaa0000'\ndown_revision = {HEAD!r}\n\n\n"
        f"{header}\n    {body}\n"
    )
    return script


def test_a_revision_with_a_syntax_error_is_named_in_one_line(resources, templates, tmp_path):
    copy = project_copy(tmp_path / "project")
    broken = write_revision(copy, "broken", "A revision that does not parse.", "def upgrade(:")
    url, engine = resources.database(templates["behind"])
    before = fingerprint(engine)
    ledger = copy.ledger.read_text()
    modes = {
        **ALL_COMMANDS,
        "ledger update": ("alembic_ledger",),
        "verify --update-ledger": ("alembic_verify", "--update-ledger"),
        "traceback": ("alembic_status", "--traceback"),
    }

    results = run_all({mode: Job(args, url, copy.env) for mode, args in modes.items()})

    line = f"CommandError: revision script {broken} has a syntax error at line 7: invalid syntax"
    traced = results.pop("traceback")
    for result in results.values():
        assert_one_line(result, line)
    assert traced.returncode == 1
    assert "Traceback (most recent call last):" in traced.stderr
    assert f'File "{broken}", line 7' in traced.stderr
    assert traced.stderr.endswith(
        f"{line.replace('CommandError', 'django.core.management.base.CommandError')}\n"
    )
    assert fingerprint(engine) == before
    assert copy.ledger.read_text() == ledger


def test_a_revision_failing_in_the_replay_is_named_in_one_line(resources, templates, tmp_path):
    """A script that loads but fails when run: the stale ledger's replay names it."""
    copy = project_copy(tmp_path / "project")
    failing = write_revision(
        copy,
        "no_import",
        "A revision that forgot its import.",
        "def upgrade():",
        "op.execute('SELECT 1')",
    )
    modes = {**command_modes(), "ledger update": ("alembic_ledger",)}
    # A database each: the commands that take the deploy lock would queue on one.
    databases = {mode: resources.database(templates["behind"]) for mode in modes}
    befores = {mode: fingerprint(engine) for mode, (_, engine) in databases.items()}
    ledger = copy.ledger.read_text()

    results = run_all(
        {mode: Job(args, databases[mode][0], copy.env) for mode, args in modes.items()}
    )

    line = (
        "CommandError: replaying the history on a scratch database failed at revision "
        f"9999aaaa0000 in {failing} (line 8): NameError: name 'op' is not defined"
    )
    # The ledger's replay shows its progress up to the revision that fails.
    replayed = f"Replaying on sqlite:\n  {BASELINE}\n  {SECOND}\n  {HEAD}\n"
    for mode, result in results.items():
        assert_one_line(result, line, stdout=replayed if mode == "ledger update" else "")
    for mode, (_, engine) in databases.items():
        assert fingerprint(engine) == befores[mode], mode
    assert copy.ledger.read_text() == ledger
