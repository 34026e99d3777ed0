"""Whether a connection is a PostgreSQL session of its own, as the deploy lock needs.

A session-level advisory lock belongs to a server process. A connection
pooler in transaction or statement mode (PgBouncer's ``pool_mode =
transaction``) hands a client a server process for one transaction only and
then gives it to the next client: two deploys can then both "hold" the lock
(advisory locks are re-entrant per session), and a lock taken on one server
process is released on another. So a command that takes the deploy lock, or
claims a scratch database, first makes sure its connection is a session:

1. The server process id the connection announced when it opened (libpq's
   BackendKeyData) is compared with ``pg_backend_pid()``. A pooler answers
   the start-up itself and announces an id of its own making, so when they
   agree nothing sits between: one round trip, and done.
2. When they differ a pooler sits between, in session mode (harmless) or
   not. A second client, through the same URL, opens a transaction: a
   transaction pooler hands it the server process this connection has just
   released. Then this connection asks again, a few times, while that
   transaction is open: a session keeps its own server process, a
   transaction pooler moves it to another, or has none free to lend it.
   Every wait is bounded: clients that each hold a server process in a
   probe while queueing for another would otherwise wait on each other for
   as long as the pooler lets them queue.

Under load a transaction pooler can still pass by chance, so the deploy lock
keeps checking behind a pooler (:mod:`migsupport.locking`): every poll, and
every transaction while it holds the lock, must run on the same server
process.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq

from migsupport.engine import error_line, safe_url
from migsupport.exceptions import MigsupportError

# How long the second client waits for a server process from the pooler.
PROBE_SECONDS = 5.0
# Transactions this connection runs while the second client holds one open:
# under load the pooler may hand the released server process to a third
# client and back, so one could be a chance return.
PROBE_ROUNDS = 3

FIX = (
    "Set DIRECT_DATABASE_URL (MIGSUPPORT_DIRECT_DATABASES for another alias) to a direct "
    "connection to PostgreSQL for the deploy commands; the application keeps DATABASE_URL"
)


class NotASession(MigsupportError):
    """The connection does not keep one PostgreSQL session; nothing was changed."""

    def __init__(self, url: str, evidence: str) -> None:
        self.url = url
        self.evidence = evidence
        super().__init__(
            f"{url}: refused: the connection goes through a pooler, and {evidence}; a pooler "
            "in transaction mode (PgBouncer's pool_mode = transaction) shares one server "
            "session between clients, which breaks the deploy lock, so nothing was changed. "
            f"{FIX}"
        )


def moved(url: sa.URL, before: int, after: int) -> NotASession:
    """Return the refusal for a connection seen on server process ``before``, then ``after``."""
    return NotASession(
        safe_url(url),
        f"it moved from server process {before} to {after} between two transactions",
    )


def _end_transaction(connection: sa.Connection) -> None:
    # Ending it hands the server process back to a pooler, if one sits between.
    if connection.in_transaction():
        connection.commit()


def _backend_pid(connection: sa.Connection) -> int:
    pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    _end_transaction(connection)
    return int(pid)


def _pid_within(connection: sa.Connection, seconds: float) -> int | None:
    """Return ``pg_backend_pid()`` of ``connection``, or None if unanswered within ``seconds``.

    Asked outside any transaction, through the driver's own protocol object,
    so that the wait is bounded. Unanswered, the question still waits in the
    pooler's queue, so the connection is invalidated (its socket closed).
    :class:`_QuestionFailed` is raised, the connection invalidated too, when
    the answer is an error (a pooler's ``query_wait_timeout``, say).
    """
    pgconn = connection.connection.driver_connection.pgconn
    try:
        pgconn.send_query(b"SELECT pg_backend_pid()")
        done, pid = _results(pgconn, time.monotonic() + seconds)
    except (_ProbeFailed, psycopg.Error) as exc:
        connection.invalidate()
        raise _QuestionFailed(str(exc)) from exc
    if not done:
        connection.invalidate()
        return None
    return pid


def announced_pid(connection: sa.Connection) -> int | None:
    """Return the server process id the connection was told at start-up, if the driver says.

    Behind a pooler it is the pooler's own number, not ``pg_backend_pid()``.
    """
    info = getattr(connection.connection.driver_connection, "info", None)
    return getattr(info, "backend_pid", None)


def _results(pgconn: Any, deadline: float) -> tuple[bool, int | None]:
    """Read the results of the query sent on ``pgconn`` until ``deadline``.

    Return whether they all arrived, and the first integer the query returned.
    """
    value: int | None = None
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                return True, value
            if result.status == pq.ExecStatus.TUPLES_OK and value is None:
                value = int(result.get_value(0, 0))
            elif result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                # The message alone, as the driver words a server's error.
                message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
                raise _ProbeFailed(message.decode(errors="replace").strip() or "the query failed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, value
        select.select([pgconn.socket], [], [], remaining)


class _ProbeFailed(Exception):
    """A query sent without the driver failed."""


class _QuestionFailed(Exception):
    """The checked connection's own question for its server process failed."""


@contextlib.contextmanager
def _second_client(engine: sa.Engine) -> Iterator[int | None]:
    """Yield the server process of a second client inside an open transaction, or None.

    None means the pooler gave it no server process within ``PROBE_SECONDS``.
    The transaction is rolled back, and the client closed, afterwards.
    """
    raw = engine.raw_connection()
    pgconn = raw.driver_connection.pgconn
    done = finished = False
    try:
        # Sent without the driver, so that the wait for an answer is bounded.
        pgconn.send_query(b"BEGIN; SELECT pg_backend_pid()")
        done, pid = _results(pgconn, time.monotonic() + PROBE_SECONDS)
        yield pid if done else None
    finally:
        try:
            if done:
                pgconn.send_query(b"ROLLBACK")
                finished, _ = _results(pgconn, time.monotonic() + PROBE_SECONDS)
        finally:
            if finished:
                raw.close()
            else:
                # A query may still be waiting: close the socket rather than wait for it.
                raw.invalidate()


def require_session(connection: sa.Connection) -> int | None:
    """Return the server process id of ``connection``, once shown to be a session of its own.

    :class:`NotASession` is raised when it is not: a transaction or statement
    pooler sits between. Any open transaction is committed first; on SQLite
    there is nothing to check, and None is returned.
    """
    if connection.dialect.name != "postgresql":
        return None
    _end_transaction(connection)
    pid = _backend_pid(connection)
    if announced_pid(connection) == pid:
        return pid
    url = connection.engine.url
    try:
        with _second_client(connection.engine) as other:
            if other is None:
                raise NotASession(
                    safe_url(url),
                    f"a second connection through it got no server process within "
                    f"{PROBE_SECONDS:g}s, so it cannot be shown to keep one session",
                )
            if other == pid:
                raise NotASession(
                    safe_url(url),
                    f"its server process {pid} served another client between two of its "
                    "transactions",
                )
            for _ in range(PROBE_ROUNDS):
                try:
                    again = _pid_within(connection, PROBE_SECONDS)
                except _QuestionFailed as exc:
                    raise NotASession(
                        safe_url(url),
                        "its own question for its server process, asked while a second "
                        f"connection through it held one, failed: {error_line(exc, url)}",
                    ) from exc
                if again is None:
                    raise NotASession(
                        safe_url(url),
                        f"it got no server process within {PROBE_SECONDS:g}s while a second "
                        "connection through it held one, so it does not keep one session",
                    )
                if again != pid:
                    raise moved(url, pid, again)
    # The second client's own errors come from the driver, unwrapped.
    except (_ProbeFailed, psycopg.Error, sa.exc.DBAPIError) as exc:
        if isinstance(exc, sa.exc.DBAPIError) and connection.invalidated:
            raise
        raise NotASession(
            safe_url(url),
            "a second connection through it, to show that it keeps one session, failed: "
            f"{error_line(exc, url)}",
        ) from exc
    return pid
