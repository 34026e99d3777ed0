"""Deploys through PgBouncer in transaction pooling mode, on real servers.

A private PgBouncer (Debian's ``/usr/sbin/pgbouncer``, a free port, its own
configuration, auth file and log in a temporary folder) stands in front of
the private password-checking cluster (``password_server``): clients log in
to PgBouncer with SCRAM, and PgBouncer to PostgreSQL. ``postgres`` is pooled
in transaction mode, the default; a second role in session mode. What must
hold:

- without a direct URL, the commands that change something refuse in one
  line through the transaction pooler, and nothing changes unless exactly
  one of them did the work; with ``DIRECT_DATABASE_URL``, 16 concurrent
  deploys behave as they do on a direct connection;
- the read-only commands work through it, 50 times in a row, with no
  prepared-statement error, and the admin is served through it;
- no password appears in any output, PgBouncer's log included.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from migsupport import locking
from migsupport.engine import create_engine
from migsupport.pooler import NotASession, require_session
from tests.support.catalog import catalog
from tests.support.cluster import SUPERUSER_PASSWORD, alive, free_port
from tests.support.commands import django_url, manage, shown, spawn, wait_for
from tests.support.deploys import WAITING, Deploy
from tests.support.deploys import work_done as _work_done
from tests.support.migrate import run
from tests.support.rows import data_checksums, production_database
from tests.support.server import (
    admin_execute,
    create_pg_database,
    drop_pg_database,
    fail_or_skip,
)
from tests.support.sessions import advisory_locks, command_sessions
from tests.support.states import (
    APPLY_HEAD,
    APPLY_SECOND,
    BASELINE,
    HEAD,
    VERIFY_BEFORE_SCRATCH,
    scalar,
    versions,
)

PGBOUNCER = Path("/usr/sbin/pgbouncer")
POOLER_PREFIX = "migsupport-pgbouncer-"
SESSION_PASSWORD = "Sess10n-Secret-pw"
# Fewer server connections than deploys, as in production.
POOL_SIZE = 4
DEPLOYS = 16
ROUNDS = 2
MATERIALS, JOBS = 20_000, 400
STATUS_RUNS = 50
# Every output of this module's commands, searched for the passwords at the end.
OUTPUTS: list[str] = []


# -- a private PgBouncer ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pooler:
    """A running PgBouncer in front of ``server``, and how to reach a database through it."""

    port: int
    folder: Path
    server: URL
    session_role: str

    @property
    def log(self) -> Path:
        return self.folder / "pgbouncer.log"

    def url(self, direct: URL, *, session: bool = False) -> URL:
        """Return the pooled URL of the database behind ``direct``."""
        if session:
            direct = direct.set(username=self.session_role, password=SESSION_PASSWORD)
        return direct.set(port=self.port)


def _pgbouncer_pid(folder: Path) -> int | None:
    """Return the pid of the PgBouncer started from ``folder``, if it still runs."""
    try:
        pid = int((folder / "pgbouncer.pid").read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    # Only the PgBouncer of that folder's configuration, never another process.
    return pid if str(folder / "pgbouncer.ini").encode() in command else None


def _stop_pgbouncer(folder: Path, *, remove: bool) -> None:
    pid = _pgbouncer_pid(folder)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # PgBouncer's immediate shutdown
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if remove:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned_poolers() -> None:
    """Stop and delete the PgBouncers of test runs that were killed before their teardown."""
    for folder in Path(tempfile.gettempdir()).glob(f"{POOLER_PREFIX}*"):
        try:
            owner = int((folder / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not alive(owner):
            _stop_pgbouncer(folder, remove=True)


def _config(
    port: int, server: URL, folder: Path, session_role: str, query_wait_timeout: int
) -> str:
    return "\n".join(
        [
            "[databases]",
            # Any database name reaches the same-named database on the cluster.
            f"* = host={server.host} port={server.port}",
            "[users]",
            f"{session_role} = pool_mode=session",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {folder / 'userlist.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {POOL_SIZE}",
            "max_client_conn = 400",
            f"query_wait_timeout = {query_wait_timeout}",
            f"logfile = {folder / 'pgbouncer.log'}",
            f"pidfile = {folder / 'pgbouncer.pid'}",
            "",
        ]
    )


# Sixteen deploys queue for the pool's few server connections behind the one
# doing the work; on a loaded machine that outlasts PgBouncer's default 120 s,
# and it would cut the waiting clients.
QUERY_WAIT_TIMEOUT = 900


@pytest.fixture(scope="module")
def pgbouncer(password_server: URL) -> Iterator[Pooler]:
    """Start PgBouncer in front of the password-checking cluster; stop it at the end."""
    with running_pgbouncer(password_server) as pooler:
        yield pooler


@contextlib.contextmanager
def running_pgbouncer(
    password_server: URL, *, query_wait_timeout: int = QUERY_WAIT_TIMEOUT
) -> Iterator[Pooler]:
    """Run a PgBouncer of its own in front of ``password_server`` for the block."""
    if not PGBOUNCER.exists():
        fail_or_skip(f"{PGBOUNCER} not found; install Debian's package: apt-get install pgbouncer")
    _remove_abandoned_poolers()
    session_role = f"migsupport_session_{uuid.uuid4().hex[:8]}"
    admin_execute(
        password_server,
        f"CREATE ROLE {session_role} LOGIN SUPERUSER PASSWORD '{SESSION_PASSWORD}'",
    )
    folder = Path(tempfile.mkdtemp(prefix=POOLER_PREFIX))
    (folder / "owner.pid").write_text(str(os.getpid()))
    port = free_port()
    (folder / "pgbouncer.ini").write_text(
        _config(port, password_server, folder, session_role, query_wait_timeout)
    )
    userlist = folder / "userlist.txt"
    userlist.write_text(
        f'"postgres" "{SUPERUSER_PASSWORD}"\n"{session_role}" "{SESSION_PASSWORD}"\n'
    )
    userlist.chmod(0o600)
    prefix: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        for path in (folder, userlist, folder / "pgbouncer.ini"):
            shutil.chown(path, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    try:
        started = subprocess.run(
            [*prefix, str(PGBOUNCER), "-d", str(folder / "pgbouncer.ini")],
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            fail_or_skip(f"pgbouncer did not start: {started.stderr.strip()[:300]}")

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 15, f"PgBouncer to listen on port {port}")
        yield Pooler(port, folder, password_server, session_role)
    finally:
        _stop_pgbouncer(folder, remove=True)
        admin_execute(password_server, f"DROP ROLE IF EXISTS {session_role}")


@pytest.fixture
def direct(password_server: URL, pgbouncer: Pooler) -> Iterator[URL]:
    """Return the direct URL of a new database on the cluster behind PgBouncer, dropped after."""
    url = create_pg_database(password_server)
    try:
        yield url
    finally:
        drop_pg_database(password_server, url)


@pytest.fixture
def direct_engine(direct: URL) -> Iterator[Engine]:
    engine = create_engine(direct)
    yield engine
    engine.dispose()


# -- running commands -----------------------------------------------------------------------------


def secrets_in(text: str) -> list[str]:
    """Return the passwords written in ``text``, raw or percent-encoded."""
    return [
        secret
        for secret in (SUPERUSER_PASSWORD, SESSION_PASSWORD)
        if any(form in text for form in {secret, quote(secret, safe=""), quote(secret)})
    ]


def recorded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Keep ``result``'s output for the password search, and check it here already."""
    output = result.stdout + result.stderr
    OUTPUTS.append(output)
    assert secrets_in(output) == [], (result.args, output)
    assert "prepared statement" not in output, (result.args, output)
    return result


