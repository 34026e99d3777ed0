"""Settings for the test suite: the project's own, with a throwaway secret and no HTTPS redirect.

Everything else (DATABASE_URL included) comes from the environment exactly
as in production, so the suite runs on SQLite by default and on PostgreSQL
with ``DATABASE_URL=postgresql://...``. On PostgreSQL, Django's test
database is named uniquely for each run, so that two runs on one server
(two checkouts, or CI beside a developer) never share it.
"""

import os
import uuid

os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")

from config.settings import *  # noqa: F403
from config.settings import DATABASES, STORAGES

TEST_DATABASE_PREFIX = "test_materials_"

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["TEST"] = {"NAME": f"{TEST_DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"}

# Django's test client and live server speak plain HTTP; tests/test_serve.py
# runs the production settings, redirect included, under gunicorn.
SECURE_SSL_REDIRECT = False

# The pages under test render {% static %} without a collectstatic first, and
# the finders serve the files (whitenoise would warn of a missing STATIC_ROOT).
STATIC_ROOT = None
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Production's PBKDF2 hasher (a million rounds) costs most of a second for each
# user a test makes with a password. Those users are made and checked in this
# process only; the commands and servers the tests start make their own users
# under the production settings.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
