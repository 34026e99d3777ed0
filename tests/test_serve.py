"""Serving in production: gunicorn, whitenoise, the security settings and /health/.

Every server here is gunicorn running ``config.wsgi`` with ``DEBUG=false``,
in a process of its own, on a real database of each dialect.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from migsupport.engine import create_engine
from tests.support.commands import clean_environ, command_environ, manage, wait_for
from tests.support.project import PROJECT
from tests.support.serve import PRODUCTION, VIA_HTTPS, free_port, get, gunicorn, listening

README = PROJECT / "README.md"
PASSWORD = "s3cret-health-password"


def production_variables() -> str:
    """The README's block of production variables, as a user would paste it."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    (block,) = [block for block in blocks if block.startswith("export DEBUG=false\n")]
    return block


def check_deploy(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"{script}\n{sys.executable} manage.py check --deploy"],
        cwd=PROJECT,
        env=clean_environ("DATABASE_URL", "DEBUG", "SECRET_KEY"),
        capture_output=True,
        text=True,
        timeout=120,
    )


# check --deploy


def test_check_deploy_is_clean_with_the_readme_production_variables() -> None:
    completed = check_deploy(production_variables())

    assert completed.stderr == ""
    assert completed.stdout == "System check identified no issues (0 silenced).\n"
    assert completed.returncode == 0


def test_production_defaults_leave_only_the_preload_opt_in() -> None:
    # DEBUG off, a strong key and a host: everything else is safe by default,
    # but for HSTS preloading, which is hard to undo and never on by default.
    completed = check_deploy(
        "export DEBUG=false\n"
        f"export SECRET_KEY={PRODUCTION['SECRET_KEY']}\n"
        "export ALLOWED_HOSTS=materials.example.com"
    )

    issues = re.findall(r"\(security\.(W\d+)\)", completed.stderr)
    assert issues == ["W021"], completed.stderr


def test_a_malformed_proxy_header_stops_start_up_in_one_line() -> None:
    completed = check_deploy(
        "export DEBUG=false\n"
        f"export SECRET_KEY={PRODUCTION['SECRET_KEY']}\n"
        "export SECURE_PROXY_SSL_HEADER=https"
    )

    assert completed.returncode == 1
    assert completed.stderr == (
        "Error: SECURE_PROXY_SSL_HEADER 'https' is not 'Header-Name: value', "
        "e.g. 'X-Forwarded-Proto: https'\n"
    )


# gunicorn and whitenoise