def race(
    pooled: URL, commands: list[tuple[str, ...]], direct: URL | None = None
) -> list[subprocess.CompletedProcess]:
    """Start every command at once through the pooler; return each one's result, in order."""
    env = {"DIRECT_DATABASE_URL": django_url(direct)} if direct is not None else {}
    started = []
    try:
        for args in commands:
            started.append(spawn(*args, database_url=pooled, **env))
    except BaseException:
        for process in started:
            process.kill()
            process.communicate()
        raise
    results = []
    for args, process in zip(commands, started, strict=True):
        stdout, stderr = process.communicate(timeout=600)
        results.append(
            recorded(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
        )
    return results


def refusal(url: URL) -> re.Pattern[str]:
    """The one line a command that would change something prints through a transaction pooler."""
    return re.compile(
        rf"CommandError: {re.escape(shown(url))}: refused: the connection goes through a "
        r"pooler, and (its server process \d+ served another client between two of its "
        r"transactions|it moved from server process \d+ to \d+ between two transactions|a "
        r"second connection through it got no server process within 5s, so it cannot be shown "
        r"to keep one session|it got no server process within 5s while a second connection "
        r"through it held one, so it does not keep one session); a pooler in transaction mode "
        r"\(PgBouncer's pool_mode = transaction\) shares one server session between clients, "
        r"which breaks the deploy lock, so nothing was changed\. Set DIRECT_DATABASE_URL "
        r"\(MIGSUPPORT_DIRECT_DATABASES for another alias\) to a direct connection to "
        r"PostgreSQL for the deploy commands; the application keeps DATABASE_URL\n"
    )


def assert_refused(
    result: subprocess.CompletedProcess, url: URL, stdout: str = "", *, warning: str = ""
) -> None:
    """Assert exit 1, ``stdout``, and a stderr of ``warning`` then the one-line refusal.

    With ``--json``, stdout is one object carrying the same line as its error.
    """
    if "--json" in result.args:
        assert result.returncode == 1, result
        error = json.loads(result.stdout)
        assert (error["state"], error["differences"]) == (None, []), error
        assert result.stderr == f"{warning}CommandError: {error['error']}\n", result.stderr
        stdout = result.stdout
    assert (result.returncode, result.stdout) == (1, stdout), result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(warning), result.stderr
    assert refusal(url).fullmatch(result.stderr[len(warning) :]), result.stderr


def work_done(result: subprocess.CompletedProcess) -> tuple[str, ...]:
    """Return what the command ``result`` of :func:`race` changed (``tests.support.deploys``)."""
    return _work_done(Deploy(tuple(result.args), result))


def deploy_commands() -> list[tuple[str, ...]]:
    """Sixteen upgrades, a few with --json, and the read-only commands beside them."""
    upgrades = [
        ("alembic_upgrade", "--json") if i % 4 == 0 else ("alembic_upgrade",)
        for i in range(DEPLOYS)
    ]
    return [*upgrades, ("alembic_status",), ("alembic_upgrade", "--plan")]


BASELINE_WORK = ("baseline", BASELINE, APPLY_SECOND.split()[1], APPLY_HEAD.split()[1])


def open_transactions(engine: Engine) -> int:
    """Return how many other sessions on the database behind ``engine`` are inside a transaction."""
    return scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'",
    )


