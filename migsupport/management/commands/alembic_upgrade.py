"""``manage.py alembic_upgrade``: upgrade the Alembic-owned schema."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from migsupport import api
from migsupport.exceptions import MigsupportError


class Command(BaseCommand):
    help = "Upgrade the Alembic-owned tables of a database to a revision (default: head)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "revision", nargs="?", default="head", help="Target revision (default: head)."
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            choices=tuple(connections),
            help='Nominates a database to upgrade. Defaults to the "default" database.',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = options["verbosity"]
        try:
            result = api.upgrade(
                options["revision"], database=options["database"], progress=self._progress
            )
        except MigsupportError as exc:
            raise CommandError(str(exc)) from exc
        if self.verbosity >= 1:
            if result.applied:
                self.stdout.write(
                    self.style.SUCCESS(f"Upgraded {result.url} to {', '.join(result.after)}.")
                )
            else:
                at = ", ".join(result.after) or "base"
                self.stdout.write(f"No revisions to apply: {result.url} is at {at}.")

    def _progress(self, event: str, data: dict[str, Any]) -> None:
        if event != "apply_success" or self.verbosity < 1:
            return
        item = data["revision"]
        line = f"  Applying {item.revision} ({item.doc})..."
        if self.verbosity >= 2:
            line += f" {self.style.SUCCESS('OK')} ({item.seconds:.3f}s)"
        else:
            line += f" {self.style.SUCCESS('OK')}"
        self.stdout.write(line)
