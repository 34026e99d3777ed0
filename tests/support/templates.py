"""Template databases: a state built once, then copied for each test that needs it.

Building a state can take seconds (the deployed schema with 100,000 rows,
say), while ``CREATE DATABASE ... TEMPLATE`` copies it in a fraction of
that. A :class:`Templates` builds each named state on first use, on its
server, and copies it on every request; the copies are ordinary databases of
the tests, and the templates are dropped at the end of the session. A copy
has the same catalog, rows and planner statistics as its template.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from sqlalchemy.engine import URL, Engine

from migsupport.engine import create_engine
from tests.support.server import SCRATCH_PREFIX, admin_execute, drop_pg_database


class Templates:
    """Template databases on ``server``, built on first use; safe to use from threads."""

    def __init__(self, server: URL) -> None:
        self.server = server
        self.built: dict[str, str] = {}
        self._lock = threading.Lock()

    def template(self, name: str, build: Callable[[Engine], None]) -> str:
        """Return the database name of the template ``name``, built by ``build`` if need be."""
        with self._lock:
            if name not in self.built:
                database = f"{SCRATCH_PREFIX}template_{uuid.uuid4().hex[:12]}"
                admin_execute(self.server, f'CREATE DATABASE "{database}"')
                engine = create_engine(self.server.set(database=database))
                try:
                    build(engine)
                except BaseException:
                    engine.dispose()
                    drop_pg_database(self.server, self.server.set(database=database))
                    raise
                # No session may be left on a template while it is copied.
                engine.dispose()
                self.built[name] = database
            return self.built[name]

    def copy(self, name: str, build: Callable[[Engine], None]) -> URL:
        """Return the URL of a new database copied from the template ``name``."""
        template = self.template(name, build)
        database = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
        admin_execute(self.server, f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
        return self.server.set(database=database)

    def close(self) -> None:
        for database in self.built.values():
            drop_pg_database(self.server, self.server.set(database=database))
        self.built.clear()