def assert_left_clean(engine: Engine, *, pooled: bool) -> None:
    """No lock and no transaction is left; without the pooler, no session either.

    PgBouncer keeps its server connections open, idle, for the next client,
    under the application_name of the last one.
    """

    def leftovers() -> tuple[int, int]:
        sessions = open_transactions(engine) if pooled else command_sessions(engine)
        return advisory_locks(engine), sessions

    wait_for(lambda: leftovers() == (0, 0), 10, "the deploys' sessions and locks to end")


# -- the deploy lock through the pooler ----------------------------------------------------------


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_sixteen_upgrades_through_the_pooler_without_a_direct_url_refuse_or_one_works(
    round_number, pgbouncer, direct, direct_engine, revision_catalogs
):
    production_database(direct_engine, materials=MATERIALS, jobs=JOBS)
    before = (catalog(direct_engine), data_checksums(direct_engine), versions(direct_engine))
    pooled = pgbouncer.url(direct)

    results = race(pooled, deploy_commands())

    deploys, readers = results[:DEPLOYS], results[DEPLOYS:]
    refused = [r for r in deploys if r.returncode == 1]
    for result in refused:
        # One that got past the check before the lock is caught while it waits.
        waited = result.stdout if WAITING.fullmatch(result.stdout.rstrip("\n")) else ""
        assert_refused(result, pooled, waited)
    succeeded = [r for r in deploys if r.returncode != 1]
    for result in succeeded:
        assert (result.returncode, result.stderr) == (0, ""), result
    workers = [r for r in succeeded if work_done(r)]
    evidence = Counter(
        re.search(
            r"pooler, and (its server process|it moved|a second connection|it got no)", r.stderr
        )[1]
        for r in refused
    )
    print(
        f"\nthrough the pooler, no direct URL (round {round_number}): {len(refused)} refused "
        f"({dict(evidence)}), {len(succeeded)} exited 0, {len(workers)} did the work; exit "
        f"codes {sorted(r.returncode for r in deploys)}"
    )
    if workers:
        assert len(workers) == 1, [r.stdout for r in workers]
        assert work_done(workers[0]) == BASELINE_WORK
        assert versions(direct_engine) == [HEAD]
        assert catalog(direct_engine) == revision_catalogs[HEAD]
        assert data_checksums(direct_engine) == before[1]
    else:
        assert (catalog(direct_engine), data_checksums(direct_engine), versions(direct_engine)) == (
            before
        )
    # Status and --plan only read: they work through the pooler.
    for reader in readers:
        assert (reader.returncode, reader.stderr) == (0, ""), reader
        assert "State:    unversioned" in reader.stdout or "State:    up_to_date" in reader.stdout
    assert_left_clean(direct_engine, pooled=True)


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_sixteen_upgrades_with_a_direct_url_apply_once_and_all_succeed(
    round_number, pgbouncer, direct, direct_engine, revision_catalogs
):
    production_database(direct_engine, materials=MATERIALS, jobs=JOBS)
    rows = data_checksums(direct_engine)
    pooled = pgbouncer.url(direct)

    results = race(pooled, deploy_commands(), direct=direct)

    deploys, readers = results[:DEPLOYS], results[DEPLOYS:]
    for result in results:
        assert (result.returncode, result.stderr) == (0, ""), result
    workers = [r for r in deploys if work_done(r)]
    print(
        f"\nwith DIRECT_DATABASE_URL (round {round_number}): {len(workers)} of {DEPLOYS} did "
        f"the work; exit codes {sorted(r.returncode for r in deploys)}"
    )
    assert [work_done(r) for r in workers] == [BASELINE_WORK]
    # Every output names the direct URL, never the pooler's.
    for result in deploys:
        if "--json" in result.args:
            summary = json.loads(result.stdout)
            assert (summary["url"], summary["direct"], summary["after"]) == (
                shown(direct),
                True,
                HEAD,
            )
        else:
            assert result.stdout.splitlines()[-1] in (
                f"Upgraded {shown(direct)} to {HEAD}; the schema equals that revision.",
                f"No revisions to apply: {shown(direct)} is at {HEAD}.",
            ), result.stdout
    status, plan = readers
    assert status.stdout.splitlines()[0] == f"Database default: {shown(direct)} (direct)"
    assert plan.stdout.splitlines()[0] == f"Plan for default: {shown(direct)} (direct)"
    assert versions(direct_engine) == [HEAD]
    assert catalog(direct_engine) == revision_catalogs[HEAD]
    assert data_checksums(direct_engine) == rows
    assert_left_clean(direct_engine, pooled=False)


