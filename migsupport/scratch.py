"""Scratch databases: created for one job, always dropped afterwards.

On PostgreSQL, a uniquely named database on the same server, with the same
credentials, as the database being worked on. That takes the CREATEDB right,
and a user without it gets an error saying so. On SQLite, a file in a new
temporary folder.

A process killed outright (SIGKILL, a lost machine) cannot drop its scratch
database, so each one is claimed: the process that creates it holds a
session-level advisory lock keyed on its name, from before ``CREATE
DATABASE`` until after ``DROP DATABASE``, on a connection of its own. The
server releases that lock when the process dies. Before creating one, a job
drops the scratch databases nobody claims any more (``drop_abandoned``):
never one still in use, nor one kept on purpose (``--keep``), nor one the
user may not drop.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from migsupport.engine import create_engine, safe_url
from migsupport.exceptions import MigsupportError
from migsupport.locking import advisory_key, advisory_key_parts
from migsupport.pooler import require_session

PREFIX = "migsupport_scratch_"
# The comment a scratch database kept on purpose carries: it is never dropped as abandoned.
KEPT_COMMENT = "migsupport scratch database, kept on purpose"


class ScratchDatabaseError(MigsupportError):
    """A scratch database could not be created."""


def _autocommit_engine(url: URL) -> sa.Engine:
    # migsupport's engine: the same connect timeout as the database's own.
    return create_engine(url).execution_options(isolation_level="AUTOCOMMIT")


def claim_key(name: str) -> int:
    """Return the advisory lock key by which a live process claims the scratch database ``name``."""
    return advisory_key(f"scratch database:{name}")


def drop_abandoned(connection: sa.Connection) -> list[str]:
    """Drop the scratch databases whose creator is gone; return their names.

    ``connection`` is in autocommit mode. A scratch database is abandoned
    when no session holds its claim, in any database of the server: the
    claim is taken before the database exists, so one that exists unclaimed
    belongs to a process that has died. Databases kept on purpose, and those
    the user may not drop (only their owner or a superuser may), are left
    alone, quietly.
    """
    candidates = connection.execute(
        sa.text(
            "SELECT d.datname FROM pg_database d "
            "WHERE d.datname LIKE :pattern AND d.datname <> current_database() "
            "AND pg_has_role(d.datdba, 'USAGE') "
            "AND coalesce(shobj_description(d.oid, 'pg_database'), '') <> :kept "
            "ORDER BY d.datname"
        ),
        {"pattern": PREFIX.replace("_", r"\_") + "%", "kept": KEPT_COMMENT},
    ).scalars()
    dropped: list[str] = []
    for name in list(candidates):
        key = claim_key(name)
        # Taking the claim ourselves keeps two cleanups from dropping the same
        # database at once; the pg_locks query sees claims held from other
        # databases, which an advisory lock does not conflict with.
        if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            continue
        try:
            claimed = connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = :high AND objid = :low AND objsubid = 1 "
                    "AND pid <> pg_backend_pid()"
                ),
                advisory_key_parts(key),
            ).scalar()
            if claimed:
                continue
            try:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except sa.exc.DBAPIError:
                continue  # not ours to drop after all (privileges), or dropped meanwhile
            dropped.append(name)
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    return dropped


@contextlib.contextmanager
def scratch_database(url: URL, *, keep: bool = False, hint: str | None = None) -> Iterator[URL]:
    """Yield the URL of a new empty database beside ``url``; drop it afterwards.

    It is dropped however the block ends, Ctrl-C included, unless ``keep``.
    ``hint`` ends the error a user without CREATEDB gets: what else they may do.
    On PostgreSQL, scratch databases abandoned by killed processes are dropped
    first (``drop_abandoned``).
    """
    if url.get_backend_name() == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix=PREFIX))
        try:
            yield URL.create("sqlite", database=str(folder / "scratch.sqlite3"))
        finally:
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
        return
    name = f"{PREFIX}{uuid.uuid4().hex[:16]}"
    admin = _autocommit_engine(url)
    claim: sa.Connection | None = None
    try:
        # The claim's connection lives as long as the scratch database.
        claim = admin.connect()
        # The claim is a session-level lock: a transaction pooler would share it.
        require_session(claim)
        # Tidying up after others is best effort: it never stops this job.
        with contextlib.suppress(sa.exc.DBAPIError):
            drop_abandoned(claim)
        claim.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": claim_key(name)})
        try:
            claim.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except sa.exc.ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) == "42501":
                raise ScratchDatabaseError(
                    f"user {url.username or '(default)'} may not create databases on "
                    f"{safe_url(url.set(database=None))}: the scratch database needs the "
                    f"CREATEDB right (ALTER ROLE ... CREATEDB){', ' + hint if hint else ''}"
                ) from exc
            raise
        if keep:
            claim.exec_driver_sql(f"COMMENT ON DATABASE \"{name}\" IS '{KEPT_COMMENT}'")
        yield url.set(database=name)
    finally:
        try:
            # Also after an interrupted CREATE: the server may have finished it.
            if not keep and claim is not None:
                _drop_uninterrupted(admin, name)
        finally:
            if claim is not None:
                claim.close()
            admin.dispose()


def _drop_uninterrupted(admin: sa.Engine, name: str) -> None:
    """Drop the scratch database; a Ctrl-C meanwhile waits until it is gone."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
