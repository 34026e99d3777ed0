"""The operations management commands call: one function per command.

Each takes a Django database alias, runs on one connection, reports progress
through an optional callback and returns a result object; nothing here
prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from django.db import DEFAULT_DB_ALIAS

from migsupport import conf, deploylog
from migsupport.backup import backup
from migsupport.bridge import django_table_names, ownership
from migsupport.deploy import BASE, UpgradePlan, plan_stamp, plan_upgrade, resolve_revision
from migsupport.deploylog import DeployLog, EditedRevision, LogEntry
from migsupport.differences import Difference, ObjectRef
from migsupport.engine import Target, command_engine, command_target, error_line, safe_url
from migsupport.events import (
    BackupWritten,
    Baselined,
    LockAcquired,
    LockWaiting,
    Progress,
    ReplayStarted,
    RevisionReplayed,
    StateKnown,
    emit,
)
from migsupport.exceptions import (
    DatabaseUnavailable,
    MigrationFailed,
    MigsupportError,
    Refused,
    SchemaDrift,
)
from migsupport.executor import AppliedRevision, Executor, offline_sql
from migsupport.history import load_scripts, replay_schemas
from migsupport.ledger import Ledger, ledger_path
from migsupport.locking import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from migsupport.locking import deploy_lock
from migsupport.locks import Step, plan_steps
from migsupport.repair import (
    BUILD,
    CHANGE,
    VALIDATE,
    RepairFailed,
    RepairPlan,
    RepairRefused,
    check_transaction,
    plan_repair,
    refusal,
)
from migsupport.repair import Step as RepairStep
from migsupport.snapshot import Snapshot, compare, take_snapshot
from migsupport.state import (
    EMPTY,
    StateReport,
    classify,
    known_schemas,
    owned_schema,
    recorded_versions,
    refuse_if_elsewhere,
    single_head,
)
from migsupport.timeouts import Timeouts
from migsupport.verify import VerifyReport
from migsupport.verify import verify as run_verification


@dataclass(frozen=True)
class UpgradeResult:
    """What a guarded upgrade found, decided and did."""

    database: str
    url: str
    state: StateReport
    target: str
    baseline: str | None = None
    revisions: tuple[str, ...] = ()
    applied: tuple[AppliedRevision, ...] = field(default_factory=tuple)
    after: str | None = None
    backup: Path | None = None
    sql: str | None = None
    dry_run: bool = False
    direct: bool = False
    steps: tuple[Step, ...] = ()
    accepted: tuple[EditedRevision, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "url": self.url,
            "direct": self.direct,
            "state": self.state.state,
            "current": self.state.current,
            "target": self.target,
            "baseline": self.baseline,
            "revisions": list(self.revisions),
            "applied": [
                {"revision": a.revision, "seconds": round(a.seconds, 6)} for a in self.applied
            ],
            "after": self.after,
            "backup": str(self.backup) if self.backup else None,
            "dry_run": self.dry_run,
            "steps": [step.to_dict() for step in self.steps],
            "differences": [difference.to_dict() for difference in self.state.differences],
            "unowned": [obj.to_dict() for obj in self.state.unowned],
            "edited": [edit.to_dict() for edit in self.state.edited],
            "accepted": [edit.to_dict() for edit in self.accepted],
        }


@dataclass(frozen=True)
class StampResult:
    """What a guarded stamp found, and whether it wrote the version."""

    database: str
    url: str
    target: str
    current: str | None
    proven: bool
    differences: tuple[Difference, ...]
    stamped: bool
    dry_run: bool = False
    unowned: tuple[ObjectRef, ...] = ()
    direct: bool = False


def alembic_config(
    *,
    database: str = DEFAULT_DB_ALIAS,
    connection: sa.Connection | None = None,
    on_version_apply: Callable[..., None] | None = None,
) -> Config:
    """Return Alembic's ``Config`` for ``database``, sharing ``connection`` if given."""
    config = Config(str(conf.alembic_ini()))
    config.attributes["database"] = database
    if connection is not None:
        config.attributes["connection"] = connection
    if on_version_apply is not None:
        config.attributes["on_version_apply"] = on_version_apply
    return config


