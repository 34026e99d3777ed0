"""Apply revisions to a live database: one transaction each, never stalling its traffic.

The models are Django's ``MigrationExecutor`` and Alembic's
``runtime/migration.py``: the executor applies a plan on one connection and
reports through a progress callback; it never prints. What it adds is what a
database serving traffic needs:

- **A lock timeout on every DDL statement.** The session's ``lock_timeout``
  (2 s by default) bounds each statement's wait for a lock, in the
  revision's transaction and in its autocommit blocks (concurrent index
  builds) alike. A statement queued behind a long transaction would queue
  every application query behind itself; with the timeout it gives up first.
- **Retries.** A lock not granted (SQLSTATE ``55P03``), a deadlock
  (``40P01``) or a serialization failure (``40001``) rolls the revision's
  transaction back, and the revision is tried again after an exponential
  backoff with jitter, until a retry budget (10 minutes by default) is
  spent. The revisions' steps are idempotent, so what an autocommit block
  already built is found and kept.
- **Who blocks.** A watcher on a connection of its own samples what the
  deploy's session waits for (``pg_locks``, ``pg_blocking_pids``), so that
  each retry and the final error name the table and the session holding the
  lock (pid, user, application, state, how long its transaction has been
  open), never its query text. It also reports a concurrent build's phase
  and blocks from ``pg_stat_progress_create_index``.
- **Whole revisions.** A revision is reported applied only once it has
  committed; a failure says where the database stays, and whether part of
  the failing revision (built outside its transaction) is already there.
"""

from __future__ import annotations

import contextlib
import io
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from migsupport import deploylog
from migsupport.deploylog import DeployLog
from migsupport.engine import create_engine, error_line
from migsupport.events import (
    Blocker,
    BuildProgress,
    LockRetry,
    Progress,
    RevisionApplied,
    RevisionStarted,
    emit,
)
from migsupport.exceptions import LockNotGranted, MigrationFailed, MigsupportError
from migsupport.history import migrate
from migsupport.snapshot import Snapshot, compare
from migsupport.timeouts import ATTRIBUTE, Timeouts

# SQLSTATEs that mean "wait and try again", and how a person says each.
RETRYABLE = {
    "55P03": "lock not granted",
    "40P01": "deadlock",
    "40001": "serialization failure",
}
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 15.0
WATCH_INTERVAL = 0.1
# How often a concurrent build's progress is reported, at most.
PROGRESS_INTERVAL = 2.0


@dataclass(frozen=True)
class AppliedRevision:
    """One revision applied by an upgrade, committed."""

    revision: str
    down_revision: str | None
    doc: str
    seconds: float
    attempts: int = 1


# -- who blocks ---------------------------------------------------------------------------

_WAITS = """
SELECT c.relname, b.pid, b.usename, b.application_name, b.state,
       EXTRACT(EPOCH FROM clock_timestamp() - b.xact_start)
FROM pg_locks w
LEFT JOIN pg_class c ON c.oid = w.relation
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
JOIN pg_stat_activity b ON b.pid = bp.pid
WHERE w.pid = :pid AND NOT w.granted
ORDER BY b.xact_start NULLS LAST
LIMIT 1
"""

# Only builds on a table others can see: a migration helper's probe builds an
# index for a moment on an uncommitted temporary table, which is no build of
# the revision's. (A plain CREATE INDEX shows no index, index_relid 0.)
_BUILDS = """
SELECT c.relname, i.relname, p.phase, p.blocks_done, p.blocks_total
FROM pg_stat_progress_create_index p
JOIN pg_class c ON c.oid = p.relid
LEFT JOIN pg_class i ON i.oid = p.index_relid
WHERE p.pid = :pid
"""


