"""What the reliability suite shares: real PostgreSQL servers, revision catalogs, data.

Everything here runs against real servers: the one at ``TEST_DATABASE_URL``
(``pg_server``), and, for what needs password authentication, a private
PostgreSQL cluster this suite starts itself with ``scram-sha-256``
(``password_server``), since the shared server trusts every local user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.catalog import catalog
from tests.conftest import IN_CI, create_pg_database, drop_pg_database
from tests.migrate import run
from tests.rows import seed_sql
from tests.states import BASELINE, HEAD, SECOND, execute, scalar
from tests.test_production_schema import load_production_schema

# The revisions in order; None is the empty database before the first.
REVISIONS = (None, BASELINE, SECOND, HEAD)
SUPERUSER_PASSWORD = "Sup3r-Secret-pw"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.postgresql)
            item.add_marker(pytest.mark.reliability)


# -- the catalog of every revision ---------------------------------------------------------


@pytest.fixture(scope="session")
def revision_catalogs(pg_server: URL) -> dict[str | None, dict[str, Any]]:
    """Return the catalog of a PostgreSQL database at each revision, built once."""
    url = create_pg_database(pg_server)
    engine = create_engine(url)
    try:
        catalogs = {None: catalog(engine)}
        for revision in REVISIONS[1:]:
            run(engine, "upgrade", revision)
            catalogs[revision] = catalog(engine)
        return catalogs
    finally:
        engine.dispose()
        drop_pg_database(pg_server, url)


# -- sessions and locks the commands leave on the server ------------------------------------

UPGRADE_APPLICATION = "migsupport alembic_upgrade"


def upgrade_sessions(engine: Engine) -> list[int]:
    """Return the pids of the upgrade command's sessions on the database behind ``engine``."""
    pids = scalar(
        engine,
        "SELECT array_agg(pid ORDER BY pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = :application",
        application=UPGRADE_APPLICATION,
    )
    return pids or []


def command_sessions(engine: Engine) -> int:
    """Return how many sessions of any migsupport command are on the database behind ``engine``."""
    return scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'migsupport %'",
    )


def advisory_locks(engine: Engine) -> int:
    """Return how many advisory locks are held in the database behind ``engine``."""
    return scalar(
        engine,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
    )


def production_database(engine: Engine, materials: int = 100_000, jobs: int = 2_000) -> None:
    """Load the deployed schema, unversioned, with ``materials`` rows over ``jobs`` jobs."""
    load_production_schema(engine)
    execute(engine, *seed_sql(jobs=jobs, materials=materials))
    execute(engine, "ANALYZE")


# -- a server that checks passwords ---------------------------------------------------------


def _fail_or_skip(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(f"SKIPPED POSTGRESQL TEST: {reason}")


def _bindir(pg_server: URL) -> Path | None:
    engine = sa.create_engine(pg_server, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            major = int(connection.exec_driver_sql("SHOW server_version_num").scalar()) // 10000
    finally:
        engine.dispose()
    for candidate in (Path(f"/usr/lib/postgresql/{major}/bin"), Path("/usr/lib/postgresql/bin")):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CLUSTER_PREFIX = "migsupport-pgauth-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_cluster(bindir: Path, folder: Path) -> None:
    data = folder / "data"
    if (data / "postmaster.pid").exists():
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
    shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned_clusters(bindir: Path) -> None:
    """Stop and delete the clusters of test runs that were killed before their teardown."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CLUSTER_PREFIX}*"):
        try:
            owner = int((folder / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # still being set up, or not ours
        if not _alive(owner):
            _stop_cluster(bindir, folder)


@pytest.fixture(scope="session")
def password_server(pg_server: URL) -> Iterator[URL]:
    """Start a private PostgreSQL cluster that authenticates with passwords.

    Its superuser is ``postgres`` with ``SUPERUSER_PASSWORD``; every
    connection, local or TCP, must give the right password. The cluster is
    stopped and deleted at the end of the session.
    """
    bindir = _bindir(pg_server)
    if bindir is None:
        _fail_or_skip("initdb is missing: the password-authentication cluster needs it")
    _remove_abandoned_clusters(bindir)
    folder = Path(tempfile.mkdtemp(prefix=CLUSTER_PREFIX))
    (folder / "owner.pid").write_text(str(os.getpid()))
    data = folder / "data"
    pwfile = folder / "pwfile"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run_tool(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            _fail_or_skip(f"{Path(args[0]).name} failed: {done.stderr.strip()[:300]}")

    try:
        run_tool(
            str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        run_tool(
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
            "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        yield URL.create(
            "postgresql+psycopg",
            username="postgres",
            password=SUPERUSER_PASSWORD,
            host="127.0.0.1",
            port=port,
            database="postgres",
        )
    finally:
        _stop_cluster(bindir, folder)


def server_log(url: URL) -> Path | None:
    """Return the log file of the private ``password_server`` cluster behind ``url``."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CLUSTER_PREFIX}*"):
        if (folder / f".s.PGSQL.{url.port}").exists():
            return folder / "server.log"
    return None