def script_directory(config: Config | None = None) -> ScriptDirectory:
    """Return the project's revision scripts, loaded (:class:`ScriptError` if one cannot be)."""
    return load_scripts(config or alembic_config())


# -- state ---------------------------------------------------------------------


@dataclass(frozen=True)
class StatusResult:
    """A database's state report, and which database it is."""

    database: str
    url: str
    report: StateReport
    direct: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "url": self.url,
            "direct": self.direct,
            **self.report.to_dict(),
        }


class _Knowledge:
    """What one operation knows of the history: scripts, ledger, replayed schemas.

    A replay, when the ledger is stale, runs at most once per operation.
    """

    def __init__(self, config: Config, url: sa.URL, *, replay: bool) -> None:
        self.config = config
        self.scripts = script_directory(config)
        self.ledger = Ledger.load(ledger_path(self.scripts))
        self.url = url
        self.allow_replay = replay
        self._replayed: dict[str, Snapshot] | None = None

    def replayed(self) -> dict[str, Snapshot]:
        if self._replayed is None:
            self._replayed = replay_schemas(
                self.url,
                _detached(self.config),
                hint="or a ledger that is up to date (`manage.py alembic_verify --update-ledger`)",
            )
        return self._replayed

    def classify(
        self, connection: sa.Connection, everything: Snapshot | None = None
    ) -> StateReport:
        replay = self.replayed if self.allow_replay else None
        report = classify(
            connection, self.scripts, ledger=self.ledger, replay=replay, everything=everything
        )
        return dataclasses.replace(report, edited=self.edited(connection))

    def edited(self, connection: sa.Connection) -> tuple[EditedRevision, ...]:
        """Return the applied revisions whose script changed since the deploy log recorded it."""
        began = not connection.in_transaction()
        recorded = DeployLog(connection).checksums()
        if began:
            connection.rollback()  # leave the connection as classify() does
        if not recorded:
            return ()
        scripts = ((script.revision, script.path) for script in self.scripts.walk_revisions())
        return deploylog.edited_revisions(recorded, scripts)

    def schemas(self, dialect: str) -> dict[str, Snapshot]:
        problems = self.ledger.stale_reasons(self.scripts, dialect)
        replay = self.replayed if self.allow_replay else None
        return known_schemas(self.scripts, dialect, self.ledger, problems, replay)[0]


def inspect_state(
    connection: sa.Connection,
    *,
    config: Config | None = None,
    replay: bool = True,
) -> StateReport:
    """Classify the database behind ``connection`` (read-only).

    With a stale ledger and ``replay``, the history is replayed on a scratch
    database beside it. The history (scripts and ledger) is loaded in a
    second thread while the catalog is read, since that read mostly waits
    for the server; a transaction this call began is rolled back.
    """
    config = config or alembic_config()
    began = not connection.in_transaction()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="migsupport history") as pool:
            loading = pool.submit(_Knowledge, config, connection.engine.url, replay=replay)
            everything = take_snapshot(connection, hidden=django_table_names())
            knowledge = loading.result()
        return knowledge.classify(connection, everything)
    finally:
        if began and connection.in_transaction():
            connection.rollback()


def _detached(config: Config) -> Config:
    """Return a copy of ``config`` that shares no connection with the caller."""
    copy = Config(config.config_file_name)
    copy.set_main_option("script_location", config.get_main_option("script_location"))
    return copy


def status(database: str = DEFAULT_DB_ALIAS, *, replay: bool = True) -> StatusResult:
    """Return the state of ``database``, without changing anything.

    It may run through a transaction pooler: it takes no lock.
    """
    where = command_target(database)
    _require_existing_sqlite_file(where.url)
    engine = command_engine(database, "alembic_status")
    with _unavailable_on_driver_error(engine.url, engine), engine.connect() as connection:
        _read_one_snapshot(connection)
        report = inspect_state(connection, config=alembic_config(database=database), replay=replay)
    return StatusResult(database=database, url=where.shown, report=report, direct=where.direct)


