"""Settings for the test suite: the project's own, with a throwaway secret.

Everything else (DATABASE_URL included) comes from the environment exactly
as in production, so the suite runs on SQLite by default and on PostgreSQL
with ``DATABASE_URL=postgresql://...``.
"""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")

from config.settings import *  # noqa: F403
