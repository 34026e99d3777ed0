"""The admin's schema page: who may see it, and what it says of each state.

The page reads the state as ``manage.py alembic_status`` does; its lines are
checked against that command's own output on the same database. Django's
test database (the ``default`` alias) is at the head; the other states are
databases of their own, built as ``tests.support.states`` builds them (on
SQLite and on PostgreSQL), under a Django alias for the test.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from sqlalchemy.engine import URL, Engine

from materials.admin.display import SEVERITY_COLOURS, state_badge, status_badge, with_code
from materials.admin.views import schema
from migsupport.wording import ERROR, SUCCESS, WARNING
from tests.support.commands import manage
from tests.support.inprocess import database_alias, run_command
from tests.support.states import (
    BASELINE,
    DRIFT_INDEX,
    HEAD,
    SECOND,
    execute,
    reach,
)
from tests.support.users import staff_user

SCHEMA_PAGE = reverse("admin:materials_schema")
INDEX = reverse("admin:index")

DESCRIPTIONS = {
    BASELINE: "Baseline: the deployed schema.",
    SECOND: ("Cancelled jobs, the model version, and an index for a job's best materials."),
    HEAD: "Indexes for browsing detected materials at production scale.",
}


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test reads the state afresh, and leaves no reading behind."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def schema_client(client: Client) -> Client:
    """A staff user holding the schema permission, and nothing else."""
    client.force_login(staff_user("dba", "view_schema_state"))
    return client


def content_main(response: Any) -> str:
    """The page's own content, without the admin's header (its logout form) and sidebar."""
    html = response.content.decode()
    start = html.index('<div id="content-main"')
    return html[start : html.index("<footer", start) if "<footer" in html[start:] else None]


def texts(response: Any, css_class: str) -> list[str]:
    """The text of each ``<li>`` of the list with ``css_class``, tags removed, unescaped."""
    html = content_main(response)
    match = re.search(rf'<ul class="[^"]*\b{css_class}\b[^"]*">(.*?)</ul>', html, re.S)
    if match is None:
        return []
    return [
        unescape(re.sub(r"<[^>]+>", "", item))
        for item in re.findall(r"<li>(.*?)</li>", match[1], re.S)
    ]


def row_text(response: Any, row: str) -> str | None:
    """The text of the state table's row ``row`` (``current``, ``head``...), or None."""
    html = content_main(response)
    match = re.search(rf'<tr id="schema-row-{row}">.*?<td>(.*?)</td></tr>', html, re.S)
    if match is None:
        return None
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", match[1])).split())


def revision_text(revision: str) -> str:
    return f"{revision} {DESCRIPTIONS[revision]}"


# -- the permission ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_permission_is_django_s_own_on_the_jobs_model() -> None:
    permission = Permission.objects.get(
        content_type__app_label="materials", codename="view_schema_state"
    )

    assert permission.name == "Can view the database schema state"
    assert permission.content_type.model == "materialdetectionjob"


