"""The private third-party APIs the project still calls, pinned so a change fails loudly.

Each one has no public equivalent. Its call site names the version it was
checked against; the test here fails, naming that call site, as soon as an
upgrade renames it, changes its signature or what it returns.
"""

from __future__ import annotations

import inspect

import alembic
from alembic.script import ScriptDirectory

from migsupport.api import script_directory
from tests.support.states import BASELINE, HEAD, SECOND

# migsupport.history.migrate: the steps alembic.command.upgrade, downgrade and stamp build.
ALEMBIC_STEP_BUILDERS = {
    "_upgrade_revs": ["self", "destination", "current_rev"],
    "_downgrade_revs": ["self", "destination", "current_rev"],
    "_stamp_revs": ["self", "revision", "heads"],
}


def test_the_step_builders_migsupport_history_calls_keep_their_signatures():
    for name, parameters in ALEMBIC_STEP_BUILDERS.items():
        builder = getattr(ScriptDirectory, name, None)
        where = f"Alembic {alembic.__version__}: ScriptDirectory.{name}, used by history.migrate"
        assert builder is not None, f"{where}, is gone"
        assert list(inspect.signature(builder).parameters) == parameters, f"{where}, changed"


def test_the_step_builders_return_the_revisions_in_order():
    scripts = script_directory()

    up = scripts._upgrade_revs("head", None)
    down = scripts._downgrade_revs("base", HEAD)
    stamp = scripts._stamp_revs(SECOND, ())

    assert [(step.revision.revision, step.is_upgrade) for step in up] == [
        (BASELINE, True),
        (SECOND, True),
        (HEAD, True),
    ]
    assert [(step.revision.revision, step.is_upgrade) for step in down] == [
        (HEAD, False),
        (SECOND, False),
        (BASELINE, False),
    ]
    assert [(step.from_revisions, step.to_revisions) for step in stamp] == [((), (SECOND,))]