class LockWatch:
    """What the deploy's session waits for, seen from a connection of its own.

    PostgreSQL only. The connection runs in autocommit, and each sample is
    one short statement, so a concurrent build never waits for it.
    """

    def __init__(self, url: sa.URL, pid: int, report: Callable[[Any], None]) -> None:
        self.pid = pid
        self.report = report
        self.engine = create_engine(url, application_name="migsupport lock watch")
        self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.revision: str | None = None
        self.table: str | None = None
        self.blocker: Blocker | None = None
        self.build: tuple[Any, ...] | None = None
        self.build_started: float | None = None
        self.reported_at = 0.0
        self.guard = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="migsupport lock watch", daemon=True)
        self.thread.start()

    def begin(self, revision: str) -> None:
        """Start watching an attempt of ``revision``: what it waits for, afresh."""
        with self.guard:
            self.revision, self.table, self.blocker, self.build = revision, None, None, None

    def seen(self) -> tuple[str | None, Blocker | None]:
        """Return the table and the blocking session last seen in this attempt."""
        with self.guard:
            return self.table, self.blocker

    def _run(self) -> None:
        while not self.stopped.wait(WATCH_INTERVAL):
            try:
                self._sample()
            except sa.exc.DBAPIError:
                return  # the watch is a help, never a reason to fail a deploy

    def _sample(self) -> None:
        with self.guard:
            revision = self.revision
        if revision is None:
            return
        wait = self.connection.execute(sa.text(_WAITS), {"pid": self.pid}).first()
        build = self.connection.execute(sa.text(_BUILDS), {"pid": self.pid}).first()
        with self.guard:
            if build is not None:
                self.table = build[0] or self.table
            if wait is not None:
                table, pid, user, application, state, seconds = wait
                self.table = table or self.table
                self.blocker = Blocker(
                    pid=pid,
                    user=user,
                    application=application or None,
                    state=state,
                    transaction_seconds=None if seconds is None else float(seconds),
                )
        if build is None:
            self.build_started = None
            return
        now = time.monotonic()
        if self.build_started is None:
            self.build_started = now
        # A build is reported once it has run a while: small tables stay quiet.
        if now - self.build_started >= PROGRESS_INTERVAL:
            phase_changed = self.build is None or self.build[2] != build[2]
            if phase_changed or now - self.reported_at >= PROGRESS_INTERVAL:
                self.build, self.reported_at = tuple(build), now
                self.report(
                    BuildProgress(
                        revision=revision,
                        table=build[0],
                        index=build[1],
                        phase=build[2],
                        blocks_done=int(build[3] or 0),
                        blocks_total=int(build[4] or 0),
                    )
                )

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        with contextlib.suppress(sa.exc.DBAPIError):
            self.connection.close()
        self.engine.dispose()


# -- the executor ----------------------------------------------------------------------------


def retryable(exc: BaseException) -> str | None:
    """Return why ``exc`` means "try again" (a lock not granted, a deadlock...), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        orig = getattr(exc, "orig", None)
        sqlstate = getattr(orig, "sqlstate", None) or getattr(exc, "sqlstate", None)
        if sqlstate in RETRYABLE:
            return RETRYABLE[sqlstate]
        exc = exc.__cause__ or exc.__context__
    return None


def database_cause(exc: BaseException) -> BaseException:
    """Return the database's own error behind ``exc``, or ``exc``.

    A statement that fails inside Alembic's ``autocommit_block`` surfaces as
    SQLAlchemy's ``PendingRollbackError`` from the block's closing commit; the
    server's error (a timeout, a lock not granted) is its context.
    """
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, sa.exc.DBAPIError):
        seen = seen.__cause__ or seen.__context__
    return seen if seen is not None else exc


def connection_lost(exc: BaseException, connection: sa.Connection) -> bool:
    """Return whether ``exc`` means the connection to the server is gone."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    # 57P0x: the server ended the session (pg_terminate_backend, shutdown);
    # 08xxx: the connection failed.
    return (
        exc.connection_invalidated or connection.invalidated or sqlstate.startswith(("57P0", "08"))
    )


def backoff(attempt: int, rng: random.Random) -> float:
    """Return the wait before attempt ``attempt + 1``: doubling from 0.5 s to 15 s, jittered."""
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


