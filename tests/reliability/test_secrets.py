"""No command ever shows the database password: not in output, logs or command lines.

Every command runs in every mode against a private PostgreSQL cluster that
checks passwords (``password_server``), as a role whose password is made of
URL-special characters (``@:/%``, percent-encoded in ``DATABASE_URL``), and
again as a role with a plain password. After the runs, the password is
looked for, raw and percent-encoded, in each run's stdout and stderr, in the
server's log (every statement of the roles is logged), in the command lines
of every process alive while a backup and a verification ran, and in every
file the commands wrote. The masked URL must appear where a person needs to
know which database it was, so printing nothing cannot pass.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from migsupport.engine import create_engine
from migsupport.locking import advisory_key
from tests.support.cluster import SUPERUSER_PASSWORD, free_port, server_log
from tests.support.commands import shown, spawn
from tests.support.rows import seed_sql
from tests.support.server import admin_execute, create_pg_database, drop_pg_database
from tests.support.states import (
    BASELINE,
    FAILING_BODY,
    HEAD,
    THIRD,
    VERIFY_CHECKS,
    ProjectCopy,
    add_revision,
    edit_script,
    execute,
    insert_job_with_duplicate_materials,
    project_copy,
    reach,
    write_third_revision,
)

# The tests here share module-scoped databases and batches of commands: they run on one
# test worker, so that those are built once.
pytestmark = pytest.mark.xdist_group("secrets")

PASSWORDS = {"special": "p@ss:w/rd%Z9", "plain": "Plain-Secret-4xq"}
LOCK_NAME = "alembic_version:default"
ADDED = "cccc00000003"  # a revision that fails when applied a second time
MAX_PARALLEL = 8


def forms(secret: str) -> set[str]:
    """The ways a secret could be written: raw, and percent-encoded as in a URL."""
    return {secret, quote(secret, safe=""), quote(secret)}


# -- the runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One manage.py run: on which database, in which project, with what outcome.

    ``lines`` must each equal a line of its output, after ``{shown}`` (the
    masked URL of its database), ``{server}`` (the same without the
    database), ``{role}`` and ``{port}`` are filled in; ``{any}`` matches
    anything (a pid, a time, a generated name).
    """

    args: tuple[str, ...]
    database: str  # a key of Setup.urls
    status: int
    lines: tuple[str, ...] = ()
    copy: str | None = None  # a key of Setup.copies
    batch: int = 1
    kinds: tuple[str, ...] = tuple(PASSWORDS)  # the passwords it runs with


CONNECTION_FAILED = 'connection failed: connection to server at "127.0.0.1", port {port} failed: '
WRONG_PASSWORD = CONNECTION_FAILED + 'FATAL:  password authentication failed for user "{role}"'
NO_DATABASE = (
    CONNECTION_FAILED + 'FATAL:  database "migsupport_test_no_such_database" does not exist'
)
REFUSED = CONNECTION_FAILED + "Connection refused"
UPGRADED = f"Upgraded {{shown}} to {HEAD}; the schema equals that revision."
STAMPED = f"Stamped {{shown}} at {HEAD} (was no version): the live schema equals that revision."
LOCK_TIMEOUT = (
    "CommandError: timed out after {any}s waiting for the deploy lock (PostgreSQL advisory lock "
    f"{{any}} ({LOCK_NAME})); held by pid {{any}}, user postgres; nothing was changed. Retry "
    "when the other deploy has finished, or raise --lock-timeout"
)
UNKNOWN_REVISION = f"CommandError: unknown revision 'deadbeef'; the known heads are: {HEAD}"
SCRATCH = "Scratch database: {server}/migsupport_scratch_{any}"
STATUS = "Database default: {shown}"
JSON_URL = '  "url": "{shown}",'
TRACEBACK_END = "django.core.management.base.CommandError: {shown}: "

