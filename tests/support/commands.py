"""Run ``manage.py`` in a subprocess, exactly as a deploy runs it.

The one runner of the command tests: ``manage`` waits for the command,
``spawn`` starts it and returns at once (for concurrent runs), and both give
it the same environment (``command_environ``). ``wait_for`` watches a
spawned command get somewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL

from tests.support.project import PROJECT

COMMAND_TIMEOUT = 300


def django_url(url: URL) -> str:
    """Return ``url`` as a DATABASE_URL for django-environ."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{url.database}"
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def clean_environ(*drop: str) -> dict[str, str]:
    """Return the environment without the test run's Django settings and ``drop``."""
    unwanted = {"DJANGO_SETTINGS_MODULE", *drop}
    return {k: v for k, v in os.environ.items() if k not in unwanted}


def shown(url: URL) -> str:
    """Return ``url`` as the commands print it: no driver, password masked."""
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def command_environ(database_url: URL | None, **env: str) -> dict[str, str]:
    """Return the environment manage.py runs in: a test secret, ``database_url``, ``env``."""
    environ = clean_environ("DATABASE_URL", "DEBUG")
    environ["SECRET_KEY"] = "tests-only-not-secret"
    if database_url is not None:
        environ["DATABASE_URL"] = django_url(database_url)
    environ.update(env)
    return environ


def manage(
    *args: str, database_url: URL | None = None, input: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run ``manage.py *args`` and wait for it; ``input`` is its standard input if given."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=command_environ(database_url, **env),
        input=input,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def spawn(*args: str, database_url: URL, **env: str) -> subprocess.Popen:
    """Start ``manage.py *args`` in a new process, without waiting for it."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=command_environ(database_url, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
