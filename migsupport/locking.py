"""The deploy lock: one guarded command at a time per database.

On PostgreSQL it is a session-level advisory lock, polled with
``pg_try_advisory_lock`` up to a timeout. Polling, not the blocking
``pg_advisory_lock``: a blocked session waits inside the lock manager, where
it can deadlock against ``CREATE INDEX CONCURRENTLY`` (as Flyway did) and
cannot be given up on cleanly. The lock belongs to the session, so it is
released when the connection ends, even if the process is killed; and so it
is taken only on a connection shown to be a session of its own
(:func:`migsupport.pooler.require_session`), never through a transaction
pooler, and every poll checks that the session is still the same one (behind
a session pooler, every transaction under the lock too).

On SQLite it is a file lock beside the database file.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import sqlalchemy as sa
from sqlalchemy import event

from migsupport.engine import error_line, safe_url
from migsupport.exceptions import LockTimeout, MigsupportError
from migsupport.pooler import announced_pid, moved, require_session

POLL_SECONDS = 0.25
# How long a guarded command waits for the deploy lock unless told otherwise (--lock-timeout).
DEFAULT_TIMEOUT = 300.0
# How long a release may wait for a pooler to lend back the lock's server process.
UNLOCK_SECONDS = 10.0


class ConnectionLost(MigsupportError):
    """The connection died while waiting for the deploy lock; nothing was changed."""


def advisory_key(name: str) -> int:
    """Return a stable signed 64-bit key for the advisory lock called ``name``."""
    digest = hashlib.sha256(f"migsupport:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def advisory_key_parts(key: int) -> dict[str, int]:
    """Return the ``classid`` (high) and ``objid`` (low) halves pg_locks shows for ``key``.

    ``pg_locks`` shows a bigint advisory lock as two unsigned 32-bit halves
    (and ``objsubid = 1``), so a query for the holder of ``key`` matches them.
    """
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}


def _pg_holder(connection: sa.Connection, key: int) -> str | None:
    """Describe the session holding the advisory lock ``key``, if PostgreSQL can tell."""
    row = connection.execute(
        sa.text(
            "SELECT a.pid, a.usename, a.application_name, a.client_addr, a.state, "
            "a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = :high AND l.objid = :low AND l.objsubid = 1 LIMIT 1"
        ),
        advisory_key_parts(key),
    ).first()
    if row is None:
        return None
    pid, user, application, client, state, started = row
    parts = [f"pid {pid}"]
    if user:
        parts.append(f"user {user}")
    if application:
        parts.append(f"application {application!r}")
    if client:
        parts.append(f"client {client}")
    if started:
        parts.append(f"connected since {started:%Y-%m-%d %H:%M:%S %Z}".rstrip())
    if state:
        parts.append(f"state {state}")
    return ", ".join(parts)


def _same_server_process(pid: int) -> Callable[[sa.Connection], None]:
    """Return a ``begin`` listener refusing a transaction on another server process than ``pid``.

    It asks through the driver, so the question opens the transaction: a
    transaction pooler then keeps that server process for all of it.
    """

    def check(connection: sa.Connection) -> None:
        driver = connection.connection.driver_connection
        now = driver.execute("SELECT pg_backend_pid()").fetchone()[0]
        if now != pid:
            driver.rollback()
            raise moved(connection.engine.url, pid, now)

    return check


@contextlib.contextmanager
def _pg_lock(
    connection: sa.Connection, name: str, timeout: float, on_wait: Callable[[str], None] | None
) -> Iterator[None]:
    key = advisory_key(name)
    label = f"PostgreSQL advisory lock {key} ({name})"
    announced = False
    try:
        # A lock on a connection a pooler shares between clients proves nothing.
        session = require_session(connection)
        started = time.monotonic()
        while True:
            acquired, pid = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()"), {"k": key}
            ).one()
            if pid != session:
                # Granted to the server process a pooler lent us: give it back there.
                if acquired:
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
                raise moved(connection.engine.url, session, pid)
            # Session-level: ending this transaction keeps the lock.
            connection.commit()
            if acquired:
                break
            waited = time.monotonic() - started
            if waited >= timeout:
                holder = _pg_holder(connection, key)
                connection.rollback()
                raise LockTimeout(label, waited, holder)
            if not announced and on_wait is not None:
                on_wait(f"{label} is held by {_pg_holder(connection, key) or 'another session'}")
                connection.rollback()
                announced = True
            time.sleep(min(POLL_SECONDS, max(timeout - waited, 0.0)))
    except sa.exc.DBAPIError as exc:
        if not (exc.connection_invalidated or connection.invalidated):
            raise
        url = connection.engine.url
        raise ConnectionLost(
            f"{safe_url(url)}: the connection to the database was lost while waiting for the "
            f"deploy lock ({label}); nothing was changed: {error_line(exc, url)}"
        ) from exc
    # Behind a pooler, every transaction under the lock starts on its server process.
    guard = _same_server_process(session) if announced_pid(connection) != session else None
    if guard is not None:
        event.listen(connection, "begin", guard)
    try:
        yield
    finally:
        if guard is not None:
            event.remove(connection, "begin", guard)
        if not connection.closed and not connection.invalidated:
            with contextlib.suppress(sa.exc.DBAPIError):
                if connection.in_transaction():
                    connection.rollback()
                _pg_unlock(connection, key, session)


def _pg_unlock(connection: sa.Connection, key: int, session: int) -> None:
    """Release the lock on server process ``session``, where it was granted.

    A direct connection is there at once. Through a pooler that moved the
    connection (the deploy then refuses), the unlock is retried until the
    pooler lends ``session`` again; failing that, ``session`` is ended if it
    is idle, since a lock left on a pooled server process would block every
    later deploy, direct ones included, for as long as the pooler keeps it.
    """
    deadline = time.monotonic() + UNLOCK_SECONDS
    while True:
        _, pid = connection.execute(
            sa.text("SELECT pg_advisory_unlock(:k), pg_backend_pid()"), {"k": key}
        ).one()
        connection.commit()
        if pid == session:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS / 10)
    connection.execute(
        sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = :pid AND state = 'idle'"
        ),
        {"pid": session},
    )
    connection.commit()


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    label = f"file lock {path}"
    lock = filelock.FileLock(str(path))
    started = time.monotonic()
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if on_wait is not None:
            on_wait(f"{label} is held by another process")
        try:
            lock.acquire(
                timeout=max(timeout - (time.monotonic() - started), 0), poll_interval=POLL_SECONDS
            )
        except filelock.Timeout:
            raise LockTimeout(label, time.monotonic() - started, "another process") from None
    try:
        yield
    finally:
        lock.release()


def deploy_lock(
    connection: sa.Connection,
    *,
    name: str,
    timeout: float,
    on_wait: Callable[[str], None] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """Hold the deploy lock for the database behind ``connection``.

    ``on_wait`` is called once, with a description of the lock and its
    holder, if the lock is not free at once. :class:`LockTimeout` is raised
    after ``timeout`` seconds.
    """
    if connection.dialect.name == "postgresql":
        return _pg_lock(connection, name, timeout, on_wait)
    database = connection.engine.url.database
    if not database or database == ":memory:":
        return contextlib.nullcontext()
    return _file_lock(Path(f"{database}.migsupport-lock"), timeout, on_wait)
