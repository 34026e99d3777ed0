"""``manage.py alembic_status``: the state of a database's Alembic-owned schema."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandParser

from migsupport import api
from migsupport.management.base import MigsupportCommand
from migsupport.state import (
    BEHIND,
    DRIFTED,
    EMPTY,
    PARTIALLY_APPLIED,
    UNKNOWN_REVISION,
    UNVERSIONED,
    UP_TO_DATE,
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
    DRIFTED: "Bring the schema back to the recorded revision, or write a revision for the change.",
    UNKNOWN_REVISION: (
        "A newer release may have migrated this database, or its revision script was deleted."
    ),
    PARTIALLY_APPLIED: "Run `manage.py alembic_upgrade`: it resumes the interrupted revision.",
}


class Command(MigsupportCommand):
    help = (
        "Report the state of a database: empty, up_to_date, behind, unversioned, drifted, "
        "unknown_revision or partially_applied, with the proof. Read-only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--check",
            action="store_true",
            help=(
                "Exit with status 1 unless the state is up_to_date and no applied revision was "
                "edited (a deploy or readiness gate)."
            ),
        )
        parser.add_argument(
            "--no-replay",
            action="store_true",
            help="Never replay the history on a scratch database; a stale ledger is an error.",
        )

    def run(self, *args: Any, **options: Any) -> None:
        result = api.status(options["database"], replay=not options["no_replay"])
        report = result.report
        if options["json"]:
            self.stdout.write(json.dumps(result.to_dict(), indent=2))
        else:
            self._render(result)
        if options["check"] and (report.state != UP_TO_DATE or report.edited):
            sys.exit(1)

    def _render(self, result: api.StatusResult) -> None:
        report = result.report
        style = self.style
        ok = report.state in (UP_TO_DATE, EMPTY, BEHIND, PARTIALLY_APPLIED) or (
            report.state == UNVERSIONED and report.matches
        )
        state_style = style.SUCCESS if report.state == UP_TO_DATE else (
            style.WARNING if ok else style.ERROR
        )  # fmt: skip
        direct = " (direct)" if result.direct else ""
        self.stdout.write(
            style.MIGRATE_HEADING(f"Database {result.database}: {result.url}{direct}")
        )
        self.stdout.write(f"  State:    {state_style(report.state)}")
        self.stdout.write(f"  Current:  {report.current or '(none)'}")
        self.stdout.write(f"  Head:     {report.head or '(none)'}")
        if report.pending:
            self.stdout.write(f"  Pending:  {', '.join(report.pending)}")
        if report.matches:
            self.stdout.write(f"  Matches:  {report.matches}")
        if report.nearest:
            self.stdout.write(f"  Nearest:  {report.nearest}")
        if report.partial:
            self.stdout.write(f"  Partial:  {report.partial} (part of it is in place)")
        ledger = report.ledger if report.schema_source != "replay" else "stale, replayed"
        self.stdout.write(f"  Ledger:   {ledger}")
        for problem in report.ledger_problems:
            self.stdout.write(style.WARNING(f"    - {problem}"))
        if report.state == UNVERSIONED:
            if report.matches:
                summary = (
                    f"No version is recorded, and the schema equals revision {report.matches}."
                )
                hint = (
                    f"Run `manage.py alembic_upgrade` to baseline at {report.matches} and "
                    f"upgrade, or `manage.py alembic_stamp {report.matches}`."
                )
            else:
                summary = "No version is recorded, and the schema equals no revision."
                hint = "Bring the schema to a known revision before Alembic can manage it."
        else:
            summary, hint = _SUMMARY[report.state], _HINT.get(report.state)
        self.stdout.write(f"  {summary}")
        if report.reason:
            self.stdout.write(f"  {report.reason}")
        if report.differences:
            self.stdout.write(style.MIGRATE_HEADING("Differences:"))
            for difference in report.differences:
                self.stdout.write(f"  - {difference}")
        if report.edited:
            self.stdout.write(style.ERROR("Edited after they were applied:"))
            for edit in report.edited:
                self.stdout.write(f"  - {edit.message}")
        self.write_unowned(report.unowned, self.stdout)
        if hint and self.verbosity >= 1:
            self.stdout.write(style.NOTICE(hint))
        if report.edited and self.verbosity >= 1:
            self.stdout.write(
                style.NOTICE(
                    "Restore the edited scripts, or accept each edit with `manage.py "
                    "alembic_upgrade --accept-edited REVISION`; until then the upgrade refuses."
                )
            )