# command and mode -> the run. Batch 1 runs while another session holds the
# deploy lock of "locked"; batch 2 while every process's command line is
# sampled; batch 3 after.
RUNS: dict[str, Run] = {
    "status plain": Run(("alembic_status",), "main", 0, (STATUS, "  State:    behind")),
    "status --json": Run(("alembic_status", "--json"), "main", 0, (JSON_URL,)),
    "status --check": Run(("alembic_status", "--check"), "main", 1, (STATUS,)),
    "status --no-replay": Run(("alembic_status", "--no-replay"), "main", 0, (STATUS,)),
    "status -v 3": Run(("alembic_status", "-v", "3"), "main", 0, (STATUS,)),
    "status stale ledger (replayed)": Run(
        ("alembic_status",), "main", 0, (STATUS, "  Ledger:   stale, replayed"), copy="stale"
    ),
    "stamp plain (proven)": Run(("alembic_stamp",), "stamp_plain", 0, (STAMPED,)),
    "stamp --plan": Run(
        ("alembic_stamp", "--plan"),
        "stamp_plan",
        0,
        (
            f"Plan: stamp {{shown}} at {HEAD} (now no version); the live schema equals "
            "that revision.",
        ),
    ),
    "stamp --force --noinput (drifted)": Run(
        ("alembic_stamp", "--force", "--noinput"), "stamp_force", 0, ("{any}{shown}{any}",)
    ),
    "stamp refused (drifted)": Run(
        ("alembic_stamp",),
        "stamp_refused",
        1,
        (
            f"CommandError: refused: the schema does not equal revision {HEAD}, so it cannot be "
            "stamped; nothing was written (--force stamps without proof)",
        ),
    ),
    "stamp unknown revision": Run(("alembic_stamp", "deadbeef"), "main", 1, (UNKNOWN_REVISION,)),
    "stamp -v 3": Run(("alembic_stamp", "-v", "3"), "stamp_v3", 0, (STAMPED,)),
    "stamp lock timeout": Run(
        ("alembic_stamp", "--lock-timeout", "1"), "locked", 1, (LOCK_TIMEOUT,)
    ),
    "upgrade plain": Run(("alembic_upgrade",), "upgrade_plain", 0, (UPGRADED,)),
    "upgrade --plan": Run(("alembic_upgrade", "--plan"), "main", 0, ("Plan for default: {shown}",)),
    "upgrade --sql": Run(
        ("alembic_upgrade", "--sql"),
        "main",
        0,
        (f"UPDATE alembic_version SET version_num='{HEAD}' {{any}}",),
    ),
    "upgrade --json": Run(("alembic_upgrade", "--json"), "upgrade_json", 0, (JSON_URL,)),
    "upgrade -v 3": Run(("alembic_upgrade", "-v", "3"), "upgrade_v3", 0, (UPGRADED,)),
    "upgrade --backup-dir (pg_dump)": Run(
        ("alembic_upgrade", "-v", "2", "--backup-dir", "{backups}"),
        "backup",
        0,
        ("  Backup written to {any}.dump", UPGRADED),
        batch=2,
    ),
    "upgrade refused (drifted)": Run(
        ("alembic_upgrade",),
        "drifted",
        1,
        (
            f"CommandError: refused: the schema differs from the recorded revision {HEAD}; "
            "nothing was changed",
        ),
    ),
    "upgrade lock timeout": Run(
        ("alembic_upgrade", "--lock-timeout", "1"),
        "locked",
        1,
        ("Waiting for the deploy lock: {any}", LOCK_TIMEOUT),
    ),
    "upgrade failing revision": Run(
        ("alembic_upgrade",),
        "failing",
        1,
        (
            f"CommandError: revision {THIRD} failed and was rolled back; the database stays at "
            f'{HEAD}: could not create unique index "ux_detected_materials_job_material"',
        ),
        copy="failing",
    ),
    "upgrade unknown revision": Run(
        ("alembic_upgrade", "deadbeef"), "main", 1, (UNKNOWN_REVISION,)
    ),
    "verify plain": Run(
        ("alembic_verify",), "main", 0, (SCRATCH, f"All {VERIFY_CHECKS} checks passed."), batch=2
    ),
    "verify --json": Run(
        ("alembic_verify", "--json"),
        "main",
        0,
        ('  "scratch": "{server}/migsupport_scratch_{any}",',),
        batch=3,
    ),
    "verify -v 3": Run(("alembic_verify", "-v", "3"), "main", 0, (SCRATCH,), batch=3),
    "verify --keep": Run(("alembic_verify", "--keep"), "main", 0, (SCRATCH + " (kept)",), batch=3),
    "verify failing": Run(
        ("alembic_verify",),
        "main",
        1,
        (SCRATCH, "Verification failed: {any}running each revision twice is safe{any}"),
        copy="fails_twice",
        batch=3,
    ),
    "verify without CREATEDB": Run(
        ("alembic_verify",),
        "nocreatedb",
        1,
        (
            "CommandError: user {role} may not create databases on {server}{any}: the scratch "
            "database needs the CREATEDB right (ALTER ROLE ... CREATEDB)",
        ),
        batch=3,
    ),
    "ledger --check": Run(
        ("alembic_ledger", "--check"), "main", 0, ("The ledger {any}/ledger.json is fresh.",)
    ),
    "error: wrong password": Run(
        ("alembic_status",), "wrong_password", 1, ("CommandError: {shown}: " + WRONG_PASSWORD,)
    ),
    "error: wrong password --traceback": Run(
        ("alembic_upgrade", "--traceback"), "wrong_password", 1, (TRACEBACK_END + WRONG_PASSWORD,)
    ),
    "error: database does not exist": Run(
        ("alembic_upgrade",), "missing", 1, ("CommandError: {shown}: " + NO_DATABASE,)
    ),
    "error: database does not exist --traceback": Run(
        ("alembic_status", "--traceback"), "missing", 1, (TRACEBACK_END + NO_DATABASE,)
    ),
    "error: unreachable port": Run(
        ("alembic_stamp",), "unreachable", 1, ("CommandError: {shown}: " + REFUSED,)
    ),
    "error: unreachable port --traceback": Run(
        ("alembic_verify", "--traceback"), "unreachable", 1, (TRACEBACK_END + REFUSED,)
    ),
    # config/settings.py reports a malformed DATABASE_URL; only the absence of
    # the password is asserted here.
    "error: malformed DATABASE_URL": Run(("alembic_status",), "malformed", 1),
    "error: malformed DATABASE_URL --traceback": Run(
        ("alembic_upgrade", "--traceback"), "malformed", 1
    ),
    # The password written into the URL as is: its "/" ends the host part early.
    "error: password not percent-encoded": Run(
        ("alembic_status",), "unencoded", 1, kinds=("special",)
    ),
    "error: password not percent-encoded --traceback": Run(
        ("alembic_upgrade", "--traceback"), "unencoded", 1, kinds=("special",)
    ),
}
CASES = [(kind, name) for kind in PASSWORDS for name, run in RUNS.items() if kind in run.kinds]


