"""Benchmark: the deploy lock's session check against one round trip, on real PostgreSQL.

``migsupport.pooler.require_session`` runs before every deploy lock. On a
direct connection it is one query (``SELECT pg_backend_pid()`` compared with
the pid libpq was given at start-up); behind a pooler it adds a second
client and a second transaction. This measures, on an open connection,
interleaved and repeated:

- **baseline**: one round trip, ``SELECT 1`` and its commit;
- **direct**: ``require_session`` on a direct connection;
- **session pooler**: ``require_session`` through PgBouncer in session mode,
  which passes (a second client connects through the pooler);
- **transaction pooler**: ``require_session`` through PgBouncer in
  transaction mode, which refuses.

Each pooled figure has its own baseline, ``SELECT 1`` through that pooler.
PgBouncer (``/usr/sbin/pgbouncer``) is started on a free port for the run, in
a temporary folder, and stopped afterwards; without it only the direct rows
are measured. It prints the medians and **ratio = check / baseline**.

Needs the PostgreSQL server the tests use (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, trusted; override
with ``TEST_DATABASE_URL`` or ``--database-url``). Run from the project root::

    .venv/bin/python benchmarks/bench_session.py [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
if not os.environ.get("SECRET_KEY"):
    os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from benchmarks import smoke  # noqa: E402
from migsupport.engine import create_engine, safe_url  # noqa: E402
from migsupport.pooler import NotASession, require_session  # noqa: E402

PGBOUNCER = Path("/usr/sbin/pgbouncer")
SESSION_ALIAS = "migsupport_bench_session"
DEFAULT_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def pgbouncer(server: sa.URL) -> Iterator[int | None]:
    """Run PgBouncer in front of ``server`` (trusted users); yield its port, or None."""
    if not PGBOUNCER.exists():
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="migsupport-bench-pgbouncer-"))
    port = _free_port()
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n* = host={server.host} port={server.port or 5432}\n"
        # A second name for the same database, pooled in session mode.
        f"{SESSION_ALIAS} = host={server.host} port={server.port or 5432} "
        f"dbname={server.database} pool_mode=session\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = transaction\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    (folder / "users.txt").write_text(f'"{server.username}" ""\n')
    prefix: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        for path in (folder, ini, folder / "users.txt"):
            shutil.chown(path, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*prefix, str(PGBOUNCER), "-d", str(ini)], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((folder / "pgbouncer.pid").read_text()), signal.SIGTERM)
        time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


def round_trip(connection: sa.Connection) -> None:
    connection.execute(sa.text("SELECT 1")).scalar()
    connection.commit()


def check(connection: sa.Connection) -> None:
    require_session(connection)


def refused(connection: sa.Connection) -> None:
    try:
        require_session(connection)
    except NotASession:
        return
    raise SystemExit("the transaction pooler was not refused")


def measure(cases: dict[str, tuple[sa.Connection, Callable]], repeat: int) -> dict[str, float]:
    """Time each case ``repeat`` times, interleaved, after a warm-up; return the medians."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for connection, action in cases.values():
        action(connection)
    for _ in range(repeat):
        for name, (connection, action) in cases.items():
            started = time.perf_counter()
            action(connection)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--repeat", type=int, default=200)
    smoke.add_argument(parser)
    args = smoke.apply(parser.parse_args(), repeat=1)
    server = sa.make_url(args.database_url).set(drivername="postgresql+psycopg")
    print(f"Server: {safe_url(server)}; {args.repeat} repeats, medians")
    with contextlib.ExitStack() as stack:
        direct = stack.enter_context(create_engine(server).connect())
        cases = {"baseline": (direct, round_trip), "direct": (direct, check)}
        port = stack.enter_context(pgbouncer(server))
        if port is None:
            print(f"{PGBOUNCER} not found: the pooled rows are left out")
        else:
            pooled = server.set(port=port)
            session = stack.enter_context(
                create_engine(pooled.set(database=SESSION_ALIAS)).connect()
            )
            transaction = stack.enter_context(create_engine(pooled).connect())
            cases.update(
                {
                    "session baseline": (session, round_trip),
                    "session pooler": (session, check),
                    "transaction baseline": (transaction, round_trip),
                    "transaction pooler": (transaction, refused),
                }
            )
        medians = measure(cases, args.repeat)
    print(f"Session check against one round trip (medians of {args.repeat} repeats):")
    print(f"{'check':<20}{'check ms':>10}{'baseline ms':>13}{'ratio':>8}")
    for name, base in (
        ("direct", "baseline"),
        ("session pooler", "session baseline"),
        ("transaction pooler", "transaction baseline"),
    ):
        if name in medians:
            check_ms, base_ms = medians[name] * 1000, medians[base] * 1000
            print(f"{name:<20}{check_ms:>10.3f}{base_ms:>13.3f}{check_ms / base_ms:>8.2f}")


if __name__ == "__main__":
    main()
