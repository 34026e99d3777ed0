"""The schema at each revision, by replaying the history on a scratch database."""

from __future__ import annotations

from collections.abc import Callable

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from migsupport.engine import create_engine
from migsupport.ledger import revision_order
from migsupport.scratch import scratch_database
from migsupport.snapshot import Snapshot, take_snapshot


def migrate(config: Config, scripts: ScriptDirectory, action: str, destination: str) -> None:
    """Run Alembic's ``upgrade``, ``downgrade`` or ``stamp`` to ``destination``.

    What ``alembic.command`` does, but with an already loaded script
    directory: each ``command`` call reloads every revision script, which
    makes stepping through a long history quadratic.
    """
    steps = {
        "upgrade": scripts._upgrade_revs,
        "downgrade": scripts._downgrade_revs,
        "stamp": scripts._stamp_revs,
    }[action]

    def fn(rev: object, context: object) -> object:
        return steps(destination, rev)

    with EnvironmentContext(config, scripts, fn=fn, destination_rev=destination):
        scripts.run_env()


def replay_schemas(
    url: URL,
    config: Config,
    *,
    progress: Callable[[str], None] | None = None,
    hint: str | None = None,
) -> dict[str, Snapshot]:
    """Upgrade a scratch database beside ``url`` one revision at a time.

    Return the snapshot taken after each revision, base to head. The scratch
    database is dropped afterwards, whatever happens.
    """
    scripts = ScriptDirectory.from_config(config)
    snapshots: dict[str, Snapshot] = {}
    with scratch_database(url, hint=hint) as scratch_url:
        engine = create_engine(scratch_url)
        try:
            with engine.connect() as connection:
                config.attributes["connection"] = connection
                try:
                    for revision in revision_order(scripts):
                        migrate(config, scripts, "upgrade", revision)
                        connection.commit()
                        snapshots[revision] = take_snapshot(connection)
                        connection.rollback()
                        if progress:
                            progress(revision)
                finally:
                    config.attributes.pop("connection", None)
        finally:
            engine.dispose()
    return snapshots
