"""A database serving traffic, for the deploy tests: a long transaction, an application, a spy.

- :class:`Holder` is a session that opens a transaction and keeps it open,
  holding what its statements took (a report reading a table, left idle in
  transaction), until it is told to let go.
- :class:`Application` reads jobs and inserts materials on a steady beat,
  each on a connection of its own, and keeps how long each call waited and
  the id of every material it inserted (``kinds=("insert",)``: a writer alone).
- :class:`LockSpy` samples, from a session of its own, the locks a deploy's
  sessions hold or wait for, so that a test names the locks a deploy takes.

All of them speak psycopg directly, in threads, beside the command under
test, which runs in a subprocess as a deploy does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg
from sqlalchemy.engine import URL, Engine

from tests.support.commands import wait_for
from tests.support.states import scalar


def conninfo(url: URL) -> str:
    """Return ``url`` as a libpq connection string."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Holder:
    """A session holding a transaction open: what a long report does to a deploy.

    The transaction begins as ``begin`` says (``BEGIN ISOLATION LEVEL REPEATABLE
    READ`` keeps a snapshot, which a concurrent index build waits for), then
    runs ``statements``, and stays open until :meth:`release`.
    """

    def __init__(
        self, url: URL, *statements: str, begin: str = "BEGIN", application: str = "report"
    ) -> None:
        self.connection = psycopg.connect(
            conninfo(url), autocommit=True, application_name=application
        )
        self.pid = self.connection.info.backend_pid
        self.connection.execute(begin)
        for statement in statements:
            self.connection.execute(statement)
        self.lock = threading.Lock()

    def execute(self, statement: str) -> None:
        """Run one more statement in the open transaction (it may wait)."""
        self.connection.execute(statement)

    def release(self) -> None:
        """Commit, letting go of every lock."""
        with self.lock:
            if not self.connection.closed:
                self.connection.execute("COMMIT")
                self.connection.close()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


@dataclass
class Application:
    """Reads a job and inserts a material every ``interval`` seconds; records each wait.

    Each call runs on a connection of its own in autocommit, with no timeout:
    whatever a deploy makes it wait, it waits, and the wait is measured.
    ``kinds`` says which loops run (``read``, ``insert``); ``inserted`` holds
    the id of every material an insert committed.
    """

    url: URL
    interval: float = 0.2
    waits: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kinds: tuple[str, ...] = ("read", "insert")
    inserted: list[uuid.UUID] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stopped = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(kind,), daemon=True) for kind in self.kinds
        ]

    def start(self) -> Application:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def worst(self, kind: str | None = None) -> float:
        """Return the longest wait seen (of ``kind``, ``read`` or ``insert``), in seconds."""
        return max((w for k, w in self.waits if kind in (None, k)), default=0.0)

    def _loop(self, kind: str) -> None:
        with psycopg.connect(conninfo(self.url), autocommit=True, application_name="app") as db:
            job = db.execute("SELECT id FROM material_detection_jobs LIMIT 1").fetchone()[0]
            while not self.stopped.is_set():
                started = time.monotonic()
                try:
                    if kind == "read":
                        db.execute("SELECT count(*) FROM material_detection_jobs").fetchone()
                    else:
                        material = uuid.uuid4()
                        db.execute(
                            "INSERT INTO detected_materials (id, job_id, material_name, "
                            "confidence) VALUES (%s, %s, 'probe', 0.5)",
                            (material, job),
                        )
                        self.inserted.append(material)
                except psycopg.Error as exc:
                    self.errors.append(f"{kind}: {exc}")
                self.waits.append((kind, time.monotonic() - started))
                self.stopped.wait(self.interval)


class LockSpy:
    """Samples the locks held or awaited by the sessions of one application name."""

    def __init__(self, url: URL, application: str = "migsupport alembic_upgrade") -> None:
        self.url = url
        self.application = application
        self.seen: set[tuple[str, str, bool]] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> LockSpy:
        self.thread.start()
        return self

    def stop(self) -> set[tuple[str, str, bool]]:
        """Stop sampling; return each (table, lock mode, granted) seen."""
        self.stopped.set()
        self.thread.join(timeout=30)
        return self.seen

    def _loop(self) -> None:
        with psycopg.connect(conninfo(self.url), autocommit=True) as db:
            while not self.stopped.wait(0.02):
                rows = db.execute(
                    "SELECT c.relname, l.mode, l.granted FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "JOIN pg_class c ON c.oid = l.relation "
                    "WHERE a.application_name = %s AND a.datname = current_database() "
                    "AND l.locktype = 'relation' "
                    "AND c.relname IN ('material_detection_jobs', 'detected_materials')",
                    (self.application,),
                ).fetchall()
                self.seen.update((table, mode, granted) for table, mode, granted in rows)


def kill_in_concurrent_build(
    process: subprocess.Popen, engine: Engine, kill: str, snapshot: Holder, what: str
) -> None:
    """SIGKILL ``process`` while its concurrent build waits for ``snapshot``'s old snapshot.

    ``kill`` is "client" (the command alone) or "client and server session"
    (its build's backend is terminated too). ``snapshot`` is released however
    this ends.
    """
    try:
        backend = wait_for(
            lambda: scalar(
                engine,
                "SELECT pid FROM pg_stat_progress_create_index "
                "WHERE phase LIKE 'waiting for old snapshots%'",
            ),
            60,
            what,
        )
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        if kill == "client and server session":
            scalar(engine, "SELECT pg_terminate_backend(:pid)", pid=backend)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        snapshot.release()
