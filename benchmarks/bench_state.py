"""Benchmark: state detection against one bulk reflection, on real PostgreSQL.

For each history size N (default 10, 50 and 100 revisions) it:

1. generates a synthetic Alembic history in a temporary directory: N
   revisions, each creating 10 tables (uuid primary key, a VARCHAR, a
   TIMESTAMPTZ defaulting to now(), a foreign key to a table of an earlier
   revision, an index), so the schema grows to 10 * N tables;
2. records its ledger by replaying it on a scratch database
   (``migsupport.history.replay_schemas``, on migsupport's own scratch database);
3. upgrades a scratch database of its own to head and deletes
   ``alembic_version``, so that the database is ``unversioned``;
4. times, interleaved and repeated, (a) the baseline: a fresh connection and
   one bulk reflection of the schema with SQLAlchemy's ``Inspector.get_multi_*``
   (columns, primary keys, foreign keys, unique constraints, indexes) plus its
   ENUMs, and (b) state detection: a fresh connection and
   ``migsupport.api.inspect_state`` (ledger only, no replay), which reads the
   complete shapes from the catalog and must report ``unversioned`` matching
   the head.

It prints, per size, the medians and their ratio (b)/(a); the ratio is what
counts, since both are measured in the same run on the same server. The goal
(issue 11) is a ratio of at most 1, flat in the number of revisions.

Every scratch database it creates is named ``bench_state_...`` (the replay's,
``migsupport_scratch_...``) and dropped however the run ends, Ctrl-C included.
``--smoke`` runs 1 and 2 revisions once each, to check that it still runs.
``--profile`` adds a cProfile of one
detection at the largest size.

Run from the project root::

    .venv/bin/python benchmarks/bench_state.py [--revisions 10,50,100] [--repeat N] [--smoke]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
if not os.environ.get("SECRET_KEY"):
    os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from alembic import command  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

from benchmarks import smoke  # noqa: E402
from benchmarks.scratch import Databases, catch_interrupts, checkpoint, log  # noqa: E402
from migsupport.api import alembic_config, inspect_state  # noqa: E402
from migsupport.engine import create_engine, safe_url  # noqa: E402
from migsupport.history import replay_schemas  # noqa: E402
from migsupport.ledger import Ledger, ledger_path  # noqa: E402
from migsupport.state import UNVERSIONED  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PREFIX = "bench_state_"
TABLES_PER_REVISION = 10


def reflection_of(connection: sa.Connection) -> dict[str, Any]:
    """Return one bulk reflection of the current schema: SQLAlchemy's ``get_multi_*``.

    What a schema comparison built on SQLAlchemy reads (and what migsupport
    read before it read the catalog itself): every table's columns, primary
    key, foreign keys, unique constraints and indexes, and the ENUM types.
    """
    inspector = sa.inspect(connection)
    names = inspector.get_table_names()
    kwargs = {"filter_names": names}
    return {
        "columns": inspector.get_multi_columns(**kwargs),
        "primary_keys": inspector.get_multi_pk_constraint(**kwargs),
        "foreign_keys": inspector.get_multi_foreign_keys(**kwargs),
        "unique": inspector.get_multi_unique_constraints(**kwargs),
        "indexes": inspector.get_multi_indexes(**kwargs),
        "enums": inspector.get_enums(),
    }


# The ratio may grow this much from the smallest to the largest history and
# still count as flat: timing noise on a shared machine is about that size.
FLAT_TOLERANCE = 1.25
GOAL_RATIO = 1.0


# -- the synthetic history -------------------------------------------------------

REVISION_TEMPLATE = '''"""Synthetic revision {index} of {count}.

Revision ID: {revision}
Revises: {down_revision}
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrades}


