"""The schema at each revision, by replaying the history on a scratch database."""

from __future__ import annotations

from collections.abc import Callable

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from alembic import command
from migsupport.engine import create_engine
from migsupport.ledger import revision_order
from migsupport.scratch import scratch_database
from migsupport.snapshot import Snapshot, take_snapshot


def replay_schemas(
    url: URL,
    config: Config,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Snapshot]:
    """Upgrade a scratch database beside ``url`` one revision at a time.

    Return the snapshot taken after each revision, base to head. The scratch
    database is dropped afterwards, whatever happens.
    """
    scripts = ScriptDirectory.from_config(config)
    snapshots: dict[str, Snapshot] = {}
    with scratch_database(url) as scratch_url:
        engine = create_engine(scratch_url)
        try:
            with engine.connect() as connection:
                config.attributes["connection"] = connection
                try:
                    for revision in revision_order(scripts):
                        command.upgrade(config, revision)
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
