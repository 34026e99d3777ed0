"""Benchmark: the guarded ``manage.py alembic_upgrade`` against raw ``alembic upgrade head``.

Both are timed as whole processes, interleaved, on scratch PostgreSQL
databases, in one run:

- on an up-to-date database (the common deploy: nothing to do);
- on an empty database, upgraded to head.

The figure is the ratio of medians, guarded / raw; the goal is at most 1.3x.

    .venv/bin/python benchmarks/bench_upgrade.py [--repeat 7] [--server URL] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from benchmarks import smoke  # noqa: E402

DEFAULT_SERVER = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "migsupport_bench_"


def _admin(server: sa.URL) -> sa.Engine:
    return sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def create_database(server: sa.URL) -> sa.URL:
    name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    with _admin(server).connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return server.set(database=name)


def drop_database(server: sa.URL, url: sa.URL) -> None:
    with _admin(server).connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def django_environment(url: sa.URL) -> dict[str, str]:
    environ = dict(os.environ)
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    environ["SECRET_KEY"] = "benchmark"
    environ["DATABASE_URL"] = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return environ


GUARDED = [sys.executable, "manage.py", "alembic_upgrade", "-v", "0"]
RAW = [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"]


def timed(argv: list[str], url: sa.URL) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=PROJECT, env=django_environment(url), check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    smoke.add_argument(parser)
    args = smoke.apply(parser.parse_args(), repeat=1)
    server = sa.make_url(args.server).set(drivername="postgresql+psycopg")

    created: list[sa.URL] = []
    try:
        at_head = create_database(server)
        created.append(at_head)
        timed(RAW, at_head)
        up_to_date = {"guarded": [], "raw": []}
        empty = {"guarded": [], "raw": []}
        for _ in range(args.repeat):
            # Interleaved, so that the machine's noise falls on both sides alike.
            up_to_date["guarded"].append(timed(GUARDED, at_head))
            up_to_date["raw"].append(timed(RAW, at_head))
            for side, argv in (("guarded", GUARDED), ("raw", RAW)):
                fresh = create_database(server)
                created.append(fresh)
                empty[side].append(timed(argv, fresh))
                drop_database(server, fresh)
                created.remove(fresh)
    finally:
        for url in created:
            drop_database(server, url)

    print(f"{'scenario':<26}{'guarded (s)':>12}{'raw (s)':>10}{'ratio':>8}")
    for name, runs in (("up-to-date database", up_to_date), ("empty database to head", empty)):
        guarded, raw = statistics.median(runs["guarded"]), statistics.median(runs["raw"])
        print(f"{name:<26}{guarded:>12.3f}{raw:>10.3f}{guarded / raw:>7.2f}x")
    print(f"(medians of {args.repeat} interleaved runs each; goal for up-to-date: <= 1.30x)")


if __name__ == "__main__":
    main()
