"""``manage.py alembic_status``: the state of a database's Alembic-owned schema."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandParser

from migsupport import api
from migsupport.management.base import MigsupportCommand
from migsupport.state import UP_TO_DATE
from migsupport.wording import SUCCESS, WARNING, describe_state


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
        wording = describe_state(report)
        state_style = {SUCCESS: style.SUCCESS, WARNING: style.WARNING}.get(
            wording.severity, style.ERROR
        )
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
        self.stdout.write(f"  Ledger:   {wording.ledger}")
        for problem in report.ledger_problems:
            self.stdout.write(style.WARNING(f"    - {problem}"))
        self.stdout.write(f"  {wording.summary}")
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
        if wording.hint and self.verbosity >= 1:
            self.stdout.write(style.NOTICE(wording.hint))
        if wording.edited_hint and self.verbosity >= 1:
            self.stdout.write(style.NOTICE(wording.edited_hint))
