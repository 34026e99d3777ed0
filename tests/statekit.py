"""Bring a real database into each state of DESIGN.md, and copy the revision scripts.

Each state is reached the way it happens in the field: by running the
project's migrations, loading the deployed DDL, or changing the schema and
the version table behind Alembic's back with raw SQL.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from sqlalchemy.engine import Engine

from tests.conftest import PROJECT
from tests.migrate import run
from tests.test_production_schema import load_production_schema

BASELINE = "b662310f1380"
HEAD = "7c1d2e3f4a5b"
UNKNOWN = "deadbeef0000"
BRANCH = "aaaa00000001"
MERGE = "bbbb00000002"

# What revision 7c1d2e3f4a5b adds, as a DBA would have typed it by hand.
HEAD_CHANGES_DDL = (
    "ALTER TYPE jobstatus ADD VALUE 'CANCELLED' AFTER 'FAILED'",
    "ALTER TABLE material_detection_jobs ADD COLUMN model_version VARCHAR(64)",
    "CREATE INDEX ix_detected_materials_job_id_confidence "
    "ON detected_materials (job_id, confidence)",
)


def execute(engine: Engine, *statements: str) -> None:
    """Run raw SQL statements in one transaction, and commit them."""
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def rebuild_sqlite_table(engine: Engine, table: str, old: str, new: str) -> None:
    """Recreate an empty SQLite table from its own DDL with ``old`` replaced by ``new``.

    SQLite cannot change a column's type, nullability, default or foreign
    key in place, so the table is rebuilt, and its indexes with it.
    """
    with engine.begin() as connection:
        ddl = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).scalar_one()
        assert old in ddl, f"{old!r} is not in the DDL of {table}: {ddl}"
        indexes = [
            sql
            for (sql,) in connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL",
                (table,),
            )
        ]
        connection.exec_driver_sql(f"DROP TABLE {table}")
        connection.exec_driver_sql(ddl.replace(old, new))
        for sql in indexes:
            connection.exec_driver_sql(sql)


def has_version_table(engine: Engine) -> bool:
    with engine.connect() as connection:
        return sa.inspect(connection).has_table("alembic_version")


def unversioned_baseline(engine: Engine) -> None:
    """Give the database the deployed schema of revision b662310f1380, and no version.

    On PostgreSQL that is the deployed DDL itself. SQLite has no deployed
    database, so there the baseline is migrated and its version table dropped.
    """
    if engine.dialect.name == "postgresql":
        load_production_schema(engine)
    else:
        run(engine, "upgrade", BASELINE)
        execute(engine, "DROP TABLE alembic_version")


def unversioned_head(engine: Engine) -> None:
    """Give the database the schema of the head, and no version recorded."""
    if engine.dialect.name == "postgresql":
        load_production_schema(engine)
        execute(engine, *HEAD_CHANGES_DDL)
    else:
        run(engine, "upgrade", HEAD)
        execute(engine, "DELETE FROM alembic_version")


def make_state(engine: Engine, state: str) -> None:
    """Bring the empty database behind ``engine`` into ``state``."""
    if state == "empty":
        return
    if state == "up_to_date":
        run(engine, "upgrade", HEAD)
    elif state == "behind":
        run(engine, "upgrade", BASELINE)
    elif state == "unversioned":
        unversioned_baseline(engine)
    elif state == "drifted":
        run(engine, "upgrade", HEAD)
        execute(engine, "DROP INDEX ix_detected_materials_material_name")
    elif state == "unknown_revision":
        run(engine, "upgrade", HEAD)
        execute(engine, f"UPDATE alembic_version SET version_num = '{UNKNOWN}'")
    else:
        raise ValueError(f"no such state: {state}")


# -- copies of the project's scripts ---------------------------------------------


def copy_alembic(destination: Path) -> Config:
    """Copy alembic.ini and alembic/ (the ledger included) into ``destination``.

    Return the copy's ``Config``: its ``script_location`` is the copied folder.
    """
    shutil.copy(PROJECT / "alembic.ini", destination / "alembic.ini")
    shutil.copytree(
        PROJECT / "alembic",
        destination / "alembic",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return Config(str(destination / "alembic.ini"))


def script_folder(config: Config) -> Path:
    return Path(config.get_main_option("script_location"))


def edit_script(config: Config, revision: str) -> None:
    """Append a comment to a revision's script: the same behaviour, another checksum."""
    (script,) = (script_folder(config) / "versions").glob(f"{revision}_*.py")
    with script.open("a") as handle:
        handle.write("# edited after the ledger was written\n")


def edit_ledger(config: Config, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``edit`` to the ledger's parsed JSON, and write it back."""
    path = script_folder(config) / "ledger.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def add_revision(
    config: Config, revision: str, down_revision: str | tuple[str, ...], statement: str
) -> None:
    """Write a revision script into the copy; ``statement`` is its upgrade."""
    (script_folder(config) / "versions" / f"{revision}_added.py").write_text(
        '"""An added revision."""\n\n'
        "from alembic import op  # noqa: F401\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade():\n"
        f"    {statement}\n\n\n"
        "def downgrade():\n"
        "    pass\n"
    )


def add_branch(config: Config) -> None:
    """Add a second head: a revision whose down_revision is the baseline."""
    add_revision(
        config,
        BRANCH,
        BASELINE,
        'op.create_index("ix_detected_materials_category", "detected_materials", ["category"])',
    )


def settings_module(folder: Path, config: Config) -> str:
    """Write a settings module whose MIGSUPPORT_ALEMBIC_INI is ``config``'s file.

    Return its module name; run ``manage.py`` with ``PYTHONPATH=folder``.
    """
    name = "copied_alembic_settings"
    (folder / f"{name}.py").write_text(
        "from config.settings import *  # noqa: F403\n\n"
        f"MIGSUPPORT_ALEMBIC_INI = {config.config_file_name!r}\n"
    )
    return name
