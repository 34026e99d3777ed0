"""How a state is said to people: the words ``alembic_status`` prints, and the admin shows.

One function, so that the command and any page that shows a state word it
alike; the library still prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from migsupport.state import (
    BEHIND,
    DRIFTED,
    EMPTY,
    PARTIALLY_APPLIED,
    UNKNOWN_REVISION,
    UNVERSIONED,
    UP_TO_DATE,
    StateReport,
)

_SUMMARY = {
    EMPTY: "No Alembic-owned objects, and no recorded version.",
    UP_TO_DATE: "The recorded version is the head, and the schema equals it.",
    BEHIND: "The schema equals the recorded version; newer revisions are pending.",
    DRIFTED: "A version is recorded, but the schema differs from it.",
    UNKNOWN_REVISION: "The recorded version is not in the revision scripts.",
    PARTIALLY_APPLIED: (
        "The schema is the recorded version plus part of the next revision: an interrupted "
        "step outside its transaction (a concurrent index build)."
    ),
}

_HINT = {
    EMPTY: "Run `manage.py alembic_upgrade` to create the schema.",
    BEHIND: "Run `manage.py alembic_upgrade` to apply the pending revisions.",
    DRIFTED: (
        "See the safe way back to the recorded revision with `manage.py alembic_repair "
        "--plan`, or write a revision for the change."
    ),
    UNKNOWN_REVISION: (
        "A newer release may have migrated this database, or its revision script was deleted."
    ),
    PARTIALLY_APPLIED: "Run `manage.py alembic_upgrade`: it resumes the interrupted revision.",
}

EDITED_HINT = (
    "Restore the edited scripts, or accept each edit with `manage.py "
    "alembic_upgrade --accept-edited REVISION`; until then the upgrade refuses."
)

SUCCESS = "success"
WARNING = "warning"
ERROR = "error"


@dataclass(frozen=True)
class StateWording:
    """What to say of a state.

    ``summary`` is its sentence; ``hint`` what to do next, if anything;
    ``severity`` is ``success`` (at the head), ``warning`` (a guarded
    command can bring it there) or ``error`` (a person must look).
    ``ledger`` is the ledger's freshness as the report's line says it;
    ``edited_hint`` what to do about revisions edited after they were
    applied, if there are any.
    """

    summary: str
    hint: str | None
    severity: str
    ledger: str
    edited_hint: str | None = None


def describe_state(report: StateReport) -> StateWording:
    """Word ``report`` as ``manage.py alembic_status`` prints it."""
    if report.state == UP_TO_DATE:
        severity = SUCCESS
    elif report.state in (EMPTY, BEHIND, PARTIALLY_APPLIED) or (
        report.state == UNVERSIONED and report.matches
    ):
        severity = WARNING
    else:
        severity = ERROR
    if report.state == UNVERSIONED:
        if report.matches:
            summary = f"No version is recorded, and the schema equals revision {report.matches}."
            hint = (
                f"Run `manage.py alembic_upgrade` to baseline at {report.matches} and "
                f"upgrade, or `manage.py alembic_stamp {report.matches}`."
            )
        else:
            summary = "No version is recorded, and the schema equals no revision."
            hint = "Bring the schema to a known revision before Alembic can manage it."
    else:
        summary, hint = _SUMMARY[report.state], _HINT.get(report.state)
    ledger = report.ledger if report.schema_source != "replay" else "stale, replayed"
    return StateWording(
        summary=summary,
        hint=hint,
        severity=severity,
        ledger=ledger,
        edited_hint=EDITED_HINT if report.edited else None,
    )


__all__ = ["EDITED_HINT", "ERROR", "SUCCESS", "WARNING", "StateWording", "describe_state"]
