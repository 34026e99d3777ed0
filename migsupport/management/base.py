"""What every migsupport command shares: ``--database``, and one error path."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from migsupport.exceptions import MigsupportError


class MigsupportCommand(BaseCommand):
    """A thin command over ``migsupport.api``.

    Subclasses implement :meth:`run`; a :class:`MigsupportError` it raises
    becomes a one-line ``CommandError`` here, the only place that translates.
    """

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            choices=tuple(connections),
            help='Nominates a database. Defaults to the "default" database.',
        )

    def handle(self, *args: Any, **options: Any) -> Any:
        self.verbosity = options["verbosity"]
        try:
            return self.run(*args, **options)
        except MigsupportError as exc:
            raise CommandError(str(exc)) from exc

    def run(self, *args: Any, **options: Any) -> Any:
        raise NotImplementedError