def test_every_changing_command_refuses_through_the_pooler_and_changes_nothing(
    pgbouncer, direct, direct_engine, tmp_path
):
    production_database(direct_engine, materials=1_000, jobs=50)
    before = (catalog(direct_engine), data_checksums(direct_engine), versions(direct_engine))
    pooled = pgbouncer.url(direct)
    commands = {
        "upgrade": ("alembic_upgrade",),
        "upgrade --backup-dir": ("alembic_upgrade", "--backup-dir", str(tmp_path / "backups")),
        "stamp": ("alembic_stamp", BASELINE),
        "stamp --force": ("alembic_stamp", "--force", "--noinput"),
        "verify": ("alembic_verify",),
        "ledger": ("alembic_ledger",),
    }

    results = {
        mode: recorded(manage(*args, database_url=pooled)) for mode, args in commands.items()
    }

    for mode in ("upgrade", "upgrade --backup-dir", "stamp"):
        assert_refused(results[mode], pooled)
    # --force shows the differences it would stamp over, read-only, first.
    warning = results["stamp --force"].stderr.rpartition("CommandError: ")[0]
    assert warning.startswith("Differences from the expected schema:\n  - "), warning
    assert_refused(results["stamp --force"], pooled, warning=warning)
    # The scratch database is claimed by a session-level lock too.
    assert_refused(results["verify"], pooled, VERIFY_BEFORE_SCRATCH)
    replayed = results["ledger"].stdout
    assert replayed.endswith(f"Replaying on postgresql, beside {shown(pooled)}:\n"), replayed
    assert_refused(results["ledger"], pooled, replayed)
    assert not (tmp_path / "backups").exists()
    assert (catalog(direct_engine), data_checksums(direct_engine), versions(direct_engine)) == (
        before
    )
    assert_left_clean(direct_engine, pooled=True)


