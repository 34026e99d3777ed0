"""The schema at each revision, by replaying the history on a scratch database."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError as AlembicCommandError
from sqlalchemy.engine import URL

from migsupport.bridge import django_table_names
from migsupport.engine import create_engine, error_line
from migsupport.exceptions import MigsupportError, ReplayFailed, ScriptError
from migsupport.ledger import revision_order
from migsupport.scratch import scratch_database
from migsupport.snapshot import Snapshot, take_snapshot


def load_scripts(config: Config) -> ScriptDirectory:
    """Return the revision scripts of ``config``, every one of them loaded.

    Alembic loads the scripts lazily, on the first question about the
    history; here they are loaded at once, so a script that cannot be loaded
    is reported as a :class:`ScriptError` naming the file, before anything
    else happens.
    """
    scripts = ScriptDirectory.from_config(config)
    try:
        scripts.get_heads()
    except SyntaxError as exc:
        raise ScriptError(
            f"revision script {exc.filename} has a syntax error at line {exc.lineno}: {exc.msg}"
        ) from exc
    except (AlembicCommandError, RevisionError) as exc:
        raise ScriptError(f"the revision scripts are inconsistent: {error_line(exc)}") from exc
    except Exception as exc:
        where = _failing_script(exc, scripts)
        raise ScriptError(
            f"revision script {where or scripts.versions} failed to load: "
            f"{type(exc).__name__}: {error_line(exc)}"
        ) from exc
    return scripts


def _failing_script(exc: BaseException, scripts: ScriptDirectory) -> str | None:
    """Return the revision script (and line) where ``exc`` was raised, if it was in one."""
    # The configured version_locations (public), or Alembic's default, versions/ in the
    # script folder. A location given as a package resource ("pkg:path") matches no
    # frame, and the message then names the folder instead of the file.
    configured = scripts.version_locations or [Path(scripts.dir) / "versions"]
    folders = [Path(folder).resolve() for folder in configured]
    found = None
    frame = exc.__traceback__
    while frame is not None:
        path = Path(frame.tb_frame.f_code.co_filename)
        if path.suffix == ".py" and any(path.resolve().is_relative_to(f) for f in folders):
            found = f"{path} (line {frame.tb_lineno})"
        frame = frame.tb_next
    return found


def _replay_failure(exc: Exception, scripts: ScriptDirectory, revision: str) -> str:
    """Say which revision failed on the scratch database, where, and why."""
    where = _failing_script(exc, scripts)
    cause = getattr(exc, "orig", None) or exc
    return (
        f"replaying the history on a scratch database failed at revision {revision}"
        f"{f' in {where}' if where else ''}: {type(cause).__name__}: {error_line(exc)}"
    )


def migrate(config: Config, scripts: ScriptDirectory, action: str, destination: str) -> None:
    """Run Alembic's ``upgrade``, ``downgrade`` or ``stamp`` to ``destination``.

    What ``alembic.command`` does, but with an already loaded script
    directory: each ``command`` call reloads every revision script, which
    makes stepping through a long history quadratic.
    """
    # ScriptDirectory's private step builders, the ones alembic.command calls itself;
    # there is no public equivalent. Checked against Alembic 1.20.1, and pinned by
    # tests/test_private_apis.py, which fails loudly if Alembic changes them.
    steps = {
        "upgrade": scripts._upgrade_revs,
        "downgrade": scripts._downgrade_revs,
        "stamp": scripts._stamp_revs,
    }[action]

    def fn(rev: object, context: object) -> object:
        return steps(destination, rev)

    with EnvironmentContext(config, scripts, fn=fn, destination_rev=destination):
        scripts.run_env()


def offline_sql(
    config: Config, scripts: ScriptDirectory, start: str | None, destination: str, *, url: str
) -> str:
    """Return the SQL Alembic's offline mode prints to upgrade from ``start`` to ``destination``.

    ``url`` names the dialect (no connection is made); the scripts are the
    ones already loaded, as in :func:`migrate`.
    """
    buffer = io.StringIO()
    config.output_buffer = buffer
    config.attributes["offline_url"] = url

    def fn(rev: object, context: object) -> object:
        return scripts._upgrade_revs(destination, rev)

    try:
        with EnvironmentContext(
            config,
            scripts,
            fn=fn,
            as_sql=True,
            starting_rev=start,
            destination_rev=destination,
        ):
            scripts.run_env()
    finally:
        config.attributes.pop("offline_url", None)
        config.output_buffer = None
    return buffer.getvalue()


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
    scripts = load_scripts(config)
    snapshots: dict[str, Snapshot] = {}
    with scratch_database(url, hint=hint) as scratch_url:
        engine = create_engine(scratch_url)
        try:
            with engine.connect() as connection:
                config.attributes["connection"] = connection
                try:
                    for revision in revision_order(scripts):
                        try:
                            migrate(config, scripts, "upgrade", revision)
                            connection.commit()
                        except MigsupportError:
                            raise
                        except Exception as exc:
                            raise ReplayFailed(_replay_failure(exc, scripts, revision)) from exc
                        snapshots[revision] = take_snapshot(connection, hidden=django_table_names())
                        connection.rollback()
                        if progress:
                            progress(revision)
                finally:
                    config.attributes.pop("connection", None)
        finally:
            engine.dispose()
    return snapshots
