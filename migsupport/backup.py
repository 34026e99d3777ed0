"""Backups taken before a guarded command changes anything."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from psycopg.conninfo import make_conninfo

from migsupport.exceptions import BackupFailed


def _name(url: sa.URL, version: str | None, suffix: str) -> str:
    stem = Path(url.database or "database").stem
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stem}-{stamp}-{version or 'unversioned'}{suffix}"


def pg_dump_problem(server_major: int) -> str | None:
    """Return why ``pg_dump`` cannot back up this server, or None if it can."""
    executable = shutil.which("pg_dump")
    if executable is None:
        return (
            "pg_dump is not on PATH; install the PostgreSQL client tools "
            f"(version {server_major} or newer), or leave out --backup-dir"
        )
    output = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        return f"cannot tell the version of {executable} from {output.strip()!r}"
    if int(match.group(1)) < server_major:
        return (
            f"{executable} is version {match.group(1)}, older than the server "
            f"({server_major}); install pg_dump {server_major} or newer"
        )
    return None


def backup(connection: sa.Connection, directory: Path, version: str | None) -> Path:
    """Write a backup of the database behind ``connection`` into ``directory``.

    PostgreSQL: ``pg_dump -Fc``, the password passed in the environment, never
    on the command line. SQLite: the backup API, which copies a consistent
    snapshot even while others write.
    """
    url = connection.engine.url
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupFailed(f"cannot create the backup folder {directory}: {exc.strerror}") from exc
    if connection.dialect.name == "sqlite":
        target = directory / _name(url, version, ".sqlite3")
        source = sqlite3.connect(url.database)
        try:
            destination = sqlite3.connect(target)
            with destination:
                source.backup(destination)
            destination.close()
        except sqlite3.Error as exc:
            raise BackupFailed(f"the SQLite backup to {target} failed: {exc}") from exc
        finally:
            source.close()
        return target
    server_major = connection.dialect.server_version_info[0]
    problem = pg_dump_problem(server_major)
    if problem:
        raise BackupFailed(problem)
    target = directory / _name(url, version, ".dump")
    params = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "dbname": url.database,
        **{k: v for k, v in url.query.items() if isinstance(v, str)},
    }
    conninfo = make_conninfo(**{k: v for k, v in params.items() if v is not None})
    # The password goes to pg_dump in PGPASSWORD alone: not on its command
    # line, where any user could read it, nor as the DATABASE_URL it inherits.
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url.password:
        environ["PGPASSWORD"] = str(url.password)
    result = subprocess.run(
        [shutil.which("pg_dump") or "pg_dump", "-Fc", "--no-password", "-f", str(target), "-d",
         conninfo],
        capture_output=True,
        text=True,
        env=environ,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no error output"])[0]
        target.unlink(missing_ok=True)
        raise BackupFailed(f"pg_dump failed: {first}")
    return target
