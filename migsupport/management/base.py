"""What every migsupport command shares: ``--database``, and one error path."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from migsupport.exceptions import MigsupportError, Refused
from migsupport.locking import DEFAULT_TIMEOUT


def seconds(text: str) -> float:
    """Parse a number of seconds, zero or more: what ``--lock-timeout`` takes."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give the seconds to wait, 0 or more")
    return value


class MigsupportCommand(BaseCommand):
    """A thin command over ``migsupport.api``.

    Subclasses implement :meth:`run`; a :class:`MigsupportError` it raises
    becomes a one-line ``CommandError`` here, the only place that translates.
    """

    # Django's system checks are about the project's models and URLs, not the
    # migration state; a deploy step runs on every release, so it skips them.
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # A usage error is one line, as every refusal is: argparse would print the
        # whole usage before it. --help still prints it.
        parser.print_usage = lambda file=None: None  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_database_argument(parser)

    def add_database_argument(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            choices=tuple(connections),
            help='Nominates a database. Defaults to the "default" database.',
        )

    def add_lock_timeout_argument(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--lock-timeout",
            type=seconds,
            default=DEFAULT_TIMEOUT,
            metavar="SECONDS",
            help=f"How long to wait for the deploy lock (default: {DEFAULT_TIMEOUT:g}).",
        )

    def handle(self, *args: Any, **options: Any) -> Any:
        self.verbosity = options["verbosity"]
        try:
            return self.run(*args, **options)
        except MigsupportError as exc:
            if options.get("json"):
                # CI tools get one object to parse; the exit status stays the same.
                self.stdout.write(json.dumps(exc.to_dict(), indent=2))
            if isinstance(exc, Refused):
                self.write_differences(exc.differences, self.stderr)
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            if options.get("traceback"):
                raise
            # By now the open transaction is rolled back and any scratch
            # database dropped; the operator needs one line, not a traceback.
            self.stderr.write("Interrupted: any open transaction was rolled back.")
            sys.exit(130)

    def write_unowned(self, unowned: tuple[Any, ...], stream: Any) -> None:
        """Warn about the objects no model and no revision defines: listed, never compared."""
        if not unowned:
            return
        stream.write(
            self.style.WARNING("Unowned objects (no model or revision defines them; not compared):")
        )
        for obj in unowned:
            stream.write(f"  - {obj}")

    def write_differences(
        self, differences: tuple[Any, ...], stream: Any, *, warning: bool = False
    ) -> None:
        """Write the differences a refusal or a warning rests on, one per line."""
        if not differences:
            return
        style = self.style.WARNING if warning else self.style.ERROR
        stream.write(style("Differences from the expected schema:"))
        for difference in differences:
            stream.write(f"  - {difference}")

    def run(self, *args: Any, **options: Any) -> Any:
        raise NotImplementedError
