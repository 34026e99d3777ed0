"""What a deploy printed, read back: the lock waits and timeouts, and the work it did.

The concurrency rounds and the pooler races read their processes' output
with these.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

from tests.support.states import HEAD


@dataclass(frozen=True)
class Deploy:
    """One process of a round: its arguments, and what it printed."""

    args: tuple[str, ...]
    result: subprocess.CompletedProcess

    @property
    def mode(self) -> str:
        if self.args[0] != "alembic_upgrade":
            return self.args[0]
        if "--json" in self.args:
            return "json"
        if "--lock-timeout" in self.args:
            return "timeout"
        if "--plan" in self.args:
            return "plan"
        return "plain"


WAITING = re.compile(
    r"Waiting for the deploy lock: PostgreSQL advisory lock -?\d+ \(.*\) is held by .*"
)
TIMED_OUT = re.compile(
    r"CommandError: timed out after \d+\.\ds waiting for the deploy lock "
    # The holder is named unless it let go in the moment between the last try and the look.
    r"\(PostgreSQL advisory lock -?\d+ \(alembic_version:default\)\)(; held by .*)?; nothing was "
    r"changed\. Retry when the other deploy has finished, or raise --lock-timeout\n"
)


def work_done(deploy: Deploy) -> tuple[str, ...]:
    """Return what ``deploy`` changed: ("baseline", rev), the revisions applied, or ()."""
    result = deploy.result
    if deploy.mode == "json":
        summary = json.loads(result.stdout)
        assert summary["after"] == HEAD, summary
        applied = tuple(item["revision"] for item in summary["applied"])
        if summary["baseline"]:
            return ("baseline", summary["baseline"], *applied)
        return applied
    lines = [line for line in result.stdout.splitlines() if not WAITING.fullmatch(line)]
    done: list[str] = []
    for line in lines:
        if line.startswith("  Baselined at "):
            done += ["baseline", line.split()[2].rstrip(":")]
        elif line.startswith("  Applying "):
            assert line.endswith("... OK"), lines
            done.append(line.split()[1])
    return tuple(done)