def _read_one_snapshot(connection: sa.Connection) -> None:
    """Make a lock-free reader see the database as of one moment.

    Without the deploy lock, a deploy may commit revisions while the state is
    read; under PostgreSQL's default READ COMMITTED each query would see the
    latest commit, so the version could come from before a revision and the
    tables from after it, which looks like drift. One REPEATABLE READ,
    read-only transaction sees every commit whole or not at all, and cannot
    write. (SQLite's transaction already reads one snapshot.)
    """
    if connection.dialect.name == "postgresql":
        connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)


def _require_existing_sqlite_file(url: sa.URL) -> None:
    """Refuse a SQLite path with no file: opening it would create an empty database."""
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(url.database).exists()
    ):
        raise DatabaseUnavailable(f"{safe_url(url)}: the database file does not exist")


@contextlib.contextmanager
def _unavailable_on_driver_error(url: sa.URL, engine: sa.Engine | None = None) -> Iterator[None]:
    """Turn a driver error inside the block into :class:`DatabaseUnavailable` naming ``url``.

    ``engine``, if given, is disposed of however the block ends.
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnavailable(_database_error(exc, url)) from exc
    finally:
        if engine is not None:
            engine.dispose()


def _database_error(exc: sa.exc.DBAPIError, url: sa.URL | None = None) -> str:
    """Return the first line of a driver error, with the password masked."""
    where = f"{safe_url(url)}: " if url is not None else ""
    return f"{where}{error_line(exc, url)}"


# -- upgrade and stamp ---------------------------------------------------------


def _prepare(
    database: str, revision: str, command_name: str
) -> tuple[_Knowledge, str, sa.Engine, Target]:
    """Resolve ``revision`` and open what a guarded command needs, before connecting."""
    config = alembic_config(database=database)
    scripts = script_directory(config)
    target = resolve_revision(scripts, revision)
    single_head(scripts)
    engine = command_engine(database, command_name)
    return _Knowledge(config, engine.url, replay=True), target, engine, command_target(database)


def _deploy_lock(
    connection: sa.Connection, database: str, timeout: float, progress: Progress | None
) -> contextlib.AbstractContextManager[None]:
    """Return the deploy lock of ``database``, reporting a wait through ``progress``."""
    return deploy_lock(
        connection,
        name=f"{conf.version_table()}:{database}",
        timeout=timeout,
        on_wait=lambda holder: emit(progress, LockWaiting(lock=holder)),
    )


def upgrade(
    revision: str = "head",
    *,
    database: str = DEFAULT_DB_ALIAS,
    plan: bool = False,
    sql: bool = False,
    baseline: bool = True,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    timeouts: Timeouts | None = None,
    backup_dir: Path | None = None,
    progress: Progress | None = None,
    accept_edited: Sequence[str] = (),
) -> UpgradeResult:
    """Upgrade ``database`` to ``revision``, guarded.

    One connection carries the deploy lock, the state check, the baseline
    stamp and the upgrade. An unversioned database whose schema equals a
    revision is baselined there first (unless ``baseline`` is false); a
    drifted, unknown or unmatched one is refused before anything changes.
    Each revision runs in its own transaction, under ``timeouts`` (the DDL
    lock timeout and the retry budget; default: the settings), and the
    result is checked against the target's schema. ``lock_timeout`` is the
    wait for the deploy lock. ``plan`` and ``sql`` change nothing.

    An applied revision whose script was edited since (its checksum in the
    deploy log differs) is refused, unless ``accept_edited`` names it; the
    acceptance is logged, and later runs compare against the new checksum.
    """
    timeouts = timeouts or Timeouts.from_settings()
    knowledge, target, engine, where = _prepare(database, revision, "alembic_upgrade")
    accepting = tuple(resolve_revision(knowledge.scripts, name) for name in accept_edited)
    url = safe_url(engine.url)
    with _unavailable_on_driver_error(engine.url, engine), engine.connect() as connection:
        if plan or sql:
            # Read-only paths take no lock: they never write.
            _read_one_snapshot(connection)
            decided, result = _decide(connection, knowledge, database, url, target, baseline)
            result = dataclasses.replace(result, dry_run=True, direct=where.direct)
            if plan and connection.dialect.name == "postgresql" and decided.revisions:
                steps = plan_steps(
                    connection,
                    _detached(knowledge.config),
                    knowledge.scripts,
                    decided.revisions,
                    decided.start,
                )
                result = dataclasses.replace(result, steps=tuple(steps))
            if sql:
                result = dataclasses.replace(
                    result, sql=offline_sql(alembic_config(database=database), decided)
                )
            return result
        with _deploy_lock(connection, database, lock_timeout, progress):
            emit(progress, LockAcquired())
            result = _guarded_upgrade(
                connection,
                knowledge,
                database,
                url,
                target,
                baseline,
                backup_dir,
                timeouts,
                progress,
                accepting,
            )
            return dataclasses.replace(result, direct=where.direct)


@contextlib.contextmanager
def _in_state(report: StateReport) -> Iterator[None]:
    """Tag an error raised inside the block with the state the database was found in."""
    try:
        yield
    except MigsupportError as exc:
        if exc.state is None:
            exc.state = report.state
        raise


def _decide(
    connection: sa.Connection,
    knowledge: _Knowledge,
    database: str,
    url: str,
    target: str,
    baseline: bool,
) -> tuple[UpgradePlan, UpgradeResult]:
    """Classify the database and decide the upgrade; the result records nothing done yet."""
    report = knowledge.classify(connection)
    with _in_state(report):
        decided = plan_upgrade(report, knowledge.scripts, target, baseline=baseline)
    return decided, UpgradeResult(
        database=database,
        url=url,
        state=report,
        target=target,
        baseline=decided.baseline,
        revisions=decided.revisions,
        after=report.current,
    )


def _guarded_upgrade(
    connection: sa.Connection,
    knowledge: _Knowledge,
    database: str,
    url: str,
    target: str,
    baseline: bool,
    backup_dir: Path | None,
    timeouts: Timeouts,
    progress: Progress | None,
    accepting: tuple[str, ...] = (),
) -> UpgradeResult:
    # Classified after the lock: another deploy may have finished meanwhile.
    decided, result = _decide(connection, knowledge, database, url, target, baseline)
    report = result.state
    emit(progress, StateKnown(report=report))
    with _in_state(report):
        log = DeployLog(connection, "alembic_upgrade")
        accepted = _accept_edits(connection, log, report, accepting)
        result = dataclasses.replace(result, accepted=accepted)
        if not decided.changes_anything:
            return result
        # The target's schema must be known before anything changes, so that the
        # result can be checked: from the ledger, or a replay now.
        expected = knowledge.schemas(connection.dialect.name)
        backup_path = None
        if backup_dir is not None:
            backup_path = backup(connection, Path(backup_dir), report.current)
            connection.rollback()
            emit(progress, BackupWritten(path=backup_path))
        executor = Executor(
            connection,
            knowledge.scripts,
            lambda hook: alembic_config(
                database=database, connection=connection, on_version_apply=hook
            ),
            timeouts=timeouts,
            progress=progress,
            expected=expected,
            schema_now=lambda on: owned_schema(on, expected)[0],
            log=log,
        )
        with executor.timed():
            if decided.baseline:
                executor.stamp(decided.baseline, last=report.current or "base")
                emit(progress, Baselined(revision=decided.baseline))
            applied = executor.apply(decided.revisions, start=decided.start)
        after = recorded_versions(connection)
        differences = compare(owned_schema(connection, expected)[0], expected[target])
        connection.rollback()
        if after != (target,) or differences:
            raise SchemaDrift(
                f"the upgrade to {target} finished, but the database records "
                f"{', '.join(after) or 'no version'} and its schema differs from that revision",
                tuple(differences),
            )
        return dataclasses.replace(result, applied=tuple(applied), after=target, backup=backup_path)


def _accept_edits(
    connection: sa.Connection,
    log: DeployLog,
    report: StateReport,
    accepting: tuple[str, ...],
) -> tuple[EditedRevision, ...]:
    """Refuse edited revisions not accepted; log each acceptance, in its own transaction."""
    edited = {edit.revision: edit for edit in report.edited}
    for revision in accepting:
        if revision not in edited:
            raise Refused(
                f"refused: --accept-edited {revision}: that revision's script matches the deploy "
                "log (or it was never applied under it), so there is no edit to accept; nothing "
                "was changed"
            )
    refused = [edit for revision, edit in edited.items() if revision not in accepting]
    if refused:
        raise Refused(
            "refused: "
            + "; ".join(edit.message for edit in refused)
            + ". A revision must not change after it was deployed: restore "
            + ("its script" if len(refused) == 1 else "the scripts")
            + ", or accept the edit with "
            + " ".join(f"--accept-edited {edit.revision}" for edit in refused)
            + "; nothing was changed"
        )
    if not accepting:
        return ()
    if connection.in_transaction():
        connection.commit()
    for revision in accepting:
        edit = edited[revision]
        log.record(
            deploylog.ACCEPT,
            before=revision,
            after=revision,
            checksum=edit.current,
            started_at=deploylog.now(),
            outcome="accepted",
            detail=(
                f"edited after it was applied: {deploylog.short(edit.recorded)} became "
                f"{deploylog.short(edit.current)}"
            ),
        )
    connection.commit()
    return tuple(edited[revision] for revision in accepting)


def stamp(
    revision: str = "head",
    *,
    database: str = DEFAULT_DB_ALIAS,
    plan: bool = False,
    force: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    progress: Progress | None = None,
) -> StampResult:
    """Record ``revision`` as the version of ``database`` only when its schema proves it.

    Proof: the live Alembic-owned schema equals the schema the ledger records
    for ``revision`` (``base``: no Alembic-owned objects). Without proof it
    raises :class:`SchemaDrift` and writes nothing, unless ``force``.
    """
    knowledge, target, engine, where = _prepare(database, revision, "alembic_stamp")
    url = safe_url(engine.url)
    with _unavailable_on_driver_error(engine.url, engine), engine.connect() as connection:
        # --plan only reads: it takes no lock.
        if plan:
            _read_one_snapshot(connection)
        lock = (
            contextlib.nullcontext()
            if plan
            else _deploy_lock(connection, database, lock_timeout, progress)
        )
        with lock:
            current = recorded_versions(connection)
            everything = take_snapshot(connection, hidden=django_table_names())
            refuse_if_elsewhere(connection, everything, current)
            connection.rollback()
            schemas = knowledge.schemas(connection.dialect.name)
            live, unowned = everything.split(ownership(schemas.values()))
            expected = Snapshot() if target == BASE else schemas[target]
            decided = plan_stamp(target, current, tuple(compare(live, expected)), force=force)
            result = StampResult(
                database=database,
                url=url,
                target=target,
                current=decided.current,
                proven=decided.proven,
                differences=decided.differences,
                stamped=False,
                dry_run=plan,
                unowned=unowned,
                direct=where.direct,
            )
            if plan or not decided.changes_anything:
                return result
            started = deploylog.now()
            # purge: a version no script defines cannot be moved from, only replaced.
            command.stamp(
                alembic_config(database=database, connection=connection), target, purge=True
            )
            DeployLog(connection, "alembic_stamp").record(
                deploylog.STAMP,
                before=decided.current,
                after=None if target == BASE else target,
                started_at=started,
                outcome="stamped" if decided.proven else "forced",
                detail=(
                    "the live schema equals that revision"
                    if decided.proven
                    else f"forced over {len(decided.differences)} difference(s)"
                ),
            )
            connection.commit()
            return dataclasses.replace(result, stamped=True)


# -- the deploy log --------------------------------------------------------------


@dataclass(frozen=True)
class LogView:
    """A page of the deploy log, newest first, and what the database holds from before it."""

    database: str
    url: str
    exists: bool
    total: int
    entries: tuple[LogEntry, ...]
    before_log: tuple[str, ...]
    direct: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "url": self.url,
            "direct": self.direct,
            "total": self.total,
            "before_log": list(self.before_log),
            "entries": [entry.to_dict() for entry in self.entries],
        }


def read_log(
    database: str = DEFAULT_DB_ALIAS, *, limit: int | None = 50, offset: int = 0
) -> LogView:
    """Return ``limit`` rows of ``database``'s deploy log from ``offset``, newest first (read-only).

    ``before_log`` lists the revisions the database records that no row
    accounts for: applied before the log existed.
    """
    where = command_target(database)
    _require_existing_sqlite_file(where.url)
    scripts = script_directory(alembic_config(database=database))
    engine = command_engine(database, "alembic_log")
    with _unavailable_on_driver_error(engine.url, engine), engine.connect() as connection:
        _read_one_snapshot(connection)
        log = DeployLog(connection)
        exists = log.exists()
        entries = tuple(log.entries(limit, offset))
        total = log.count()
        current = recorded_versions(connection)
        applied, marked = log.covered()
        connection.rollback()
    return LogView(
        database=database,
        url=where.shown,
        exists=exists,
        total=total,
        entries=entries,
        before_log=_before_log(scripts, current, applied, marked),
        direct=where.direct,
    )


def _before_log(
    scripts: ScriptDirectory, current: tuple[str, ...], applied: set[str], marked: set[str]
) -> tuple[str, ...]:
    def path(revision: str) -> list[str]:
        try:
            return [script.revision for script in scripts.iterate_revisions(revision, "base")][::-1]
        except RevisionError:  # a version no script defines has no known path
            return []

    ordered = [revision for version in current for revision in path(version)]
    ancestors = {revision: path(revision) for revision in marked}
    return deploylog.before_log(list(dict.fromkeys(ordered)), ancestors, applied, marked)


# -- repair ----------------------------------------------------------------------


@dataclass(frozen=True)
class RepairResult:
    """What a repair found and planned, and whether it carried the plan out."""

    database: str
    url: str
    plan: RepairPlan
    repaired: bool = False
    after: StateReport | None = None
    backup: Path | None = None
    dry_run: bool = False
    sql: str | None = None
    direct: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "url": self.url,
            "direct": self.direct,
            **self.plan.to_dict(),
            "repaired": self.repaired,
            "after": self.after.state if self.after is not None else None,
            "backup": str(self.backup) if self.backup else None,
            "dry_run": self.dry_run,
        }


def _plan_repair(
    connection: sa.Connection,
    knowledge: _Knowledge,
    revision: str | None,
    allow_behaviour_changes: bool,
) -> RepairPlan:
    # One read of the catalog, in one transaction, serves the state and the plan.
    everything = take_snapshot(connection, hidden=django_table_names())
    report = knowledge.classify(connection, everything)
    schemas = knowledge.schemas(connection.dialect.name) if report.state != EMPTY else {}
    live, _ = everything.split(ownership(schemas.values()))
    return plan_repair(
        connection,
        report,
        live,
        schemas,
        revision=revision,
        allow_behaviour_changes=allow_behaviour_changes,
    )


def repair(
    revision: str | None = None,
    *,
    database: str = DEFAULT_DB_ALIAS,
    plan: bool = False,
    sql: bool = False,
    backup_dir: Path | None = None,
    allow_behaviour_changes: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    timeouts: Timeouts | None = None,
    progress: Progress | None = None,
) -> RepairResult:
    """Converge a drifted or unmatched database to a revision by safe steps, proven.

    The target is the recorded revision of a drifted database, or for an
    unversioned one that matches nothing, ``revision`` or the nearest one.
    If any fix needs a person, :class:`RepairRefused` is raised and nothing
    changes. Otherwise, under the deploy lock and the DDL timeouts: the
    concurrent builds, then one transaction proven against the target before
    it commits, then the validations, then the proof again. A failed proof
    rolls back what it can and drops what was built concurrently. ``plan``
    and ``sql`` change nothing. Repair never records a version.
    """
    timeouts = timeouts or Timeouts.from_settings()
    knowledge, _, engine, where = _prepare(database, "head", "alembic_repair")
    target = resolve_revision(knowledge.scripts, revision) if revision else None
    url = safe_url(engine.url)
    with _unavailable_on_driver_error(engine.url, engine), engine.connect() as connection:
        if plan or sql:
            _read_one_snapshot(connection)
            decided = _plan_repair(connection, knowledge, target, allow_behaviour_changes)
            return RepairResult(
                database=database,
                url=url,
                plan=decided,
                dry_run=True,
                sql=decided.sql() if sql and decided.needed else None,
                direct=where.direct,
            )
        with _deploy_lock(connection, database, lock_timeout, progress):
            emit(progress, LockAcquired())
            # Classified and planned again under the lock: another deploy may have run.
            decided = _plan_repair(connection, knowledge, target, allow_behaviour_changes)
            emit(progress, StateKnown(report=decided.report))
            result = RepairResult(database=database, url=url, plan=decided, direct=where.direct)
            if not decided.needed:
                return result
            with _in_state(decided.report):
                if decided.blocked:
                    raise RepairRefused(refusal(decided), decided)
                backup_path = None
                if backup_dir is not None:
                    backup_path = backup(connection, Path(backup_dir), decided.report.current)
                    connection.rollback()
                    emit(progress, BackupWritten(path=backup_path))
                _carry_out(connection, knowledge, decided, timeouts, progress)
            after = knowledge.classify(connection)
            return dataclasses.replace(result, repaired=True, after=after, backup=backup_path)


def _carry_out(
    connection: sa.Connection,
    knowledge: _Knowledge,
    decided: RepairPlan,
    timeouts: Timeouts,
    progress: Progress | None,
) -> None:
    """Run the plan's phases; prove the schema inside the transaction and after the validations."""
    assert decided.target is not None
    schemas = knowledge.schemas(connection.dialect.name)
    expected = schemas[decided.target]
    stays = decided.report.current or "no recorded version"
    executor = Executor(
        connection,
        knowledge.scripts,
        lambda hook: knowledge.config,
        timeouts=timeouts,
        progress=progress,
    )
    built: list[RepairStep] = []

    def run(sql: str) -> Callable[[], None]:
        def work() -> None:
            connection.exec_driver_sql(sql)

        return work

    started = deploylog.now()

    def transaction() -> None:
        for step in decided.steps(CHANGE):
            connection.exec_driver_sql(step.sql)
        remaining = check_transaction(owned_schema(connection, schemas)[0], expected, decided)
        if remaining:
            raise RepairFailed(
                f"refused: the repair to {decided.target} would not converge; its transaction "
                "was rolled back",
                tuple(remaining),
            )
        # Recorded in the proven transaction: a repair rolled back leaves no row.
        DeployLog(connection, "alembic_repair").record(
            deploylog.REPAIR,
            before=decided.report.current,
            after=decided.report.current,
            started_at=started,
            outcome="repaired",
            detail=f"to {decided.target}: " + "; ".join(fix.action for fix in decided.fixes),
        )

    with executor.timed():
        try:
            for step in decided.steps(BUILD):
                with _autocommit(connection):
                    executor.run("repair", run(step.sql), last=stays, what="the repair")
                built.append(step)
            executor.run("repair", transaction, last=stays, what="the repair")
        except BaseException as exc:
            left = _undo(connection, built)
            if isinstance(exc, RepairFailed):
                raise RepairFailed(
                    f"{exc}, and what was built concurrently was dropped again"
                    + (f" but for {', '.join(left)}" if left else "")
                    + "; nothing else was changed",
                    exc.differences,
                ) from exc
            raise
        for step in decided.steps(VALIDATE):
            executor.run("repair", run(step.sql), last=stays, what="the repair")
    remaining = compare(owned_schema(connection, schemas)[0], expected)
    connection.rollback()
    if remaining:
        raise SchemaDrift(
            f"the repair to {decided.target} finished, but the schema still differs from it",
            tuple(remaining),
        )


