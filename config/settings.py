"""Settings for the materials service.

Every deploy-specific value comes from the environment through django-environ.
With no ``DATABASE_URL`` the project runs on a SQLite file beside this folder,
so a fresh checkout works at once; PostgreSQL is the production target.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["localhost", "127.0.0.1", "[::1]"]),
)
# A local .env is a convenience for development; the real environment wins.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env("DEBUG")

SECRET_KEY = env("SECRET_KEY", default=None)
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY environment variable, "
            "or set DEBUG=true for local development."
        )
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env("ALLOWED_HOSTS")


def _proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto: https`` as Django's SECURE_PROXY_SSL_HEADER, or None if empty."""
    if not value.strip():
        return None
    name, colon, expected = value.partition(":")
    if not colon or not name.strip() or not expected.strip():
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER {value!r} is not 'Header-Name: value', "
            "e.g. 'X-Forwarded-Proto: https'"
        )
    return "HTTP_" + name.strip().upper().replace("-", "_"), expected.strip()


# Security. With DEBUG off every default is the production-safe one; each
# can be set from the environment. `manage.py check --deploy` checks them.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# A readiness probe speaks plain HTTP to the instance itself.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
# Opting in to browsers' preload lists is hard to undo: never by default.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# The origins (https://admin.example.com) a proxy may put before the admin's forms.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Behind a proxy that terminates TLS: the header it sets, and only it may
# set ("X-Forwarded-Proto: https"). Empty: requests are secure only if they
# reach Django over TLS.
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env.str("SECURE_PROXY_SSL_HEADER", default=""))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "health_check",
    "migsupport",
    "materials",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the collected static files (the admin's CSS) under gunicorn.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

# The URL schemes Django and migsupport both handle: PostgreSQL and SQLite.
DATABASE_SCHEMES = ("postgres", "postgresql", "pgsql", "sqlite")


def _masked(url: str) -> str:
    """Return ``url`` with the password, if any, replaced by ``***``.

    It works on text that may not even parse, so it masks rather too much
    than too little: everything between the first ``:`` of the user part
    and the last ``@``.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{separator}{user}:***@{host}"


_EMPTY = {
    "DATABASE_URL": "set a postgresql:// or sqlite:// URL, or unset it to use db.sqlite3",
    "DIRECT_DATABASE_URL": (
        "set a postgresql:// URL that reaches PostgreSQL directly, or unset it"
    ),
}


def _database_url_problem(url: str, variable: str = "DATABASE_URL") -> str | None:
    """Return why ``url`` cannot be ``variable``, or None when it looks usable."""
    if not url.strip():
        return f"is empty; {_EMPTY[variable]}"
    scheme, separator, _ = url.partition("://")
    if not separator or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "is not a URL; expected postgresql://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
    if scheme.lower() not in DATABASE_SCHEMES:
        return (
            f"uses the scheme {scheme!r}; this project supports PostgreSQL and SQLite only "
            f"({', '.join(s + '://' for s in DATABASE_SCHEMES)})"
        )
    if scheme.lower() == "sqlite":
        return None
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        return f"is malformed: {exc}"
    if "," not in parts.netloc:  # a multi-host URL is left to django-environ
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return (
                "is malformed: the port is not a number from 0 to 65535 (percent-encode any "
                "@ : / # ? in the user name or password)"
            )
    if not parts.path.strip("/"):
        return "names no database; expected postgresql://USER:PASSWORD@HOST:PORT/NAME"
    return None


def _password(url: str) -> str | None:
    """Return the password part of ``url``, parsed leniently, to keep it out of messages."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    return userinfo.split(":", 1)[1] or None if ":" in userinfo else None


def _database_from_url(url: str, variable: str = "DATABASE_URL") -> dict:
    """Return Django's DATABASES entry for ``url``, or raise one clear ImproperlyConfigured.

    ``variable`` names the setting in the message. The URL is shown with its
    password masked, whatever is wrong with it.
    """
    problem = _database_url_problem(url, variable)
    if problem is None:
        try:
            config = env.db_url_config(url)
        except (ValueError, KeyError, ImproperlyConfigured) as exc:
            detail, password = str(exc), _password(url)
            problem = f"is malformed: {detail.replace(password, '***') if password else detail}"
        else:
            if config.get("ENGINE"):
                return config
            problem = "is malformed: it names no database engine"
    shown = f" {_masked(url)}" if url.strip() else ""
    raise ImproperlyConfigured(" ".join(f"{variable}{shown} {problem}".split()))


DATABASES = {
    "default": _database_from_url(
        env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # What a transaction pooler (PgBouncer) in front of PostgreSQL needs, and
    # psycopg's defaults under Django already: parameters bound client-side
    # and no server-side prepared statements, which the pooler would hand to
    # another client. Server-side cursors (QuerySet.iterator()) outlive their
    # transaction, so behind such a pooler set DISABLE_SERVER_SIDE_CURSORS.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("server_side_binding", False)
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", None)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
    "DISABLE_SERVER_SIDE_CURSORS", default=False
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Alembic migrates the test database over a connection of its own, so it
    # must be a file rather than Django's default in-memory database.
    DATABASES["default"].setdefault("TEST", {"NAME": str(BASE_DIR / "test_db.sqlite3")})

# The guarded deploy commands (alembic_upgrade, alembic_stamp, ...) connect by
# DIRECT_DATABASE_URL where it is set, while the application keeps its pooled
# DATABASE_URL: their deploy lock is a session-level advisory lock, which a
# transaction pooler would share between clients.
MIGSUPPORT_DIRECT_DATABASES = {}
if "DIRECT_DATABASE_URL" in env.ENVIRON:  # set but empty is an error, as for DATABASE_URL
    _direct_url = env.str("DIRECT_DATABASE_URL", default="")
    _direct = _database_from_url(_direct_url, "DIRECT_DATABASE_URL")
    _kinds = [entry["ENGINE"].rpartition(".")[2] for entry in (_direct, DATABASES["default"])]
    if _kinds[0] != _kinds[1]:
        raise ImproperlyConfigured(
            f"DIRECT_DATABASE_URL {_masked(_direct_url)} is a {_kinds[0]} URL, but DATABASE_URL "
            f"is {_kinds[1]}: both must reach the same database"
        )
    MIGSUPPORT_DIRECT_DATABASES["default"] = _direct

# The domain tables belong to Alembic (see migsupport); Django never creates
# or alters them, so the materials app has no Django migrations at all.
MIGRATION_MODULES = {"materials": None}

# Apps whose models Alembic owns. migsupport derives Alembic's metadata from them.
MIGSUPPORT_APPS = ["materials"]
# The application's version, as the deploy log records it (e.g. a release tag or commit).
MIGSUPPORT_APP_VERSION = env("APP_VERSION", default=None)
# How long the readiness probe (/health/) keeps the database's state.
MIGSUPPORT_HEALTH_CACHE_SECONDS = env.float("HEALTH_CACHE_SECONDS", default=10)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Filled by `manage.py collectstatic` (`make serve` runs it), served by whitenoise.
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
if DEBUG:
    # runserver serves the files from the apps (whitenoise too, with DEBUG):
    # nothing needs collecting, so a missing STATIC_ROOT is no news.
    warnings.filterwarnings("ignore", message="No directory at")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed copies and content-hashed names, which browsers may cache forever.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "alembic": {"handlers": ["console"], "level": env("ALEMBIC_LOG_LEVEL", default="WARNING")},
        # django-health-check logs each failed check with a traceback: a
        # readiness probe fails every few seconds during a deploy. The reason,
        # in one line, comes from migsupport.health; errors still show.
        "health_check": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "migsupport.health": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
