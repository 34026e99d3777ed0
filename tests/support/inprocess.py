"""Commands run in this process, on a database alias of their own; dumps; template copies.

For the tests that run many commands on many databases (the proof's catalog,
the repair's): ``call_command`` costs no interpreter start-up, and each
database gets a Django alias for the block (:func:`database_alias`). A
command's ``CommandError`` is its one-line error (:func:`run_command`).
``pg_dump`` reads a database byte for byte, to prove that nothing changed.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import environ
import sqlalchemy as sa
from django.core.management import CommandError, call_command
from django.db import connections
from sqlalchemy.engine import URL

from tests.support.commands import django_url


def pg_dump(url: URL, *options: str) -> str:
    """Return ``pg_dump``'s plain-text dump of the database at ``url``."""
    result = subprocess.run(
        ["pg_dump", "--no-password", *options, "-d", url.render_as_string(hide_password=False)
         .replace("postgresql+psycopg://", "postgresql://")],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    # pg_dump 15.14 and later fence the script with a random \restrict key.
    return "".join(
        line
        for line in result.stdout.splitlines(keepends=True)
        if not line.startswith(("\\restrict ", "\\unrestrict "))
    )


@dataclass
class Templates:
    """Template databases, built once: every case starts from a copy of one."""

    server: URL
    made: dict[str, URL] = field(default_factory=dict)

    def copy(self, template: str) -> URL:
        name = f"migsupport_test_{uuid.uuid4().hex[:12]}"
        source = self.made[template].database
        engine = sa.create_engine(
            self.server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        finally:
            engine.dispose()
        return self.server.set(database=name)


@contextlib.contextmanager
def database_alias(url: URL) -> Iterator[str]:
    """Register ``url`` as a Django database alias for the commands, for the block."""
    alias = f"proof_{uuid.uuid4().hex[:8]}"
    configured = connections.configure_settings(
        {
            "default": connections.settings["default"],
            alias: environ.Env.db_url_config(django_url(url)),
        }
    )
    connections.settings[alias] = configured[alias]
    try:
        yield alias
    finally:
        if alias in connections:
            connections[alias].close()
            del connections[alias]
        del connections.settings[alias]


@dataclass(frozen=True)
class Outcome:
    """What a command printed; its one-line error, if it raised one; its exit status."""

    stdout: str
    stderr: str
    error: str | None
    code: int = 0


def run_command(name: str, *args: str, alias: str) -> Outcome:
    """Run a management command in this process; a CommandError is its one-line error.

    The exit status is what ``manage.py`` would exit with: 1 for an error,
    the code of a ``sys.exit`` (``--check``), 0 otherwise.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command(name, *args, database=alias, stdout=stdout, stderr=stderr, no_color=True)
    except CommandError as exc:
        return Outcome(stdout.getvalue(), stderr.getvalue(), str(exc), exc.returncode)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        return Outcome(stdout.getvalue(), stderr.getvalue(), None, code)
    return Outcome(stdout.getvalue(), stderr.getvalue(), None)