@contextlib.contextmanager
def _autocommit(connection: sa.Connection) -> Iterator[None]:
    """Run the block in autocommit, as a concurrent build must, then go back."""
    if connection.in_transaction():
        connection.commit()
    if connection.dialect.name != "postgresql":
        yield
        return
    level = connection.get_isolation_level()
    connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.execution_options(isolation_level=level)


def _undo(connection: sa.Connection, built: list[RepairStep]) -> list[str]:
    """Drop what the repair built concurrently; return what could not be dropped."""
    left = []
    for step in reversed(built):
        if step.undo is None:
            continue
        try:
            with _autocommit(connection):
                connection.exec_driver_sql(step.undo)
        except sa.exc.DBAPIError:
            left.append(step.undo.rsplit(" ", 1)[-1])
    return left


# -- ledger --------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerResult:
    """The ledger's path, and what a check or update found."""

    path: Path
    dialects: tuple[str, ...]
    problems: tuple[str, ...] = ()
    changed: bool = False


def check_ledger(dialects: Sequence[str] = ("postgresql", "sqlite")) -> LedgerResult:
    """Return the ledger's problems: scripts changed or missing, dialects unrecorded."""
    scripts = script_directory()
    path = ledger_path(scripts)
    ledger = Ledger.load(path)
    problems: list[str] = []
    for dialect in dialects:
        for reason in ledger.stale_reasons(scripts, dialect):
            if reason not in problems:
                problems.append(reason)
    return LedgerResult(path=path, dialects=tuple(dialects), problems=tuple(problems))


