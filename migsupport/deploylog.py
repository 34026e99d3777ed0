"""The deploy log: one row per change a guarded command made, written in that change's transaction.

Alembic's version table holds one string; this table keeps what Flyway's
``flyway_schema_history`` keeps: who changed what, when, how long it took,
and how (a baseline, a stamp, an applied revision, a repair, the acceptance
of an edited revision). Each row is inserted in the same transaction as the
change it records, so a rolled-back change leaves no row and a committed one
always has its row. A refusal changes nothing and writes nothing.

Like the version table, the log is never part of a snapshot, never drift,
and never dropped by a downgrade: no revision and no model defines it.

Each applied revision's row keeps the checksum of its script. Comparing it
with the script today catches a revision edited after it was deployed, as
Flyway's ``validate`` does.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from migsupport import conf

# What a row records.
BASELINE = "baseline"
STAMP = "stamp"
UPGRADE = "upgrade"
REPAIR = "repair"
ACCEPT = "accept"
ACTIONS = (BASELINE, STAMP, UPGRADE, REPAIR, ACCEPT)


def _table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("revision_before", sa.String(255)),
        sa.Column("revision_after", sa.String(255)),
        sa.Column("checksum", sa.String(64)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("db_user", sa.String(255)),
        sa.Column("host", sa.String(255)),
        sa.Column("app_version", sa.String(255)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )


def table() -> sa.Table:
    """Return the log's table, named by ``MIGSUPPORT_DEPLOY_LOG_TABLE``."""
    return _table(conf.deploy_log_table())


def checksum(path: str | Path) -> str:
    """Return the SHA-256 of a revision script's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LogEntry:
    """One row of the deploy log."""

    id: int
    command: str
    action: str
    revision_before: str | None
    revision_after: str | None
    checksum: str | None
    started_at: dt.datetime
    finished_at: dt.datetime
    duration_seconds: float
    db_user: str | None
    host: str | None
    app_version: str | None
    outcome: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        return data


@dataclass(frozen=True)
class EditedRevision:
    """An applied revision whose script changed after it was applied."""

    revision: str
    recorded: str
    current: str

    @property
    def message(self) -> str:
        return (
            f"revision {self.revision} was edited after it was applied: its script's checksum "
            f"is {short(self.current)}, the deploy log recorded {short(self.recorded)}"
        )

    def to_dict(self) -> dict[str, str]:
        return {"revision": self.revision, "recorded": self.recorded, "current": self.current}


def short(digest: str) -> str:
    """Return the first 12 hex digits of a checksum, as messages show it."""
    return digest[:12]


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; every row is written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class DeployLog:
    """The deploy log of the database behind ``connection``."""

    def __init__(self, connection: sa.Connection, command: str = "") -> None:
        self.connection = connection
        self.command = command
        self.table = table()

    def exists(self) -> bool:
        return sa.inspect(self.connection).has_table(self.table.name)

    def record(
        self,
        action: str,
        *,
        before: str | None,
        after: str | None,
        started_at: dt.datetime,
        outcome: str,
        checksum: str | None = None,
        detail: str = "",
    ) -> None:
        """Insert one row in the connection's current transaction, creating the table if needed.

        The caller commits or rolls back with the change itself.
        """
        assert action in ACTIONS, action
        finished = now()
        self.table.create(self.connection, checkfirst=True)
        self.connection.execute(
            self.table.insert().values(
                command=self.command,
                action=action,
                revision_before=before,
                revision_after=after,
                checksum=checksum,
                started_at=started_at,
                finished_at=finished,
                duration_seconds=max((finished - started_at).total_seconds(), 0.0),
                db_user=self._user(),
                host=socket.gethostname(),
                app_version=conf.app_version(),
                outcome=outcome,
                detail=detail,
            )
        )

    def _user(self) -> str | None:
        if self.connection.dialect.name == "postgresql":
            return self.connection.exec_driver_sql("SELECT current_user").scalar()
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return None

    def count(self) -> int:
        if not self.exists():
            return 0
        return self.connection.execute(sa.select(sa.func.count()).select_from(self.table)).scalar()

    def entries(self, limit: int | None = None, offset: int = 0) -> list[LogEntry]:
        """Return the rows, newest first."""
        if not self.exists():
            return []
        query = self.table.select().order_by(self.table.c.id.desc()).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        rows = []
        for row in self.connection.execute(query).mappings():
            values = dict(row)
            values["started_at"] = _aware(values["started_at"])
            values["finished_at"] = _aware(values["finished_at"])
            rows.append(LogEntry(**values))
        return rows

    def checksums(self) -> dict[str, str]:
        """Return the latest recorded checksum of each applied (or accepted) revision."""
        if not self.exists():
            return {}
        t = self.table
        query = (
            sa.select(t.c.revision_after, t.c.checksum)
            .where(t.c.action.in_((UPGRADE, ACCEPT)), t.c.checksum.is_not(None))
            .order_by(t.c.id)
        )
        return {revision: digest for revision, digest in self.connection.execute(query)}

    def covered(self) -> tuple[set[str], set[str]]:
        """Return the revisions applied under the log, and those it baselined or stamped."""
        if not self.exists():
            return set(), set()
        t = self.table
        query = sa.select(t.c.action, t.c.revision_after).where(t.c.revision_after.is_not(None))
        applied: set[str] = set()
        marked: set[str] = set()
        for action, revision in self.connection.execute(query):
            (applied if action == UPGRADE else marked).add(revision)
        return applied, marked


def edited_revisions(
    recorded: dict[str, str], scripts: Iterable[tuple[str, str | Path]]
) -> tuple[EditedRevision, ...]:
    """Return the revisions whose script today differs from the checksum the log recorded.

    ``scripts`` gives each known revision's id and script path.
    """
    edited = []
    for revision, path in scripts:
        if revision in recorded:
            current = checksum(path)
            if current != recorded[revision]:
                edited.append(EditedRevision(revision, recorded[revision], current))
    return tuple(edited)


def before_log(
    path_to_current: Sequence[str],
    ancestors: dict[str, Sequence[str]],
    applied: set[str],
    marked: set[str],
) -> tuple[str, ...]:
    """Return the revisions the database has that no log row accounts for.

    ``path_to_current`` lists the revisions from the base to the recorded one;
    ``ancestors`` maps a revision to its own path from the base. A baseline or
    stamp accounts for its revision and everything below it.
    """
    accounted = set(applied)
    for revision in marked:
        accounted.update(ancestors.get(revision, ()))
    return tuple(revision for revision in path_to_current if revision not in accounted)
