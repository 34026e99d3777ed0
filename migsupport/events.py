"""The progress events migsupport reports: one small frozen dataclass per kind.

The library never prints. A long operation calls its ``progress`` callback
with one of these, the way Alembic hands ``on_version_apply`` a
``MigrationInfo``; the management commands render them, and ``to_dict()``
gives each as JSON-ready data (``{"event": kind, ...}``) for a machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    """An event: what happened, as data."""

    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind}
        for item in fields(self):
            data[item.name] = _plain(getattr(self, item.name))
        return data


Progress = Callable[[Event], None]


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def emit(progress: Progress | None, event: Event) -> None:
    """Report ``event`` to ``progress``, if there is a callback."""
    if progress is not None:
        progress(event)


@dataclass(frozen=True)
class Blocker:
    """The session holding a lock that a deploy's statement waits for.

    Never its query text, which can hold data.
    """

    pid: int
    user: str | None
    application: str | None
    state: str | None
    transaction_seconds: float | None

    def __str__(self) -> str:
        parts = [f"pid {self.pid}"]
        if self.user:
            parts.append(f"user {self.user}")
        if self.application:
            parts.append(f"application {self.application!r}")
        if self.state:
            parts.append(f"state {self.state}")
        if self.transaction_seconds is not None:
            parts.append(f"its transaction open for {self.transaction_seconds:.1f}s")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "user": self.user,
            "application": self.application,
            "state": self.state,
            "transaction_seconds": self.transaction_seconds,
        }


# -- the deploy lock and the state ----------------------------------------------------------


@dataclass(frozen=True)
class LockWaiting(Event):
    """The deploy lock is held by another session; the command waits for it."""

    kind: ClassVar[str] = "lock_waiting"
    lock: str


@dataclass(frozen=True)
class LockAcquired(Event):
    """The deploy lock is held: this command is the only one changing the database."""

    kind: ClassVar[str] = "lock_acquired"


@dataclass(frozen=True)
class StateKnown(Event):
    """The database was classified (after the lock, for a guarded command)."""

    kind: ClassVar[str] = "state"
    report: Any  # migsupport.state.StateReport


@dataclass(frozen=True)
class BackupWritten(Event):
    """A backup was written before anything changed."""

    kind: ClassVar[str] = "backup"
    path: Path


@dataclass(frozen=True)
class Baselined(Event):
    """An unversioned database whose schema equals ``revision`` was recorded at it."""

    kind: ClassVar[str] = "baseline"
    revision: str


# -- applying revisions -----------------------------------------------------------------


@dataclass(frozen=True)
class RevisionStarted(Event):
    """A revision's attempt begins (``attempt`` counts from 1)."""

    kind: ClassVar[str] = "revision_started"
    revision: str
    doc: str
    attempt: int = 1


@dataclass(frozen=True)
class RevisionApplied(Event):
    """A revision committed: whatever this says is applied is in the database."""

    kind: ClassVar[str] = "revision_applied"
    revision: str
    down_revision: str | None
    doc: str
    seconds: float
    attempts: int = 1


@dataclass(frozen=True)
class LockRetry(Event):
    """A revision's lock was not granted in time (or it deadlocked); it is rolled back and
    tried again after ``delay`` seconds."""

    kind: ClassVar[str] = "lock_retry"
    revision: str
    attempt: int
    reason: str
    table: str | None
    blocker: Blocker | None
    lock_timeout: float
    delay: float
    elapsed: float
    budget: float


@dataclass(frozen=True)
class BuildProgress(Event):
    """A concurrent index build's phase and blocks done, from ``pg_stat_progress_create_index``."""

    kind: ClassVar[str] = "build_progress"
    revision: str
    table: str | None
    index: str | None
    phase: str
    blocks_done: int
    blocks_total: int


# -- replays and verification --------------------------------------------------------------


@dataclass(frozen=True)
class ReplayStarted(Event):
    """The history is replayed on a scratch database of ``dialect`` beside ``url``."""

    kind: ClassVar[str] = "replay_started"
    dialect: str
    url: str


@dataclass(frozen=True)
class RevisionReplayed(Event):
    """One revision was replayed on the scratch database."""

    kind: ClassVar[str] = "revision_replayed"
    dialect: str
    revision: str


@dataclass(frozen=True)
class ScratchCreated(Event):
    """The verification's scratch database exists (``keep``: it stays afterwards)."""

    kind: ClassVar[str] = "scratch"
    url: str
    keep: bool


@dataclass(frozen=True)
class CheckStarted(Event):
    """A verification check begins."""

    kind: ClassVar[str] = "check_started"
    name: str
    title: str


@dataclass(frozen=True)
class RevisionChecked(Event):
    """One revision's step of a stepped check (the upgrade or the downgrade)."""

    kind: ClassVar[str] = "revision_checked"
    check: str
    revision: str
    seconds: float
    ok: bool
    below: str | None = None
    idempotent: bool | None = None


@dataclass(frozen=True)
class CheckFinished(Event):
    """A verification check ended: passed, failed, skipped, or the ledger rewritten."""

    kind: ClassVar[str] = "check_finished"
    result: Any  # migsupport.verify.CheckResult


__all__ = [
    "BackupWritten",
    "Baselined",
    "Blocker",
    "BuildProgress",
    "CheckFinished",
    "CheckStarted",
    "Event",
    "LockAcquired",
    "LockRetry",
    "LockWaiting",
    "Progress",
    "ReplayStarted",
    "RevisionApplied",
    "RevisionChecked",
    "RevisionReplayed",
    "RevisionStarted",
    "ScratchCreated",
    "StateKnown",
    "emit",
]