def update_ledger(
    databases: Sequence[str] = (DEFAULT_DB_ALIAS,),
    *,
    progress: Progress | None = None,
) -> LedgerResult:
    """Replay the history on a scratch database per dialect and rewrite the ledger.

    SQLite is always replayed, in a temporary file; each alias in
    ``databases`` adds its own dialect, on a scratch database on its server.
    """
    scripts = script_directory()
    path = ledger_path(scripts)
    old = Ledger.load(path)
    urls = {"sqlite": sa.make_url("sqlite://")}
    for alias in databases:
        url = command_target(alias).url
        urls.setdefault(url.get_backend_name(), url)
    recorded = {}
    for dialect, url in urls.items():
        emit(progress, ReplayStarted(dialect=dialect, url=safe_url(url)))

        def step(revision: str, dialect: str = dialect) -> None:
            emit(progress, RevisionReplayed(dialect=dialect, revision=revision))

        try:
            recorded[dialect] = replay_schemas(url, alembic_config(), progress=step)
        except sa.exc.DBAPIError as exc:
            raise MigrationFailed(f"replay on {dialect} failed: {_database_error(exc)}") from exc
    new = old.with_schemas(scripts, recorded)
    changed = new != old
    if changed:
        new.write(path)
    return LedgerResult(path=path, dialects=tuple(sorted(recorded)), changed=changed)


