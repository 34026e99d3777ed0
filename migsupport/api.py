"""The operations management commands call: one function per command.

Each takes a Django database alias, runs on one connection, reports progress
through an optional callback and returns a result object; nothing here
prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError as AlembicCommandError
from django.db import DEFAULT_DB_ALIAS

from alembic import command
from migsupport import conf
from migsupport.engine import engine_for_alias, safe_url, url_for_alias
from migsupport.exceptions import MigsupportError
from migsupport.history import replay_schemas
from migsupport.ledger import Ledger, ledger_path
from migsupport.state import StateReport, classify

Progress = Callable[[str, dict[str, Any]], None]


class MigrationFailed(MigsupportError):
    """Alembic refused or a revision failed; the message says which."""


@dataclass(frozen=True)
class AppliedRevision:
    """One revision applied by an upgrade."""

    revision: str
    down_revision: str | None
    doc: str
    seconds: float


@dataclass(frozen=True)
class UpgradeResult:
    """What an upgrade did."""

    database: str
    url: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    applied: tuple[AppliedRevision, ...] = field(default_factory=tuple)


def alembic_config(
    *,
    database: str = DEFAULT_DB_ALIAS,
    connection: sa.Connection | None = None,
    on_version_apply: Callable[..., None] | None = None,
) -> Config:
    """Return Alembic's ``Config`` for ``database``, sharing ``connection`` if given."""
    config = Config(str(conf.alembic_ini()))
    config.attributes["database"] = database
    if connection is not None:
        config.attributes["connection"] = connection
    if on_version_apply is not None:
        config.attributes["on_version_apply"] = on_version_apply
    return config


def script_directory(config: Config | None = None) -> ScriptDirectory:
    """Return the project's revision scripts."""
    return ScriptDirectory.from_config(config or alembic_config())


def current_heads(connection: sa.Connection) -> tuple[str, ...]:
    """Return the versions recorded in the database, without creating anything."""
    context = MigrationContext.configure(connection, opts={"version_table": conf.version_table()})
    return tuple(context.get_current_heads())


def upgrade(
    revision: str = "head",
    *,
    database: str = DEFAULT_DB_ALIAS,
    progress: Progress | None = None,
) -> UpgradeResult:
    """Upgrade ``database`` to ``revision``, one transaction per revision."""
    engine = engine_for_alias(database)
    applied: list[AppliedRevision] = []
    before: tuple[str, ...] = ()
    started = [time.perf_counter()]

    def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        now = time.perf_counter()
        script = step.revision_map.get_revision(step.up_revision_id)
        item = AppliedRevision(
            revision=script.revision,
            down_revision=script.down_revision,
            doc=script.doc,
            seconds=now - started[0],
        )
        started[0] = now
        applied.append(item)
        if progress:
            progress("apply_success", {"revision": item})

    try:
        with engine.connect() as connection:
            before = current_heads(connection)
            connection.commit()
            config = alembic_config(
                database=database, connection=connection, on_version_apply=on_version_apply
            )
            started[0] = time.perf_counter()
            command.upgrade(config, revision)
            after = current_heads(connection)
            connection.commit()
    except AlembicCommandError as exc:
        raise MigrationFailed(str(exc)) from exc
    except sa.exc.DBAPIError as exc:
        reached = applied[-1].revision if applied else (before[0] if before else None)
        failing = _revision_after(reached) or revision
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise MigrationFailed(f"revision {failing} failed: {detail}") from exc
    finally:
        engine.dispose()
    return UpgradeResult(
        database=database,
        url=safe_url(engine.url),
        before=before,
        after=after,
        applied=tuple(applied),
    )


def _revision_after(revision: str | None) -> str | None:
    """Return the revision that follows ``revision`` (``None``: base) in the history."""
    for script in script_directory().walk_revisions("base", "heads"):
        if script.down_revision == revision:
            return script.revision
    return None


# -- state ---------------------------------------------------------------------


@dataclass(frozen=True)
class StatusResult:
    """A database's state report, and which database it is."""

    database: str
    url: str
    report: StateReport

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "url": self.url, **self.report.to_dict()}