def test_manage_py_migrate_creates_the_permission(tmp_path: Path) -> None:
    database = tmp_path / "fresh.sqlite3"
    url = URL.create("sqlite", database=str(database))

    result = manage("migrate", "--verbosity", "0", database_url=url)

    assert (result.returncode, result.stderr) == (0, "")
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT p.name, t.app_label, t.model FROM auth_permission p "
            "JOIN django_content_type t ON t.id = p.content_type_id "
            "WHERE p.codename = 'view_schema_state'"
        ).fetchall()
        # Django's tables only: the domain tables are Alembic's.
        tables = {
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    assert rows == [("Can view the database schema state", "materials", "materialdetectionjob")]
    assert not tables & {"material_detection_jobs", "detected_materials"}


# -- access -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_user_is_redirected_to_login(client: Client) -> None:
    response = client.get(SCHEMA_PAGE)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={SCHEMA_PAGE}"


@pytest.mark.django_db
@pytest.mark.parametrize("codenames", [(), ("view_detectedmaterial", "view_materialdetectionjob")])
def test_staff_without_the_permission_are_forbidden(client: Client, codenames: tuple) -> None:
    client.force_login(staff_user("viewer", *codenames))

    response = client.get(SCHEMA_PAGE)

    assert response.status_code == 403
    # Nor is the state read for them.
    assert cache.get(schema.CACHE_KEY.format(alias="default")) is None


@pytest.mark.django_db
def test_non_staff_with_the_permission_are_sent_to_login(client: Client) -> None:
    user = staff_user("outsider", "view_schema_state")
    user.is_staff = False
    user.save()
    client.force_login(user)

    response = client.get(SCHEMA_PAGE)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={SCHEMA_PAGE}"


@pytest.mark.django_db
def test_staff_with_the_permission_and_superusers_see_it(schema_client: Client) -> None:
    assert schema_client.get(SCHEMA_PAGE).status_code == 200
    root = Client()
    root.force_login(User.objects.create_superuser("root", password=None))
    assert root.get(SCHEMA_PAGE).status_code == 200


@pytest.mark.django_db
def test_the_sidebar_shows_only_for_staff_with_models_to_list(schema_client: Client) -> None:
    # With nothing but the schema page, the sidebar would only say that nothing can be viewed.
    assert 'id="nav-sidebar"' not in schema_client.get(SCHEMA_PAGE).content.decode()
    root = Client()
    root.force_login(User.objects.create_superuser("root", password=None))
    assert 'id="nav-sidebar"' in root.get(SCHEMA_PAGE).content.decode()


@pytest.mark.django_db
def test_an_unknown_database_alias_is_not_found(schema_client: Client) -> None:
    response = schema_client.get(SCHEMA_PAGE, {"database": "nowhere"})

    assert response.status_code == 404


# -- the index ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_index_links_to_the_page_without_reading_the_state(schema_client: Client) -> None:
    response = schema_client.get(INDEX)

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<a href="{SCHEMA_PAGE}">Database schema</a>' in html
    # Nothing but the schema page: no "You don't have permission" under the link.
    assert "have permission to view or edit anything" not in html
    assert cache.get(schema.CACHE_KEY.format(alias="default")) is None
    schema_client.get(SCHEMA_PAGE)
    assert cache.get(schema.CACHE_KEY.format(alias="default")) is not None


@pytest.mark.django_db
def test_the_index_has_no_link_without_the_permission(client: Client) -> None:
    client.force_login(staff_user("viewer", "view_detectedmaterial", "view_materialdetectionjob"))

    html = client.get(INDEX).content.decode()

    assert SCHEMA_PAGE not in html
    assert "Detection charts" in html


# -- what it shows -----------------------------------------------------------------------


@pytest.mark.django_db
def test_an_up_to_date_database(schema_client: Client) -> None:
    response = schema_client.get(SCHEMA_PAGE)

    assert response.status_code == 200
    html = content_main(response)
    reading = response.context["reading"]
    assert reading.state == "up_to_date" and reading.error is None
    assert str(state_badge("up_to_date", SUCCESS)) in html
    assert "schema-state-up-to-date" in html
    assert row_text(response, "current") == revision_text(HEAD)
    assert row_text(response, "head") == revision_text(HEAD)
    assert row_text(response, "pending") is None
    assert row_text(response, "ledger") == "fresh"
    assert "The recorded version is the head, and the schema equals it." in html
    assert 'id="schema-differences"' not in html
    assert 'id="schema-unowned"' not in html
    assert 'Database <span class="schema-database">default</span>: ' in html


@pytest.mark.django_db
def test_the_page_changes_nothing_and_offers_nothing_to_change(schema_client: Client) -> None:
    html = content_main(schema_client.get(SCHEMA_PAGE))

    assert "<form" not in html
    assert "<button" not in html
    assert "<input" not in html


def test_commands_in_a_hint_are_code_and_the_rest_is_escaped() -> None:
    assert str(with_code("Run `manage.py alembic_stamp <rev>` & wait.")) == (
        "Run <code>manage.py alembic_stamp &lt;rev&gt;</code> &amp; wait."
    )
    assert str(with_code(None)) == ""


def test_the_badge_is_the_job_status_badge_in_its_colours() -> None:
    job = str(status_badge("COMPLETED"))
    state = str(state_badge("up_to_date", SUCCESS))

    # The same element and style, another class, label and colour.
    assert re.sub(r'class="[^"]*"|>[^<]*<', "", job) == re.sub(r'class="[^"]*"|>[^<]*<', "", state)
    assert SEVERITY_COLOURS == {SUCCESS: "#15803d", WARNING: "#92400e", ERROR: "#b91c1c"}
    assert 'class="schema-state schema-state-drifted" style="background-color: #b91c1c;' in str(
        state_badge("drifted", ERROR)
    )
    assert ">unreadable</span>" in str(state_badge(None, None))


@pytest.fixture
def other_database(database_url: URL, engine: Engine) -> Iterator[tuple[str, Engine]]:
    """A second database under a Django alias of its own, for the test: ``(alias, engine)``."""
    with database_alias(database_url) as alias:
        yield alias, engine


def status_lines(alias: str) -> list[str]:
    """What ``manage.py alembic_status`` prints for ``alias``, line by line."""
    outcome = run_command("alembic_status", alias=alias)
    assert outcome.error is None, outcome.error
    return outcome.stdout.splitlines()


def command_section(lines: list[str], heading: str) -> list[str]:
    """The ``  - item`` lines under ``heading`` in the command's output."""
    start = lines.index(heading) + 1
    items = []
    for line in lines[start:]:
        if not line.startswith("  - "):
            break
        items.append(line.removeprefix("  - "))
    return items


@pytest.mark.django_db
def test_a_drifted_database(schema_client: Client, other_database: tuple[str, Engine]) -> None:
    alias, engine = other_database
    reach(engine, "drifted")

    response = schema_client.get(SCHEMA_PAGE, {"database": alias})

    assert response.status_code == 200
    html = content_main(response)
    assert str(state_badge("drifted", ERROR)) in html
    assert row_text(response, "current") == revision_text(HEAD)
    assert row_text(response, "head") == revision_text(HEAD)
    assert "A version is recorded, but the schema differs from it." in html
    assert (
        "See the safe way back to the recorded revision with <code>manage.py alembic_repair "
        "--plan</code>, or write a revision for the change." in html
    )
    differences = texts(response, "schema-lines")
    assert differences == [f"index {DRIFT_INDEX} is missing"]
    # Worded exactly as the command words them.
    assert differences == command_section(status_lines(alias), "Differences:")
    # The database picker names both aliases, this one selected.
    assert f'<a href="?database={alias}" class="selected" aria-current="page">{alias}</a>' in html
    assert '<a href="?database=default">default</a>' in html


@pytest.mark.django_db
def test_a_database_behind_lists_the_pending_revisions_with_their_descriptions(
    schema_client: Client, other_database: tuple[str, Engine]
) -> None:
    alias, engine = other_database
    reach(engine, "behind")

    response = schema_client.get(SCHEMA_PAGE, {"database": alias})

    html = content_main(response)
    assert str(state_badge("behind", WARNING)) in html
    assert row_text(response, "current") == revision_text(BASELINE)
    assert row_text(response, "head") == revision_text(HEAD)
    assert row_text(response, "pending") == f"{revision_text(SECOND)} {revision_text(HEAD)}"
    assert "The schema equals the recorded version; newer revisions are pending." in html
    assert (
        '<p class="schema-hint">Run <code>manage.py alembic_upgrade</code> to apply the pending '
        "revisions.</p>" in html
    )
    lines = status_lines(alias)
    assert f"  Pending:  {SECOND}, {HEAD}" in lines
    assert "  The schema equals the recorded version; newer revisions are pending." in lines


@pytest.mark.django_db
def test_unowned_objects_are_listed_as_the_command_lists_them(
    schema_client: Client, other_database: tuple[str, Engine]
) -> None:
    alias, engine = other_database
    reach(engine, "up_to_date")
    execute(engine, "CREATE TABLE audit_notes (id INTEGER PRIMARY KEY, note VARCHAR(200))")

    response = schema_client.get(SCHEMA_PAGE, {"database": alias})

    html = content_main(response)
    assert str(state_badge("up_to_date", SUCCESS)) in html
    assert 'id="schema-unowned"' in html
    unowned = texts(response, "schema-lines")
    assert unowned == ["table audit_notes"]
    assert unowned == command_section(
        status_lines(alias),
        "Unowned objects (no model or revision defines them; not compared):",
    )


@pytest.mark.django_db
def test_the_state_is_kept_for_a_few_seconds_per_database(
    schema_client: Client, other_database: tuple[str, Engine]
) -> None:
    alias, engine = other_database
    reach(engine, "up_to_date")
    assert schema_client.get(SCHEMA_PAGE, {"database": alias}).context["reading"].state == (
        "up_to_date"
    )
    execute(engine, f"DROP INDEX {DRIFT_INDEX}")

    # Within the interval, the same reading; the default alias has its own.
    again = schema_client.get(SCHEMA_PAGE, {"database": alias})
    assert again.context["reading"].state == "up_to_date"
    assert schema_client.get(SCHEMA_PAGE).context["reading"].database == "default"
    assert cache.get(schema.CACHE_KEY.format(alias=alias)).state == "up_to_date"
    # Once it has expired, the state is read again.
    cache.delete(schema.CACHE_KEY.format(alias=alias))
    assert schema_client.get(SCHEMA_PAGE, {"database": alias}).context["reading"].state == (
        "drifted"
    )


# -- a database that cannot be read -----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.postgresql
def test_an_unreachable_database_is_one_line_without_its_password(
    schema_client: Client, pg_server: URL
) -> None:
    url = pg_server.set(password="s3cret-pw", database="materials_no_such_database")
    with database_alias(url) as alias:
        response = schema_client.get(SCHEMA_PAGE, {"database": alias})

    assert response.status_code == 200
    html = response.content.decode()
    assert "s3cret-pw" not in html
    error = response.context["reading"].error
    assert "\n" not in error
    assert error.startswith("postgresql://postgres:***@")
    assert 'database "materials_no_such_database" does not exist' in error
    assert f"The state could not be read: {error}" in unescape(content_main(response))
    assert str(state_badge(None, None)) not in html
    # The ledger needs no database: its freshness is still shown.
    assert response.context["reading"].ledger == "fresh"


@pytest.mark.django_db
def test_a_missing_sqlite_file_is_one_line(schema_client: Client, tmp_path: Path) -> None:
    missing = tmp_path / "gone.sqlite3"
    with database_alias(URL.create("sqlite", database=str(missing))) as alias:
        response = schema_client.get(SCHEMA_PAGE, {"database": alias})

    assert response.status_code == 200
    assert response.context["reading"].error == (
        f"sqlite:///{missing}: the database file does not exist"
    )
    assert not missing.exists()


# -- the deploy log ----------------------------------------------------------------------


def log_rows(response: Any) -> list[str]:
    """Each row of the deploy log's table: its cells' text, joined by " | "."""
    html = content_main(response)
    rows = re.findall(r'<tr class="schema-log-entry"[^>]*>(.*?)</tr>', html, re.S)
    return [
        " | ".join(
            " ".join(unescape(re.sub(r"<[^>]+>", " ", cell)).split())
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        )
        for row in rows
    ]


def record_upgrade(engine: Engine, revision: str, checksum: str) -> None:
    """Write a deploy log row saying that ``revision`` was applied from a script of ``checksum``."""
    from migsupport.deploylog import UPGRADE, DeployLog, now

    with engine.begin() as connection:
        DeployLog(connection, "alembic_upgrade").record(
            UPGRADE,
            before=SECOND,
            after=revision,
            started_at=now(),
            outcome="applied",
            checksum=checksum,
        )


def record_stamps(engine: Engine, count: int) -> None:
    """Write ``count`` rows into the deploy log, as that many stamps of the head would."""
    from migsupport.deploylog import STAMP, DeployLog, now

    with engine.begin() as connection:
        log = DeployLog(connection, "alembic_stamp")
        for _ in range(count):
            log.record(STAMP, before=HEAD, after=HEAD, started_at=now(), outcome="proven")


@pytest.mark.django_db
def test_a_database_migrated_before_the_log_existed(
    schema_client: Client, other_database: tuple[str, Engine]
) -> None:
    alias, engine = other_database
    reach(engine, "up_to_date")  # by plain Alembic: no guarded command, no log

    html = content_main(schema_client.get(SCHEMA_PAGE, {"database": alias}))

    assert '<p class="schema-log-empty">No deploy has been logged yet.</p>' in html
    assert (
        '<p class="schema-before-log">Revisions applied before the log existed: '
        f"{BASELINE}, {SECOND}, {HEAD}</p>" in html
    )
    assert "schema-log-entry" not in html


@pytest.mark.django_db
def test_a_guarded_upgrade_is_in_the_log(
    schema_client: Client, other_database: tuple[str, Engine]
) -> None:
    alias, engine = other_database
    reach(engine, "behind")
    outcome = run_command("alembic_upgrade", alias=alias)
    assert outcome.error is None, outcome.error

    response = schema_client.get(SCHEMA_PAGE, {"database": alias})

    rows = log_rows(response)
    assert len(rows) == 2
    # Newest first; the started time, the user and host vary: the rest is exact.
    for row, (before, after) in zip(rows, [(SECOND, HEAD), (BASELINE, SECOND)], strict=True):
        cells = row.split(" | ")
        assert cells[1:5] == ["alembic_upgrade", "upgrade", f"{before} → {after}", "applied"], row
    assert "schema-before-log" in content_main(response)  # the baseline came before the log
    assert "2 entries" in content_main(response)


@pytest.mark.django_db
def test_the_log_is_paginated_25_entries_a_page(
    schema_client: Client, other_database: tuple[str, Engine]
) -> None:
    alias, engine = other_database
    reach(engine, "up_to_date")
    record_stamps(engine, 30)

    first = schema_client.get(SCHEMA_PAGE, {"database": alias})
    second = schema_client.get(SCHEMA_PAGE, {"database": alias, "page": "2"})

    def ids(response: Any) -> list[int]:
        return [
            int(i)
            for i in re.findall(r'class="schema-log-entry" data-id="(\d+)"', content_main(response))
        ]

    assert ids(first) == list(range(30, 5, -1))
    assert ids(second) == [5, 4, 3, 2, 1]
    html = content_main(first)
    assert '<span class="this-page">1</span>' in html
    assert f'<a href="?database={alias}&amp;page=2">2</a>' in html
    assert "30 entries, 1&ndash;25 shown" in html
    assert "30 entries, 26&ndash;30 shown" in content_main(second)
    assert f'<a href="?database={alias}&amp;page=1">1</a>' in content_main(second)
    # Past the last page: the last page; not a page number: the first.
    assert ids(schema_client.get(SCHEMA_PAGE, {"database": alias, "page": "99"})) == ids(second)
    assert ids(schema_client.get(SCHEMA_PAGE, {"database": alias, "page": "x"})) == ids(first)
    # Each page reads the log afresh, while the state stays cached.
    assert not any("<form" in content_main(r) for r in (first, second))


@pytest.mark.django_db
def test_a_revision_edited_after_it_was_applied_is_shown_as_the_command_shows_it(
    schema_client: Client, other_database: tuple[str, Engine]
) -> None:
    alias, engine = other_database
    reach(engine, "up_to_date")
    record_upgrade(engine, HEAD, "ab" * 32)

    response = schema_client.get(SCHEMA_PAGE, {"database": alias})

    html = content_main(response)
    assert 'id="schema-edited"' in html
    edited = texts(response, "schema-lines")
    assert len(edited) == 1
    assert edited[0].startswith(f"revision {HEAD} was edited after it was applied: ")
    assert edited[0].endswith("the deploy log recorded abababababab")
    lines = status_lines(alias)
    assert edited == command_section(lines, "Edited after they were applied:")
    assert (
        "<code>manage.py alembic_upgrade --accept-edited REVISION</code>; until then the upgrade "
        "refuses." in html
    )
    assert lines[-1] == (
        "Restore the edited scripts, or accept each edit with `manage.py alembic_upgrade "
        "--accept-edited REVISION`; until then the upgrade refuses."
    )