# -- verify ----------------------------------------------------------------------


def verify(
    database: str = DEFAULT_DB_ALIAS,
    *,
    keep: bool = False,
    update_ledger: bool = False,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify the migration history on a scratch database beside ``database``.

    With ``update_ledger``, the ledger is rewritten from this run; SQLite's
    schemas are replayed as well when ``database`` is not SQLite.
    """
    url = command_target(database).url
    script_directory()  # a script that cannot be loaded fails here, in one line

    def sqlite_schemas() -> dict[str, dict[str, Snapshot]]:
        if url.get_backend_name() == "sqlite":
            return {}
        return {"sqlite": replay_schemas(sa.make_url("sqlite://"), alembic_config())}

    with _unavailable_on_driver_error(url):
        return run_verification(
            url,
            alembic_config(database=database),
            keep=keep,
            update_ledger=update_ledger,
            extra_schemas=sqlite_schemas,
            progress=progress,
        )


__all__ = [
    "AppliedRevision",
    "DatabaseUnavailable",
    "LedgerResult",
    "LogView",
    "MigrationFailed",
    "RepairResult",
    "StampResult",
    "StatusResult",
    "UpgradeResult",
    "alembic_config",
    "check_ledger",
    "command_target",
    "inspect_state",
    "read_log",
    "repair",
    "script_directory",
    "stamp",
    "status",
    "update_ledger",
    "upgrade",
    "verify",
]
