"""``manage.py alembic_repair``: converge a drifted database by safe steps, proven."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from migsupport import api
from migsupport.events import BackupWritten, Event, LockRetry, LockWaiting
from migsupport.exceptions import MigsupportError
from migsupport.management.base import MigsupportCommand, seconds
from migsupport.repair import BEHAVIOUR, PERSON, RepairPlan, RepairRefused
from migsupport.timeouts import Timeouts


class Command(MigsupportCommand):
    help = (
        "Converge a drifted database (to its recorded revision) or an unversioned one that "
        "matches no revision (to REVISION, or the nearest) by safe steps only: no data lost, no "
        "long lock on a large table. All or nothing: if any difference needs a person, it "
        "changes nothing. It proves the result and never records a version."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "revision",
            nargs="?",
            help="For an unversioned database: the revision to converge to (default: the "
            "nearest one).",
        )
        parser.add_argument("--plan", action="store_true", help="Print the plan; change nothing.")
        parser.add_argument(
            "--sql", action="store_true", help="Print the plan's SQL for review; change nothing."
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 if there is anything to repair; change nothing.",
        )
        parser.add_argument(
            "--allow-behaviour-changes",
            action="store_true",
            help="Also drop unexpected triggers, rules and policies, and re-create changed ones.",
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation before changing anything.",
        )
        self.add_lock_timeout_argument(parser)
        parser.add_argument(
            "--ddl-lock-timeout", type=seconds, metavar="SECONDS",
            help="How long each statement may wait for a table's lock before it is retried "
            "(default: MIGSUPPORT_DDL_LOCK_TIMEOUT, 2).",
        )  # fmt: skip
        parser.add_argument(
            "--ddl-retry-budget", type=seconds, metavar="SECONDS",
            help="How long to keep retrying (default: MIGSUPPORT_DDL_RETRY_BUDGET, 600).",
        )  # fmt: skip
        parser.add_argument(
            "--backup-dir",
            type=Path,
            metavar="DIR",
            help="Write a backup here before changing anything (pg_dump -Fc, or SQLite's backup).",
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def run(self, *args: Any, **options: Any) -> None:
        dry = options["plan"] or options["sql"] or options["check"]
        if not dry and options["interactive"] and not options["json"] and sys.stdin.isatty():
            preview = api.repair(
                options["revision"],
                database=options["database"],
                plan=True,
                allow_behaviour_changes=options["allow_behaviour_changes"],
            )
            self._render_plan(preview)
            if preview.plan.needed and not preview.plan.blocked:
                answer = input("Apply this repair? Type 'yes' to continue: ")
                if answer.strip().lower() != "yes":
                    raise CommandError("repair cancelled; nothing was changed")
        try:
            result = api.repair(
                options["revision"],
                database=options["database"],
                plan=dry,
                sql=options["sql"],
                backup_dir=options["backup_dir"],
                allow_behaviour_changes=options["allow_behaviour_changes"],
                lock_timeout=options["lock_timeout"],
                timeouts=Timeouts.from_settings(
                    lock=options["ddl_lock_timeout"], retry_budget=options["ddl_retry_budget"]
                ),
                progress=None if options["json"] else self._progress,
            )
        except RepairRefused as exc:
            if options["json"]:
                self.stdout.write(json.dumps(exc.to_dict(), indent=2))
            else:
                self._render_fixes(exc.plan, self.stderr)
            raise CommandError(str(exc)) from exc
        except MigsupportError:
            raise
        if options["json"]:
            self.stdout.write(json.dumps(result.to_dict(), indent=2))
        elif options["sql"]:
            self.stdout.write(result.sql or f"-- {result.plan.why}.\n", ending="")
        elif dry:
            self._render_plan(result)
        else:
            self._render_result(result)
        if options["check"] and result.plan.needed:
            sys.exit(1)
        if dry and result.plan.blocked:
            sys.exit(1)

    def _progress(self, event: Event) -> None:
        if isinstance(event, LockWaiting):
            self.stdout.write(self.style.WARNING(f"Waiting for the deploy lock: {event.lock}"))
        elif isinstance(event, BackupWritten):
            self.stdout.write(f"  Backup written to {event.path}")
        elif isinstance(event, LockRetry):
            from migsupport.management.commands.alembic_upgrade import retry_line

            self.stdout.write(self.style.WARNING(f"  {event.reason}: {retry_line(event)}"))

    def _render_fixes(self, plan: RepairPlan, stream: Any) -> None:
        stream.write(self.style.MIGRATE_HEADING("Fixes:"))
        for fix in plan.fixes:
            stream.write(f"  - {fix.difference}")
            if fix.verdict == PERSON:
                stream.write(self.style.ERROR(f"      NEEDS A PERSON: {fix.reason}"))
            elif fix.verdict == BEHAVIOUR and not plan.allow_behaviour_changes:
                stream.write(
                    self.style.ERROR(
                        f"      {fix.action}: NEEDS --allow-behaviour-changes: {fix.reason}"
                    )
                )
            else:
                stream.write(f"      {fix.action}")

    def _render_plan(self, result: api.RepairResult) -> None:
        plan = result.plan
        direct = " (direct)" if result.direct else ""
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"Repair plan for {result.database}: {result.url}{direct}")
        )
        self.stdout.write(f"  State:    {plan.report.state}")
        if not plan.needed:
            self.stdout.write(f"  Nothing to repair: {plan.why}.")
            return
        self.stdout.write(f"  Target:   {plan.target} ({plan.why})")
        self._render_fixes(plan, self.stdout)
        if plan.blocked:
            self.stdout.write(
                self.style.ERROR(
                    f"{len(plan.blocked)} of {len(plan.fixes)} fixes stop the repair: "
                    "nothing would be changed."
                )
            )

    def _render_result(self, result: api.RepairResult) -> None:
        plan = result.plan
        if not result.repaired:
            self.stdout.write(f"Nothing to repair: {plan.why}.")
            return
        for fix in plan.fixes:
            self.stdout.write(f"  Fixed: {fix.difference} ({fix.action})")
        after = result.after.state if result.after is not None else "unknown"
        self.stdout.write(
            self.style.SUCCESS(
                f"Repaired {result.url}: the schema equals {plan.target}; it reads {after}."
            )
        )
        if after == "unversioned":
            self.stdout.write(
                self.style.NOTICE(
                    f"Run `manage.py alembic_upgrade` to baseline it at {plan.target} and upgrade."
                )
            )
