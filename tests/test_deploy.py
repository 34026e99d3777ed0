"""What a guarded stamp or upgrade may do, decided from a state report (migsupport.deploy)."""

from __future__ import annotations

import pytest

from migsupport.api import script_directory
from migsupport.deploy import StampPlan, plan_stamp, plan_upgrade, resolve_revision
from migsupport.exceptions import Refused, SchemaDrift, UnknownRevision
from migsupport.state import StateReport
from tests.support.states import BASELINE, HEAD, SECOND

DIFFERENCE = "index ix_detected_materials_material_name is missing"


def test_a_proven_stamp_writes_over_the_recorded_version():
    assert plan_stamp(HEAD, (BASELINE,), (), force=False) == StampPlan(
        target=HEAD, current=BASELINE, proven=True, differences=()
    )
    assert plan_stamp(HEAD, (BASELINE,), (), force=False).changes_anything


def test_an_unproven_stamp_is_refused_unless_forced():
    with pytest.raises(SchemaDrift) as refused:
        plan_stamp(HEAD, (), (DIFFERENCE,), force=False)

    assert str(refused.value) == (
        f"refused: the schema does not equal revision {HEAD}, so it cannot be stamped; "
        "nothing was written (--force stamps without proof)"
    )
    assert refused.value.differences == (DIFFERENCE,)
    forced = plan_stamp(HEAD, (), (DIFFERENCE,), force=True)
    assert (forced.current, forced.proven, forced.changes_anything) == (None, False, True)


def test_a_stamp_at_the_recorded_version_changes_nothing_even_without_proof():
    plan = plan_stamp(HEAD, (HEAD,), (DIFFERENCE,), force=False)

    assert (plan.changes_anything, plan.proven, plan.differences) == (False, False, (DIFFERENCE,))
    assert not plan_stamp("base", (), (), force=False).changes_anything


def test_versions_that_are_not_revision_ids_are_quoted():
    plan = plan_stamp(HEAD, ("x y", HEAD), (), force=False)

    assert (plan.current, plan.changes_anything) == (f"'x y',{HEAD}", True)


def test_an_upgrade_to_an_older_revision_is_refused():
    report = StateReport(state="up_to_date", current=HEAD, head=HEAD)

    with pytest.raises(Refused) as refused:
        plan_upgrade(report, script_directory(), BASELINE, baseline=True)

    assert str(refused.value) == (
        f"refused: the target {BASELINE} is older than {HEAD}, the revision the database is at, "
        "and the guarded upgrade never downgrades (`alembic downgrade` goes down, unguarded); "
        "nothing was changed"
    )


def test_an_upgrade_to_the_current_revision_plans_nothing():
    report = StateReport(state="behind", current=SECOND, head=HEAD, pending=(HEAD,))

    plan = plan_upgrade(report, script_directory(), SECOND, baseline=True)

    assert (plan.revisions, plan.changes_anything) == ((), False)


@pytest.mark.parametrize(
    ("revision", "resolved"),
    [("head", HEAD), ("base", "base"), (SECOND, SECOND), ("7c1d", SECOND), ("b6", BASELINE)],
)
def test_a_revision_resolves_to_its_full_id(revision, resolved):
    assert resolve_revision(script_directory(), revision) == resolved


@pytest.mark.parametrize("revision", ["ff", "0123456789ab", "heads@nowhere"])
def test_an_unknown_revision_names_the_heads(revision):
    with pytest.raises(UnknownRevision) as unknown:
        resolve_revision(script_directory(), revision)

    assert str(unknown.value) == f"unknown revision {revision!r}; the known heads are: {HEAD}"
