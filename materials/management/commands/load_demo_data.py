"""``manage.py load_demo_data``: fill the detection tables with demo rows."""

from __future__ import annotations

import argparse
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, connections

from materials.demo import BATCH_SIZE, load_demo_data


def _natural(minimum: int) -> Any:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


class Command(BaseCommand):
    help = (
        "Insert plausible detection jobs and detected materials, for demos and load tests. "
        "Uses COPY on PostgreSQL, so a million materials take seconds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--materials",
            type=_natural(0),
            default=1000,
            metavar="N",
            help="How many detected materials to create (default: 1000).",
        )
        parser.add_argument(
            "--materials-per-job",
            type=_natural(1),
            default=4,
            metavar="K",
            help="Average materials per completed job (default: 4).",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=None,
            help="Random seed; the same seed gives the same rows, timestamps aside.",
        )
        parser.add_argument(
            "--batch-size",
            type=_natural(1),
            default=BATCH_SIZE,
            metavar="ROWS",
            help=f"Rows per COPY or INSERT batch, and per progress report (default: {BATCH_SIZE}).",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='The database alias to load into (default: "default").',
        )
        parser.add_argument(
            "--clear",
            action="store_true",
            help="Delete every existing job and detected material first.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        if alias not in connections:
            raise CommandError(f"Unknown database alias {alias!r}.")
        verbosity = options["verbosity"]
        reporter = _ProgressPrinter(self) if verbosity >= 1 else None
        started = time.monotonic()
        try:
            summary = load_demo_data(
                alias,
                options["materials"],
                materials_per_job=options["materials_per_job"],
                seed=options["seed"],
                clear=options["clear"],
                batch_size=options["batch_size"],
                progress=reporter,
            )
        except IntegrityError as error:
            raise CommandError(
                f"Could not insert the demo rows: {error}".rstrip()
                + "\nHint: did an earlier run use the same --seed? Rerun with --clear,"
                " or with another --seed."
            ) from error
        except DatabaseError as error:
            raise CommandError(f"Could not insert the demo rows: {error}".rstrip()) from error
        if verbosity >= 1:
            elapsed = time.monotonic() - started
            cleared = " after clearing the tables" if summary.cleared else ""
            self.stdout.write(
                self.style.SUCCESS(
                    f"Loaded {summary.jobs:,} jobs and {summary.materials:,} detected materials "
                    f"into {alias!r}{cleared} in {elapsed:.1f}s."
                )
            )


class _ProgressPrinter:
    """Print one line per table at every tenth of the way, and at the end."""

    def __init__(self, command: BaseCommand) -> None:
        self.command = command
        self.printed: dict[str, int] = {}

    def __call__(self, table: str, done: int, total: int) -> None:
        tenth = 10 if total == 0 else done * 10 // total
        if tenth <= self.printed.get(table, 0):
            return
        self.printed[table] = tenth
        percent = 100 if total == 0 else done * 100 // total
        self.command.stdout.write(f"  {table}: {done:,}/{total:,} ({percent}%)")
