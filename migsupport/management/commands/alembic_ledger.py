"""``manage.py alembic_ledger``: record the schema each revision produces."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandParser

from migsupport import api
from migsupport.events import Event, ReplayStarted, RevisionReplayed
from migsupport.management.base import MigsupportCommand


class Command(MigsupportCommand):
    help = (
        "Rewrite alembic/ledger.json by replaying the history on scratch databases: always "
        "SQLite, and the dialect of --database (default: default). With --check, only report "
        "whether the ledger is stale."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database",
            action="append",
            dest="databases",
            metavar="ALIAS",
            help="Replay on a scratch database beside this alias too (repeatable).",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 if the ledger is stale; change nothing.",
        )

    def run(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            result = api.check_ledger()
            for problem in result.problems:
                self.stdout.write(f"  - {problem}")
            if result.problems:
                self.stderr.write(
                    self.style.ERROR(f"The ledger {result.path} is stale.")
                    + " Run `manage.py alembic_ledger --database ALIAS` with a PostgreSQL alias."
                )
                sys.exit(1)
            self.stdout.write(self.style.SUCCESS(f"The ledger {result.path} is fresh."))
            return
        result = api.update_ledger(options["databases"] or ["default"], progress=self._progress)
        verb = "Rewrote" if result.changed else "Unchanged:"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} {result.path} ({', '.join(result.dialects)}).")
        )

    def _progress(self, event: Event) -> None:
        if isinstance(event, ReplayStarted) and self.verbosity >= 1:
            # A server dialect replays on a scratch database beside the alias's (direct) URL.
            beside = f", beside {event.url}" if event.dialect != "sqlite" else ""
            self.stdout.write(self.style.MIGRATE_HEADING(f"Replaying on {event.dialect}{beside}:"))
        elif isinstance(event, RevisionReplayed) and self.verbosity >= 1:
            self.stdout.write(f"  {event.revision}")