def test_the_read_only_commands_work_through_the_pooler(pgbouncer, direct, direct_engine):
    production_database(direct_engine, materials=1_000, jobs=50)
    pooled = pgbouncer.url(direct)

    plan = recorded(manage("alembic_upgrade", "--plan", database_url=pooled))
    sql = recorded(manage("alembic_upgrade", "--sql", database_url=pooled))
    status = recorded(manage("alembic_status", "--json", database_url=pooled))

    assert (plan.returncode, plan.stderr) == (0, ""), plan
    assert plan.stdout.splitlines()[:4] == [
        f"Plan for default: {shown(pooled)}",
        "  State:    unversioned",
        "  Current:  (none)",
        f"  Baseline: {BASELINE} (the live schema equals that revision)",
    ]
    assert (sql.returncode, sql.stderr) == (0, ""), sql
    assert "UPDATE alembic_version SET version_num" in sql.stdout
    assert (status.returncode, status.stderr) == (0, ""), status
    report = json.loads(status.stdout)
    assert (report["url"], report["direct"], report["state"], report["matches"]) == (
        shown(pooled),
        False,
        "unversioned",
        BASELINE,
    )
    assert versions(direct_engine) is None


def test_status_through_the_pooler_fifty_times_in_a_row(pgbouncer, direct, direct_engine):
    run(direct_engine, "upgrade", "head")
    pooled = pgbouncer.url(direct)

    results = [
        recorded(
            manage(
                "alembic_status", "--check", *(("--json",) if i % 2 else ()), database_url=pooled
            )
        )
        for i in range(STATUS_RUNS)
    ]

    failed = [r for r in results if (r.returncode, r.stderr) != (0, "")]
    print(f"\nalembic_status through the pooler: {STATUS_RUNS - len(failed)} of {STATUS_RUNS} ok")
    assert failed == []
    for i, result in enumerate(results):
        if i % 2:
            assert json.loads(result.stdout)["state"] == "up_to_date"
        else:
            assert result.stdout.splitlines()[:2] == [
                f"Database default: {shown(pooled)}",
                "  State:    up_to_date",
            ]


def test_migsupport_engines_prepare_no_statement_through_the_pooler(pgbouncer, direct):
    """Two clients taking turns on the pooler's server connections, a query ten times each.

    With psycopg's automatic prepare (after five runs), both would name their
    statement ``_pg3_0`` on a shared server connection, and the second fails.
    """
    pooled = pgbouncer.url(direct)
    engines = [create_engine(pooled), create_engine(pooled)]
    query = sa.text("SELECT count(*) FROM pg_class WHERE relname = :name")
    try:
        with engines[0].connect() as first, engines[1].connect() as second:
            for _ in range(10):
                for connection in (first, second):
                    assert connection.execute(query, {"name": "pg_class"}).scalar() == 1
                    connection.commit()
            prepared = first.execute(sa.text("SELECT count(*) FROM pg_prepared_statements"))
            assert prepared.scalar() == 0
    finally:
        for engine in engines:
            engine.dispose()


# -- the session check ---------------------------------------------------------------------------


def test_the_session_check_passes_a_direct_connection_in_one_round_trip(direct):
    engine = create_engine(direct)
    try:
        with engine.connect() as connection:
            pid = require_session(connection)
            assert pid == connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            assert pid == connection.connection.driver_connection.info.backend_pid
    finally:
        engine.dispose()


