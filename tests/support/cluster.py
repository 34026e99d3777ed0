"""A private PostgreSQL cluster that checks passwords, for what trust auth cannot test.

The shared server trusts every local user, so a wrong password, or a
password leaking into a log, can only be tested on a cluster that asks for
one: ``password_cluster`` starts it (``initdb`` with ``scram-sha-256``, a free
port, fsync off) and deletes it afterwards. A run killed before its teardown
leaves its cluster behind; the next one removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from tests.support.server import fail_or_skip

SUPERUSER_PASSWORD = "Sup3r-Secret-pw"
CLUSTER_PREFIX = "migsupport-pgauth-"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bindir(pg_server: URL) -> Path | None:
    """Return the folder of the server tools (initdb, pg_ctl) of ``pg_server``'s major version."""
    engine = sa.create_engine(pg_server, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            major = int(connection.exec_driver_sql("SHOW server_version_num").scalar()) // 10000
    finally:
        engine.dispose()
    for candidate in (Path(f"/usr/lib/postgresql/{major}/bin"), Path("/usr/lib/postgresql/bin")):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_cluster(tools: Path, folder: Path) -> None:
    data = folder / "data"
    if (data / "postmaster.pid").exists():
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, str(tools / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
    shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned_clusters(tools: Path) -> None:
    """Stop and delete the clusters of test runs that were killed before their teardown."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CLUSTER_PREFIX}*"):
        try:
            owner = int((folder / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # still being set up, or not ours
        if not alive(owner):
            _stop_cluster(tools, folder)


@contextlib.contextmanager
def password_cluster(pg_server: URL) -> Iterator[URL]:
    """Start a private PostgreSQL cluster that authenticates with passwords; yield its URL.

    Its superuser is ``postgres`` with ``SUPERUSER_PASSWORD``; every
    connection, local or TCP, must give the right password. The cluster is
    stopped and deleted when the block ends. Without the server tools it
    skips loudly (fails under ``CI=true``).
    """
    tools = bindir(pg_server)
    if tools is None:
        fail_or_skip("initdb is missing: the password-authentication cluster needs it")
    _remove_abandoned_clusters(tools)
    folder = Path(tempfile.mkdtemp(prefix=CLUSTER_PREFIX))
    (folder / "owner.pid").write_text(str(os.getpid()))
    data = folder / "data"
    pwfile = folder / "pwfile"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run_tool(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            fail_or_skip(f"{Path(args[0]).name} failed: {done.stderr.strip()[:300]}")

    try:
        run_tool(
            str(tools / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        run_tool(
            str(tools / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
            "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        yield URL.create(
            "postgresql+psycopg",
            username="postgres",
            password=SUPERUSER_PASSWORD,
            host="127.0.0.1",
            port=port,
            database="postgres",
        )
    finally:
        _stop_cluster(tools, folder)


def server_log(url: URL) -> Path | None:
    """Return the log file of the private cluster behind ``url``."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CLUSTER_PREFIX}*"):
        if (folder / f".s.PGSQL.{url.port}").exists():
            return folder / "server.log"
    return None