def downgrade() -> None:
{downgrades}
'''

TABLE_TEMPLATE = """    op.create_table(
        {table!r},
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String({length}), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "parent_id",
            sa.Uuid(),
            sa.ForeignKey({target!r}, ondelete={ondelete!r}),
            nullable=True,
        ),
    )
    op.create_index({index!r}, {table!r}, ["name", "created_at"])"""


def revision_id(index: int) -> str:
    return hashlib.sha1(f"bench-state-{index}".encode()).hexdigest()[:12]


def table_name(revision_index: int, table_index: int) -> str:
    return f"bench_r{revision_index:03d}_t{table_index}"


def write_history(folder: Path, count: int) -> str:
    """Write ``count`` revisions, env.py and the template into ``folder``; return the head."""
    shutil.copy(PROJECT / "alembic" / "env.py", folder / "env.py")
    shutil.copy(PROJECT / "alembic" / "script.py.mako", folder / "script.py.mako")
    versions = folder / "versions"
    versions.mkdir()
    rng = random.Random(count)
    down: str | None = None
    for index in range(count):
        revision = revision_id(index)
        upgrades, downgrades = [], []
        for t in range(TABLES_PER_REVISION):
            table = table_name(index, t)
            # A table of an earlier revision; the first revision refers to its own first table.
            target = table_name(rng.randrange(index), t) if index else table_name(0, 0)
            upgrades.append(
                TABLE_TEMPLATE.format(
                    table=table,
                    length=32 + t * 8,
                    target=f"{target}.id",
                    ondelete=("CASCADE", "SET NULL", "RESTRICT")[t % 3],
                    index=f"ix_{table}_name_created_at",
                )
            )
            downgrades.insert(0, f"    op.drop_table({table!r})")
        (versions / f"{revision}_synthetic_{index:03d}.py").write_text(
            REVISION_TEMPLATE.format(
                index=index + 1,
                count=count,
                revision=revision,
                down_revision=down,
                upgrades="\n".join(upgrades),
                downgrades="\n".join(downgrades),
            )
        )
        down = revision
    assert down is not None
    return down


# -- measuring -----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    revisions: int
    tables: int
    ledger_bytes: int
    setup_seconds: float
    reflection: list[float]
    detection: list[float]

    @property
    def reflection_median(self) -> float:
        return statistics.median(self.reflection)

    @property
    def detection_median(self) -> float:
        return statistics.median(self.detection)

    @property
    def ratio(self) -> float:
        return self.detection_median / self.reflection_median


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    checkpoint()
    started = time.perf_counter()
    value = function()
    seconds = time.perf_counter() - started
    checkpoint()
    return seconds, value


def write_ledger(server: URL, config: Any, scripts: ScriptDirectory) -> Path:
    """Replay the history on a scratch database and write its ledger; return its path.

    The replayed snapshots are let go on return, so that they do not weigh on
    the garbage collector while timing.
    """
    snapshots = replay_schemas(server, config)
    path = ledger_path(scripts)
    Ledger(entries={}).with_schemas(scripts, {"postgresql": snapshots}).write(path)
    return path


def run_size(
    databases: Databases, count: int, repeat: int, profile: bool
) -> tuple[Result, str | None]:
    """Build, record and measure a history of ``count`` revisions."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        started = time.perf_counter()
        head = write_history(folder, count)
        config = alembic_config()
        config.set_main_option("script_location", str(folder))
        scripts = ScriptDirectory.from_config(config)

        log(f"[{count} revisions] replaying the history to record the ledger")
        # On migsupport's own scratch database, which it drops however the replay ends.
        path = write_ledger(databases.server, config, scripts)
        checkpoint()

        with databases.scratch() as url:
            log(f"[{count} revisions] upgrading {url.database} to head, then unversioning it")
            engine = create_engine(url)
            try:
                with engine.connect() as connection:
                    config.attributes["connection"] = connection
                    try:
                        command.upgrade(config, "head")
                    finally:
                        config.attributes.pop("connection", None)
                    connection.commit()
                    connection.exec_driver_sql("DROP TABLE alembic_version")
                    connection.commit()
                setup = time.perf_counter() - started

                def reflect() -> Any:
                    with engine.connect() as connection:
                        return reflection_of(connection)

                def detect() -> Any:
                    with engine.connect() as connection:
                        return inspect_state(connection, config=config, replay=False)

                live = reflect()
                tables = len(live["columns"])
                if tables != count * TABLES_PER_REVISION:
                    raise SystemExit(f"expected {count * TABLES_PER_REVISION} tables, saw {tables}")
                check(detect(), head)  # also the warm-up

                log(f"[{count} revisions] timing, {repeat} interleaved repeats")
                reflection: list[float] = []
                detection: list[float] = []
                for turn in range(repeat):
                    # Alternate which goes first, so that drift hits both alike.
                    order = [(reflect, reflection), (detect, detection)]
                    for function, samples in order if turn % 2 == 0 else order[::-1]:
                        seconds, value = timed(function)
                        if function is detect:
                            check(value, head)
                        samples.append(seconds)

                profile_text = profile_detection(detect) if profile else None
            finally:
                engine.dispose()
        result = Result(
            revisions=count,
            tables=tables,
            ledger_bytes=path.stat().st_size,
            setup_seconds=setup,
            reflection=reflection,
            detection=detection,
        )
        return result, profile_text
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check(report: Any, head: str) -> None:
    if report.state != UNVERSIONED or report.matches != head:
        raise SystemExit(
            f"detection reported state={report.state} matches={report.matches} "
            f"(expected {UNVERSIONED} matching {head}); ledger={report.ledger} "
            f"{list(report.ledger_problems)[:3]} differences={list(report.differences)[:5]}"
        )


def profile_detection(detect: Callable[[], Any]) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    detect()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    out.write("== by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(30)
    out.write("== by own time ==\n")
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


# -- the report -----------------------------------------------------------------------


def print_table(results: list[Result], repeat: int) -> None:
    print(f"State detection vs one bulk reflection (median of {repeat} interleaved repeats)")
    if sys.dont_write_bytecode:
        print(
            "Note: Python's bytecode cache is off (PYTHONDONTWRITEBYTECODE), so Alembic "
            "compiles every revision script on each detection."
        )
    header = (
        f"{'revisions':>9}  {'tables':>6}  {'ledger (bytes)':>14}  "
        f"{'reflection (s)':>14}  {'detection (s)':>13}  {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.revisions:>9}  {r.tables:>6}  {r.ledger_bytes:>14,}  "
            f"{r.reflection_median:>14.4f}  {r.detection_median:>13.4f}  {r.ratio:>6.2f}"
        )
    worst = max(r.ratio for r in results)
    verdict = "met" if worst <= GOAL_RATIO else "MISSED"
    print(f"\nGoal: ratio <= {GOAL_RATIO:g}: {verdict} (worst {worst:.2f})")
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = last.ratio / first.ratio
        flat = "flat" if growth <= FLAT_TOLERANCE else "NOT flat"
        print(
            f"Ratio from {first.revisions} to {last.revisions} revisions: "
            f"{first.ratio:.2f} -> {last.ratio:.2f} (x{growth:.2f}; {flat}, "
            f"tolerance x{FLAT_TOLERANCE:g})"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--revisions",
        default="10,50,100",
        help="comma-separated history sizes (default: 10,50,100)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats per size (default 5)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER),
        help="PostgreSQL server to create scratch databases on "
        "(default: $TEST_DATABASE_URL or %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print a cProfile of one detection at the largest size",
    )
    smoke.add_argument(parser)
    args = smoke.apply(parser.parse_args(argv), revisions="1,2", repeat=1)
    try:
        args.sizes = sorted({int(n) for n in args.revisions.split(",") if n.strip()})
    except ValueError:
        parser.error("--revisions takes comma-separated integers, e.g. 10,50,100")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--revisions needs sizes of at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = sa.make_url(args.database_url).set(drivername="postgresql+psycopg")
    catch_interrupts()
    databases = Databases(server, PREFIX)
    log(f"PostgreSQL server: {safe_url(server)}")
    results: list[Result] = []
    profile_text: str | None = None
    try:
        for count in args.sizes:
            result, text = run_size(
                databases, count, args.repeat, args.profile and count == args.sizes[-1]
            )
            results.append(result)
            profile_text = text or profile_text
            log(f"[{count} revisions] done; setup took {result.setup_seconds:.1f}s")
            checkpoint()
    except KeyboardInterrupt:
        log("interrupted; dropping the scratch databases")
        interrupted = True
    else:
        interrupted = False
    finally:
        databases.drop_all()
    if results:
        print_table(results, args.repeat)
    if interrupted:
        return 130
    if profile_text:
        print(f"\ncProfile of one detection at {args.sizes[-1]} revisions:\n")
        print(profile_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