def test_the_session_check_refuses_the_transaction_pooler(pgbouncer, direct):
    pooled = pgbouncer.url(direct)
    engine = create_engine(pooled)
    try:
        with engine.connect() as connection, pytest.raises(NotASession) as refused:
            require_session(connection)
    finally:
        engine.dispose()
    assert refused.value.url == shown(pooled)
    assert re.fullmatch(
        r"its server process \d+ served another client between two of its transactions",
        refused.value.evidence,
    )


def check_with_the_pool_full(pooled: URL) -> NotASession:
    """Return the session check's refusal when its own question finds the pool full.

    Two blockers hold two of the pool's four server processes. The check's
    connection asks on a third and lets it go; as its second client
    connects, a third blocker takes that one, so the second client opens
    the fourth. The pool is then full of open transactions, and the check's
    next question queues: clients doing this to each other would wait for
    one another as long as PgBouncer lets them queue (``query_wait_timeout``).
    """
    engine = create_engine(pooled)
    blockers: list[psycopg.Connection] = []

    def block() -> int:
        blocker = psycopg.connect(django_url(pooled))
        blockers.append(blocker)
        return blocker.execute("SELECT pg_backend_pid()").fetchone()[0]

    pool = ThreadPoolExecutor(1)
    try:
        held = {block(), block()}
        with engine.connect() as connection:
            first = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            connection.commit()
            taken: list[int] = []
            sa.event.listen(engine, "connect", lambda *_: taken.append(block()))
            try:
                checking = pool.submit(require_session, connection)
                with pytest.raises(NotASession) as refused:
                    # Far beyond the probe's 5 s: without its bound the check never returns.
                    checking.result(timeout=60)
                assert connection.invalidated
            finally:
                # A check still waiting ends once the blockers are gone.
                for blocker in blockers:
                    blocker.close()
                pool.shutdown()
        assert first not in held and taken == [first], (held, first, taken)
    finally:
        for blocker in blockers:
            blocker.close()
        engine.dispose()
    assert refused.value.url == shown(pooled)
    return refused.value


def test_the_session_check_waits_for_a_server_process_no_longer_than_the_probe(pgbouncer, direct):
    """The check's own question finds the pool full: it gives up after its probe's bound."""
    refused = check_with_the_pool_full(pgbouncer.url(direct))

    assert refused.evidence == (
        "it got no server process within 5s while a second connection through it held one, "
        "so it does not keep one session"
    )


def test_the_session_checks_own_question_failing_is_worded_as_its_own(password_server, direct):
    """PgBouncer cuts the check's queued question (a 1 s ``query_wait_timeout``): its words.

    The error is the checked connection's, not the second client's, and the
    refusal says so.
    """
    with running_pgbouncer(password_server, query_wait_timeout=1) as impatient:
        refused = check_with_the_pool_full(impatient.url(direct))

    assert refused.evidence == (
        "its own question for its server process, asked while a second connection through "
        "it held one, failed: query_wait_timeout"
    )


def test_the_lock_given_on_another_server_process_is_given_back_there(pg_engine, monkeypatch):
    """A pooler that moves the connection between the check and the lock: refused, no lock left.

    The move is simulated by a session check that answers another pid than
    the connection's, so that the first poll of the lock finds it moved.
    """
    monkeypatch.setattr(locking, "require_session", lambda connection: 0)
    with pg_engine.connect() as connection:
        with (
            pytest.raises(NotASession) as refused,
            locking.deploy_lock(connection, name="alembic_version:default", timeout=5),
        ):
            pytest.fail("the lock was taken on a connection that moved")
        held = advisory_locks(pg_engine)
        pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    assert held == 0
    assert refused.value.evidence == (
        f"it moved from server process 0 to {pid} between two transactions"
    )


