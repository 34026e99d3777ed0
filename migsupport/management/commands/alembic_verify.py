"""``manage.py alembic_verify``: the clean-database release check."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandParser

from migsupport import api
from migsupport.events import CheckFinished, CheckStarted, Event, RevisionChecked, ScratchCreated
from migsupport.management.base import MigsupportCommand
from migsupport.verify import DOWNGRADE, FAILED, PASSED, SKIPPED, TITLES, UPDATED, UPGRADE

# Checks that report a line per revision.
_STEPPED = (UPGRADE, DOWNGRADE)


class Command(MigsupportCommand):
    help = (
        "Verify the migration history on a scratch database beside --database, always dropped "
        "afterwards: a single head, no revision taking a lock that blocks production (squawk), "
        "upgrade step by step (each revision twice), models equal the DDL, downgrade step by "
        "step leaving no trace, upgrade again, a fresh ledger."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--json", action="store_true", help="Print a JSON report.")
        parser.add_argument(
            "--keep", action="store_true", help="Keep the scratch database, and print its URL."
        )
        parser.add_argument(
            "--update-ledger",
            action="store_true",
            help="Rewrite alembic/ledger.json from this run instead of failing when it is stale.",
        )

    def run(self, *args: Any, **options: Any) -> None:
        self.json = options["json"]
        self.stepping: str | None = None
        report = api.verify(
            options["database"],
            keep=options["keep"],
            update_ledger=options["update_ledger"],
            progress=None if self.json else self._progress,
        )
        if self.json:
            where = api.command_target(options["database"])
            summary = {"database": options["database"], **where.to_dict(), **report.to_dict()}
            self.stdout.write(json.dumps(summary, indent=2))
        else:
            self._summary(report)
        if not report.passed:
            sys.exit(1)

    def _progress(self, event: Event) -> None:
        style = self.style
        if isinstance(event, ScratchCreated):
            kept = " (kept)" if event.keep else ""
            self.stdout.write(style.MIGRATE_HEADING(f"Scratch database: {event.url}{kept}"))
        elif isinstance(event, CheckStarted) and event.name in _STEPPED:
            self.stepping = event.name
        elif isinstance(event, RevisionChecked) and self.verbosity >= 1:
            if self.stepping == event.check:
                # The stepped check's title heads its revision lines, once it has some.
                self.stdout.write(f"  {TITLES[event.check]}:")
                self.stepping = None
            if event.check == DOWNGRADE:
                step = f"{event.revision} -> {event.below}"
            else:
                step = event.revision
            outcome = style.SUCCESS("OK") if event.ok else style.ERROR("FAILED")
            if event.idempotent is False:
                outcome += style.ERROR(" (not safe to apply twice)")
            timing = f" ({event.seconds:.3f}s)" if self.verbosity >= 2 else ""
            self.stdout.write(f"    {step} {outcome}{timing}")
        elif isinstance(event, CheckFinished):
            result = event.result
            label = {
                PASSED: style.SUCCESS("passed"),
                FAILED: style.ERROR("FAILED"),
                SKIPPED: style.WARNING("skipped"),
                UPDATED: style.WARNING("ledger rewritten"),
            }[result.status]
            if result.reason:
                label += f" ({result.reason})"
            timing = f" ({result.seconds:.3f}s)" if self.verbosity >= 2 else ""
            # A stepped check's title heads its revision lines already.
            stepped = result.name in _STEPPED and self.stepping != result.name
            title = "    result" if stepped else f"  {result.title}"
            self.stepping = None
            self.stdout.write(f"{title}: {label}{timing}")
            for problem in result.problems:
                self.stdout.write(f"    - {problem}")
            for note in result.notes:
                self.stdout.write(style.WARNING(f"    - {note}"))

    def _summary(self, report: Any) -> None:
        failed = [c for c in report.checks if c.status == FAILED]
        if report.passed:
            self.stdout.write(self.style.SUCCESS(f"All {len(report.checks)} checks passed."))
        else:
            names = ", ".join(c.title for c in failed)
            self.stderr.write(self.style.ERROR(f"Verification failed: {names}."))
