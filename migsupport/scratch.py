"""Scratch databases: created for one job, always dropped afterwards.

On PostgreSQL, a uniquely named database on the same server, with the same
credentials, as the database being worked on. That takes the CREATEDB right,
and a user without it gets an error saying so. On SQLite, a file in a new
temporary folder.
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
from sqlalchemy.pool import NullPool

from migsupport.engine import safe_url
from migsupport.exceptions import MigsupportError

PREFIX = "migsupport_scratch_"


class ScratchDatabaseError(MigsupportError):
    """A scratch database could not be created."""


def _autocommit_engine(url: URL) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


@contextlib.contextmanager
def scratch_database(url: URL, *, keep: bool = False, hint: str | None = None) -> Iterator[URL]:
    """Yield the URL of a new empty database beside ``url``; drop it afterwards.

    It is dropped however the block ends, Ctrl-C included, unless ``keep``.
    ``hint`` ends the error a user without CREATEDB gets: what else they may do.
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
    try:
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except sa.exc.ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) == "42501":
                raise ScratchDatabaseError(
                    f"user {url.username or '(default)'} may not create databases on "
                    f"{safe_url(url.set(database=None))}: the scratch database needs the "
                    f"CREATEDB right (ALTER ROLE ... CREATEDB){', ' + hint if hint else ''}"
                ) from exc
            raise
        yield url.set(database=name)
    finally:
        # Also after an interrupted CREATE: the server may have finished it.
        if not keep:
            _drop_uninterrupted(admin, name)
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