@dataclass
class Outcome:
    run: Run
    url: URL | None
    result: subprocess.CompletedProcess


@dataclass
class Setup:
    """The roles, databases and project copies one password's runs need."""

    kind: str
    password: str
    urls: dict[str, URL] = field(default_factory=dict)
    raw_urls: dict[str, str] = field(default_factory=dict)  # DATABASE_URL as given
    copies: dict[str, ProjectCopy] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    databases: list[URL] = field(default_factory=list)


@dataclass
class Evidence:
    """Everything one password's runs left behind, to search for the password."""

    setup: Setup
    outcomes: dict[str, Outcome]
    log: str
    cmdlines: set[str]
    written: dict[Path, bytes]
    backups: list[Path]


# -- the setup -------------------------------------------------------------------------------


def scram_verifier(server: URL, role: str, password: str) -> str:
    """Hash ``password`` here, so the clear password never reaches the server or its log."""
    with psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.username,
        password=server.password,
        dbname=server.database,
    ) as connection:
        return connection.pgconn.encrypt_password(
            password.encode(), role.encode(), b"scram-sha-256"
        ).decode()


def create_role(server: URL, setup: Setup, password: str, *, createdb: bool) -> str:
    role = f"migsupport_test_{setup.kind}_{uuid.uuid4().hex[:8]}"
    verifier = scram_verifier(server, role, password)
    rights = "CREATEDB" if createdb else "NOCREATEDB"
    admin_execute(server, f"CREATE ROLE {role} LOGIN {rights} PASSWORD '{verifier}'")
    setup.roles.append(role)
    # Every statement of the role goes to the server's log.
    admin_execute(server, f"ALTER ROLE {role} SET log_statement = 'all'")
    return role


def owned_database(server: URL, setup: Setup, role: str, password: str) -> URL:
    url = create_pg_database(server)
    setup.databases.append(url)
    admin_execute(server, f'ALTER DATABASE "{url.database}" OWNER TO {role}')
    return url.set(username=role, password=password)