@pytest.fixture
def static_root(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    completed = manage("collectstatic", "--noinput", "-v", "0", STATIC_ROOT=str(root), **PRODUCTION)
    assert completed.returncode == 0, completed.stderr
    return root


def test_gunicorn_serves_the_admin_with_its_css(sqlite_url: URL, static_root: Path) -> None:
    assert manage("migrate", "-v", "0", database_url=sqlite_url).returncode == 0

    with gunicorn(sqlite_url, STATIC_ROOT=str(static_root)) as server:
        login = get(f"{server.url}/admin/login/", VIA_HTTPS)
        stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', login.text)
        css = get(f"{server.url}{stylesheets[0]}", VIA_HTTPS)
        plain_http = get(f"{server.url}/admin/login/")

    assert login.status == 200
    # Content-hashed names, from the manifest collectstatic wrote.
    assert re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", stylesheets[0])
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert b"--body-fg" in css.body
    assert "max-age=315360000" in css.headers["Cache-Control"]
    # The production defaults: HSTS, secure cookies, and plain HTTP redirected.
    assert login.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Secure" in login.headers["Set-Cookie"]
    assert plain_http.status == 301
    assert (
        plain_http.headers["Location"]
        == f"https://127.0.0.1:{server.url.rsplit(':', 1)[1]}/admin/login/"
    )


def test_make_serve_collects_the_static_files_and_runs_gunicorn(
    sqlite_url: URL, tmp_path: Path
) -> None:
    assert manage("migrate", "-v", "0", database_url=sqlite_url).returncode == 0
    assert manage("alembic_upgrade", database_url=sqlite_url).returncode == 0
    port = free_port()
    venv = Path(sys.prefix)
    # -o: the virtual environment is there already; never rebuild it.
    process = subprocess.Popen(
        [
            "make",
            "serve",
            f"SERVE_ADDR=127.0.0.1:{port}",
            f"VENV={venv}",
            "-o",
            f"{venv}/.installed",
        ],
        cwd=PROJECT,
        env=command_environ(sqlite_url, **PRODUCTION, STATIC_ROOT=str(tmp_path / "static")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: listening(port, process), 120, "make serve to listen")
        health = get(f"http://127.0.0.1:{port}/health/")
        login = get(f"http://127.0.0.1:{port}/admin/login/", VIA_HTTPS)
        (stylesheet, *_) = re.findall(r'<link rel="stylesheet" href="([^"]+)"', login.text)
        css = get(f"http://127.0.0.1:{port}{stylesheet}", VIA_HTTPS)
    finally:
        # make and the gunicorn it started share the session made for them.
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=60)[0]

    assert health.status == 200
    assert css.status == 200
    assert (tmp_path / "static" / "staticfiles.json").exists()
    assert f"Listening at: http://127.0.0.1:{port}" in output


# /health/


def drop_an_index(url: URL) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP INDEX ix_detected_materials_category"))
    finally:
        engine.dispose()


def with_password(url: URL) -> URL:
    # The test server trusts loopback connections, so any password will do.
    return url.set(password=PASSWORD) if url.get_backend_name() == "postgresql" else url


def assert_nothing_secret(text: str, url: URL) -> None:
    """Neither the password nor anything of the database's URL is in ``text``."""
    assert PASSWORD not in text
    assert "://" not in text
    if url.database:
        assert Path(url.database).name not in text


def test_health_answers_200_only_while_the_database_is_up_to_date(database_url: URL) -> None:
    url = with_password(database_url)
    assert manage("migrate", "-v", "0", database_url=url).returncode == 0

    with gunicorn(url, HEALTH_CACHE_SECONDS="0") as server:
        empty = get(f"{server.url}/health/?format=text")
        assert manage("alembic_upgrade", database_url=url).returncode == 0
        up_to_date = get(f"{server.url}/health/?format=text")
        drop_an_index(database_url)
        drifted = get(f"{server.url}/health/?format=text")
        as_json = get(f"{server.url}/health/", {"Accept": "application/json"})
    output = server.output()

    assert (empty.status, empty.text) == (
        503,
        "MigrationState(alias='default'): Unavailable: the database is empty, not up_to_date\n",
    )
    assert (up_to_date.status, up_to_date.text) == (200, "MigrationState(alias='default'): OK\n")
    assert drifted.status == 503
    assert drifted.text == (
        "MigrationState(alias='default'): Unavailable: the database is drifted, not up_to_date\n"
    )
    assert as_json.status == 503
    assert as_json.text == (
        "{\"MigrationState(alias='default')\": "
        '"Unavailable: the database is drifted, not up_to_date"}'
    )
    for text in (empty.text, up_to_date.text, drifted.text, as_json.text):
        assert_nothing_secret(text, url)
    assert PASSWORD not in output
    # A failing probe is no error of the server's: no traceback in its log.
    assert "Traceback" not in output


def test_health_keeps_the_state_for_the_cache_interval(sqlite_url: URL) -> None:
    assert manage("migrate", "-v", "0", database_url=sqlite_url).returncode == 0
    assert manage("alembic_upgrade", database_url=sqlite_url).returncode == 0

    with gunicorn(sqlite_url, HEALTH_CACHE_SECONDS="600") as server:
        first = get(f"{server.url}/health/?format=text")
        drop_an_index(sqlite_url)
        cached = get(f"{server.url}/health/?format=text")

    assert first.status == 200
    # Read once per interval: the drift shows when the state is read again.
    assert cached.status == 200


@pytest.mark.postgresql
def test_health_of_an_unreachable_database_names_no_url(pg_server: URL) -> None:
    closed = pg_server.set(port=1, password=PASSWORD, database="materials")

    with gunicorn(closed, HEALTH_CACHE_SECONDS="0") as server:
        response = get(f"{server.url}/health/?format=text")
    output = server.output()

    assert response.status == 503
    assert response.text == (
        "MigrationState(alias='default'): Unavailable: the database is unreachable, "
        "not up_to_date\n"
    )
    assert_nothing_secret(response.text, closed)
    assert PASSWORD not in output
    # Why, in one line of the server's log, the URL masked.
    assert "Readiness of database 'default': postgresql://postgres:***@127.0.0.1:1/materials: " in (
        output
    )
    assert "Traceback" not in output


def test_the_probe_is_not_redirected_to_https(sqlite_url: URL) -> None:
    assert manage("migrate", "-v", "0", database_url=sqlite_url).returncode == 0
    assert manage("alembic_upgrade", database_url=sqlite_url).returncode == 0

    with gunicorn(sqlite_url) as server:
        probe = get(f"{server.url}/health/")
        page = get(f"{server.url}/admin/")

    assert probe.status == 200
    assert page.status == 301