def test_under_the_lock_a_transaction_on_another_server_process_is_refused(
    pgbouncer, direct, monkeypatch
):
    """A transaction pooler that passed the check by chance is still caught under the lock.

    The check is made to pass; under the lock another client takes the
    lock's server process, so the next transaction lands on another one and
    is refused before it runs anything.
    """

    def passed(connection: sa.Connection) -> int:
        pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        connection.commit()
        return pid

    monkeypatch.setattr(locking, "require_session", passed)
    pooled = pgbouncer.url(direct)
    engine = create_engine(pooled)
    other = psycopg.connect(django_url(pooled), prepare_threshold=None)
    try:
        with (
            engine.connect() as connection,
            locking.deploy_lock(connection, name="alembic_version:default", timeout=5),
        ):
            held_on = scalar_of(other, "SELECT pg_backend_pid()")  # opens its transaction
            locks = scalar_of(other, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            with pytest.raises(NotASession) as refused:
                connection.execute(sa.text("SELECT 1"))
            other.rollback()
    finally:
        other.close()
        engine.dispose()

    # The other client sat on the lock's server process, which holds it.
    assert locks == 1
    assert re.fullmatch(
        rf"it moved from server process {held_on} to \d+ between two transactions",
        refused.value.evidence,
    )


def scalar_of(connection: psycopg.Connection, sql: str) -> Any:
    return connection.execute(sql).fetchone()[0]


def test_a_session_pooler_is_a_session_and_the_upgrade_runs_through_it(
    pgbouncer, direct, direct_engine, revision_catalogs
):
    pooled = pgbouncer.url(direct, session=True)
    engine = create_engine(pooled)
    try:
        with engine.connect() as connection:
            pid = require_session(connection)
            # PgBouncer answers the start-up itself: the announced pid is its own.
            assert connection.connection.driver_connection.info.backend_pid != pid
    finally:
        engine.dispose()

    result = recorded(manage("alembic_upgrade", database_url=pooled))

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines()[-1] == (
        f"Upgraded {shown(pooled)} to {HEAD}; the schema equals that revision."
    )
    assert versions(direct_engine) == [HEAD]
    assert catalog(direct_engine) == revision_catalogs[HEAD]


def test_a_direct_url_that_points_at_the_pooler_is_refused(pgbouncer, direct, direct_engine):
    production_database(direct_engine, materials=1_000, jobs=50)
    before = (catalog(direct_engine), data_checksums(direct_engine))
    pooled = pgbouncer.url(direct)

    result = recorded(
        manage("alembic_upgrade", database_url=direct, DIRECT_DATABASE_URL=django_url(pooled))
    )

    # The URL named is the one the command used: the direct one, which is not.
    assert_refused(result, pooled)
    assert versions(direct_engine) is None
    assert (catalog(direct_engine), data_checksums(direct_engine)) == before


def test_verify_with_a_direct_url_reports_it_and_works_beside_it(pgbouncer, direct):
    pooled = pgbouncer.url(direct)

    result = recorded(
        manage(
            "alembic_verify", "--json", database_url=pooled, DIRECT_DATABASE_URL=django_url(direct)
        )
    )

    assert (result.returncode, result.stderr) == (0, ""), result
    report = json.loads(result.stdout)
    assert (report["database"], report["url"], report["direct"], report["passed"]) == (
        "default",
        shown(direct),
        True,
        True,
    )
    # The scratch database sits beside the direct URL: on the cluster, not the pooler.
    assert sa.make_url(report["scratch"]).port == direct.port


# -- Django behind the pooler -------------------------------------------------------------------


class _Client:
    """A logged-in admin user's HTTP client, over a session cookie."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str]:
        with self.opener.open(self.base + path, timeout=60) as response:
            return response.status, response.read().decode()

    def login(self, username: str, password: str) -> None:
        _, page = self.get("/admin/login/?next=/admin/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode(
            {
                "csrfmiddlewaretoken": token,
                "username": username,
                "password": password,
                "next": "/admin/",
            }
        ).encode()
        request = urllib.request.Request(
            self.base + "/admin/login/?next=/admin/", data=form, method="POST"
        )
        with self.opener.open(request, timeout=60) as response:
            assert response.url.endswith("/admin/"), response.url


def test_the_admin_is_served_through_the_pooler(pgbouncer, direct, direct_engine, tmp_path):
    pooled = pgbouncer.url(direct)
    env = {
        "DIRECT_DATABASE_URL": django_url(direct),
        "DISABLE_SERVER_SIDE_CURSORS": "true",
        # The production settings, but plain HTTP (no redirect, cookies sent
        # without TLS) and the static files collected (their names come from
        # the manifest collectstatic writes).
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    assert (
        manage("collectstatic", "--noinput", "-v", "0", database_url=pooled, **env).returncode == 0
    )
    demo = recorded(
        manage("demo", "--materials", "500", "--username", "pooled", database_url=pooled, **env)
    )
    assert demo.returncode == 0, demo
    password = re.search(r"Superuser: pooled / (\S+)", demo.stdout).group(1)
    assert f"Upgraded {shown(direct)} to {HEAD}" in demo.stdout
    with direct_engine.connect() as connection:
        job = connection.exec_driver_sql(
            "SELECT id FROM material_detection_jobs ORDER BY created_at LIMIT 1"
        ).scalar()
        material = connection.exec_driver_sql(
            "SELECT id FROM detected_materials ORDER BY id LIMIT 1"
        ).scalar()
    port = free_port()
    server = spawn("runserver", "--noreload", f"127.0.0.1:{port}", database_url=pooled, **env)
    try:

        def serving() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(serving, 60, "the admin to be served")
        client = _Client(f"http://127.0.0.1:{port}")
        client.login("pooled", password)
        pages = {
            "/admin/materials/detectedmaterial/": "<title>Select detected material to view",
            "/admin/materials/detectedmaterial/?category=metal": "<title>Select detected material",
            "/admin/materials/detectedmaterial/?q=st": "<title>Select detected material to view",
            f"/admin/materials/detectedmaterial/{material}/change/": " | View detected material |",
            "/admin/materials/materialdetectionjob/": "<title>Select detection job to view",
            f"/admin/materials/materialdetectionjob/{job}/change/": " | View detection job |",
        }
        # Several clients at once, each page many times: more requests than
        # server connections, on connections the pooler hands around.
        work = [path for path in pages for _ in range(8)]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(client.get, work))
    finally:
        server.terminate()
        stdout, stderr = server.communicate(timeout=30)
    recorded(subprocess.CompletedProcess(server.args, 0, stdout, stderr))
    for path, (status, body) in zip(work, answers, strict=True):
        assert status == 200, path
        assert pages[path] in body, path
    assert "Traceback" not in stderr, stderr
    assert " 500 " not in stderr, stderr


def test_django_takes_the_pooler_settings_from_the_environment(pgbouncer, direct, direct_engine):
    run(direct_engine, "upgrade", "head")
    pooled = pgbouncer.url(direct)
    settings = (
        "from django.db import connection; s = connection.settings_dict; "
        "print(s['DISABLE_SERVER_SIDE_CURSORS'], s['OPTIONS']['server_side_binding'], "
        "s['OPTIONS']['prepare_threshold'])"
    )
    iterate = (
        "from materials.models import DetectedMaterial; "
        "print(sum(1 for _ in DetectedMaterial.objects.iterator(chunk_size=10)))"
    )

    result = recorded(
        manage(
            "shell", "-c", f"{settings}; {iterate}", database_url=pooled,
            DISABLE_SERVER_SIDE_CURSORS="true",
        )
    )  # fmt: skip
    default = recorded(manage("shell", "-c", settings, database_url=pooled))

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines()[-2:] == ["True False None", "0"]
    assert default.stdout.splitlines()[-1] == "False False None", default


# -- no password anywhere ------------------------------------------------------------------------


def test_no_output_and_no_pgbouncer_log_line_holds_a_password(pgbouncer, direct):
    # At least one login through the pooler in each mode, even when this test runs alone.
    for session in (False, True):
        result = recorded(
            manage("alembic_status", database_url=pgbouncer.url(direct, session=session))
        )
        assert result.returncode == 0, result
    # The password really is checked: PgBouncer turns a wrong one away.
    wrong = pgbouncer.url(direct).set(password="Wr0ng-pw")
    refused = recorded(manage("alembic_status", database_url=wrong))

    log = pgbouncer.log.read_text()

    assert (refused.returncode, refused.stdout) == (1, ""), refused
    assert refused.stderr == (
        f'CommandError: {shown(wrong)}: connection failed: connection to server at "127.0.0.1", '
        f"port {pgbouncer.port} failed: FATAL:  SASL authentication failed\n"
    )
    assert "login attempt" in log and "password authentication failed" in log
    assert f"user={pgbouncer.session_role}" in log and "user=postgres" in log
    assert secrets_in(log) == []
    assert [output for output in OUTPUTS if secrets_in(output)] == []
    assert len(OUTPUTS) >= 3