def inspect_state(
    connection: sa.Connection,
    *,
    config: Config | None = None,
    replay: bool = True,
) -> StateReport:
    """Classify the database behind ``connection`` (read-only).

    With a stale ledger and ``replay``, the history is replayed on a scratch
    database beside it.
    """
    config = config or alembic_config()
    scripts = script_directory(config)
    ledger = Ledger.load(ledger_path(scripts))
    url = connection.engine.url

    def replayed() -> dict:
        return replay_schemas(url, _detached(config))

    return classify(connection, scripts, ledger=ledger, replay=replayed if replay else None)


def _detached(config: Config) -> Config:
    """Return a copy of ``config`` that shares no connection with the caller."""
    copy = Config(config.config_file_name)
    copy.set_main_option("script_location", config.get_main_option("script_location"))
    return copy


def status(database: str = DEFAULT_DB_ALIAS, *, replay: bool = True) -> StatusResult:
    """Return the state of ``database``, without changing anything."""
    engine = engine_for_alias(database)
    try:
        with engine.connect() as connection:
            report = inspect_state(
                connection, config=alembic_config(database=database), replay=replay
            )
    except sa.exc.DBAPIError as exc:
        raise MigrationFailed(_database_error(exc)) from exc
    finally:
        engine.dispose()
    return StatusResult(database=database, url=safe_url(engine.url), report=report)


def _database_error(exc: sa.exc.DBAPIError) -> str:
    """Return the first line of a driver error, which never carries the password."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]


# -- ledger --------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerResult:
    """The ledger's path, and what a check or update found."""

    path: Path
    dialects: tuple[str, ...]
    problems: tuple[str, ...] = ()
    changed: bool = False


def check_ledger(dialects: Sequence[str] = ("postgresql", "sqlite")) -> LedgerResult:
    """Return the ledger's problems: scripts changed or missing, dialects unrecorded."""
    scripts = script_directory()
    path = ledger_path(scripts)
    ledger = Ledger.load(path)
    problems: list[str] = []
    for dialect in dialects:
        for reason in ledger.stale_reasons(scripts, dialect):
            if reason not in problems:
                problems.append(reason)
    return LedgerResult(path=path, dialects=tuple(dialects), problems=tuple(problems))


def update_ledger(
    databases: Sequence[str] = (DEFAULT_DB_ALIAS,),
    *,
    progress: Progress | None = None,
) -> LedgerResult:
    """Replay the history on a scratch database per dialect and rewrite the ledger.

    SQLite is always replayed, in a temporary file; each alias in
    ``databases`` adds its own dialect, on a scratch database on its server.
    """
    scripts = script_directory()
    path = ledger_path(scripts)
    old = Ledger.load(path)
    urls = {"sqlite": sa.make_url("sqlite://")}
    for alias in databases:
        url = url_for_alias(alias)
        urls.setdefault(url.get_backend_name(), url)
    recorded = {}
    for dialect, url in urls.items():
        if progress:
            progress("replay_start", {"dialect": dialect, "url": safe_url(url)})

        def step(revision: str, dialect: str = dialect) -> None:
            if progress:
                progress("replay_revision", {"dialect": dialect, "revision": revision})

        try:
            recorded[dialect] = replay_schemas(url, alembic_config(), progress=step)
        except sa.exc.DBAPIError as exc:
            raise MigrationFailed(f"replay on {dialect} failed: {_database_error(exc)}") from exc
    new = old.with_schemas(scripts, recorded)
    changed = new != old
    if changed:
        new.write(path)
    return LedgerResult(path=path, dialects=tuple(sorted(recorded)), changed=changed)


__all__ = [
    "AppliedRevision",
    "LedgerResult",
    "MigrationFailed",
    "StatusResult",
    "UpgradeResult",
    "alembic_config",
    "check_ledger",
    "current_heads",
    "inspect_state",
    "script_directory",
    "status",
    "update_ledger",
    "upgrade",
]
