"""Decide what a guarded stamp or upgrade may do, from a state report.

These functions only decide. They raise :class:`Refused` (or a subclass)
with the differences when the proof fails, and otherwise return a plan the
caller carries out on its one connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util.exc import CommandError as AlembicCommandError

from migsupport.engine import error_line
from migsupport.exceptions import Refused, SchemaDrift, UnknownRevision
from migsupport.ledger import revision_order
from migsupport.state import (
    BEHIND,
    DRIFTED,
    EMPTY,
    PARTIALLY_APPLIED,
    UNKNOWN_REVISION,
    UNVERSIONED,
    UP_TO_DATE,
    StateReport,
    shown_version,
)

BASE = "base"


def resolve_revision(scripts: ScriptDirectory, revision: str) -> str:
    """Return the full id of ``revision`` (an id, a unique prefix, ``head`` or ``base``)."""
    heads = tuple(scripts.get_heads())
    if revision == BASE:
        return BASE
    try:
        script = scripts.get_revision(revision)
    except AlembicCommandError as exc:
        detail: str | None = error_line(exc.__cause__ or exc)
        if isinstance(exc.__cause__, ResolutionError):
            # No revision, or several, start with it; Alembic names three candidates at most.
            candidates = sorted(
                s.revision for s in scripts.walk_revisions() if s.revision.startswith(revision)
            )
            detail = (
                f"the prefix {revision!r} is ambiguous: it matches {', '.join(candidates)}"
                if len(candidates) > 1
                else None
            )
        raise UnknownRevision(revision, heads, detail) from exc
    if script is None:
        raise UnknownRevision(revision, heads)
    return script.revision


@dataclass(frozen=True)
class UpgradePlan:
    """What an upgrade will do: the baseline it takes, then the revisions it applies."""

    target: str
    start: str | None
    baseline: str | None
    revisions: tuple[str, ...]

    @property
    def changes_anything(self) -> bool:
        return bool(self.baseline or self.revisions)


def plan_upgrade(
    report: StateReport, scripts: ScriptDirectory, target: str, *, baseline: bool
) -> UpgradePlan:
    """Return what upgrading a database in ``report``'s state to ``target`` means.

    Raise :class:`Refused` for a state no upgrade may touch.
    """
    order = revision_order(scripts)
    if target == BASE:
        raise Refused("cannot upgrade to base; `alembic downgrade` goes down, unguarded")
    if report.state == DRIFTED:
        raise SchemaDrift(
            f"refused: the schema differs from the recorded revision {report.current}; "
            "nothing was changed",
            report.differences,
        )
    if report.state == UNKNOWN_REVISION:
        reason = (
            report.reason
            or f"alembic_version records {report.current}, which no revision script defines"
        )
        if reason.endswith("which no revision script defines"):
            reason += " (a newer release migrated this database, or a revision was deleted)"
        raise Refused(f"refused: {reason}; nothing was changed", report.differences)
    if report.state == UNVERSIONED and report.matches is None:
        raise SchemaDrift(
            "refused: no version is recorded, and the schema equals no revision "
            f"(nearest: {report.nearest or 'none'}); nothing was changed",
            report.differences,
        )
    start: str | None = None
    taken: str | None = None
    if report.state == UNVERSIONED:
        if not baseline:
            raise Refused(
                f"refused: no version is recorded, but the schema equals revision "
                f"{report.matches}; record it with `manage.py alembic_stamp {report.matches}`, "
                "or run without --no-baseline"
            )
        start = taken = report.matches
    elif report.state in (UP_TO_DATE, BEHIND, PARTIALLY_APPLIED):
        # Partially applied: the interrupted revision runs again; its steps are idempotent.
        start = report.current
    elif report.state != EMPTY:  # pragma: no cover - every state is handled above
        raise Refused(f"refused: unexpected state {report.state}")
    begin = order.index(start) + 1 if start else 0
    end = order.index(target) + 1
    if end < begin:
        raise Refused(
            f"refused: the target {target} is older than {start}, the revision the database is "
            "at, and the guarded upgrade never downgrades (`alembic downgrade` goes down, "
            "unguarded); nothing was changed"
        )
    return UpgradePlan(
        target=target, start=start, baseline=taken, revisions=tuple(order[begin:end])
    )


@dataclass(frozen=True)
class StampPlan:
    """What a stamp will do: the version it writes over, and the proof it found."""

    target: str
    current: str | None
    proven: bool
    differences: tuple[Any, ...]

    @property
    def changes_anything(self) -> bool:
        return self.current != (None if self.target == BASE else self.target)


def plan_stamp(
    target: str, current: tuple[str, ...], differences: tuple[Any, ...], *, force: bool
) -> StampPlan:
    """Return what stamping ``target`` over the recorded ``current`` versions means.

    ``differences`` are those of the live schema from ``target``'s; any of
    them means no proof. Raise :class:`SchemaDrift` when the stamp would
    write without proof and ``force`` is false. A database already at
    ``target`` needs no stamp, proof or not.
    """
    plan = StampPlan(
        target=target,
        current=",".join(map(shown_version, current)) or None,
        proven=not differences,
        differences=tuple(differences),
    )
    if plan.changes_anything and differences and not force:
        raise SchemaDrift(
            f"refused: the schema does not equal revision {target}, so it cannot be "
            "stamped; nothing was written (--force stamps without proof)",
            plan.differences,
        )
    return plan
