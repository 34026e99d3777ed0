"""The exception tree of migsupport.

Every error the library raises on purpose derives from ``MigsupportError``;
management commands turn it into a ``CommandError`` in one place. Subclasses
carry the data a caller needs to act on them.
"""

from __future__ import annotations

from typing import Any


class MigsupportError(Exception):
    """Root of every error raised by migsupport.

    ``state`` is the database's state when the error came after it was
    classified (set by :mod:`migsupport.api`), else None.
    """

    state: str | None = None
    differences: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The error as ``--json`` prints it: the state, the one line, the differences."""
        return {
            "state": self.state,
            "error": str(self),
            "differences": [
                difference.to_dict() if hasattr(difference, "to_dict") else str(difference)
                for difference in self.differences
            ],
        }


class ConfigurationError(MigsupportError):
    """The project's settings do not let migsupport work."""


class UnmappableField(MigsupportError):
    """A Django model field has no faithful SQLAlchemy equivalent."""

    def __init__(self, model_label: str, field_name: str, reason: str) -> None:
        self.model_label = model_label
        self.field_name = field_name
        self.reason = reason
        super().__init__(f"{model_label}.{field_name}: {reason}")


class ShapeConflict(MigsupportError):
    """An object exists with a shape other than the one a migration expects.

    ``differences`` are the :class:`~migsupport.differences.Difference`
    objects between the two, in the words ``alembic_status`` uses.
    """

    def __init__(
        self, kind: str, name: str, differences: tuple[Any, ...], summary: str | None = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.differences = tuple(differences)
        summary = summary or f"{kind} {name} exists with another shape"
        details = "; ".join(str(difference) for difference in self.differences)
        super().__init__(f"{summary}: {details}" if details else summary)


class EnumValueInUse(MigsupportError):
    """An ENUM label cannot be dropped because rows still hold it."""

    def __init__(self, enum_name: str, value: str, columns: list[str]) -> None:
        self.enum_name = enum_name
        self.value = value
        self.columns = columns
        super().__init__(
            f"cannot drop label {value!r} from enum {enum_name}: rows in "
            f"{', '.join(columns)} still use it; update or delete them first"
        )


class LockTimeout(MigsupportError):
    """The deploy lock was not acquired in time."""

    def __init__(self, lock: str, waited: float, holder: str | None) -> None:
        self.lock = lock
        self.waited = waited
        self.holder = holder
        held = f"; held by {holder}" if holder else ""
        super().__init__(
            f"timed out after {waited:.1f}s waiting for the deploy lock ({lock}){held}; "
            "nothing was changed. Retry when the other deploy has finished, or raise "
            "--lock-timeout"
        )


class UnknownRevision(MigsupportError):
    """A revision named on the command line is not in the scripts."""

    def __init__(self, revision: str, heads: tuple[str, ...], detail: str | None = None) -> None:
        self.revision = revision
        self.heads = heads
        reason = detail or f"unknown revision {revision!r}"
        super().__init__(f"{reason}; the known heads are: {', '.join(heads) or '(none)'}")


class Refused(MigsupportError):
    """A guarded command will not act on this database; nothing was changed.

    ``differences`` says how the live schema differs from what the command
    needed to prove.
    """

    def __init__(self, message: str, differences: tuple[Any, ...] = ()) -> None:
        self.differences = tuple(differences)
        super().__init__(message)


class SchemaDrift(Refused):
    """The live schema differs from the schema a revision produces."""


class BackupFailed(MigsupportError):
    """The backup could not be written; nothing was changed."""


class ScriptError(MigsupportError):
    """A revision script cannot be loaded: a syntax error, a failing import, a broken chain."""


class ReplayFailed(MigsupportError):
    """A revision failed while the history was replayed on a scratch database."""


class MigrationFailed(MigsupportError):
    """Alembic refused or a revision failed; the message says which, and where the database is."""


class DatabaseUnavailable(MigsupportError):
    """The database could not be reached or refused the connection's user."""


class LockNotGranted(MigrationFailed):
    """A revision's locks were not granted within the retry budget.

    It carries the revision, the table and the session that held the lock
    (when they could be seen), how long was spent and how many attempts.
    """

    def __init__(
        self,
        message: str,
        *,
        revision: str,
        table: str | None,
        blocker: Any,
        attempts: int,
        elapsed: float,
    ) -> None:
        self.revision = revision
        self.table = table
        self.blocker = blocker
        self.attempts = attempts
        self.elapsed = elapsed
        super().__init__(message)