def prepare(server: URL, setup: Setup, folder: Path) -> None:
    password = setup.password
    role = create_role(server, setup, password, createdb=True)
    states = {
        "main": "behind",
        "stamp_plain": "unversioned_at_head",
        "stamp_plan": "unversioned_at_head",
        "stamp_v3": "unversioned_at_head",
        "stamp_refused": "unversioned_unmatched",
        "stamp_force": "unversioned_unmatched",
        "drifted": "drifted",
        "locked": "behind",
        "upgrade_plain": "behind",
        "upgrade_json": "behind",
        "upgrade_v3": "behind",
        "backup": "behind",
        "failing": "behind",
    }
    for key, state in states.items():
        url = owned_database(server, setup, role, password)
        engine = create_engine(url)  # as the role: it owns what it creates
        try:
            reach(engine, state)
            if key == "failing":
                insert_job_with_duplicate_materials(engine)
            elif key == "backup":  # rows, so that pg_dump runs long enough to be seen
                execute(engine, *seed_sql(jobs=500, materials=50_000))
        finally:
            engine.dispose()
        setup.urls[key] = url
    weak = create_role(server, setup, password, createdb=False)
    setup.urls["nocreatedb"] = owned_database(server, setup, weak, password)
    main = setup.urls["main"]
    setup.urls["wrong_password"] = main.set(password=f"Wr0ng-{password}")
    setup.urls["missing"] = main.set(database="migsupport_test_no_such_database")
    setup.urls["unreachable"] = main.set(port=free_port())
    setup.raw_urls["unencoded"] = (
        f"postgresql://{main.username}:{password}@127.0.0.1:{main.port}/{main.database}"
    )
    setup.raw_urls["malformed"] = (
        f"postgresql://{main.username}:{quote(password, safe='')}@127.0.0.1:notaport/"
        f"{main.database}"
    )

    stale = project_copy(folder / "stale")
    edit_script(stale, HEAD)
    failing = project_copy(folder / "failing")
    write_third_revision(failing, FAILING_BODY)
    fails_twice = project_copy(folder / "fails_twice")
    add_revision(
        fails_twice,
        ADDED,
        HEAD,
        'op.execute("ALTER TABLE material_detection_jobs ADD COLUMN priority INTEGER")',
    )
    setup.copies = {"stale": stale, "failing": failing, "fails_twice": fails_twice}


