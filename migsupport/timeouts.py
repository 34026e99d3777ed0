"""The timeouts a deploy's statements run under, shared by the executor and the helpers.

The executor sets them on the deploy's session; the revisions' helpers read
them from Alembic's ``config.attributes`` (a concurrent index build runs
without the statement timeout unless asked).
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic.config import Config

from migsupport import conf

# The key in Alembic's config.attributes where the revisions' helpers find the timeouts.
ATTRIBUTE = "migsupport_timeouts"


@dataclass(frozen=True)
class Timeouts:
    """How long a deploy's statements may wait, and for how long it keeps retrying.

    ``lock``: each DDL statement's ``lock_timeout`` in seconds (0: no limit).
    ``retry_budget``: how long a revision keeps being retried, in seconds.
    ``statement``: ``statement_timeout`` in seconds, or None for none.
    ``statement_on_builds``: whether ``statement`` bounds concurrent builds too.
    """

    lock: float = 2.0
    retry_budget: float = 600.0
    statement: float | None = None
    statement_on_builds: bool = False

    @classmethod
    def from_settings(
        cls,
        *,
        lock: float | None = None,
        retry_budget: float | None = None,
        statement: float | None = None,
        statement_on_builds: bool | None = None,
    ) -> Timeouts:
        """Return the ``MIGSUPPORT_*`` settings, each overridden when given (a command's option)."""
        return cls(
            lock=conf.ddl_lock_timeout() if lock is None else lock,
            retry_budget=conf.ddl_retry_budget() if retry_budget is None else retry_budget,
            statement=conf.statement_timeout() if statement is None else statement or None,
            statement_on_builds=(
                conf.statement_timeout_on_builds()
                if statement_on_builds is None
                else statement_on_builds
            ),
        )

    def session_settings(self) -> dict[str, str]:
        """Return the PostgreSQL settings that carry these timeouts, as ``SET`` values."""
        return {
            "lock_timeout": _milliseconds(self.lock),
            "statement_timeout": _milliseconds(self.statement or 0),
        }


def _milliseconds(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def builds_timeout(config: Config | None) -> str | None:
    """Return the ``statement_timeout`` for a concurrent build, or None to keep the session's.

    For the revisions' helpers: with no statement timeout, or one that also
    applies to builds, the session's stays; otherwise a build runs with none.
    """
    timeouts = (config.attributes.get(ATTRIBUTE) if config is not None else None) or None
    if timeouts is None or timeouts.statement is None or timeouts.statement_on_builds:
        return None
    return "0"
