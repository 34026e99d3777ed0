"""What the test modules share: one public home for helpers, none of them fixtures.

- ``project``: the project's paths, and the deployed schema (``load_production_schema``).
- ``server``: the PostgreSQL server the tests use, and databases created and dropped on it.
- ``catalog``: a database's catalog, read independently of migsupport.
- ``migrate``: the project's migrations run unguarded, over one connection.
- ``commands``: ``manage.py`` in a subprocess, as a deploy runs it.
- ``states``: databases in every state, and copies of the project's scripts.
- ``rows``: rows in the deployed schema, and proof that they survived.
- ``sessions``: the sessions and advisory locks the commands leave on the server.
- ``cluster``: a private PostgreSQL cluster that checks passwords.
- ``templates``: template databases, built once and copied for each test.
- ``rounds``: how many concurrency rounds the reliability suite runs.
- ``serve``: the project under gunicorn, as production serves it, and HTTP requests to it.

Fixtures stay in the ``conftest.py`` files; they build on these modules.
"""
