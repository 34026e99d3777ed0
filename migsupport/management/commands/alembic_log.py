"""``manage.py alembic_log``: the deploy log, newest first. Read-only."""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import CommandParser

from migsupport import api
from migsupport.deploylog import LogEntry, short
from migsupport.management.base import MigsupportCommand


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not 1 or more")
    return value


def entry_line(entry: LogEntry) -> str:
    """One row of the log: when, what, from which revision to which, who, and how long."""
    moved = f"{entry.revision_before or 'base'} -> {entry.revision_after or 'base'}"
    checksum = f" [{short(entry.checksum)}]" if entry.checksum else ""
    who = entry.db_user or "?"
    version = f", app {entry.app_version}" if entry.app_version else ""
    detail = f": {entry.detail}" if entry.detail else ""
    return (
        f"  {entry.started_at:%Y-%m-%d %H:%M:%S}Z  {entry.action:<8} {moved}{checksum}  "
        f"{entry.outcome} in {entry.duration_seconds:.2f}s by {who}@{entry.host or '?'} "
        f"({entry.command}{version}){detail}"
    )


class Command(MigsupportCommand):
    help = (
        "Show the deploy log: every baseline, stamp, applied revision, repair and accepted "
        "edit a guarded command made, newest first. Read-only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--limit", type=positive, default=50, metavar="N", help="Show N rows (default: 50)."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def run(self, *args: Any, **options: Any) -> None:
        view = api.read_log(options["database"], limit=options["limit"])
        if options["json"]:
            self.stdout.write(json.dumps(view.to_dict(), indent=2))
            return
        direct = " (direct)" if view.direct else ""
        self.stdout.write(
            self.style.MIGRATE_HEADING(f"Deploy log of {view.database}: {view.url}{direct}")
        )
        if not view.entries:
            self.stdout.write("  No deploy has been logged yet.")
        for entry in view.entries:
            self.stdout.write(entry_line(entry))
        if view.total > len(view.entries):
            self.stdout.write(
                f"  ... {view.total - len(view.entries)} older row(s); raise --limit to see them."
            )
        if view.before_log:
            self.stdout.write(
                "  Applied before the log existed: " + ", ".join(view.before_log) + "."
            )
