"""``manage.py alembic_upgrade``: the guarded upgrade a deploy runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from migsupport import api
from migsupport.deploylog import short
from migsupport.events import (
    BackupWritten,
    Baselined,
    BuildProgress,
    Event,
    LockRetry,
    LockWaiting,
    RevisionApplied,
    RevisionStarted,
    StateKnown,
)
from migsupport.exceptions import MigsupportError
from migsupport.management.base import MigsupportCommand, seconds
from migsupport.timeouts import Timeouts


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
            "--ddl-lock-timeout",
            type=seconds,
            metavar="SECONDS",
            help="How long each DDL statement may wait for a table's lock before the revision is "
            "rolled back and retried, so that the application never queues behind the "
            "migration (PostgreSQL's lock_timeout; default: MIGSUPPORT_DDL_LOCK_TIMEOUT, 2). "
            "Not the deploy lock: that is --lock-timeout.",
        )
        parser.add_argument(
            "--ddl-retry-budget",
            type=seconds,
            metavar="SECONDS",
            help="How long a revision keeps being retried while its locks are not granted "
            "(default: MIGSUPPORT_DDL_RETRY_BUDGET, 600).",
        )
        parser.add_argument(
            "--statement-timeout",
            type=seconds,
            metavar="SECONDS",
            help="A statement_timeout for the revisions' statements (default: "
            "MIGSUPPORT_STATEMENT_TIMEOUT, none); concurrent index builds are left without it.",
        )
        parser.add_argument(
            "--statement-timeout-on-builds",
            action="store_true",
            default=None,
            help="Apply --statement-timeout to concurrent index builds too.",
        )
        parser.add_argument(
            "--backup-dir",
            type=Path,
            metavar="DIR",
            help="Write a backup here before changing anything (pg_dump -Fc, or SQLite's backup).",
        )
        parser.add_argument(
            "--accept-edited",
            action="append",
            default=[],
            metavar="REVISION",
            help=(
                "Accept that REVISION's script was edited after it was applied (its checksum "
                "differs from the deploy log's); the acceptance is logged. Repeat for several."
            ),
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def run(self, *args: Any, **options: Any) -> None:
        self.json = options["json"]
        self.applying, self.broken = "", True
        try:
            result = self._upgrade(options)
        except MigsupportError:
            # The error line follows on stderr: end the revision's open line first.
            if self.applying:
                self._end_line(self.style.ERROR(" FAILED"))
            raise
        if options["sql"]:
            self.stdout.write(result.sql or "", ending="")
        elif self.json:
            self.stdout.write(json.dumps(result.to_dict(), indent=2))
        elif options["plan"]:
            self._render_plan(result)
        else:
            self._render_result(result)

    def _upgrade(self, options: dict[str, Any]) -> api.UpgradeResult:
        return api.upgrade(
            options["revision"],
            database=options["database"],
            plan=options["plan"],
            sql=options["sql"],
            baseline=not options["no_baseline"],
            lock_timeout=options["lock_timeout"],
            timeouts=Timeouts.from_settings(
                lock=options["ddl_lock_timeout"],
                retry_budget=options["ddl_retry_budget"],
                statement=options["statement_timeout"],
                statement_on_builds=options["statement_timeout_on_builds"],
            ),
            backup_dir=options["backup_dir"],
            progress=None if self.json or options["sql"] else self._progress,
            accept_edited=options["accept_edited"],
        )

    def _say(self, text: str, level: int = 1) -> None:
        if self.verbosity >= level:
            self.stdout.write(text)

    def _progress(self, event: Event) -> None:
        style = self.style
        if isinstance(event, LockWaiting):
            self._say(style.WARNING(f"Waiting for the deploy lock: {event.lock}"))
        elif isinstance(event, StateKnown):
            self._say(style.MIGRATE_HEADING(f"State: {event.report.state}"), 2)
            if self.verbosity >= 1:
                self.write_unowned(event.report.unowned, self.stdout)
        elif isinstance(event, BackupWritten):
            self._say(f"  Backup written to {event.path}")
        elif isinstance(event, Baselined):
            self._say(
                style.WARNING(
                    f"  Baselined at {event.revision}: the live schema equals that revision."
                )
            )
        elif isinstance(event, RevisionStarted):
            self.applying = f"  Applying {event.revision} ({event.doc})..."
            self.stdout.write(self.applying, ending="")
            self.stdout.flush()
            self.broken = False
        elif isinstance(event, RevisionApplied):
            timing = f" ({event.seconds:.3f}s)" if self.verbosity >= 2 else ""
            # After lines of its own, the revision's line is written whole again.
            head = self.applying if self.broken else ""
            self.stdout.write(head + style.SUCCESS(" OK") + timing)
            self.applying, self.broken = "", True
        elif isinstance(event, LockRetry):
            self._end_line(style.WARNING(f" {event.reason}"))
            self._say(style.WARNING(f"    {retry_line(event)}"))
        elif isinstance(event, BuildProgress) and self.verbosity >= 1:
            self._end_line("")
            self.stdout.write(f"    {build_line(event)}")

    def _end_line(self, text: str) -> None:
        """End the open "Applying ..." line with ``text``, once."""
        if not self.broken:
            self.stdout.write(text)
            self.broken = True

    def _render_plan(self, result: api.UpgradeResult) -> None:
        direct = " (direct)" if result.direct else ""
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"Plan for {result.database}: {result.url}{direct}")
        )
        self.stdout.write(f"  State:    {result.state.state}")
        self.stdout.write(f"  Current:  {result.state.current or '(none)'}")
        self.write_unowned(result.state.unowned, self.stdout)
        for edit in result.state.edited:
            self.stdout.write(
                self.style.WARNING(
                    f"  Edited:   {edit.message}; the upgrade refuses it unless given "
                    f"--accept-edited {edit.revision}"
                )
            )
        if result.baseline:
            self.stdout.write(
                f"  Baseline: {result.baseline} (the live schema equals that revision)"
            )
        if result.revisions:
            self.stdout.write("  Apply:")
            for revision in result.revisions:
                self.stdout.write(f"    {revision}")
                if self.verbosity >= 1:
                    for step in (s for s in result.steps if s.revision == revision):
                        self.stdout.write(f"      {step_line(step)}")
        else:
            self.stdout.write(f"  Nothing to apply: the database is at {result.target}.")
        for step in result.steps:
            if step.blocking and step.large:
                self.stdout.write(
                    self.style.WARNING(
                        f"  Warning: {step.revision} takes {step.lock} on {step.table} "
                        f"({size_text(step)}): it blocks {step.blocks} while "
                        f"`{shortened(step.statement)}` runs."
                    )
                )

    def _render_result(self, result: api.UpgradeResult) -> None:
        for edit in result.accepted:
            self._say(
                f"  Accepted the edit of {edit.revision}: the deploy log now expects checksum "
                f"{short(edit.current)} (was {short(edit.recorded)})."
            )
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


def retry_line(event: LockRetry) -> str:
    """Say why a revision is retried, what blocks it, and when it runs again."""
    if event.reason == "lock not granted":
        what = f"the lock on table {event.table}" if event.table else "a lock"
        what += f" was not granted within {event.lock_timeout:g}s"
    else:
        what = f"a {event.reason}" + (f" on table {event.table}" if event.table else "")
    held = f"; held by {event.blocker}" if event.blocker is not None else ""
    return (
        f"{what}{held}; rolled back, retrying in {event.delay:.1f}s (attempt {event.attempt + 1}; "
        f"{event.elapsed:.0f}s of the {event.budget:g}s retry budget spent)"
    )


def build_line(event: BuildProgress) -> str:
    """Say how far a concurrent index build has come."""
    where = f" {event.index} on {event.table}" if event.index else f" on {event.table}"
    done = f", {event.blocks_done}/{event.blocks_total} blocks" if event.blocks_total else ""
    return f"building{where}: {event.phase}{done}"


def shortened(statement: str, width: int = 72) -> str:
    return statement if len(statement) <= width else statement[: width - 3] + "..."


def size_text(step: Any) -> str:
    """Say a table's estimated rows and size, as pg_class has them."""
    if step.rows is None:
        return "a table this plan creates"
    megabytes = (step.size or 0) / (1024 * 1024)
    return f"about {step.rows:,} rows, {megabytes:,.1f} MB"


def step_line(step: Any) -> str:
    """Say what one step locks and what that blocks: `statement`: lock on table (size): blocks."""
    if not step.known:
        return f"{shortened(step.statement)}: lock unknown; review it"
    if step.lock is None or step.table is None:
        return f"{shortened(step.statement)}: no lock on an existing table; blocks nothing"
    if step.rows is None:
        return f"{shortened(step.statement)}: {step.lock} on {step.table}, which this plan creates"
    return (
        f"{shortened(step.statement)}: {step.lock} on {step.table} ({size_text(step)}); "
        f"blocks {step.blocks}"
    )
