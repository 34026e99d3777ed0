"""What each pending step of an upgrade locks, and what that lock blocks on the live table.

The static rule (a statement's lock, from PostgreSQL's documentation of
each command) meets the live table it will hit (its estimated rows and size
from ``pg_class``), so that ``alembic_upgrade --plan`` can say, before a
deploy, that a step blocks writes on a table of a million rows.

The statements are each pending revision's offline SQL, as ``--sql`` prints it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from migsupport import conf
from migsupport.history import offline_sql
from migsupport.shapes import index_table

# What each table lock mode blocks of the application's reads and writes.
BLOCKS = {
    "ACCESS EXCLUSIVE": "reads and writes",
    "EXCLUSIVE": "writes",
    "SHARE ROW EXCLUSIVE": "writes",
    "SHARE": "writes",
    "SHARE UPDATE EXCLUSIVE": "neither reads nor writes",
    "ROW EXCLUSIVE": "neither reads nor writes",
    "ROW SHARE": "neither reads nor writes",
    "ACCESS SHARE": "neither reads nor writes",
}

_NAME = r'(?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?'
# (pattern, lock mode or None for "no lock on an existing table", the group naming the table)
_RULES: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), mode)
    for pattern, mode in (
        (rf"CREATE (?:UNIQUE )?INDEX CONCURRENTLY (?:IF NOT EXISTS )?{_NAME} ON (?:ONLY )?"
         rf"(?P<table>{_NAME})", "SHARE UPDATE EXCLUSIVE"),
        (rf"CREATE (?:UNIQUE )?INDEX (?:IF NOT EXISTS )?{_NAME} ON (?:ONLY )?(?P<table>{_NAME})",
         "SHARE"),
        (rf"DROP INDEX CONCURRENTLY (?:IF EXISTS )?(?P<index>{_NAME})", "SHARE UPDATE EXCLUSIVE"),
        (rf"DROP INDEX (?:IF EXISTS )?(?P<index>{_NAME})", "ACCESS EXCLUSIVE"),
        (rf"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(?P<table>{_NAME}) VALIDATE CONSTRAINT",
         "SHARE UPDATE EXCLUSIVE"),
        (rf"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(?P<table>{_NAME}) ADD (?:CONSTRAINT {_NAME} )?"
         r"FOREIGN KEY", "SHARE ROW EXCLUSIVE"),
        (rf"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(?P<table>{_NAME}) "
         r"(?:SET STATISTICS|ALTER COLUMN \S+ SET STATISTICS|SET \()", "SHARE UPDATE EXCLUSIVE"),
        (rf"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(?P<table>{_NAME})", "ACCESS EXCLUSIVE"),
        (rf"DROP TABLE (?:IF EXISTS )?(?P<table>{_NAME})", "ACCESS EXCLUSIVE"),
        (rf"TRUNCATE (?:TABLE )?(?P<table>{_NAME})", "ACCESS EXCLUSIVE"),
        (rf"LOCK (?:TABLE )?(?P<table>{_NAME}) IN (?P<mode>[A-Z ]+?) MODE", ""),
        (rf"(?:INSERT INTO|UPDATE|DELETE FROM) (?P<table>{_NAME})", "ROW EXCLUSIVE"),
        (r"CREATE TABLE|CREATE (?:TYPE|DOMAIN|SEQUENCE|FUNCTION|EXTENSION|SCHEMA|VIEW)"
         r"|ALTER TYPE|DROP (?:TYPE|DOMAIN|SEQUENCE|FUNCTION)|COMMENT ON"
         # migsupport.ops' offline CREATE TYPE, which tolerates a type already there.
         r"|DO \$\$ BEGIN CREATE TYPE", None),
    )
)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One statement of a pending revision: the lock it takes, on which table, and its size."""

    revision: str
    statement: str
    table: str | None = None
    lock: str | None = None
    rows: int | None = None
    size: int | None = None
    known: bool = True

    @property
    def blocks(self) -> str:
        """What the lock blocks of the application: reads and writes, writes, or neither."""
        if not self.known:
            return "unknown"
        if self.lock is None or (self.table is not None and self.rows is None):
            # No lock, or one on a table this plan creates, which nothing uses yet.
            return "neither reads nor writes"
        return BLOCKS.get(self.lock, "unknown")

    @property
    def blocking(self) -> bool:
        return self.blocks not in ("neither reads nor writes",)

    @property
    def large(self) -> bool:
        """Whether blocking the table is felt: ``MIGSUPPORT_LARGE_TABLE_ROWS`` rows or more."""
        return self.rows is not None and self.rows >= conf.large_table_rows()

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "statement": self.statement,
            "table": self.table,
            "lock": self.lock,
            "blocks": self.blocks,
            "rows": self.rows,
            "bytes": self.size,
            "warning": self.blocking and self.large,
        }


def statements(sql: str) -> list[str]:
    """Return the statements of an offline script, one line each, without the bookkeeping."""
    found = []
    for chunk in sql.split(";\n"):
        lines = [line for line in chunk.splitlines() if not line.strip().startswith("--")]
        statement = " ".join(" ".join(lines).split())
        if not statement or statement.upper() in ("BEGIN", "COMMIT"):
            continue
        if re.match(r"(UPDATE|INSERT INTO|DELETE FROM) alembic_version\b", statement, re.I):
            continue  # the version's own row
        if re.match(r"CREATE TABLE alembic_version\b", statement, re.I):
            continue
        found.append(statement)
    return found


def classify(statement: str) -> tuple[str | None, str | None, str | None, bool]:
    """Return (table, index, lock mode, known) for one statement."""
    for pattern, mode in _RULES:
        match = pattern.match(statement)
        if match is None:
            continue
        groups = match.groupdict()
        if mode == "":
            mode = " ".join(groups["mode"].upper().split())
        return groups.get("table"), groups.get("index"), mode, True
    return None, None, None, False


def _unquote(name: str | None) -> str | None:
    if name is None:
        return None
    return name.split(".")[-1].strip('"')


def plan_steps(
    connection: sa.Connection,
    config: Config,
    scripts: ScriptDirectory,
    revisions: Iterable[str],
    start: str | None,
) -> list[Step]:
    """Return the steps of ``revisions`` (applied after ``start``) with their locks and tables."""
    dialect = f"{connection.engine.url.get_backend_name()}://"
    steps: list[Step] = []
    previous = start
    schema = connection.execute(sa.text("SELECT current_schema()")).scalar()
    for revision in revisions:
        sql = offline_sql(config, scripts, previous, revision, url=dialect)
        previous = revision
        for statement in statements(sql):
            table, index, lock, known = classify(statement)
            table = _unquote(table)
            if table is None and index is not None:
                table = index_table(connection, schema, _unquote(index))
            size = _size(connection, schema, table)
            steps.append(Step(revision, statement, table=table, lock=lock, known=known, **size))
    connection.rollback()
    return steps


def _size(connection: sa.Connection, schema: str | None, table: str | None) -> dict[str, Any]:
    if table is None:
        return {}
    row = connection.execute(
        sa.text(
            "SELECT greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :table AND n.nspname = :schema AND c.relkind IN ('r', 'p')"
        ),
        {"table": table, "schema": schema},
    ).first()
    if row is None:
        return {}  # made by an earlier step of the plan
    return {"rows": int(row[0]), "size": int(row[1])}


__all__ = ["BLOCKS", "Step", "classify", "plan_steps", "statements"]