class Executor:
    """Apply a plan of revisions on one connection (the one holding the deploy lock).

    ``config`` builds Alembic's ``Config`` on that connection, given an
    ``on_version_apply`` hook. ``expected`` (each revision's schema) and
    ``schema_now`` (the owned live schema) let a failure say whether part of
    the failing revision is left behind.
    """

    def __init__(
        self,
        connection: sa.Connection,
        scripts: ScriptDirectory,
        config: Callable[[Callable[..., None] | None], Config],
        *,
        timeouts: Timeouts,
        progress: Progress | None = None,
        expected: Mapping[str, Snapshot] | None = None,
        schema_now: Callable[[sa.Connection], Snapshot] | None = None,
        rng: random.Random | None = None,
        log: DeployLog | None = None,
    ) -> None:
        self.connection = connection
        self.log = log
        self.attempt = 0
        self.scripts = scripts
        self.make_config = config
        self.timeouts = timeouts
        self.progress = progress
        self.expected = expected or {}
        self.schema_now = schema_now
        self.rng = rng or random.Random()
        self.postgresql = connection.dialect.name == "postgresql"
        self.watch: LockWatch | None = None
        self.emitting = threading.Lock()

    def emit(self, event: Any) -> None:
        # The watcher reports from its own thread.
        with self.emitting:
            emit(self.progress, event)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Hold the session's DDL timeouts, and the watcher, for the block."""
        if not self.postgresql:
            yield
            return
        if self.connection.in_transaction():
            self.connection.commit()
        # SET outside any transaction: a rolled-back transaction would undo it.
        for name, value in self.timeouts.session_settings().items():
            self.connection.exec_driver_sql(f"SET {name} = '{value}'")
        pid = self.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        self.connection.commit()
        self.watch = LockWatch(self.connection.engine.url, pid, self.emit)
        try:
            yield
        finally:
            self.watch.close()
            self.watch = None
            if not self.connection.closed and not self.connection.invalidated:
                with contextlib.suppress(sa.exc.DBAPIError):
                    if self.connection.in_transaction():
                        self.connection.rollback()
                    self.connection.exec_driver_sql("RESET lock_timeout")
                    self.connection.exec_driver_sql("RESET statement_timeout")
                    self.connection.commit()

    def stamp(self, revision: str, *, last: str) -> None:
        """Record ``revision`` (the baseline) in the version table, under the timeouts."""
        config = self._config(None)
        started = deploylog.now()

        def work() -> None:
            migrate(config, self.scripts, "stamp", revision)
            if self.log is not None:
                before = None if last == "base" else last
                self.log.record(
                    deploylog.BASELINE,
                    before=before,
                    after=revision,
                    started_at=started,
                    outcome="baselined",
                    detail="the live schema equals that revision",
                )

        # Nothing of a revision runs, so an error is the database's own, said as such.
        self.run(revision, work, last=last, wrap=False)

    def apply(self, revisions: Sequence[str], *, start: str | None) -> list[AppliedRevision]:
        """Apply ``revisions`` in order, one transaction each; name the one that fails.

        A revision is reported applied only once its transaction has
        committed, so whatever the output says is applied is in the database.
        """
        applied: list[AppliedRevision] = []
        committing = [False]
        underway: dict[str, Any] = {}

        def on_version_apply(**_: Any) -> None:
            # Alembic calls this inside the revision's last transaction, just
            # before its COMMIT: the log row commits with the version, or not at all.
            if self.log is not None:
                script = underway["script"]
                self.log.record(
                    deploylog.UPGRADE,
                    before=None if underway["last"] == "base" else underway["last"],
                    after=script.revision,
                    checksum=deploylog.checksum(script.path),
                    started_at=underway["started"],
                    outcome="applied",
                    detail=f"{self.attempt} attempts" if self.attempt > 1 else "",
                )
            committing[0] = True

        config = self._config(on_version_apply)
        if self.connection.in_transaction():
            self.connection.commit()  # each revision begins its own transaction
        for revision in revisions:
            script = self.scripts.get_revision(revision)
            last = applied[-1].revision if applied else (start or "base")
            started = time.perf_counter()
            underway.update(script=script, last=last, started=deploylog.now())

            def work(revision: str = revision) -> None:
                committing[0] = False
                migrate(config, self.scripts, "upgrade", revision)

            attempts = self.run(revision, work, last=last, doc=script.doc, committing=committing)
            item = AppliedRevision(
                revision=script.revision,
                down_revision=script.down_revision,
                doc=script.doc,
                seconds=time.perf_counter() - started,
                attempts=attempts,
            )
            applied.append(item)
            self.emit(RevisionApplied(**item.__dict__))
        return applied

    def _config(self, on_version_apply: Callable[..., None] | None) -> Config:
        config = self.make_config(on_version_apply)
        config.attributes[ATTRIBUTE] = self.timeouts
        return config

    def run(
        self,
        revision: str,
        work: Callable[[], None],
        *,
        last: str,
        doc: str | None = None,
        committing: list[bool] | None = None,
        what: str | None = None,
        wrap: bool = True,
    ) -> int:
        """Run ``work`` in a transaction and commit; retry while its locks are not granted.

        Return the attempts it took. ``revision`` names the work in progress
        events and messages (``what`` words it, default "revision X");
        ``last`` is where the database stays should it fail. A
        :class:`MigsupportError` raised by ``work`` (a refusal, a failed
        proof) rolls the transaction back and passes through as it is; so does
        any other error when not ``wrap``, unless the connection was lost.
        """
        what = what or f"revision {revision}"
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self.attempt = attempt
            if doc is not None:
                self.emit(RevisionStarted(revision=revision, doc=doc, attempt=attempt))
            if self.watch is not None:
                self.watch.begin(revision)
            try:
                work()
                self.connection.commit()
                return attempt
            except MigsupportError:
                with contextlib.suppress(sa.exc.DBAPIError):
                    if self.connection.in_transaction():
                        self.connection.rollback()
                raise
            except Exception as raised:
                exc = database_cause(raised)
                lost = connection_lost(exc, self.connection)
                # A dead connection cannot roll back; the server already has. A
                # failed statement in an autocommit block leaves SQLAlchemy's
                # transaction invalid: roll it back whether or not it shows.
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    self.connection.rollback()
                reason = None if lost else retryable(exc)
                if reason is None and not (wrap or lost):
                    raise
                if reason is None:
                    raise MigrationFailed(
                        self._failure(
                            exc,
                            revision,
                            last,
                            lost=lost,
                            committing=bool(committing and committing[0]),
                            what=what,
                        )
                    ) from exc
                table, blocker = self.watch.seen() if self.watch is not None else (None, None)
                elapsed = time.monotonic() - started
                delay = backoff(attempt, self.rng)
                if elapsed + delay > self.timeouts.retry_budget:
                    raise self._gave_up(
                        revision, last, reason, table, blocker, attempt, elapsed, what=what
                    ) from exc
                self.emit(
                    LockRetry(
                        revision=revision,
                        attempt=attempt,
                        reason=reason,
                        table=table,
                        blocker=blocker,
                        lock_timeout=self.timeouts.lock,
                        delay=delay,
                        elapsed=elapsed,
                        budget=self.timeouts.retry_budget,
                    )
                )
                time.sleep(delay)

    def _where(self, revision: str, last: str, *, lost: bool = False) -> str:
        """Say where the database stands after ``revision`` failed, over ``last``.

        After a lost connection the schema is read on a new one, if the
        server still answers.
        """
        if self.schema_now is None or (last not in self.expected and last != "base"):
            return f"the database stays at {last}"
        try:
            if lost:
                with self.connection.engine.connect() as fresh:
                    now = self.schema_now(fresh)
            else:
                now = self.schema_now(self.connection)
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    self.connection.rollback()
        except sa.exc.SQLAlchemyError:
            return f"the database stays at {last}"
        below = self.expected.get(last, Snapshot())
        if not compare(now, below):
            return f"the database stays at {last}, and nothing else changed"
        return (
            f"the database stays at {last}, with part of revision {revision} applied (what it "
            "builds outside its transaction; the state reads partially_applied): rerun the "
            f"upgrade, which finishes {revision}"
        )

    def _failure(
        self,
        exc: BaseException,
        revision: str,
        last: str,
        *,
        lost: bool,
        committing: bool,
        what: str,
    ) -> str:
        """Say what failed, where the database stands, and why."""
        detail = error_line(exc)
        if lost and committing:
            # The COMMIT was sent; whether the server ran it is unknown.
            return (
                f"the connection to the database was lost while {what} was being "
                f"committed ({detail}); the database is at {last} or {revision}: rerun the "
                "upgrade, which resumes from the revision the database records"
            )
        where = self._where(revision, last, lost=lost)
        if lost:
            detail = f"the connection to the database was lost ({detail})"
        if where.startswith(f"the database stays at {last}, with part"):
            return f"{what} failed and its transaction was rolled back; {where}: {detail}"
        stays = f"the database stays at {last}"
        return f"{what} failed and was rolled back; {stays}: {detail}"

    def _gave_up(
        self,
        revision: str,
        last: str,
        reason: str,
        table: str | None,
        blocker: Blocker | None,
        attempts: int,
        elapsed: float,
        *,
        what: str,
    ) -> LockNotGranted:
        if reason == "lock not granted":
            cause = f"the lock on table {table}" if table else "a lock"
            cause += f" was not granted within {self.timeouts.lock:g}s"
        else:
            cause = f"a {reason} on table {table}" if table else f"a {reason}"
            cause += " kept recurring"
        if blocker is not None:
            cause += f", held by {blocker}"
        hint = (
            "; retry when that session has finished, or raise --ddl-retry-budget"
            if blocker is not None
            else "; retry later, or raise --ddl-retry-budget"
        )
        message = (
            f"{what} could not take its locks within the retry budget "
            f"({self.timeouts.retry_budget:g}s, {attempts} attempt{'s' if attempts != 1 else ''}): "
            f"{cause}; {self._where(revision, last)}{hint}"
        )
        return LockNotGranted(
            message,
            revision=revision,
            table=table,
            blocker=blocker,
            attempts=attempts,
            elapsed=elapsed,
        )


__all__ = [
    "AppliedRevision",
    "Executor",
    "LockWatch",
    "backoff",
    "offline_sql",
    "retryable",
]


def offline_sql(config: Config, decided: Any) -> str:
    """Return the SQL of an upgrade plan, from Alembic's offline mode, for review.

    ``decided`` is a :class:`migsupport.deploy.UpgradePlan`; ``config`` has no
    connection. Concurrent builds come out between the transactions, as they run.
    """
    buffer = io.StringIO()
    if not decided.changes_anything:
        buffer.write(f"-- Nothing to do: the database is at {decided.target}; there is no SQL.\n")
        return buffer.getvalue()
    config.output_buffer = buffer
    if decided.baseline:
        buffer.write(f"-- Baseline: the live schema equals {decided.baseline}; record it.\n")
        command.stamp(config, decided.baseline, sql=True)
    if decided.revisions:
        start = decided.start
        command.upgrade(config, f"{start}:{decided.target}" if start else decided.target, sql=True)
    return buffer.getvalue()
