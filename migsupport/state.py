"""Classify a database: which state it is in, and the proof.

The classification is read-only. It reads the versions recorded in
``alembic_version`` (never creating the table), takes a snapshot of the live
Alembic-owned schema, and compares it with the schema each revision is known
to produce: from the ledger when it is fresh, or else from a replay on a
scratch database, if the caller allows one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from migsupport import conf
from migsupport.bridge import django_table_names, owned_models, ownership
from migsupport.deploylog import EditedRevision
from migsupport.differences import Difference, ObjectRef
from migsupport.exceptions import MigsupportError, Refused
from migsupport.ledger import Ledger, revision_order
from migsupport.snapshot import (
    Snapshot,
    compare,
    current_schema,
    owned_tables_elsewhere,
    take_snapshot,
)

EMPTY = "empty"
UP_TO_DATE = "up_to_date"
BEHIND = "behind"
UNVERSIONED = "unversioned"
DRIFTED = "drifted"
UNKNOWN_REVISION = "unknown_revision"
PARTIALLY_APPLIED = "partially_applied"
STATES = (EMPTY, UP_TO_DATE, BEHIND, UNVERSIONED, DRIFTED, UNKNOWN_REVISION, PARTIALLY_APPLIED)


class MultipleHeads(MigsupportError):
    """The revision scripts have more than one head."""

    def __init__(self, heads: tuple[str, ...]) -> None:
        self.heads = heads
        super().__init__(
            f"the revision history has {len(heads)} heads: {', '.join(heads)}; "
            'merge them with `alembic merge heads -m "merge"`'
        )


class SchemaUnknown(MigsupportError):
    """The schema at each revision is neither recorded nor replayable."""

    def __init__(self, reasons: list[str], cause: str) -> None:
        self.reasons = reasons
        super().__init__(
            f"the ledger is stale ({'; '.join(reasons)}) and {cause}; "
            "regenerate it with `manage.py alembic_ledger` where a scratch database can be made"
        )


@dataclass(frozen=True)
class StateReport:
    """The state of a database, and the proof of it.

    ``differences`` are :class:`~migsupport.differences.Difference` objects;
    ``unowned`` lists the objects of the schema that no model and no revision
    defines (a warning, never drift); ``reason`` says what is wrong with the
    recorded versions of an ``unknown_revision`` database.
    """

    state: str
    current: str | None
    head: str | None
    pending: tuple[str, ...] = ()
    matches: str | None = None
    nearest: str | None = None
    differences: tuple[Difference, ...] = ()
    ledger: str = "fresh"
    ledger_problems: tuple[str, ...] = field(default_factory=tuple)
    schema_source: str = "ledger"
    unowned: tuple[ObjectRef, ...] = ()
    reason: str | None = None
    partial: str | None = None
    edited: tuple[EditedRevision, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "current": self.current,
            "head": self.head,
            "pending": list(self.pending),
            "matches": self.matches,
            "nearest": self.nearest,
            "reason": self.reason,
            "partial": self.partial,
            "differences": [difference.to_dict() for difference in self.differences],
            "unowned": [obj.to_dict() for obj in self.unowned],
            "ledger": self.ledger,
            "ledger_problems": list(self.ledger_problems),
            "schema_source": self.schema_source,
            "edited": [edit.to_dict() for edit in self.edited],
        }


def single_head(scripts: ScriptDirectory) -> str | None:
    """Return the one head of ``scripts``; several heads is an error."""
    heads = tuple(scripts.get_heads())
    if len(heads) > 1:
        raise MultipleHeads(heads)
    return heads[0] if heads else None


class VersionTableError(MigsupportError):
    """The version table exists but is not one Alembic can read."""


class SchemaElsewhere(Refused):
    """The current schema is empty, but another schema holds the Alembic-owned tables."""

    def __init__(self, current: str | None, found: Mapping[str, list[str]]) -> None:
        self.current = current
        self.found = dict(found)
        where = "; ".join(
            f"schema {schema} holds {', '.join(names)}" for schema, names in found.items()
        )
        target = next(iter(found))
        super().__init__(
            f"refused: the current schema {current} holds none of the Alembic-owned tables, but "
            f"{where}; put {target} first on the search_path (ALTER ROLE ... SET search_path = "
            f"{target}, or ?options=-csearch_path%3D{target} in DATABASE_URL); nothing was changed"
        )


def recorded_versions(connection: sa.Connection) -> tuple[str, ...]:
    """Return the versions in the version table, without creating it.

    A table of that name without Alembic's ``version_num`` column raises
    :class:`VersionTableError`; a NULL version reads as ``"NULL"``, which
    no revision defines.
    """
    table = conf.version_table()
    inspector = sa.inspect(connection)
    if inspector.has_table(table):
        columns = [column["name"] for column in inspector.get_columns(table)]
        if "version_num" not in columns:
            raise VersionTableError(
                f"the table {table} is not Alembic's version table: it has no version_num "
                f"column (its columns: {', '.join(columns) or 'none'}); nothing was changed. "
                "Rename it, or set MIGSUPPORT_VERSION_TABLE to another name"
            )
    context = MigrationContext.configure(connection, opts={"version_table": table})
    return tuple("NULL" if version is None else version for version in context.get_current_heads())


def shown_version(version: str) -> str:
    """Return a recorded version for a message: quoted unless it looks like a revision id."""
    return version if re.fullmatch(r"\w+", version) else repr(version)


def owned_schema(
    connection: sa.Connection, schemas: Mapping[str, Snapshot]
) -> tuple[Snapshot, tuple[ObjectRef, ...]]:
    """Return the owned part of the live schema, and the objects no model or revision defines.

    ``schemas`` are the revisions' schemas: an object any of them holds is owned.
    """
    everything = take_snapshot(connection, hidden=django_table_names())
    return everything.split(ownership(schemas.values()))


def refuse_if_elsewhere(
    connection: sa.Connection, live: Snapshot, current: tuple[str, ...]
) -> None:
    """Raise :class:`SchemaElsewhere` when nothing is here but the owned tables are elsewhere.

    An empty current schema would otherwise be taken for a new database, and
    an upgrade would build a second copy of the tables beside the real ones.
    """
    if current or not live.is_empty or connection.dialect.name != "postgresql":
        return
    schema = current_schema(connection)
    if schema is None:
        search_path = connection.exec_driver_sql("SHOW search_path").scalar()
        raise Refused(
            f"refused: the search_path ({search_path}) names no schema that exists and this "
            "user may use, so there is none to read or migrate; create the schema, grant USAGE "
            "on it, or correct the search_path; nothing was changed"
        )
    names = [model._meta.db_table for model in owned_models()] + [conf.version_table()]
    found = owned_tables_elsewhere(connection, names)
    if found:
        raise SchemaElsewhere(schema, found)


def known_schemas(
    scripts: ScriptDirectory,
    dialect: str,
    ledger: Ledger | None,
    problems: list[str],
    replay: Callable[[], Mapping[str, Snapshot]] | None,
) -> tuple[dict[str, Snapshot], str]:
    """Return the schema per revision, and where it came from ("ledger" or "replay")."""
    if ledger is not None and not problems:
        return ledger.schemas(scripts, dialect), "ledger"
    if replay is None:
        raise SchemaUnknown(problems, "no scratch database may be used to replay the history")
    return dict(replay()), "replay"


def classify(
    connection: sa.Connection,
    scripts: ScriptDirectory,
    *,
    ledger: Ledger | None,
    replay: Callable[[], Mapping[str, Snapshot]] | None = None,
    everything: Snapshot | None = None,
) -> StateReport:
    """Return the state of the database behind ``connection``.

    Read-only: nothing is created, and a transaction this call began is
    rolled back before it returns. ``everything`` is the whole live schema
    if the caller has just taken it, in its open transaction; else it is read.
    """
    head = single_head(scripts)
    dialect = connection.dialect.name
    problems = ledger.stale_reasons(scripts, dialect) if ledger is not None else ["no ledger"]
    began = not connection.in_transaction()
    try:
        current = recorded_versions(connection)
        if everything is None:
            everything = take_snapshot(connection, hidden=django_table_names())
        refuse_if_elsewhere(connection, everything, current)
    finally:
        if began and connection.in_transaction():
            connection.rollback()
    order = revision_order(scripts)
    ledger_status = {"ledger": "stale" if problems else "fresh", "ledger_problems": tuple(problems)}
    if not current and everything.is_empty:
        return StateReport(
            state=EMPTY, current=None, head=head, pending=tuple(order), schema_source="none",
            **ledger_status,
        )  # fmt: skip

    schemas, source = known_schemas(scripts, dialect, ledger, problems, replay)
    live, unowned = everything.split(ownership(schemas.values()))
    common = {"head": head, "schema_source": source, "unowned": unowned, **ledger_status}
    if not current and live.is_empty:
        return StateReport(state=EMPTY, current=None, pending=tuple(order), **common)
    if len(current) > 1 or (current and current[0] not in schemas):
        nearest, differences = _nearest(live, schemas, order)
        unknown = [shown_version(c) for c in current if c not in schemas]
        reason = (
            f"alembic_version records {', '.join(unknown)}, which no revision script defines"
            if unknown
            else f"alembic_version records {len(current)} versions ({', '.join(current)}), "
            "but the revision history has a single head"
        )
        return StateReport(
            state=UNKNOWN_REVISION,
            current=",".join(map(shown_version, current)),
            nearest=nearest,
            differences=tuple(differences),
            reason=reason,
            **common,
        )
    if not current:
        matches = _exact_match(live, schemas, order)
        if matches is not None:
            return StateReport(
                state=UNVERSIONED,
                current=None,
                matches=matches,
                pending=_pending(order, matches),
                **common,
            )
        nearest, differences = _nearest(live, schemas, order)
        return StateReport(
            state=UNVERSIONED,
            current=None,
            nearest=nearest,
            differences=tuple(differences),
            **common,
        )
    version = current[0]
    differences = compare(live, schemas[version])
    if differences:
        following = _pending(order, version)[:1]
        if following and partly_applied(live, schemas[version], schemas[following[0]]):
            return StateReport(
                state=PARTIALLY_APPLIED,
                current=version,
                pending=_pending(order, version),
                partial=following[0],
                differences=tuple(differences),
                **common,
            )
        return StateReport(state=DRIFTED, current=version, differences=tuple(differences), **common)
    pending = _pending(order, version)
    return StateReport(
        state=UP_TO_DATE if not pending else BEHIND,
        current=version,
        pending=pending,
        **common,
    )


def _flat(snapshot: Snapshot) -> dict[tuple[str, ...], Any]:
    """Return every object and property of ``snapshot`` by its path, for a piecewise comparison."""
    flat: dict[tuple[str, ...], Any] = {}
    for kind, objects in snapshot.kinds().items():
        for name, shape in objects.items():
            if kind != "tables":
                flat[(kind, name)] = shape
                continue
            for key, value in shape.items():
                if isinstance(value, dict):
                    for child, child_shape in value.items():
                        flat[(kind, name, key, child)] = child_shape
                else:
                    flat[(kind, name, key)] = value
    return flat


def partly_applied(live: Snapshot, before: Snapshot, after: Snapshot) -> bool:
    """Return whether ``live`` is ``before`` plus part of what leads to ``after``.

    Piece by piece (each column, constraint, index, trigger, label list...),
    the live schema holds either what ``before`` has or what ``after`` has;
    an index may also be the one ``after`` has but left INVALID by an
    interrupted concurrent build, which the resumed revision rebuilds. That
    is what a revision interrupted after a step outside its transaction
    leaves; anything else is drift.
    """
    have, was, will = _flat(live), _flat(before), _flat(after)
    for path in have.keys() | was.keys() | will.keys():
        value = have.get(path)
        if value == was.get(path) or value == will.get(path):
            continue
        wanted = will.get(path)
        rebuildable = (
            len(path) == 4
            and path[2] == "indexes"
            and isinstance(value, dict)
            and isinstance(wanted, dict)
            and not value.get("valid", True)
            and {**value, "valid": True} == {**wanted, "valid": True}
        )
        if not rebuildable:
            return False
    return have != was


def _pending(order: list[str], version: str) -> tuple[str, ...]:
    return tuple(order[order.index(version) + 1 :])


def _exact_match(live: Snapshot, schemas: Mapping[str, Snapshot], order: list[str]) -> str | None:
    """Return the earliest revision whose schema equals ``live``.

    The earliest: when revisions share a schema (a data-only revision), the
    later ones still run, which is the safe side. Only a schema with the
    same object names is compared, and as data first, so that a match
    serializes nothing.
    """
    for revision in order:
        schema = schemas[revision]
        if schema.same_names(live) and schema == live:
            return revision
    return None


def _nearest(
    live: Snapshot, schemas: Mapping[str, Snapshot], order: list[str]
) -> tuple[str | None, list[Difference]]:
    """Return the revision with the fewest differences from ``live``, and them.

    On a tie the later revision wins: drift usually happens near the tip.
    """
    nearest: str | None = None
    fewest = compare(live, Snapshot())
    for revision in order:
        schema = schemas[revision]
        # Each table or enum present on one side only is one difference at
        # least: a revision already further off than the best is skipped.
        floor = len(live.tables.keys() ^ schema.tables.keys()) + len(
            live.enums.keys() ^ schema.enums.keys()
        )
        if nearest is not None and floor > len(fewest):
            continue
        differences = compare(live, schema)
        if nearest is None or len(differences) <= len(fewest):
            nearest, fewest = revision, differences
    return nearest, fewest
