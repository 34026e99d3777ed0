"""``manage.py alembic_stamp``: record a revision only where the schema proves it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from migsupport import api
from migsupport.management.base import MigsupportCommand


class Command(MigsupportCommand):
    help = (
        "Record REVISION (default: head) in alembic_version, only when the live schema equals "
        "that revision's schema. --force stamps without proof, after showing the differences."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "revision", nargs="?", default="head", help="An id, a unique prefix, head or base."
        )
        parser.add_argument(
            "--plan", action="store_true", help="Print what would be done; change nothing."
        )
        parser.add_argument(
            "--force", action="store_true", help="Stamp even when the schema does not prove it."
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not prompt for confirmation of --force.",
        )
        self.add_lock_timeout_argument(parser)

    def run(self, *args: Any, **options: Any) -> None:
        database, revision = options["database"], options["revision"]
        force = options["force"]
        if force:
            # Look first: the operator confirms knowing what the proof found.
            preview = api.stamp(revision, database=database, plan=True, force=True)
            if preview.differences:
                self.write_differences(preview.differences, self.stderr, warning=True)
            if preview.differences and options["interactive"] and not options["plan"]:
                try:
                    answer = input(
                        f"Stamp {preview.target} without proof? Type 'yes' to continue: "
                    )
                except (EOFError, KeyboardInterrupt):
                    raise CommandError(
                        "no answer; stamp cancelled, nothing was written "
                        "(--noinput stamps without asking)"
                    ) from None
                if answer.strip().lower() != "yes":
                    raise CommandError("stamp cancelled; nothing was written")
        result = api.stamp(
            revision,
            database=database,
            plan=options["plan"],
            force=force,
            lock_timeout=options["lock_timeout"],
        )
        self._render(result, force=force)

    def _render(self, result: api.StampResult, *, force: bool) -> None:
        current = result.current or "no version"
        self.write_unowned(result.unowned, self.stderr)
        if not result.stamped and not result.dry_run:
            self.stdout.write(f"{result.url} is already stamped at {result.target}; nothing to do.")
            if result.differences:
                # Nothing to write, but the operator asked about this revision.
                self.write_differences(result.differences, self.stderr, warning=True)
                self.stderr.write(
                    self.style.WARNING(
                        f"Warning: the schema differs from {result.target}; "
                        "`manage.py alembic_status` reports it drifted."
                    )
                )
            return
        proof = (
            "the live schema equals that revision"
            if result.proven
            else "WITHOUT proof (--force): the live schema differs"
        )
        if result.dry_run:
            if result.current == result.target or (result.target == "base" and not result.current):
                self.stdout.write(f"Plan: nothing to do; {result.url} is at {result.target}.")
            else:
                self.stdout.write(
                    f"Plan: stamp {result.url} at {result.target} (now {current}); {proof}."
                )
            return
        style = self.style.SUCCESS if result.proven else self.style.WARNING
        self.stdout.write(
            style(f"Stamped {result.url} at {result.target} (was {current}): {proof}.")
        )
