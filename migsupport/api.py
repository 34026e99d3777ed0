"""The operations management commands call: one function per command.

Each takes a Django database alias, runs on one connection, reports progress
through an optional callback and returns a result object; nothing here
prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError as AlembicCommandError
from django.db import DEFAULT_DB_ALIAS

from alembic import command
from migsupport import conf
from migsupport.engine import engine_for_alias, safe_url
from migsupport.exceptions import MigsupportError

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
