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
    # no version named: a rollback during a rollout returns to the baseline, and its command
    # is the one routers of before read
    assert ("rollback", 0.0, None) == (
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

    assert (0.0, None) == (
        rollout.commands[-1].canary_percent,
        rollout.commands[-1].rollback_version,
    )


def test_only_a_rollback_after_promotion_says_what_version_it_returns_to() -> None:
    rollout = Rollout(request())
    rollout.serve_until("promoted")

    assert {None} == {c.rollback_version for c in rollout.commands}


# ---- a rollback after the promotion ---------------------------------------------------------


def promoted(**record: Any) -> Rollout:
    rollout = Rollout(request(**record))
    rollout.serve_until("promoted")
    return rollout


def test_a_promoted_model_is_rolled_back_to_the_records_rollback_version() -> None:
    rollout = promoted(
        rollback=s.RollbackProcedure(
            version="v0", procedure="redeploy v0", runbook_url="https://runbooks.example/rb"
        )
    )
    promote = rollout.commands[-1]

    step = rollout.send(s.RollbackRequested(deployment_id="dep-1", by="sre", reason="pager"))

    assert Phase.ROLLED_BACK is rollout.state.phase
    (command,) = step.commands
    (decision,) = step.decisions
    assert ("rollback", 0.0, "v0") == (
        command.action.value,
        command.canary_percent,
        command.rollback_version,
    )
    assert "rolled back after promotion to v0 by sre: pager" == decision.reason == command.reason
    assert ("promoted", "rolled_back") == (decision.from_phase, decision.to_phase)
    assert (command.command_id,) == decision.command_ids
    assert {
        "by": "sre",
        "rollback_version": "v0",
        "from_version": "v2",
        "promote_command_id": promote.command_id,
        "procedure": "redeploy v0",
        "runbook_url": "https://runbooks.example/rb",
    } == decision.evidence


def test_without_a_record_a_promoted_model_is_rolled_back_to_the_baseline() -> None:
    rollout = promoted()

    rollout.send(s.RollbackRequested(deployment_id="dep-1", by="sre"))

    assert "v1" == rollout.commands[-1].rollback_version
    assert "rolled back after promotion to v1 by sre" == rollout.decisions[-1].reason


def test_a_rollback_after_promotion_is_the_same_in_a_replay() -> None:
    """Deterministic: the same inputs give the same command and decision ids."""
    first, second = promoted(), promoted()
    rollback = s.RollbackRequested(deployment_id="dep-1", by="sre")

    one = first.send(rollback, event_id="rb-1")
    two = second.send(rollback, event_id="rb-1")

    assert [o.model_dump() for o in one.outputs] == [o.model_dump() for o in two.outputs]


def test_a_promoted_model_is_rolled_back_once() -> None:
    rollout = promoted()
    rollout.send(s.RollbackRequested(deployment_id="dep-1", by="sre"), event_id="rb-1")

    again = rollout.send(s.RollbackRequested(deployment_id="dep-1", by="eve"), event_id="rb-2")
    redelivered = rollout.send(s.RollbackRequested(deployment_id="dep-1", by="sre"), "rb-1")

    assert again.is_noop() and redelivered.is_noop()
    assert "rollout already rolled_back: RollbackRequested refused" == again.refusal
    assert "" == redelivered.refusal
    terminal = [c.action.value for c in rollout.commands if c.action.is_terminal()]
    assert ["promote", "rollback"] == terminal


def test_other_requests_after_the_promotion_are_still_refused() -> None:
    rollout = promoted()

    for request_ in (
        s.AbortRequested(deployment_id="dep-1", by="sre"),
        s.PauseRequested(deployment_id="dep-1", by="sre"),
    ):
        step = rollout.send(request_)
        assert step.is_noop()
        assert "rollout already promoted" in step.refusal
    assert Phase.PROMOTED is rollout.state.phase


def test_the_first_decision_keeps_the_record_for_the_audit_trail() -> None:
    rollout = Rollout(request(environment="prod", rollback=s.RollbackProcedure(version="v0")))

    record = rollout.decisions[0].evidence["record"]

    assert ("prod", "v0") == (record["environment"], record["rollback"]["version"])
    assert [] == record["approvals_required"]


def test_a_request_without_a_record_decides_as_before() -> None:
    rollout = Rollout(request())

    assert "record" not in rollout.decisions[0].evidence
