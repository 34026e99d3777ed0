"""``manage.py demo``: set-up in one step, and no new password for a server that cannot start.

``make demo`` runs ``manage.py demo --addr DEMO_ADDR`` and then the server on
that address. When something already listens there (the demo server of an
earlier ``make demo``, say), the demo command refuses before it changes
anything, so the password it would print is never one the running server
does not know.
"""

from __future__ import annotations

import re
import socket
import sqlite3
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.support.commands import manage

SUPERUSER = re.compile(r"Superuser: admin / (\S+)  \(log in at /admin/\)")


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """Return a socket listening on a free port of 127.0.0.1, for the test's length."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server


def admin_password_hash(database: str) -> str:
    with sqlite3.connect(database) as connection:
        (hashed,) = connection.execute(
            "SELECT password FROM auth_user WHERE username = 'admin'"
        ).fetchone()
    return hashed


def test_demo_sets_up_and_refuses_a_busy_address_without_changing_the_password(tmp_path, listening):
    url = URL.create("sqlite", database=str(tmp_path / "demo.sqlite3"))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]

    done = manage("demo", "--addr", f"127.0.0.1:{free}", "--materials", "20", database_url=url)

    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert SUPERUSER.fullmatch(done.stdout.splitlines()[-1]), done.stdout
    hashed = admin_password_hash(url.database)
    busy = f"127.0.0.1:{listening.getsockname()[1]}"

    refused = manage("demo", "--addr", busy, database_url=url)

    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"CommandError: the demo server cannot listen on {busy}: Address already in use (is it "
        "already running? Stop it, or choose another address: make demo "
        "DEMO_ADDR=127.0.0.1:8001); nothing was changed\n"
    )
    assert admin_password_hash(url.database) == hashed


def test_demo_refuses_an_address_that_is_not_one(tmp_path):
    url = URL.create("sqlite", database=str(tmp_path / "demo.sqlite3"))

    refused = manage("demo", "--addr", "localhost:http", database_url=url)

    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "CommandError: 'localhost:http' is not an address the demo server can take (ip:port, "
        "or a port); nothing was changed\n"
    )
    assert not (tmp_path / "demo.sqlite3").exists()
