"""The direct URL of the guarded commands: DIRECT_DATABASE_URL, and where it leads.

The settings are read in a fresh ``manage.py`` process, as a deploy reads
them; the engine's choices are checked in this one, with the settings
overridden.
"""

from __future__ import annotations

import pytest
from django.db import connections
from django.test import override_settings

from migsupport import engine as engines
from migsupport.engine import command_target, direct_url, url_for_alias
from migsupport.exceptions import ConfigurationError
from tests.support.commands import manage

SECRET = "D1rect-Secret"
POOLED = "postgresql://app:pooled-pw@127.0.0.1:6432/materials"
SHOW = (
    "from django.conf import settings; from migsupport.engine import command_target; "
    "d = settings.MIGSUPPORT_DIRECT_DATABASES.get('default'); "
    "print(d and (d['ENGINE'], d['USER'], d['HOST'], d['PORT'], d['NAME'])); "
    "print(command_target().label); "
    "print(settings.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'])"
)


def show(**env: str):
    return manage("shell", "-c", SHOW, **env)


def test_direct_database_url_gives_the_default_alias_its_direct_connection():
    result = show(
        DATABASE_URL=POOLED,
        DIRECT_DATABASE_URL=f"postgresql://deploy:{SECRET}@db.internal:5432/materials",
    )

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines()[-3:] == [
        "('django.db.backends.postgresql', 'deploy', 'db.internal', 5432, 'materials')",
        "postgresql://deploy:***@db.internal:5432/materials (direct)",
        "False",
    ]


def test_without_direct_database_url_the_commands_use_database_url():
    result = show(DATABASE_URL=POOLED, DISABLE_SERVER_SIDE_CURSORS="true")

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines()[-3:] == [
        "None",
        "postgresql://app:***@127.0.0.1:6432/materials",
        "True",
    ]


@pytest.mark.parametrize(
    ("direct", "line"),
    [
        (
            "",
            "Error: DIRECT_DATABASE_URL is empty; set a postgresql:// URL that reaches "
            "PostgreSQL directly, or unset it",
        ),
        (
            f"postgresql://deploy:{SECRET}@db:99999/materials",
            "Error: DIRECT_DATABASE_URL postgresql://deploy:***@db:99999/materials is malformed: "
            "the port is not a number from 0 to 65535 (percent-encode any @ : / # ? in the user "
            "name or password)",
        ),
        (
            f"mysql://deploy:{SECRET}@db/materials",
            "Error: DIRECT_DATABASE_URL mysql://deploy:***@db/materials uses the scheme 'mysql'; "
            "this project supports PostgreSQL and SQLite only (postgres://, postgresql://, "
            "pgsql://, sqlite://)",
        ),
        (
            f"postgresql://deploy:{SECRET}@db:5432",
            "Error: DIRECT_DATABASE_URL postgresql://deploy:***@db:5432 names no database; "
            "expected postgresql://USER:PASSWORD@HOST:PORT/NAME",
        ),
        (
            "sqlite:///elsewhere.sqlite3",
            "Error: DIRECT_DATABASE_URL sqlite:///elsewhere.sqlite3 is a sqlite3 URL, but "
            "DATABASE_URL is postgresql: both must reach the same database",
        ),
    ],
    ids=["empty", "bad port", "other scheme", "no database", "other kind"],
)
def test_a_bad_direct_database_url_is_one_line_with_the_password_masked(direct, line):
    for command in (("alembic_upgrade",), ("alembic_status", "--json")):
        result = manage(*command, DATABASE_URL=POOLED, DIRECT_DATABASE_URL=direct)

        assert (result.returncode, result.stdout, result.stderr) == (1, "", line + "\n")
        assert SECRET not in result.stderr


# -- in this process -----------------------------------------------------------------------------


DIRECT_ENTRY = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": "/srv/direct.sqlite3",
}


def test_command_target_is_the_alias_url_without_a_direct_one():
    with override_settings(MIGSUPPORT_DIRECT_DATABASES={}):
        target = command_target("default")

    assert (target.url, target.direct) == (url_for_alias("default"), False)
    assert target.to_dict() == {"url": target.shown, "direct": False}


def test_command_target_is_the_direct_url_when_set(monkeypatch):
    monkeypatch.setattr(engines, "_configured_names", {})
    entry = {**DIRECT_ENTRY, "ENGINE": connections["default"].settings_dict["ENGINE"]}
    if connections["default"].vendor == "postgresql":
        entry = {**entry, "HOST": "db.internal", "PORT": 5432, "USER": "deploy"}
        entry["PASSWORD"], entry["NAME"] = SECRET, "materials"
    with override_settings(MIGSUPPORT_DIRECT_DATABASES={"default": entry}):
        target = command_target("default")

    assert target.direct is True
    assert target.url.database == entry["NAME"]
    assert target.label == f"{target.shown} (direct)"
    assert SECRET not in target.label


def test_a_direct_url_follows_the_alias_to_its_test_database(monkeypatch):
    """Django's test runner renames the alias's database; the direct URL goes along."""
    settings_dict = connections["default"].settings_dict
    entry = {**DIRECT_ENTRY, "ENGINE": settings_dict["ENGINE"], "NAME": "materials"}
    monkeypatch.setattr(engines, "_configured_names", {"default": "materials"})
    monkeypatch.setitem(settings_dict, "NAME", "test_materials")
    with override_settings(MIGSUPPORT_DIRECT_DATABASES={"default": entry}):
        renamed = direct_url("default")
    monkeypatch.setitem(settings_dict, "NAME", "materials")
    with override_settings(MIGSUPPORT_DIRECT_DATABASES={"default": entry}):
        configured = direct_url("default")

    assert renamed.database == "test_materials"
    assert configured.database == "materials"


@pytest.mark.parametrize(
    ("configured", "message"),
    [
        (
            {"reporting": DIRECT_ENTRY},
            "MIGSUPPORT_DIRECT_DATABASES names 'reporting', which is not in DATABASES",
        ),
        (
            {"default": {"NAME": "x"}},
            "MIGSUPPORT_DIRECT_DATABASES['default'] must be a DATABASES-style entry with an ENGINE",
        ),
        (
            {"default": {"ENGINE": "django.db.backends.mysql", "NAME": "x"}},
            "MIGSUPPORT_DIRECT_DATABASES['default'] uses django.db.backends.mysql, but the "
            "database 'default' uses {engine}: a direct connection must reach the same database",
        ),
        (["default"], "MIGSUPPORT_DIRECT_DATABASES must map database aliases to DATABASES-style"),
    ],
    ids=["unknown alias", "no engine", "other engine", "not a mapping"],
)
def test_a_bad_direct_databases_setting_is_a_configuration_error(configured, message):
    engine = connections["default"].settings_dict["ENGINE"]
    with (
        override_settings(MIGSUPPORT_DIRECT_DATABASES=configured),
        pytest.raises(ConfigurationError) as error,
    ):
        command_target("default")

    assert str(error.value).startswith(message.format(engine=engine))


def test_django_only_options_stay_out_of_the_engine_url():
    """Django's own OPTIONS (settings.py sets two for poolers) are no libpq parameters."""
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "materials",
        "OPTIONS": {
            "server_side_binding": False,
            "prepare_threshold": None,
            "isolation_level": 1,
            "connect_timeout": 3,
            "sslmode": "prefer",
        },
    }

    url = engines._url_from_entry("default", "postgresql", entry)

    assert dict(url.query) == {"connect_timeout": "3", "sslmode": "prefer"}
