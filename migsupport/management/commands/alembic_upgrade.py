"""``manage.py alembic_upgrade``: the guarded upgrade a deploy runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from migsupport import api
from migsupport.management.base import MigsupportCommand


class Command(MigsupportCommand):
    help = (
        "Upgrade the Alembic-owned schema to REVISION (default: head), guarded: under the deploy "
        "lock, baselining an unversioned database whose schema equals a revision, refusing a "
        "drifted one, one transaction per revision, and checking the result."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("revision", nargs="?", default="head", help="Target (default: head).")
        parser.add_argument(
            "--plan", action="store_true", help="Print what would be done; change nothing."
        )
        parser.add_argument(
            "--sql", action="store_true", help="Print the SQL for review; change nothing."
        )
        parser.add_argument(
            "--no-baseline",
            action="store_true",
            help="Refuse an unversioned database instead of baselining it.",
        )
        self.add_lock_timeout_argument(parser)
        parser.add_argument(
            "--backup-dir",
            type=Path,
            metavar="DIR",
            help="Write a backup here before changing anything (pg_dump -Fc, or SQLite's backup).",
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def run(self, *args: Any, **options: Any) -> None:
        self.json = options["json"]
        result = api.upgrade(
            options["revision"],
            database=options["database"],
            plan=options["plan"],
            sql=options["sql"],
            baseline=not options["no_baseline"],
            lock_timeout=options["lock_timeout"],
            backup_dir=options["backup_dir"],
            progress=None if self.json or options["sql"] else self._progress,
        )
        if options["sql"]:
            self.stdout.write(result.sql or "", ending="")
        elif self.json:
            self.stdout.write(json.dumps(result.to_dict(), indent=2))
        elif options["plan"]:
            self._render_plan(result)
        else:
            self._render_result(result)

    def _say(self, text: str, level: int = 1) -> None:
        if self.verbosity >= level:
            self.stdout.write(text)

    def _progress(self, event: str, data: dict[str, Any]) -> None:
        style = self.style
        if event == "lock_wait":
            self._say(style.WARNING(f"Waiting for the deploy lock: {data['lock']}"))
        elif event == "state":
            report = data["report"]
            self._say(style.MIGRATE_HEADING(f"State: {report.state}"), 2)
            if self.verbosity >= 1:
                self.write_unowned(report.unowned, self.stdout)
        elif event == "backup":
            self._say(f"  Backup written to {data['path']}")
        elif event == "baseline":
            self._say(
                style.WARNING(
                    f"  Baselined at {data['revision']}: the live schema equals that revision."
                )
            )
        elif event == "apply_start":
            script = data["revision"]
            self.stdout.write(f"  Applying {script.revision} ({script.doc})...", ending="")
            self.stdout.flush()
        elif event == "apply_success":
            item = data["revision"]
            timing = f" ({item.seconds:.3f}s)" if self.verbosity >= 2 else ""
            self.stdout.write(style.SUCCESS(" OK") + timing)

    def _render_plan(self, result: api.UpgradeResult) -> None:
        direct = " (direct)" if result.direct else ""
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"Plan for {result.database}: {result.url}{direct}")
        )
        self.stdout.write(f"  State:    {result.state.state}")
        self.stdout.write(f"  Current:  {result.state.current or '(none)'}")
        self.write_unowned(result.state.unowned, self.stdout)
        if result.baseline:
            self.stdout.write(
                f"  Baseline: {result.baseline} (the live schema equals that revision)"
            )
        if result.revisions:
            self.stdout.write("  Apply:")
            for revision in result.revisions:
                self.stdout.write(f"    {revision}")
        else:
            self.stdout.write(f"  Nothing to apply: the database is at {result.target}.")

    def _render_result(self, result: api.UpgradeResult) -> None:
        if result.applied:
            self._say(
                self.style.SUCCESS(
                    f"Upgraded {result.url} to {result.after}; the schema equals that revision."
                )
            )
        elif result.baseline:
            self._say(self.style.SUCCESS(f"{result.url} is at {result.after}."))
        else:
            self._say(f"No revisions to apply: {result.url} is at {result.after or 'base'}.")
