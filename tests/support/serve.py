"""Serve the project with gunicorn, as production does, and talk HTTP to it.

``gunicorn`` starts ``config.wsgi`` on a free loopback port with the
production settings (``DEBUG=false``) and stops it afterwards; ``get``
makes one request and returns the status, the headers and the body, errors
included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from sqlalchemy.engine import URL

from tests.support.commands import command_environ, wait_for
from tests.support.project import PROJECT

GUNICORN = Path(sys.executable).with_name("gunicorn")
# The production settings of the README, for a server at 127.0.0.1.
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "tests-only-4f9c2e7a1b8d6e3f0a5c9b2d7e4f1a8c6b3d0e9f2a7c4b1d8e5f",
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
}
# Through a proxy that terminated TLS.
VIA_HTTPS = {"X-Forwarded-Proto": "https"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def output(self) -> str:
        """Everything the server wrote, once it has stopped."""
        stdout, stderr = self.process.communicate(timeout=30)
        return stdout + stderr


def listening(port: int, process: subprocess.Popen) -> bool:
    """Whether ``process`` accepts connections on ``port``; fail if it has exited."""
    if process.poll() is not None:
        stdout, stderr = process.communicate()
        raise AssertionError(f"gunicorn exited with {process.returncode}:\n{stdout}{stderr}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@contextmanager
def gunicorn(database_url: URL | None, **env: str) -> Iterator[Server]:
    """Serve the project on a free port, with the production settings and ``env``."""
    port = free_port()
    process = subprocess.Popen(
        [str(GUNICORN), "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=PROJECT,
        env=command_environ(database_url, **{**PRODUCTION, **env}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        wait_for(lambda: listening(port, process), 60, "gunicorn to listen")
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def get(url: str, headers: dict[str, str] | None = None) -> Response:
    """GET ``url`` without following redirects."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _opener.open(request, timeout=30) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read())