def clean_up(server: URL, setup: Setup) -> None:
    for url in setup.databases:
        drop_pg_database(server, url)
    # Whatever else the roles own: the scratch database --keep kept, or one
    # an interrupted run left.
    engine = sa.create_engine(server, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            left = connection.execute(
                sa.text(
                    "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                    "WHERE r.rolname = ANY(:roles)"
                ),
                {"roles": setup.roles},
            ).scalars()
            left = list(left)
    finally:
        engine.dispose()
    for name in left:
        admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for role in setup.roles:
        admin_execute(server, f"DROP ROLE IF EXISTS {role}")


# -- running -------------------------------------------------------------------------------


class CommandLines:
    """Collect the command line of every process while running, from /proc."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for path in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    line = path.read_bytes()
                except OSError:
                    continue
                if line:
                    self.seen.add(line.replace(b"\0", b" ").decode(errors="replace").strip())
            time.sleep(0.002)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_batch(setup: Setup, names: list[str], folder: Path, outcomes: dict[str, Outcome]) -> None:
    """Run the named runs, at most MAX_PARALLEL at once, and record what each printed."""
    pending = list(names)
    running: list[tuple[str, subprocess.Popen]] = []
    try:
        while pending or running:
            while pending and len(running) < MAX_PARALLEL:
                name = pending.pop(0)
                run = RUNS[name]
                env = {"TMPDIR": str(folder / "tmp")}
                if run.copy:
                    env.update(setup.copies[run.copy].env)
                if run.database in setup.raw_urls:
                    env["DATABASE_URL"] = setup.raw_urls[run.database]
                args = tuple(a.format(backups=folder / "backups") for a in run.args)
                url = setup.urls.get(run.database)
                running.append((name, spawn(*args, database_url=url, **env)))
            name, process = running[0]
            stdout, stderr = process.communicate(timeout=300)
            running.pop(0)
            result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            outcomes[name] = Outcome(RUNS[name], setup.urls.get(RUNS[name].database), result)
    finally:
        for _, process in running:  # only after a failure here
            process.kill()
            process.communicate()


def run_everything(server: URL, setup: Setup, folder: Path) -> Evidence:
    (folder / "tmp").mkdir(parents=True)
    outcomes: dict[str, Outcome] = {}
    batches = {
        batch: [n for n, r in RUNS.items() if r.batch == batch and setup.kind in r.kinds]
        for batch in (1, 2, 3)
    }
    holder_engine = create_engine(server.set(database=setup.urls["locked"].database))
    try:
        with holder_engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(LOCK_NAME)})
            holder.commit()
            run_batch(setup, batches[1], folder, outcomes)
    finally:
        holder_engine.dispose()
    with CommandLines() as lines:
        run_batch(setup, batches[2], folder, outcomes)
    run_batch(setup, batches[3], folder, outcomes)
    # What the commands wrote: temporary files, the project copies' files,
    # the backups (whose content is data, and is not searched).
    written = {
        path: b"" if path.suffix == ".dump" else path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    log_file = server_log(server)
    return Evidence(
        setup=setup,
        outcomes=outcomes,
        log=log_file.read_text(errors="replace") if log_file else "",
        cmdlines=lines.seen,
        written=written,
        backups=sorted((folder / "backups").glob("*")),
    )


@pytest.fixture(scope="module")
def evidence_of(
    password_server: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Evidence]]:
    """Return what one password's runs left behind; each password's runs happen once."""
    found: dict[str, Evidence | BaseException] = {}
    setups: list[Setup] = []

    def evidence(kind: str) -> Evidence:
        if kind not in found:
            setup = Setup(kind=kind, password=PASSWORDS[kind])
            setups.append(setup)
            try:
                folder = tmp_path_factory.mktemp(f"secrets-{kind}")
                prepare(password_server, setup, folder)
                found[kind] = run_everything(password_server, setup, folder)
            except Exception as exc:  # every test of this password reports it
                found[kind] = exc
        result = found[kind]
        if isinstance(result, BaseException):
            raise result
        return result

    try:
        yield evidence
    finally:
        for setup in setups:
            clean_up(password_server, setup)


# -- the assertions ----------------------------------------------------------------------------


def secrets_of(evidence: Evidence) -> set[str]:
    """Every password of the cluster: the roles', the wrong ones, the superuser's."""
    secrets = forms(SUPERUSER_PASSWORD)
    for password in PASSWORDS.values():
        secrets |= forms(password) | forms(f"Wr0ng-{password}")
    return secrets


def leaks(text: str, secrets: set[str]) -> list[str]:
    return sorted(secret for secret in secrets if secret in text)


def expected_line(template: str, url: URL | None) -> re.Pattern[str]:
    """Return the regex of a ``Run.lines`` entry, filled in for ``url``."""
    values = {}
    if url is not None:
        values = {
            "shown": shown(url),
            "server": shown(url._replace(database=None)),
            "role": url.username,
            "port": url.port,
        }
    parts = [re.escape(part.format(**values)) for part in template.split("{any}")]
    return re.compile(".*".join(parts))


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_each_run_exits_as_expected_names_its_database_and_never_shows_the_password(
    kind: str, name: str, evidence_of: Callable[[str], Evidence]
) -> None:
    evidence = evidence_of(kind)
    outcome = evidence.outcomes[name]
    result = outcome.result
    output = result.stdout + result.stderr
    assert result.returncode == outcome.run.status, output
    assert leaks(output, secrets_of(evidence)) == [], output
    lines = result.stdout.splitlines() + result.stderr.splitlines()
    for template in outcome.run.lines:
        pattern = expected_line(template, outcome.url)
        assert any(pattern.fullmatch(line) for line in lines), (pattern.pattern, output)
    if "--traceback" in outcome.run.args:
        assert "Traceback (most recent call last):" in result.stderr, result.stderr
    else:
        assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("kind", PASSWORDS)
def test_the_server_log_never_holds_the_password(
    kind: str, evidence_of: Callable[[str], Evidence]
) -> None:
    evidence = evidence_of(kind)
    assert evidence.log
    assert leaks(evidence.log, secrets_of(evidence)) == []
    # The log did record the roles' statements, and the refused logins.
    role = evidence.setup.urls["main"].username
    assert 'LOG:  statement: CREATE DATABASE "migsupport_scratch_' in evidence.log
    assert f'FATAL:  password authentication failed for user "{role}"' in evidence.log


@pytest.mark.parametrize("kind", PASSWORDS)
def test_no_command_line_holds_the_password(
    kind: str, evidence_of: Callable[[str], Evidence]
) -> None:
    evidence = evidence_of(kind)
    assert leaks("\n".join(evidence.cmdlines), secrets_of(evidence)) == []
    # The sampling saw the backup's pg_dump, the verification, and the server's
    # sessions of the role.
    backup = evidence.setup.urls["backup"]
    assert any(
        "pg_dump -Fc" in line and f"user={backup.username} dbname={backup.database}" in line
        for line in evidence.cmdlines
    ), sorted(evidence.cmdlines)
    assert any("manage.py alembic_verify" in line for line in evidence.cmdlines)
    assert any(line.startswith(f"postgres: {backup.username} ") for line in evidence.cmdlines)


@pytest.mark.parametrize("kind", PASSWORDS)
def test_no_written_file_holds_the_password(
    kind: str, evidence_of: Callable[[str], Evidence]
) -> None:
    evidence = evidence_of(kind)
    secrets = secrets_of(evidence)
    (backup,) = evidence.backups
    assert backup.name.endswith(f"-{BASELINE}.dump")
    assert leaks(backup.name, secrets) == []
    assert backup in evidence.written
    for path, content in evidence.written.items():
        assert leaks(str(path), secrets) == [], path
        assert leaks(content.decode(errors="replace"), secrets) == [], path
