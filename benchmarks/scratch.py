"""What every benchmark's run shares: its scratch databases, dropped however it ends.

A benchmark calls :func:`catch_interrupts` first, then makes its databases
with one :class:`Databases` and calls ``drop_all`` in a ``finally``. Ctrl-C
and SIGTERM become a ``KeyboardInterrupt``, so the ``finally`` runs; a
signal that arrived while a C call swallowed the exception is raised again
at the next :func:`checkpoint`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import sqlalchemy as sa

_signalled: list[int] = []


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: Any) -> None:
    _signalled.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def catch_interrupts() -> None:
    """Turn Ctrl-C and SIGTERM into ``KeyboardInterrupt`` for the rest of the run."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def checkpoint() -> None:
    """Raise if a signal came in whose KeyboardInterrupt Python swallowed.

    An exception raised inside a weakref callback or ``__del__`` (which a
    signal can land in, during garbage collection say) is only printed.
    """
    if _signalled:
        raise KeyboardInterrupt(f"signal {_signalled[0]}")


def libpq_url(url: sa.URL) -> str:
    """Return ``url`` for libpq (psycopg, ``DATABASE_URL``), with its password."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def execute(url: sa.URL, *statements: str) -> None:
    """Run ``statements`` on ``url`` in autocommit mode, one by one."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


class Databases:
    """The scratch databases of this run, named ``<prefix><run>_<label>_<n>``."""

    def __init__(self, server: sa.URL, prefix: str) -> None:
        self.server = server
        self.prefix = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []
        self.serial = 0

    def execute(self, statement: str, database: str | None = None) -> None:
        """Run ``statement`` on the server, or on ``database``, in autocommit mode."""
        execute(self.server if database is None else self.server.set(database=database), statement)

    def create(self, label: str = "db", template: sa.URL | None = None) -> sa.URL:
        """Create a database, empty or a copy of ``template``; return its URL."""
        checkpoint()
        self.serial += 1
        name = f"{self.prefix}_{label}_{self.serial}"
        self.created.append(name)
        copied = f' TEMPLATE "{template.database}"' if template is not None else ""
        self.execute(f'CREATE DATABASE "{name}"{copied}')
        return self.server.set(database=name)

    def drop(self, url: sa.URL) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        self.created.remove(url.database)

    @contextlib.contextmanager
    def scratch(self, label: str = "db") -> Iterator[sa.URL]:
        """A new empty database for the block, dropped after it."""
        url = self.create(label)
        try:
            yield url
        finally:
            self.drop(url)

    def drop_all(self) -> None:
        """Drop every database still listed, with Ctrl-C and SIGTERM held off meanwhile."""
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for name in list(self.created):
                self.drop(self.server.set(database=name))
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)
