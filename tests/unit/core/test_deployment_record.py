"""What the core does with the deployment record: approvers named for a gate make it a gate
and are named in the decision; a rollback during a rollout returns to the baseline, which
its command says; a rollback after a promotion returns to the record's rollback version."""

from __future__ import annotations

from typing import Any

import schemas as s
from controller.core.phases import Phase
from tests.factories import make_deployment
from tests.unit.core.rollout_helpers import Rollout, three_steps


def request(**record: Any) -> s.DeploymentRequested:
    return make_deployment(plan=three_steps(), training_profile=None, **record)


def test_approvers_named_for_the_start_hold_it_and_the_decision_names_them() -> None:
    rollout = Rollout(request(approvals=(s.RequiredApproval(step=0, by=("sre-oncall", "alice")),)))

    assert Phase.AWAITING_APPROVAL is rollout.state.phase
    assert "waiting for approval to start step 0 (10%) from sre-oncall or alice" == (
        rollout.decisions[-1].reason
    )
    rollout.send(s.ApprovalGranted(deployment_id="dep-1", step=0, by="alice"))
    assert [("set_traffic", 10.0)] == rollout.actions()


def test_approvers_named_for_a_later_step_hold_it() -> None:
    rollout = Rollout(request(approvals=(s.RequiredApproval(step=1, by=("ml-leads",)),)))

    rollout.serve_until("awaiting_approval")

    assert "waiting for approval of step 1 (50%) from ml-leads" in rollout.decisions[-1].reason


def test_a_rollout_without_a_record_asks_no_approval_and_rolls_back_to_the_baseline() -> None:
    rollout = Rollout(request())
    rollout.serve(2)

    rollout.send(s.RollbackRequested(deployment_id="dep-1", by="sre"))

    command = rollout.commands[-1]
    assert ("rollback", 0.0, "v1") == (
        command.action.value,
        command.canary_percent,
        command.rollback_version,
    )


def test_a_rollback_during_the_rollout_returns_to_the_baseline_whatever_the_record_says() -> None:
    """The record's rollback version is how to leave production; during the rollout the
    baseline still serves, and the rollback returns all traffic to it."""
    rollout = Rollout(request(rollback=s.RollbackProcedure(version="v0")))
    rollout.serve(2)

    rollout.send(s.RollbackRequested(deployment_id="dep-1", by="sre"))

    assert "v1" == rollout.commands[-1].rollback_version


def test_only_a_rollback_says_what_version_it_returns_to() -> None:
    rollout = Rollout(request())
    rollout.serve_until("promoted")

    assert {None} == {c.rollback_version for c in rollout.commands}
